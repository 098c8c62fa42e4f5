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


async def test_go_refuses_clearly_under_the_sandbox(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    code = "package inner\n\nfunc main(x int) (interface{}, error) { return x, nil }\n"
    outcome, _ = await run(settings, data_dir.workdir(), code, language="go", args={"x": 1})
    assert not outcome.success
    assert outcome.error is not None
    assert "cannot run sandboxed yet" in outcome.error.message
