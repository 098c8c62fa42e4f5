"""Dedicated-worker fixtures: the real bubblewrap sandbox and warm interpreters.

The sandbox is detected once per session with the small limits of the sandbox suite
(``tests/sandbox/conftest.py``), so that the hostile jobs hit them quickly.
"""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gristmill.worker.dedicated import DedicatedSettings, Spec, WarmPool
from gristmill.worker.dedicated.interpreter import WarmInterpreter
from gristmill.worker.execution import ExecutionOutcome, ExecutionRequest, ExecutorSettings
from gristmill.worker.sandbox import Sandbox, SandboxPolicy, detect
from tests.sandbox.conftest import LIMITS, DataDir, Logs

__all__ = ["DataDir", "Logs", "run_job", "started_interpreter"]


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (scripts/test does)")
    return detect(SandboxPolicy(limits=LIMITS))


@pytest.fixture(scope="session")
def settings(sandbox: Sandbox) -> ExecutorSettings:
    return ExecutorSettings(sandbox=sandbox, kill_grace_s=0.5)


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data")


def spec(code: str, **changes: Any) -> Spec:
    values: dict[str, Any] = {"workspace": "main", "path": "u/admin/warm", "code": code}
    values.update(changes)
    return Spec(**values)


@pytest_asyncio.fixture(loop_scope="session")
async def started_interpreter(settings: ExecutorSettings, data_dir: DataDir) -> AsyncIterator[Any]:
    """``start(code)``: a warm interpreter for ``code``, closed after the test."""
    started: list[WarmInterpreter] = []

    async def start(code: str, **changes: Any) -> WarmInterpreter:
        interpreter = await WarmInterpreter.start(
            spec(textwrap.dedent(code), **changes),
            settings=settings,
            base_dir=data_dir.jobs / "dedicated",
        )
        started.append(interpreter)
        return interpreter

    yield start
    for interpreter in started:
        await interpreter.close()


async def run_job(
    interpreter: WarmInterpreter,
    *,
    args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    cancel: asyncio.Event | None = None,
) -> tuple[ExecutionOutcome, Logs]:
    logs = Logs()
    request = ExecutionRequest(
        job_id=uuid.uuid4(),
        language="python3",
        code=interpreter.spec.code,
        args=args or {},
        env=env or {},
        timeout_s=timeout_s,
        workdir=Path("/nonexistent"),  # a warm job gets a directory of the interpreter's
    )
    outcome = await interpreter.run(request, on_log=logs, cancel=cancel or asyncio.Event())
    return outcome, logs


def pool(settings: ExecutorSettings, data_dir: DataDir, **changes: Any) -> WarmPool:
    values: dict[str, Any] = {"scripts": ("main:u/admin/warm",)}
    values.update(changes)
    return WarmPool(DedicatedSettings(**values), settings, data_dir.jobs / "dedicated")
