"""Flows under contention and crashes: racing workers, a worker SIGKILLed mid-flow."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from gristmill.common.flows.engine import on_child_finished
from gristmill.common.queue import Queue
from gristmill.common.wakeup import Wakeup
from gristmill.dispatcher.service import Dispatcher, MaintenanceSettings
from gristmill.worker.service import Worker
from tests.flows.harness import FlowRunner, py, sh
from tests.harness.services import GristmillProcess, wait_until


@pytest.mark.slow
async def test_three_workers_race_on_a_parallel_loop_of_200(runner: FlowRunner) -> None:
    value = {
        "modules": [
            {
                "id": "loop",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "[...Array(200).keys()]"},
                    "skip_failures": False,
                    "parallel": True,
                    "parallelism": {"type": "static", "value": 24},
                    "modules": [sh("sq", "echo $(( $1 * $1 ))", v="flow_input.iter.value")],
                },
            },
            py("total", "def main(xs):\n    return [len(xs), sum(xs)]\n", xs="results.loop"),
        ]
    }
    job_id = await runner.submit(value)
    stop = asyncio.Event()
    settings = msgspec.structs.replace(runner.settings, concurrency=2)
    async with Wakeup(runner.database_url, settings.tags, poll_interval_s=0.1) as wakeup:
        workers = [Worker(runner.pool, runner.queue, wakeup, settings) for _ in range(3)]
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        try:
            done = await runner.wait(job_id, timeout=150, tasks=tasks)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    assert done.status == "success", done
    assert done.result == [200, sum(i * i for i in range(200))]
    # Every worker took part.
    assert all(w.jobs_done > 0 for w in workers), [w.jobs_done for w in workers]
    # Exactly one iteration job per item, one step job per iteration, each ended once.
    iterations = await runner.pool.fetch(
        "SELECT j.id, (j.meta->>'index')::int AS index, c.status FROM jobs j "
        "JOIN jobs_completed c ON c.id = j.id WHERE j.parent_job = $1 AND j.flow_step = 'loop'",
        job_id,
    )
    assert sorted(r["index"] for r in iterations) == list(range(200))
    assert {r["status"] for r in iterations} == {"success"}
    steps = await runner.pool.fetchval(
        "SELECT count(*) FROM jobs j JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.root_job = $1 AND j.flow_step = 'sq'",
        job_id,
    )
    assert steps == 200
    assert await runner.pool.fetchval("SELECT count(*) FROM jobs WHERE flow_step = 'sq'") == 200
    state = await runner.state(job_id)
    loop = state["modules"][0]
    assert (loop["count"], loop["started"], loop["finished"]) == (200, 200, 200)
    assert await runner.pool.fetchval("SELECT count(*) FROM job_queue") == 0


STEP = "import time\ndef main(n):\n    if n == 10:\n        time.sleep(1.5)\n    return n + 1\n"


@pytest.mark.slow
async def test_worker_killed_mid_flow_finishes_with_the_right_result(
    spawn: Callable[..., GristmillProcess],
    runner: FlowRunner,
    database_url: str,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    steps = [
        py(f"s{i}", STEP, n="flow_input.start" if i == 0 else "previous_result") for i in range(20)
    ]
    job_id = await runner.submit({"modules": steps}, {"start": 0})
    env = {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_HEARTBEAT_INTERVAL_S": "0.2",
        "GRISTMILL_WORKERS": "1",
        "GRISTMILL_DATA_DIR": str(tmp_path / "worker-data"),
        "GRISTMILL_MIGRATE_ON_START": "false",
    }
    first = spawn(["worker"], env, name="worker-a")

    async def at_step_ten() -> bool:
        first.assert_alive()
        running: bool = await pg_pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM job_queue q JOIN jobs j ON j.id = q.id "
            "WHERE j.flow_step = 's10' AND q.running AND j.parent_job = $1)",
            job_id,
        )
        return running

    await wait_until(at_step_ten, timeout=60, what="the flow to reach step 10")
    first.kill()
    queue = Queue(pg_pool, on_child_finished=on_child_finished)
    dispatcher = Dispatcher(pg_pool, queue, maintenance=MaintenanceSettings(zombie_timeout_s=1.0))

    async def recovered() -> bool:
        return (await dispatcher.maintain_once(purge=False))["zombies"] == 1

    await wait_until(recovered, timeout=20, interval=0.2, what="zombie recovery of step 10")
    spawn(["worker"], env, name="worker-b")
    done = await runner.wait(job_id, timeout=90)
    assert done.status == "success", done
    assert done.result == 20
    # Step 10 ran twice (at-least-once), every other step once; the flow advanced once
    # per step.
    counts = await pg_pool.fetch(
        "SELECT j.flow_step, count(*) AS jobs, max(c.attempt) AS attempts FROM jobs j "
        "JOIN jobs_completed c ON c.id = j.id WHERE j.parent_job = $1 GROUP BY 1",
        job_id,
    )
    by_step = {r["flow_step"]: (r["jobs"], r["attempts"]) for r in counts}
    assert len(by_step) == 20
    assert by_step["s10"] == (1, 2)
    assert all(v == (1, 1) for k, v in by_step.items() if k != "s10"), by_step
    state: dict[str, Any] = await runner.state(job_id)
    assert [m["type"] for m in state["modules"]] == ["Success"] * 20
    assert isinstance(job_id, uuid.UUID)
