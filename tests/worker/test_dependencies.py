"""Python jobs get their third-party packages: a real worker, real Postgres, real uv.

A ``Worker`` runs in the test process (burst mode), so ``record_tool_calls`` sees
every process the preparation starts. Tests marked ``slow`` reach PyPI (``six``,
a small pure-Python wheel); the others start no network access.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gristmill.common.contracts.runs import RetryPolicy
from gristmill.common.queue import NewJob, Queue
from gristmill.common.wakeup import Wakeup
from gristmill.worker.dependencies import PythonDependencies
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.execution.runners.python import PythonRunner
from gristmill.worker.pyenv import ToolCall, probe_interpreter, record_tool_calls
from gristmill.worker.service import Worker, WorkerSettings

EXECUTOR = ExecutorSettings(kill_grace_s=0.5)
SIX_VERSION = "import six\n\ndef main():\n    return six.__version__\n"


def python_job(code: str, **overrides: Any) -> NewJob:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "workspace": "main",
        "kind": "preview",
        "tag": "python3",
        "created_by": "tester",
        "trigger_kind": "api",
        "language": "python3",
        "code": textwrap.dedent(code),
    }
    values.update(overrides)
    return NewJob(**values)


class Finished:
    """A job's row in ``jobs_completed`` and its whole log."""

    def __init__(self, row: asyncpg.Record, logs: str) -> None:
        self.status: str = row["status"]
        self.result: Any = row["result"]
        self.error: dict[str, Any] | None = row["error"]
        self.attempt: int = row["attempt"]
        self.logs = logs


