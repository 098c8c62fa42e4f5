"""Run flows against a real Postgres with in-process workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gristmill.common.contracts.runs import FlowPath, FlowPreview, RunRequest, Trigger, TriggerKind
from gristmill.common.flows.engine import on_child_finished
from gristmill.common.queue import Queue
from gristmill.common.runs import resolve
from gristmill.common.wakeup import Wakeup
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.service import Worker, WorkerSettings

__all__ = ["Completed", "FlowRunner", "py", "runner", "sh"]

WORKSPACE = "main"


def py(id_: str, code: str, **inputs: str | dict[str, Any]) -> dict[str, Any]:
    """A python3 step; string inputs are JavaScript, dicts are input transforms."""
    return _step(id_, "python3", code, inputs)


def sh(id_: str, code: str, **inputs: str | dict[str, Any]) -> dict[str, Any]:
    return _step(id_, "bash", code, inputs)


def _step(id_: str, language: str, code: str, inputs: dict[str, Any]) -> dict[str, Any]:
    transforms = {
        name: value if isinstance(value, dict) else {"type": "javascript", "expr": value}
        for name, value in inputs.items()
    }
    return {
        "id": id_,
        "value": {
            "type": "rawscript",
            "language": language,
            "content": code,
            "input_transforms": transforms,
        },
    }


class Completed:
    def __init__(self, row: asyncpg.Record) -> None:
        self.status: str = row["status"]
        self.result: Any = row["result"]
        self.error: dict[str, Any] | None = row["error"]
        self.duration_ms: int | None = row["duration_ms"]

    def __repr__(self) -> str:
        return f"Completed({self.status}, result={self.result!r}, error={self.error!r})"


class FlowRunner:
    def __init__(self, pool: asyncpg.Pool, database_url: str, data_dir: Path) -> None:
        self.pool = pool
        self.database_url = database_url
        self.queue = Queue(pool, on_child_finished=on_child_finished)
        self.settings = WorkerSettings(
            tags=("python3", "bash", "flow"),
            jobs_dir=data_dir / "jobs",
            heartbeat_interval_s=0.2,
            executor=ExecutorSettings(kill_grace_s=0.5),
        )

    async def submit(
        self,
        value: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        *,
        path: str | None = None,
        trigger: TriggerKind = TriggerKind.API,
    ) -> uuid.UUID:
        runnable = FlowPath(path=path) if value is None else FlowPreview(value=value)
        request = RunRequest(
            job_id=uuid.uuid4(),
            workspace=WORKSPACE,
            runnable=runnable,  # type: ignore[arg-type]
            requested_by="tester",
            trigger=Trigger(kind=trigger),
            args=args or {},
        )
        async with self.pool.acquire() as conn, conn.transaction():
            job = await resolve(conn, request)
            await self.queue.enqueue([job], conn=conn)
        return request.job_id

    async def run(
        self,
        value: dict[str, Any] | None = None,
        args: dict[str, Any] | None = None,
        *,
        path: str | None = None,
        workers: int = 1,
        timeout: float = 60,
    ) -> Completed:
        job_id = await self.submit(value, args, path=path)
        return await self.drain(job_id, workers=workers, timeout=timeout)

    async def drain(self, job_id: uuid.UUID, *, workers: int = 1, timeout: float = 60) -> Completed:
        """Run ``workers`` workers until the job completes."""
        stop = asyncio.Event()
        async with Wakeup(self.database_url, self.settings.tags, poll_interval_s=0.1) as wakeup:
            tasks = [
                asyncio.create_task(Worker(self.pool, self.queue, wakeup, self.settings).run(stop))
                for _ in range(workers)
            ]
            try:
                return await self.wait(job_id, timeout=timeout, tasks=tasks)
            finally:
                stop.set()
                await asyncio.gather(*tasks)

    async def wait(
        self,
        job_id: uuid.UUID,
        *,
        timeout: float = 60,
        tasks: list[asyncio.Task[None]] | None = None,
    ) -> Completed:
        deadline = time.monotonic() + timeout
        while True:
            row = await self.pool.fetchrow("SELECT * FROM jobs_completed WHERE id = $1", job_id)
            if row is not None:
                return Completed(row)
            for task in tasks or []:
                if task.done():
                    task.result()
            if time.monotonic() > deadline:
                raise AssertionError(f"flow {job_id} did not complete in {timeout}s")
            await asyncio.sleep(0.02)

    async def children(self, job_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT j.id, j.flow_step, j.kind, j.meta, c.status, c.result FROM jobs j "
            "LEFT JOIN jobs_completed c ON c.id = j.id WHERE j.parent_job = $1 "
            "ORDER BY j.created_at, j.id",
            job_id,
        )

    async def state(self, job_id: uuid.UUID) -> dict[str, Any]:
        state: dict[str, Any] = await self.pool.fetchval(
            "SELECT state FROM flow_status WHERE id = $1", job_id
        )
        return state


@pytest.fixture
async def runner(pg_pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> FlowRunner:
    flows = FlowRunner(pg_pool, database_url, tmp_path / "data")
    with contextlib.suppress(Exception):
        await pg_pool.execute("INSERT INTO workspaces (id, name) VALUES ('main', 'main')")
    return flows
