"""Go jobs on the real toolchain: typed arguments, results, errors, panics, compile
errors, the per-version binary cache, and timeouts."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gristmill.common.contracts.jobs import ExitReason, JobStatus
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    execute,
    supported_languages,
)

SETTINGS = ExecutorSettings(kill_grace_s=0.5)
#: The first build of a session also compiles the standard library into GOCACHE.
BUILD_TIMEOUT_S = 180.0


class Jobs:
    """Runs jobs the way a worker does: each in ``<data dir>/jobs/<id>``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.logs: list[str] = []

    async def run(
        self, code: str, *, args: dict[str, Any] | None = None, timeout_s: float = BUILD_TIMEOUT_S
    ) -> ExecutionOutcome:
        job_id = uuid.uuid4()
        workdir = self.data_dir / "jobs" / str(job_id)
        workdir.mkdir(parents=True, mode=0o700)
        self.logs = []

        async def on_log(text: str) -> None:
            self.logs.append(text)

        request = ExecutionRequest(
            job_id=job_id,
            language="go",
            code=textwrap.dedent(code),
            args=args or {},
            env={},
            timeout_s=timeout_s,
            workdir=workdir,
        )
        return await execute(request, on_log=on_log, cancel=asyncio.Event(), settings=SETTINGS)

    def binaries(self) -> list[Path]:
        return sorted((self.data_dir / "cache" / "go" / "scripts").glob("*/main"))


@pytest.fixture
def jobs(data_dir: Path) -> Jobs:
    return Jobs(data_dir)


def _unique(code: str) -> str:
    """``code`` made a new script version (so its first run compiles)."""
    return f"{textwrap.dedent(code)}\n// version {uuid.uuid4()}\n"


def test_registered() -> None:
    assert "go" in supported_languages()


async def test_typed_args_give_a_json_result(jobs: Jobs) -> None:
    code = """
        package inner

        import (
            "fmt"
            "strings"
        )

        type Options struct {
            Loud bool `json:"loud"`
        }

        func main(x int, name string, ratio float64, tags []string, opts Options,
            extra map[string]interface{}, missing int) (interface{}, error) {
            fmt.Println("hello from go", name)
            text := "hi " + name
            if opts.Loud {
                text = strings.ToUpper(text)
            }
            return map[string]interface{}{
                "double": x * 2, "text": text, "ratio": ratio * 2, "tags": tags,
                "extra": extra, "missing": missing, "nothing": nil,
            }, nil
        }
    """
    args = {
        "x": 21,
        "name": "mill",
        "ratio": 0.25,
        "tags": ["a", "b"],
        "opts": {"loud": True},
        "extra": {"k": [1, "two"]},
    }
    outcome = await jobs.run(_unique(code), args=args)
    assert outcome.error is None, outcome.error
    assert outcome.status is JobStatus.SUCCESS
    assert outcome.result == {
        "double": 42,
        "text": "HI MILL",
        "ratio": 0.5,
        "tags": ["a", "b"],
        "extra": {"k": [1, "two"]},
        "missing": 0,
        "nothing": None,
    }
    assert "hello from go mill" in "".join(jobs.logs)


async def test_returned_error(jobs: Jobs) -> None:
    code = """
        package inner

        import "errors"

        func main(name string) (interface{}, error) {
            return nil, errors.New("no such thing: " + name)
        }
    """
    outcome = await jobs.run(_unique(code), args={"name": "x"})
    assert outcome.status is JobStatus.FAILURE
    assert outcome.error is not None
    assert outcome.error.name == "errors.errorString"
    assert outcome.error.message == "no such thing: x"


async def test_panic_has_a_stack(jobs: Jobs) -> None:
    code = """
        package inner

        func main(items []int) (interface{}, error) {
            return items[5], nil
        }
    """
    outcome = await jobs.run(_unique(code), args={"items": [1]})
    assert outcome.status is JobStatus.FAILURE
    assert outcome.error is not None
    assert outcome.error.name == "Panic"
    assert "index out of range" in outcome.error.message
    assert outcome.error.stack is not None
    assert "inner/inner.go:5" in outcome.error.stack


