"""The sandbox in a real worker (Postgres queue) and in the ``gristmill`` command."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from gristmill.common.queue import NewJob, Queue
from gristmill.common.wakeup import Wakeup
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import Sandbox, describe
from gristmill.worker.service import Worker, WorkerSettings
from tests.harness.services import GristmillProcess, free_port, wait_http, wait_until
from tests.sandbox.conftest import DB_PASSWORD, DataDir


def _job(code: str, **overrides: Any) -> NewJob:
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


HOSTILE = """
import os

def main(password_file, data_dir):
    stolen = []
    for path in (password_file, data_dir + "/master.key", "/proc/1/environ"):
        try:
            stolen.append(open(path, errors="replace").read())
        except OSError:
            pass
    stolen.append(repr(dict(os.environ)))
    print("LOOT:", stolen, flush=True)
    os.system("kill -9 -1")  # then take everything down, itself included
"""


async def test_a_worker_runs_jobs_sandboxed_and_reports_it(
    pg_pool: asyncpg.Pool,
    database_url: str,
    data_dir: DataDir,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRISTMILL_DATABASE_URL", f"postgresql://admin:{DB_PASSWORD}@db/x")
    queue = Queue(pg_pool)
    hostile = _job(
        HOSTILE,
        args={"password_file": str(data_dir.password_file), "data_dir": str(data_dir.root)},
    )
    ordinary = _job("def main():\n    return 'next job ran'\n")
    await queue.enqueue([hostile, ordinary])
    settings = WorkerSettings(
        tags=("python3",),
        jobs_dir=data_dir.jobs,
        heartbeat_interval_s=0.1,
        executor=ExecutorSettings(sandbox=sandbox, kill_grace_s=0.5),
    )
    stop = asyncio.Event()
    async with Wakeup(database_url, settings.tags, mode="poll") as wakeup:
        worker = Worker(pg_pool, queue, wakeup, settings)
        running = asyncio.create_task(worker.run(stop))

        async def registered() -> str | None:
            value: str | None = await pg_pool.fetchval(
                "SELECT sandbox FROM workers WHERE id = $1", worker.id
            )
            return value

        mode = await wait_until(registered, timeout=10, what="the worker's registration")
        assert mode == sandbox.describe()
        assert mode.startswith("bwrap ")

        async def both_done() -> bool:
            count = await pg_pool.fetchval(
                "SELECT count(*) FROM jobs_completed WHERE id = ANY($1::uuid[])",
                [hostile.id, ordinary.id],
            )
            return bool(count == 2)

        await wait_until(both_done, timeout=60, what="both jobs")
        stop.set()
        await running
    rows = {
        row["id"]: row
        for row in await pg_pool.fetch(
            "SELECT id, status, result, error FROM jobs_completed WHERE id = ANY($1::uuid[])",
            [hostile.id, ordinary.id],
        )
    }
    loot = "".join(text for _, text in await queue.read_logs(hostile.id))
    assert "LOOT:" in loot
    assert DB_PASSWORD not in loot
    assert "AAAA" not in loot  # the master key
    assert rows[hostile.id]["status"] == "failure"
    assert rows[hostile.id]["error"]["exit_reason"] == "signal"  # it killed itself
    assert rows[ordinary.id]["status"] == "success"
    assert rows[ordinary.id]["result"] == "next job ran"


def test_the_mode_of_an_unsandboxed_worker_says_so() -> None:
    assert describe(None) == "none (insecure: jobs run unsandboxed)"
    assert ExecutorSettings().sandbox_mode == describe(None)


def _worker_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_DATA_DIR": str(tmp_path / "worker-data"),
        "GRISTMILL_WORKERS": "1",
        **extra,
    }


async def test_the_worker_refuses_to_start_without_bubblewrap(
    spawn: Callable[..., GristmillProcess], database_url: str, tmp_path: Path
) -> None:
    # No bwrap on this PATH (the interpreter itself is started by its full path).
    worker = spawn(["worker"], _worker_env(database_url, tmp_path, PATH=str(tmp_path)))
    code = await asyncio.to_thread(worker.proc.wait, 60)
    output = worker.output()
    assert code == 1, output
    assert "jobs cannot be sandboxed on this machine" in output
    assert "bubblewrap (bwrap) is not installed" in output
    assert "--insecure-no-sandbox" in output


async def test_an_insecure_worker_starts_but_says_so_loudly(
    spawn: Callable[..., GristmillProcess],
    database_url: str,
    tmp_path: Path,
    pg_pool: asyncpg.Pool,
) -> None:
    env = _worker_env(database_url, tmp_path, PATH=str(tmp_path), GRISTMILL_INSECURE_NO_SANDBOX="1")
    worker = spawn(["worker"], env)

    async def registered() -> str | None:
        worker.assert_alive()
        value: str | None = await pg_pool.fetchval("SELECT sandbox FROM workers LIMIT 1")
        return value

    mode = await wait_until(registered, timeout=60, what="the insecure worker's registration")
    assert mode == "none (insecure: jobs run unsandboxed)"
    output = worker.output()
    assert output.count("INSECURE: jobs run WITHOUT a sandbox") >= 2  # at start, at registration
    assert worker.terminate() == 0


def test_version_warns_while_a_worker_runs_unsandboxed(
    spawn: Callable[..., GristmillProcess], database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_HTTP_PORT": str(port),
        "GRISTMILL_ADMIN_TOKEN": "version-test-token-0123456789",
        "GRISTMILL_DATA_DIR": str(tmp_path / "up"),
        "GRISTMILL_INSECURE_NO_SANDBOX": "1",
    }
    up = spawn(["up"], env)
    url = f"http://127.0.0.1:{port}/api/version"
    wait_http(url, process=up)
    deadline = time.monotonic() + 30
    text = httpx.get(url).text
    while "WARNING" not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        text = httpx.get(url).text
    assert text.startswith("Gristmill v")
    assert "WARNING: 1 worker(s) run jobs without a sandbox" in text