class Harness:
    """Enqueue jobs and run an in-process worker over them until the queue is empty."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, data_dir: Path) -> None:
        self.pool = pool
        self.database_url = database_url
        self.queue = Queue(pool)
        self.settings = WorkerSettings(
            tags=("python3",),
            jobs_dir=data_dir / "jobs",
            heartbeat_interval_s=0.1,
            executor=EXECUTOR,
        )
        #: Where the worker keeps lockfiles and environments by default.
        self.cache_dir = data_dir / "cache" / "python"

    async def run(self, *jobs: NewJob, dependencies: PythonDependencies | None = None) -> None:
        await self.queue.enqueue(list(jobs))
        async with Wakeup(self.database_url, self.settings.tags, mode="poll") as wakeup:
            worker = Worker(self.pool, self.queue, wakeup, self.settings, dependencies=dependencies)
            await worker.run(asyncio.Event(), burst=True)

    async def finished(self, job: NewJob) -> Finished:
        row = await self.pool.fetchrow("SELECT * FROM jobs_completed WHERE id = $1", job.id)
        assert row is not None, f"job {job.id} did not complete"
        logs = "".join(text for _, text in await self.queue.read_logs(job.id))
        return Finished(row, logs)


@pytest.fixture
def harness(pg_pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> Harness:
    return Harness(pg_pool, database_url, tmp_path / "data")


def uv_calls(calls: list[ToolCall]) -> list[tuple[str, ...]]:
    return [call.argv for call in calls if Path(call.argv[0]).name == "uv"]


# --- the runner ---------------------------------------------------------------------------


async def test_python_path_is_importable_after_the_standard_library(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "gm_plain_pkg.py").write_text("VALUE = 'plain'\n")
    (plain / "json.py").write_text("raise RuntimeError('the stdlib was shadowed')\n")
    with_pth = tmp_path / "with-pth"
    (with_pth / "nested").mkdir(parents=True)
    (with_pth / "nested" / "gm_nested_pkg.py").write_text("VALUE = 'nested'\n")
    (with_pth / "extra.pth").write_text("nested\n")
    workdir = tmp_path / "job"
    workdir.mkdir()
    request = ExecutionRequest(
        job_id=uuid.uuid4(),
        language="python3",
        code=textwrap.dedent(
            """
            import json, sys
            import gm_plain_pkg, gm_nested_pkg

            def main():
                return [gm_plain_pkg.VALUE, gm_nested_pkg.VALUE, json.__name__, sys.path]
            """
        ),
        args={},
        env={},
        timeout_s=30,
        workdir=workdir,
        python_path=(str(plain), str(with_pth)),
    )
    command = PythonRunner().prepare(request, EXECUTOR)
    assert {str(plain), str(with_pth)} <= set(command.readonly_paths)

    outcome = await execute(request, on_log=_ignore, cancel=asyncio.Event(), settings=EXECUTOR)
    assert outcome.success, outcome.error
    plain_value, nested_value, json_name, sys_path = outcome.result
    assert (plain_value, nested_value, json_name) == ("plain", "nested", "json")
    # After the standard library, in order; the bootstrap's directory is gone.
    assert sys_path[-3:] == [str(plain), str(with_pth), str(with_pth / "nested")]
    assert not any(entry.endswith("/runners") for entry in sys_path)


async def _ignore(_: str) -> None:
    return None


# --- preparation without the network ------------------------------------------------------


async def test_stdlib_only_job_starts_no_process(harness: Harness) -> None:
    job = python_job(
        """
        import json, os.path
        from collections import Counter

        def main():
            return json.dumps(Counter("aab"))
        """
    )
    with record_tool_calls() as calls:
        await harness.run(job)
    done = await harness.finished(job)
    assert (done.status, done.result) == ("success", '{"a": 2, "b": 1}')
    assert calls == []
    assert "[gristmill]" not in done.logs
    assert not harness.cache_dir.exists()


async def test_invalid_python_still_fails_as_a_syntax_error(harness: Harness) -> None:
    job = python_job("import six\n\ndef main(:\n    pass\n")
    with record_tool_calls() as calls:
        await harness.run(job)
    done = await harness.finished(job)
    assert done.error is not None
    assert (done.status, done.error["name"]) == ("failure", "SyntaxError")
    assert calls == []


async def test_malformed_pin_fails_at_its_line_and_is_not_retried(harness: Harness) -> None:
    job = python_job(
        "import os\nimport six  # pin: -r /etc/passwd\n\ndef main():\n    return 1\n",
        retry=RetryPolicy(max_attempts=3, delay_s=0),
    )
    with record_tool_calls() as calls:
        await harness.run(job)
    done = await harness.finished(job)
    assert done.error is not None
    assert (done.status, done.attempt) == ("failure", 1)
    assert done.error["name"] == "DependencyError"
    assert "options are not allowed" in done.error["message"]
    assert done.error["location"] == "line 2"
    assert "[gristmill] DependencyError: options are not allowed" in done.logs
    assert calls == []


async def test_transient_failure_follows_the_retry_policy(harness: Harness) -> None:
    job = python_job(SIX_VERSION, retry=RetryPolicy(max_attempts=2, delay_s=3600))
    impatient = PythonDependencies(
        python=EXECUTOR.python_bin, cache_dir=harness.cache_dir, lock_timeout_s=0.001
    )
    await harness.run(job, dependencies=impatient)
    assert await harness.pool.fetchval("SELECT count(*) FROM jobs_completed") == 0
    queued = await harness.pool.fetchrow(
        "SELECT attempt, scheduled_for > now() AS later FROM job_queue WHERE id = $1", job.id
    )
    assert queued is not None
    assert queued["later"]  # put back for its second attempt
    logs = "".join(text for _, text in await harness.queue.read_logs(job.id))
    assert "resolving the script's dependencies took longer than" in logs


async def test_cancel_stops_a_slow_resolution(harness: Harness, tmp_path: Path) -> None:
    pid_file = tmp_path / "uv.pid"
    slow_uv = tmp_path / "slow-uv"
    slow_uv.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    slow_uv.chmod(0o755)
    stuck = PythonDependencies(
        python=EXECUTOR.python_bin, cache_dir=harness.cache_dir, uv_bin=str(slow_uv)
    )
    job = python_job(SIX_VERSION)

    async def cancel_once_resolving() -> None:
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.02)
        await harness.queue.cancel(job.id, by="tester")

    canceller = asyncio.ensure_future(cancel_once_resolving())
    async with asyncio.timeout(30):
        await harness.run(job, dependencies=stuck)
    await canceller
    done = await harness.finished(job)
    assert done.status == "canceled"
    uv_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(uv_pid, 0)


# --- PyPI ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_first_run_resolves_and_installs_second_run_starts_nothing(
    harness: Harness,
) -> None:
    first = python_job(SIX_VERSION)
    await harness.run(first)
    done = await harness.finished(first)
    assert done.status == "success", done.error
    version = done.result
    assert isinstance(version, str)
    assert version.count(".") >= 1
    assert "[gristmill] requirements: six\n" in done.logs
    assert "[gristmill] resolved 1 package in " in done.logs
    assert "[gristmill] environment ready in " in done.logs

    interpreter = await probe_interpreter(EXECUTOR.python_bin)
    (cached_lock,) = (harness.cache_dir / "locks" / interpreter.tag).iterdir()
    assert cached_lock.read_text() == f"six=={version}\n"

    second = python_job(SIX_VERSION)
    with record_tool_calls() as calls:
        await harness.run(second)  # a new Worker: only what is on disk is shared
    again = await harness.finished(second)
    assert (again.status, again.result) == ("success", version)
    assert calls == []
    assert "[gristmill] lockfile cached (1 package)\n" in again.logs
    assert "[gristmill] environment ready (cached)\n" in again.logs
    assert "resolved" not in again.logs


@pytest.mark.slow
async def test_nonexistent_package_fails_with_uv_report_and_no_retry(harness: Harness) -> None:
    name = "gristmill_surely_nonexistent_package_7f3a"
    job = python_job(
        f"import {name}\n\ndef main():\n    return 1\n",
        retry=RetryPolicy(max_attempts=3, delay_s=0),
    )
    await harness.run(job)
    done = await harness.finished(job)
    assert done.error is not None
    assert (done.status, done.attempt) == ("failure", 1)
    assert done.error["name"] == "DependencyError"
    message = done.error["message"]
    assert message.startswith("resolving the script's dependencies failed: ")
    # uv's words (it spells the name normalized), then the requirement as inferred.
    assert f"{name.replace('_', '-')} was not found in the package registry" in message
    assert message.endswith(f"(requirement: {name})")
    assert "was not found in the package registry" in done.error["stack"]  # uv's own report
    assert "[gristmill] DependencyError: resolving the script's dependencies failed" in done.logs


@pytest.mark.slow
async def test_explicit_lock_is_installed_as_is(harness: Harness) -> None:
    job = python_job(SIX_VERSION, lock="# py311\nsix==1.16.0\n")
    with record_tool_calls() as calls:
        await harness.run(job)
    done = await harness.finished(job)
    assert (done.status, done.result) == ("success", "1.16.0")
    assert "[gristmill] using the job's lockfile (1 package)\n" in done.logs
    assert "requirements:" not in done.logs
    ran = uv_calls(calls)
    assert ran, "the lockfile was not installed"
    assert all(argv[1:3] == ("pip", "install") for argv in ran)  # never resolved
    assert not (harness.cache_dir / "locks").exists()