async def test_arguments_of_the_wrong_type(jobs: Jobs) -> None:
    code = "package inner\n\nfunc main(x int) (interface{}, error) { return x, nil }\n"
    outcome = await jobs.run(_unique(code), args={"x": "not a number"})
    assert outcome.error is not None
    assert outcome.error.name == "InvalidArguments"


async def test_compile_error_has_line_and_column(jobs: Jobs) -> None:
    code = """
        package inner

        func main(x int) (interface{}, error) {
            y := undefinedThing + x
            return y, nil
        }
    """
    outcome = await jobs.run(_unique(code), args={"x": 1})
    assert outcome.status is JobStatus.FAILURE
    assert outcome.error is not None
    assert outcome.error.name == "CompilationError"
    assert "undefined: undefinedThing" in outcome.error.message
    # Line 1 is the empty first line of the literal; 4 spaces indent the body.
    assert outcome.error.location == "line 5, column 10"


async def test_wrong_main_signature_is_a_compile_error(jobs: Jobs) -> None:
    code = "package inner\n\nfunc main(x int) int { return x }\n"
    outcome = await jobs.run(_unique(code), args={"x": 1})
    assert outcome.error is not None
    assert outcome.error.name == "CompilationError"
    assert "interface{}, error" in outcome.error.message


async def test_unparsable_main_is_a_compile_error(jobs: Jobs) -> None:
    outcome = await jobs.run(_unique("package inner\n\nfunc helper() {}\n"))
    assert outcome.error is not None
    assert outcome.error.name == "CompilationError"
    assert outcome.error.location == "line 1, column 1"


async def test_second_run_uses_the_cached_binary(jobs: Jobs) -> None:
    code = _unique("package inner\n\nfunc main(x int) (interface{}, error) { return x + 1, nil }\n")
    before = set(jobs.binaries())
    started = time.perf_counter()
    first = await jobs.run(code, args={"x": 1})
    compiled_s = time.perf_counter() - started
    assert first.result == 2
    (binary,) = set(jobs.binaries()) - before
    stat = binary.stat()

    started = time.perf_counter()
    second = await jobs.run(code, args={"x": 41})
    cached_s = time.perf_counter() - started
    assert second.result == 42
    # Not rebuilt: the same file (inode and mtime), and no compiler output this time.
    again = binary.stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert set(jobs.binaries()) - before == {binary}
    workdirs = sorted((jobs.data_dir / "jobs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert not (workdirs[-1] / ".gristmill" / "compile.log").exists()
    assert cached_s < compiled_s
    print(f"go: first run (compile) {compiled_s:.3f}s, cached run {cached_s:.3f}s")


async def test_timeout_kills_the_program(jobs: Jobs) -> None:
    code = """
        package inner

        import "time"

        func main(ms int) (interface{}, error) {
            time.Sleep(time.Duration(ms) * time.Millisecond)
            return ms, nil
        }
    """
    code = _unique(code)
    built = await jobs.run(code, args={"ms": 0})  # compiles, under a generous timeout
    assert built.result == 0
    started = time.perf_counter()
    outcome = await jobs.run(code, args={"ms": 60_000}, timeout_s=1.0)
    assert outcome.exit_reason is ExitReason.TIMEOUT
    assert outcome.status is not JobStatus.SUCCESS
    assert time.perf_counter() - started < 10


async def test_timeout_while_compiling(jobs: Jobs) -> None:
    # A new version whose build cannot finish in 50 ms: the build is killed, and no
    # binary (not even a partial one) is left for the next run to trust.
    code = _unique(
        'package inner\n\nimport "net/http"\n\n'
        "func main() (interface{}, error) { return http.StatusOK, nil }\n"
    )
    before = set(jobs.binaries())
    outcome = await jobs.run(code, timeout_s=0.05)
    assert outcome.exit_reason is ExitReason.TIMEOUT
    assert set(jobs.binaries()) == before
    again = await jobs.run(code)
    assert again.result == 200
