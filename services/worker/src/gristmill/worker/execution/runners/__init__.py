"""The language runners, by ``language`` label."""

from __future__ import annotations

from gristmill.worker.execution.runners.base import Runner
from gristmill.worker.execution.runners.bash import BashRunner
from gristmill.worker.execution.runners.go import GoRunner
from gristmill.worker.execution.runners.postgresql import PostgresqlRunner
from gristmill.worker.execution.runners.python import PythonRunner
from gristmill.worker.execution.runners.typescript import TypeScriptRunner

__all__ = ["Runner", "runner_for", "supported_languages"]

_RUNNERS: dict[str, Runner] = {
    runner.language: runner
    for runner in (
        PythonRunner(),
        BashRunner(),
        TypeScriptRunner("bun"),
        TypeScriptRunner("deno"),
        TypeScriptRunner("nativets"),
        GoRunner(),
        PostgresqlRunner(),
    )
}


def runner_for(language: str) -> Runner | None:
    return _RUNNERS.get(language)


def supported_languages() -> frozenset[str]:
    return frozenset(_RUNNERS)
