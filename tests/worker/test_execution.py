"""The job executor with real processes: results, errors, logs, timeouts and kills."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
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
from gristmill.worker.execution.settings import default_python_bin

SETTINGS = ExecutorSettings(kill_grace_s=0.5)


class Logs:
    """An ``on_log`` that keeps every chunk; ``hook`` sees each chunk as it arrives."""

    def __init__(self, hook: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.chunks: list[str] = []
        self._hook = hook

    async def __call__(self, text: str) -> None:
        self.chunks.append(text)
        if self._hook is not None:
            await self._hook(text)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


async def run(
    workdir: Path,
    language: str,
    code: str,
    *,
    args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = 30.0,
    cancel: asyncio.Event | None = None,
    logs: Logs | None = None,
    settings: ExecutorSettings = SETTINGS,
) -> tuple[ExecutionOutcome, Logs]:
    workdir.mkdir(exist_ok=True)
    logs = logs or Logs()
    request = ExecutionRequest(
        job_id=uuid.uuid4(),
        language=language,
        code=textwrap.dedent(code),
        args=args or {},
        env=env or {},
        timeout_s=timeout_s,
        workdir=workdir,
    )
    outcome = await execute(
        request, on_log=logs, cancel=cancel or asyncio.Event(), settings=settings
    )
    return outcome, logs


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "job"
    path.mkdir(mode=0o700)
    return path


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def _gone(pid: int) -> bool:
    """Whether ``pid`` is dead (or a zombie) within a few seconds: SIGKILL is not instant."""
    for _ in range(250):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


def _interpreters() -> list[str]:
    found = {os.path.realpath(sys.executable)}
    found.add(default_python_bin())
    return sorted(found)


# -- Python: results ----------------------------------------------------------------


@pytest.mark.parametrize("python_bin", _interpreters())
async def test_python_main_gets_args_and_returns_a_dict(workdir: Path, python_bin: str) -> None:
    code = """
        def main(name: str, count: int, tags: list, options: dict | None = None):
            return {"greeting": f"hello {name}", "double": count * 2, "tags": tags,
                    "options": options, "unicode": "caf\\u00e9 \\u2603"}
    """
    outcome, _ = await run(
        workdir,
        "python3",
        code,
        args={"name": "mill", "count": 21, "tags": ["a", "b"]},
        settings=ExecutorSettings(python_bin=python_bin),
    )
    assert outcome.error is None
    assert outcome.success
    assert outcome.status is JobStatus.SUCCESS
    assert outcome.exit_reason is ExitReason.OK
    assert outcome.exit_code == 0
    assert outcome.result == {
        "greeting": "hello mill",
        "double": 42,
        "tags": ["a", "b"],
        "options": None,
        "unicode": "café ☃",
    }


async def test_python_async_main_is_awaited(workdir: Path) -> None:
    code = """
        import asyncio

        async def main(n):
            await asyncio.sleep(0.01)
            results = await asyncio.gather(*(asyncio.sleep(0, result=i) for i in range(n)))
            return sum(results)
    """
    outcome, _ = await run(workdir, "python3", code, args={"n": 5})
    assert outcome.error is None
    assert outcome.result == 10


async def test_python_prints_go_to_the_log_not_the_result(workdir: Path) -> None:
    code = """
        import sys

        def main():
            print('{"fake": "result"}')
            print("err 1", file=sys.stderr)
            print("out 2")
            sys.stderr.write("err 2\\n")
            print("out 3")
            return {"real": True}
    """
    outcome, logs = await run(workdir, "python3", code)
    assert outcome.result == {"real": True}
    # stdout and stderr share one pipe for Python jobs: their order is exact.
    assert logs.text == '{"fake": "result"}\nerr 1\nout 2\nerr 2\nout 3\n'


async def test_python_sys_exit_zero_is_success(workdir: Path) -> None:
    outcome, _ = await run(workdir, "python3", "import sys\ndef main():\n    sys.exit(0)\n")
    assert outcome.success
    assert outcome.result is None


async def test_python_dataclasses_and_module_globals_work(workdir: Path) -> None:
    code = """
        import dataclasses

        @dataclasses.dataclass
        class Point:
            x: int
            y: int

        def main():
            return dataclasses.asdict(Point(1, 2)) | {"name": __name__}
    """
    outcome, _ = await run(workdir, "python3", code)
    assert outcome.result == {"x": 1, "y": 2, "name": "main"}


# -- Python: errors -----------------------------------------------------------------


async def test_python_exception_is_a_structured_error(workdir: Path) -> None:
    code = """
        def parse(value):
            return int(value)

        def main(value):
            total = parse(value)
            return total
    """
    outcome, _ = await run(workdir, "python3", code, args={"value": "twelve"})
    assert not outcome.success
    assert outcome.exit_reason is ExitReason.ERROR
    assert outcome.status is JobStatus.FAILURE
    error = outcome.error
    assert error is not None
    assert error.name == "ValueError"
    assert error.message == "invalid literal for int() with base 10: 'twelve'"
    assert error.location == "line 3"
    assert error.exit_code == 1
    assert error.stack is not None
    assert error.stack.startswith("Traceback (most recent call last):\n")
    assert 'File "main.py", line 6, in main\n    total = parse(value)' in error.stack
    assert 'File "main.py", line 3, in parse\n    return int(value)' in error.stack
    assert "bootstrap" not in error.stack
    assert error.stack.endswith("ValueError: invalid literal for int() with base 10: 'twelve'\n")


async def test_python_async_exception_shows_only_user_frames(workdir: Path) -> None:
    code = """
        async def main():
            raise KeyError("missing")
    """
    outcome, _ = await run(workdir, "python3", code)
    error = outcome.error
    assert error is not None
    assert error.name == "KeyError"
    assert error.location == "line 3"
    assert error.stack is not None
    assert "asyncio" not in error.stack
    assert "bootstrap" not in error.stack
    assert 'File "main.py", line 3, in main' in error.stack


async def test_python_error_at_import_time(workdir: Path) -> None:
    outcome, _ = await run(workdir, "python3", "import no_such_module_here\ndef main(): pass\n")
    error = outcome.error
    assert error is not None
    assert error.name == "ModuleNotFoundError"
    assert error.location == "line 1"


async def test_python_syntax_error_has_line_and_column(workdir: Path) -> None:
    code = "def main():\n    x = 1\n    return (x +\n\ndef other(:\n    pass\n"
    outcome, _ = await run(workdir, "python3", code)
    error = outcome.error
    assert error is not None
    assert error.name == "SyntaxError"
    assert error.location is not None
    assert re.fullmatch(r"line \d+, column \d+", error.location)
    assert error.location in error.message
    assert error.stack is not None
    assert 'File "main.py", line' in error.stack


async def test_python_syntax_error_position(workdir: Path) -> None:
    outcome, _ = await run(workdir, "python3", "x = 1\ndef main(:\n    pass\n")
    error = outcome.error
    assert error is not None
    assert error.name == "SyntaxError"
    assert error.location == "line 2, column 10"
    assert error.message == "invalid syntax at line 2, column 10"


async def test_python_missing_main(workdir: Path) -> None:
    outcome, _ = await run(workdir, "python3", "def mian():\n    return 1\n")
    error = outcome.error
    assert error is not None
    assert error.name == "MissingMain"
    assert "defines no main function" in error.message


async def test_python_arguments_that_do_not_fit_main(workdir: Path) -> None:
    outcome, _ = await run(workdir, "python3", "def main(a):\n    return a\n", args={"b": 1})
    error = outcome.error
    assert error is not None
    assert error.name == "InvalidArguments"
    assert "unexpected keyword argument 'b'" in error.message
    assert error.location == "arguments"


@pytest.mark.parametrize(
    ("expression", "what", "path"),
    [
        ("{'a': [1, {'when': datetime.datetime(2024, 1, 2)}]}", "datetime.datetime", "$.a[1].when"),
        ("{'tags': {1, 2}}", "set", "$.tags"),
        ("{'weird key': [0, float('nan')]}", "float nan", "$['weird key'][1]"),
        ("Thing()", "main.Thing", "$"),
    ],
)
async def test_python_result_that_is_not_json(
    workdir: Path, expression: str, what: str, path: str
) -> None:
    code = f"""
        import datetime

        class Thing:
            pass

        def main():
            return {expression}
    """
    outcome, _ = await run(workdir, "python3", code)
    error = outcome.error
    assert error is not None
    assert error.name == "ResultNotSerializable"
    assert error.message.startswith(f"result of main() is not JSON serializable: {what}")
    assert error.message.endswith(f" at {path}")
    assert error.location == path


async def test_python_circular_result(workdir: Path) -> None:
    outcome, _ = await run(
        workdir, "python3", "def main():\n    a = []\n    a.append(a)\n    return a\n"
    )
    error = outcome.error
    assert error is not None
    assert error.name == "ResultNotSerializable"
    assert "circular reference" in error.message


async def test_python_hard_exit_without_result(workdir: Path) -> None:
    outcome, _ = await run(
        workdir, "python3", "import os\ndef main():\n    print('bye')\n    os._exit(3)\n"
    )
    error = outcome.error
    assert error is not None
    assert error.name == "ExitCode"
    assert outcome.exit_code == 3
    assert "exited with code 3 without writing a result" in error.message
    assert error.stack == "bye"


async def test_python_killed_by_a_signal(workdir: Path) -> None:
    code = "import os, signal\ndef main():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    outcome, _ = await run(workdir, "python3", code)
    assert outcome.exit_reason is ExitReason.SIGNAL
    assert outcome.exit_code is None
    assert outcome.error is not None
    assert outcome.error.signal == 9
    assert "signal 9 (SIGKILL)" in outcome.error.message


# -- Logs ---------------------------------------------------------------------------


async def test_logs_arrive_while_the_job_runs(workdir: Path) -> None:
    # The job waits for a file that only the log consumer creates, on seeing "ready":
    # it can only finish if that chunk was delivered while it was still running.
    code = """
        import os, time

        def main():
            print("ready")
            deadline = time.monotonic() + 20
            while not os.path.exists("go"):
                if time.monotonic() > deadline:
                    return "no log chunk arrived while running"
                time.sleep(0.01)
            print("done")
            return "went"
    """

    async def on_chunk(text: str) -> None:
        if "ready" in text:
            (workdir / "go").touch()

    outcome, logs = await run(workdir, "python3", code, logs=Logs(on_chunk))
    assert outcome.result == "went"
    assert logs.chunks[0] == "ready\n"
    assert logs.text == "ready\ndone\n"


async def test_ten_megabytes_of_output_are_truncated_not_buffered(workdir: Path) -> None:
    code = """
        import sys

        def main():
            block = ("x" * 1023 + "\\n") * 64
            for _ in range(160):
                sys.stdout.write(block)
            return "survived"
    """
    outcome, logs = await run(workdir, "python3", code, timeout_s=60)
    assert outcome.result == "survived"
    assert outcome.log_truncated
    assert outcome.log_bytes == 160 * 64 * 1024
    notice = f"... log truncated after {SETTINGS.log_max_bytes} bytes ...\n"
    assert logs.text.count("log truncated") == 1
    assert logs.text.endswith(notice)
    assert len(logs.text) == SETTINGS.log_max_bytes + len(notice)
    assert max(len(chunk) for chunk in logs.chunks) < 1024 * 1024


async def test_bash_output_flood_keeps_its_last_line(workdir: Path) -> None:
    code = """
        yes 'some output' | head -c 10000000
        echo
        echo '{"lines": "many"}'
    """
    outcome, logs = await run(workdir, "bash", code, timeout_s=60)
    assert outcome.error is None
    assert outcome.result == {"lines": "many"}
    assert outcome.log_truncated
    assert logs.text.count("log truncated") == 1


async def test_invalid_utf8_is_replaced(workdir: Path) -> None:
    code = """
        import sys

        def main():
            sys.stdout.buffer.write(b"ok \\xff\\xfe end\\n")
            sys.stdout.buffer.flush()
            return 1
    """
    outcome, logs = await run(workdir, "python3", code)
    assert outcome.result == 1
    assert logs.text == "ok \ufffd\ufffd end\n"


async def test_a_failing_log_sink_does_not_fail_the_job(workdir: Path) -> None:
    async def broken(text: str) -> None:
        raise RuntimeError("sink is down")

    outcome, _ = await run(
        workdir, "python3", "def main():\n    print('x')\n    return 2\n", logs=Logs(broken)
    )
    assert outcome.result == 2


# -- Timeouts, cancellation, process trees ------------------------------------------

# The grandchild leaves the session and closes its output: only its ancestry, read
# while the tree is intact, ties it to the job.
_TREE = """
    ( setsid sleep 300 </dev/null >/dev/null 2>&1 & echo "grandchild=$!"; wait ) &
    trap '' TERM   # the job's shell shrugs off SIGTERM: only SIGKILL ends it
    echo started
    sleep 300
