"""More crashes: a worker SIGKILLed inside a parallel loop, and during a retry back-off."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gristmill.common.flows.engine import on_child_finished
from gristmill.common.queue import Queue
from gristmill.dispatcher.service import Dispatcher, MaintenanceSettings
from tests.flows.harness import Completed, FlowRunner, py
from tests.harness.services import GristmillProcess, wait_until


def _worker_env(database_url: str, tmp_path: Path, loops: int) -> dict[str, str]:
    return {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_HEARTBEAT_INTERVAL_S": "0.2",
        "GRISTMILL_WORKERS": str(loops),
        "GRISTMILL_DATA_DIR": str(tmp_path / "worker-data"),
        "GRISTMILL_MIGRATE_ON_START": "false",
    }


async def _finish(
    runner: FlowRunner, pool: asyncpg.Pool, job_id: uuid.UUID, timeout: float
) -> tuple[Completed, int]:
    """Wait for the flow, running zombie recovery meanwhile; answer it and the recoveries."""
    queue = Queue(pool, on_child_finished=on_child_finished)
    dispatcher = Dispatcher(pool, queue, maintenance=MaintenanceSettings(zombie_timeout_s=1.0))
    recovered = 0
    deadline = time.monotonic() + timeout
    while True:
        recovered += (await dispatcher.maintain_once(purge=False))["zombies"]
        row = await pool.fetchrow("SELECT * FROM jobs_completed WHERE id = $1", job_id)
        if row is not None:
            return Completed(row), recovered
        if time.monotonic() > deadline:
            raise AssertionError(f"flow {job_id} did not complete in {timeout}s")
        await asyncio.sleep(0.2)


SQUARE = "import time\ndef main(v):\n    time.sleep(0.4)\n    return v * v\n"


@pytest.mark.slow
async def test_worker_killed_inside_a_parallel_loop(
    spawn: Callable[..., GristmillProcess],
    runner: FlowRunner,
    database_url: str,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    value = {
        "modules": [
            {
                "id": "loop",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "[...Array(20).keys()]"},
                    "skip_failures": False,
                    "parallel": True,
                    "parallelism": {"type": "static", "value": 4},
                    "modules": [py("sq", SQUARE, v="flow_input.iter.value")],
                },
            }
        ]
    }
    job_id = await runner.submit(value)
    env = _worker_env(database_url, tmp_path, loops=4)
    first = spawn(["worker"], env, name="worker-a")

    async def mid_loop() -> bool:
        first.assert_alive()
        row = await pg_pool.fetchrow(
            "SELECT count(c.id) AS done, count(q.id) FILTER (WHERE q.running) AS running "
            "FROM jobs j LEFT JOIN jobs_completed c ON c.id = j.id "
            "LEFT JOIN job_queue q ON q.id = j.id "
            "WHERE j.root_job = $1 AND j.flow_step = 'sq'",
            job_id,
        )
        assert row is not None
        return bool(row["done"] >= 4 and row["running"] >= 1)

    await wait_until(mid_loop, timeout=60, interval=0.02, what="the loop to be half-way")
    first.kill()
    spawn(["worker"], env, name="worker-b")
    done, recovered = await _finish(runner, pg_pool, job_id, timeout=120)
    assert done.status == "success", done
    assert done.result == [i * i for i in range(20)]
    assert recovered >= 1  # the kill did hit running steps
    # One iteration job per item and one step job per iteration, each completed once.
    iterations = await pg_pool.fetch(
        "SELECT (j.meta->>'index')::int AS index, c.status FROM jobs j "
        "JOIN jobs_completed c ON c.id = j.id WHERE j.parent_job = $1 AND j.flow_step = 'loop'",
        job_id,
    )
    assert sorted(r["index"] for r in iterations) == list(range(20))
    assert {r["status"] for r in iterations} == {"success"}
    steps = await pg_pool.fetch(
        "SELECT j.id, c.status, c.attempt FROM jobs j JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.root_job = $1 AND j.flow_step = 'sq'",
        job_id,
    )
    assert len(steps) == 20
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs WHERE flow_step = 'sq'") == 20
    assert {r["status"] for r in steps} == {"success"}
    assert any(r["attempt"] == 2 for r in steps)  # recovered steps ran again
    state: dict[str, Any] = await runner.state(job_id)
    loop = state["modules"][0]
    assert (loop["count"], loop["started"], loop["finished"]) == (20, 20, 20)
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 0


# Fails on the first connection's answer, succeeds on the next: the test counts the runs.
FLAKY = (
    "import socket\n"
    "def main(port):\n"
    "    with socket.create_connection(('127.0.0.1', port)) as s:\n"
    "        verdict = s.recv(16)\n"
    "    if verdict != b'ok':\n"
    "        raise RuntimeError('first run fails')\n"
    "    return 'done'\n"
)


@pytest.mark.slow
async def test_worker_killed_during_a_retry_back_off(
    spawn: Callable[..., GristmillProcess],
    runner: FlowRunner,
    database_url: str,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    runs = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal runs
        runs += 1
        writer.write(b"fail" if runs == 1 else b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    step = py("flaky", FLAKY, port="flow_input.port")
    step["retry"] = {"constant": {"attempts": 1, "seconds": 2}}
    value = {"modules": [step, py("after", "def main(x):\n    return [x, 1]\n", x="results.flaky")]}
    try:
        job_id = await runner.submit(value, {"port": port})
        env = _worker_env(database_url, tmp_path, loops=1)
        first = spawn(["worker"], env, name="worker-a")

        async def retry_scheduled() -> bool:
            first.assert_alive()
            waiting: bool = await pg_pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM job_queue q JOIN jobs j ON j.id = q.id "
                "WHERE j.parent_job = $1 AND j.flow_step = 'flaky' AND NOT q.running "
                "AND q.scheduled_for > now())",
                job_id,
            )
            return waiting

        await wait_until(retry_scheduled, timeout=60, interval=0.02, what="the retry")
        first.kill()
        assert runs == 1
        spawn(["worker"], env, name="worker-b")
        done, _ = await _finish(runner, pg_pool, job_id, timeout=60)
    finally:
        server.close()
        await server.wait_closed()
    assert done.status == "success", done
    assert done.result == ["done", 1]
    assert runs == 2  # the step ran exactly twice: once failing, once after the back-off
    jobs = await pg_pool.fetch(
        "SELECT c.status FROM jobs j JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.parent_job = $1 AND j.flow_step = 'flaky' ORDER BY c.completed_at",
        job_id,
    )
    assert [r["status"] for r in jobs] == ["failure", "success"]
    state: dict[str, Any] = await runner.state(job_id)
    assert [m["type"] for m in state["modules"]] == ["Success", "Success"]
    assert len(state["modules"][0]["failed_retries"]) == 1
