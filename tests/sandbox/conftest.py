"""Sandbox fixtures: the real bubblewrap, the executor, and a stand-in worker data dir.

The sandbox is detected once per session with small limits, so that the hostile
jobs below hit them quickly. bubblewrap is required: these tests fail (they do not
skip) where it is missing, as a worker refuses to start there.
"""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gristmill.common.contracts.sandbox import SandboxRequest
from gristmill.worker.execution import ExecutionOutcome, ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.sandbox import Limits, Sandbox, SandboxPolicy, detect

#: Small enough that bombs reach them in well under a second.
LIMITS = Limits(
    memory_mb=256,
    address_space_mb=2048,
    cpu_s=None,
    processes=64,
    open_files=256,
    file_size_mb=16,
    tmp_mb=16,
)
#: What the stand-in database password file holds; no job may ever print it.
DB_PASSWORD = "s3cret-superuser-password-for-tests"


def policy(**changes: Any) -> SandboxPolicy:
    return SandboxPolicy(limits=LIMITS, **changes)


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is not installed: apt-get install bubblewrap (scripts/test does)")
    return detect(policy())


@pytest.fixture(scope="session")
def settings(sandbox: Sandbox) -> ExecutorSettings:
    return ExecutorSettings(sandbox=sandbox, kill_grace_s=0.5)


def with_limits(sandbox: Sandbox, **changes: Any) -> ExecutorSettings:
    """Executor settings whose sandbox has other limits (no new detection needed)."""
    limits = msgspec.structs.replace(sandbox.policy.limits, **changes)
    changed = msgspec.structs.replace(
        sandbox, policy=msgspec.structs.replace(sandbox.policy, limits=limits)
    )
    return ExecutorSettings(sandbox=changed, kill_grace_s=0.5)


class DataDir:
    """A worker data directory as a deployment has it, with secrets in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / "jobs"
        self.jobs.mkdir(parents=True)
        postgres = root / "postgres"
        postgres.mkdir(mode=0o700)
        self.password_file = postgres / "gristmill-superuser.password"
        self.password_file.write_text(DB_PASSWORD + "\n")
        self.password_file.chmod(0o600)
        self.master_key = root / "master.key"
        self.master_key.write_text("k1:" + "A" * 44 + "\n")
        self.master_key.chmod(0o600)

    def workdir(self) -> Path:
        path = self.jobs / str(uuid.uuid4())
        path.mkdir()
        return path


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data")


class Logs:
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
    settings: ExecutorSettings,
    workdir: Path,
    code: str,
    *,
    language: str = "python3",
    args: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    cancel: asyncio.Event | None = None,
    logs: Logs | None = None,
    python_path: tuple[str, ...] = (),
    sandbox: SandboxRequest | None = None,
) -> tuple[ExecutionOutcome, Logs]:
    logs = logs or Logs()
    request = ExecutionRequest(
        job_id=uuid.uuid4(),
        language=language,
        code=textwrap.dedent(code),
        args=args or {},
        env=env or {},
        timeout_s=timeout_s,
        workdir=workdir,
        python_path=python_path,
        sandbox=sandbox,
    )
    outcome = await execute(
        request, on_log=logs, cancel=cancel or asyncio.Event(), settings=settings
    )
    return outcome, logs


async def assert_next_job_runs(settings: ExecutorSettings, data_dir: DataDir) -> None:
    """After a hostile job, the executor still runs an ordinary one."""
    outcome, logs = await run(
        settings,
        data_dir.workdir(),
        "def main(n):\n    print('fine')\n    return n + 1\n",
        args={"n": 41},
    )
    assert outcome.error is None, outcome.error
    assert outcome.result == 42
    assert logs.text == "fine\n"
