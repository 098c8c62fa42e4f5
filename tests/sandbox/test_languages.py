"""Other languages under the sandbox: what runs, and what refuses clearly."""

from __future__ import annotations

import pytest

from gristmill.worker.execution import ExecutorSettings
from tests.sandbox.conftest import DataDir, run

TS = "export async function main(x: number) { return { doubled: x * 2 } }\n"


@pytest.mark.parametrize("language", ["bun", "deno", "nativets"])
async def test_typescript_runs_sandboxed(
    settings: ExecutorSettings, data_dir: DataDir, language: str
) -> None:
    outcome, logs = await run(settings, data_dir.workdir(), TS, language=language, args={"x": 21})
    assert outcome.success, (outcome.error, logs.text)
    assert outcome.result == {"doubled": 42}


GO = """\
package inner

import (
\t"fmt"
\t"os"
)

func main(x int, probe string) (interface{}, error) {
\tfmt.Println("hello from go")
\tself, _ := os.Executable()
\t_, writeErr := os.OpenFile(self, os.O_WRONLY, 0)
\t_, cacheErr := os.Stat(probe)
\treturn map[string]interface{}{
\t\t"doubled": x * 2, "binary_writable": writeErr == nil, "cache_visible": cacheErr == nil,
\t}, nil
}
"""


async def test_go_runs_sandboxed_from_a_build_it_cannot_touch(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    gocache = data_dir.root / "cache" / "go" / "gocache"
    args = {"x": 21, "probe": str(gocache)}
    outcome, logs = await run(
        settings, data_dir.workdir(), GO, language="go", args=args, timeout_s=300
    )
    assert outcome.success, (outcome.error, logs.text)
    assert outcome.result == {"doubled": 42, "binary_writable": False, "cache_visible": False}
    assert "hello from go" in logs.text
    binaries = list((data_dir.root / "cache" / "go" / "scripts").glob("*/main"))
    assert len(binaries) == 1
    assert gocache.is_dir()

    again, _ = await run(
        settings, data_dir.workdir(), GO, language="go", args={"x": 1, "probe": ""}
    )
    assert again.success
    assert again.result["doubled"] == 2
    assert list((data_dir.root / "cache" / "go" / "scripts").glob("*/main")) == binaries


async def test_go_compile_errors_under_the_sandbox_name_the_line(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = "package inner\n\nfunc main(x int) (interface{}, error) {\n\treturn y, nil\n}\n"
    outcome, _ = await run(
        settings, data_dir.workdir(), code, language="go", args={"x": 1}, timeout_s=300
    )
    assert not outcome.success
    assert outcome.error is not None
    assert outcome.error.name == "CompilationError"
    assert "undefined: y" in outcome.error.message
    assert outcome.error.location == "line 4, column 9"