"""


def _grandchild(logs: Logs) -> int:
    match = re.search(r"grandchild=(\d+)", logs.text)
    assert match, logs.text
    return int(match.group(1))


async def test_timeout_kills_the_whole_tree(workdir: Path) -> None:
    outcome, logs = await run(workdir, "bash", _TREE, timeout_s=1.0)
    assert outcome.exit_reason is ExitReason.TIMEOUT
    assert outcome.status is JobStatus.FAILURE
    assert outcome.error is not None
    assert outcome.error.name == "Timeout"
    assert outcome.error.message == "job timed out after 1 s and was killed"
    assert await _gone(_grandchild(logs))


async def test_python_timeout_kills_a_grandchild_in_its_own_session(workdir: Path) -> None:
    code = """
        import subprocess, sys, time

        def main():
            child = subprocess.Popen(
                [sys.executable, "-c",
                 "import subprocess, time;"
                 "g = subprocess.Popen(['sleep', '300'], start_new_session=True,"
                 " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
                 "print('grandchild=%d' % g.pid, flush=True); time.sleep(300)"]
            )
            time.sleep(300)
    """
    outcome, logs = await run(workdir, "python3", code, timeout_s=1.5)
    assert outcome.exit_reason is ExitReason.TIMEOUT
    assert outcome.error is not None
    assert "1.5 s" in outcome.error.message
    assert await _gone(_grandchild(logs))


async def test_cancel_mid_run(workdir: Path) -> None:
    cancel = asyncio.Event()

    async def on_chunk(text: str) -> None:
        if "started" in text:
            cancel.set()

    outcome, logs = await run(workdir, "bash", _TREE, cancel=cancel, logs=Logs(on_chunk))
    assert outcome.exit_reason is ExitReason.CANCELED
    assert outcome.status is JobStatus.CANCELED
    assert outcome.error is not None
    assert outcome.error.name == "Canceled"
    assert await _gone(_grandchild(logs))


async def test_cancel_before_start_runs_nothing(workdir: Path) -> None:
    cancel = asyncio.Event()
    cancel.set()
    outcome, _ = await run(workdir, "bash", "touch ran", cancel=cancel)
    assert outcome.exit_reason is ExitReason.CANCELED
    assert not (workdir / "ran").exists()


async def test_leftover_processes_are_killed_when_the_job_ends(workdir: Path) -> None:
    code = """
        sleep 300 &
        echo "same_group=$!"
        setsid sleep 300 &
        echo "own_session=$!"
        echo 42
    """
    outcome, logs = await run(workdir, "bash", code)
    assert outcome.error is None
    # Bash's result is the last stdout line: stderr or the pids above do not count.
    assert outcome.result == 42
    for name in ("same_group", "own_session"):
        match = re.search(rf"{name}=(\d+)", logs.text)
        assert match, logs.text
        assert await _gone(int(match.group(1))), name


async def test_cancelling_execute_itself_kills_the_job(workdir: Path) -> None:
    logs = Logs()
    task = asyncio.create_task(run(workdir, "bash", _TREE, logs=logs))
    for _ in range(500):
        if "grandchild=" in logs.text and "started" in logs.text:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _gone(_grandchild(logs))


async def test_jobs_run_side_by_side(tmp_path: Path) -> None:
    code = "import time\ndef main(i):\n    time.sleep(0.2)\n    print(i)\n    return i\n"
    results = await asyncio.gather(
        *(run(tmp_path / f"job{i}", "python3", code, args={"i": i}) for i in range(6))
    )
    for i, (outcome, logs) in enumerate(results):
        assert outcome.result == i
        assert logs.text == f"{i}\n"


# -- Bash ---------------------------------------------------------------------------


async def test_bash_positional_args_in_order(workdir: Path) -> None:
    code = """
        echo "count=$#"
        printf '%s\\n' "$1" "$2" "$3" "$4" > args.txt
        echo "done: $1"
    """
    args = {"text": "hello world", "number": 3, "obj": {"x": [1, 2]}, "flag": True}
    outcome, logs = await run(workdir, "bash", code, args=args)
    assert outcome.error is None
    assert outcome.result == "done: hello world"
    assert logs.text.startswith("count=4\n")
    assert (workdir / "args.txt").read_text() == 'hello world\n3\n{"x":[1,2]}\ntrue\n'


async def test_bash_result_json_file_wins(workdir: Path) -> None:
    code = """
        echo '{"from": "file", "n": [1, 2]}' > result.json
        echo 'not the result'
    """
    outcome, _ = await run(workdir, "bash", code)
    assert outcome.result == {"from": "file", "n": [1, 2]}


async def test_bash_last_nonempty_stdout_line_is_the_result(workdir: Path) -> None:
    code = """
        echo 'first'
        echo '{"a": 1}'
        echo 'on stderr' >&2
        echo
        echo '   '
    """
    outcome, logs = await run(workdir, "bash", code)
    assert outcome.result == {"a": 1}
    assert "on stderr" in logs.text


async def test_bash_plain_last_line_stays_a_string(workdir: Path) -> None:
    outcome, _ = await run(workdir, "bash", "echo hello there\n")
    assert outcome.result == "hello there"


async def test_bash_without_output_returns_null(workdir: Path) -> None:
    outcome, _ = await run(workdir, "bash", "true\n")
    assert outcome.success
    assert outcome.result is None


async def test_bash_invalid_result_json(workdir: Path) -> None:
    outcome, _ = await run(workdir, "bash", "echo '{oops' > result.json\n")
    assert outcome.error is not None
    assert outcome.error.name == "InvalidResult"
    assert outcome.error.location == "result.json"


async def test_bash_nonzero_exit_reports_the_last_output(workdir: Path) -> None:
    code = """
        echo "working"
        echo "cannot open thing" >&2
        exit 7
    """
    outcome, _ = await run(workdir, "bash", code)
    assert outcome.exit_code == 7
    assert outcome.exit_reason is ExitReason.ERROR
    assert outcome.error is not None
    assert outcome.error.name == "ExitCode"
    assert outcome.error.message == "bash exited with code 7"
    assert outcome.error.stack == "working\ncannot open thing"


# -- Environment and languages ------------------------------------------------------


async def test_job_environment_is_only_its_own(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_TEST_WORKER_SECRET", "worker-only-value")
    code = "import os\ndef main():\n    return dict(os.environ)\n"
    outcome, _ = await run(workdir, "python3", code, env={"JOB_TOKEN": "t0k"})
    env = outcome.result
    assert isinstance(env, dict)
    assert "GRISTMILL_TEST_WORKER_SECRET" not in env
    assert "worker-only-value" not in env.values()
    assert env["JOB_TOKEN"] == "t0k"
    assert env["HOME"] == str(workdir)
    assert set(env) <= {"JOB_TOKEN", "PATH", "HOME", "LANG", "LC_CTYPE"}


async def test_bash_environment_is_only_its_own(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRISTMILL_TEST_WORKER_SECRET", "worker-only-value")
    code = 'echo "${GRISTMILL_TEST_WORKER_SECRET:-unset} $JOB_TOKEN $PWD"\n'
    outcome, _ = await run(workdir, "bash", code, env={"JOB_TOKEN": "t0k"})
    assert outcome.result == f"unset t0k {workdir}"


async def test_unsupported_language_is_a_clear_error(workdir: Path) -> None:
    outcome, _ = await run(workdir, "cobol", "DISPLAY 'HI'.")
    assert supported_languages() == {
        "python3",
        "bash",
        "bun",
        "deno",
        "nativets",
        "go",
        "postgresql",
    }
    assert outcome.error is not None
    assert outcome.error.name == "UnsupportedLanguage"
    assert outcome.error.message == (
        "language 'cobol' is not supported by this worker "
        "(supported: bash, bun, deno, go, nativets, postgresql, python3)"
    )
    assert outcome.error.location == "language"


async def test_missing_interpreter_is_a_launch_error(workdir: Path) -> None:
    settings = ExecutorSettings(python_bin=str(workdir / "no-such-python"))
    outcome, _ = await run(workdir, "python3", "def main(): pass\n", settings=settings)
    assert outcome.error is not None
    assert outcome.error.name == "LaunchError"
    assert "no-such-python" in outcome.error.message
