"""A worker SIGKILLed mid-job: heartbeats stop, the job is recovered and finishes elsewhere."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from gristmill.common.queue import NewJob, Queue
from gristmill.dispatcher.service import Dispatcher, MaintenanceSettings
from tests.harness.services import GristmillProcess, wait_until

SLOW_JOB = """
import time
def main():
    print("attempt started", flush=True)
    time.sleep(2)
    return "finished"
"""


def worker_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_HEARTBEAT_INTERVAL_S": "0.2",
        "GRISTMILL_WORKERS": "1",
        "GRISTMILL_DATA_DIR": str(tmp_path / "worker-data"),
    }


async def test_job_of_a_killed_worker_finishes_on_another(
    spawn: Callable[..., GristmillProcess], database_url: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    queue = Queue(pg_pool)
    job_id = uuid.uuid4()
    await queue.enqueue(
        [
            NewJob(
                id=job_id,
                workspace="main",
                kind="preview",
                tag="python3",
                created_by="tester",
                trigger_kind="api",
                language="python3",
                code=SLOW_JOB,
            )
        ]
    )
    first = spawn(["worker"], worker_env(database_url, tmp_path), name="worker-a")

    async def running_on_first() -> str | None:
        first.assert_alive()
        worker: str | None = await pg_pool.fetchval(
            "SELECT worker FROM job_queue WHERE id = $1 AND running", job_id
        )
        logs = "".join(chunk for _, chunk in await queue.read_logs(job_id))
        return worker if worker and "attempt started" in logs else None

    first_worker = await wait_until(running_on_first, timeout=30, what="the job to start")
    first.kill()

    dispatcher = Dispatcher(pg_pool, queue, maintenance=MaintenanceSettings(zombie_timeout_s=1.0))

    async def recovered() -> bool:
        counts = await dispatcher.maintain_once(purge=False)
        return counts["zombies"] == 1

    await wait_until(recovered, timeout=15, interval=0.2, what="zombie recovery")
    spawn(["worker"], worker_env(database_url, tmp_path), name="worker-b")

    async def done() -> asyncpg.Record | None:
        return await pg_pool.fetchrow("SELECT * FROM jobs_completed WHERE id = $1", job_id)

    row = await wait_until(done, timeout=30, what="the job to complete on the second worker")
    assert row["status"] == "success", row["error"]
    assert row["result"] == "finished"
    assert row["attempt"] == 2
    assert row["worker"] != first_worker
    logs = "".join(chunk for _, chunk in await queue.read_logs(job_id))
    assert f"worker {first_worker} stopped responding" in logs
    assert logs.count("attempt started") == 2  # at-least-once: the lost attempt, then this one
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs_completed") == 1
