"""Gristmill's side of the side-by-side queue scenarios, and the bare asyncpg ceiling.

The drains reuse ``bench.queue_throughput.drain`` (``DrainQueue``: claim a batch,
``Queue.complete_many`` for the batch; ``DrainCeiling``: the bare claim + DELETE loop). The
sustained and latency scenarios run the worker's own loop in a worker process:
claim a batch; when nothing is left, ``Wakeup.wait()`` (LISTEN/NOTIFY, 500 ms poll
fallback, the production defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from bench._procs import Context, Processes
from bench._stats import percentile
from bench.queue_throughput._jobs import TAG, new_job
from bench.queue_throughput.drain import DrainCeiling, DrainQueue, DrainResult
from gristmill.common.db import create_pool
from gristmill.common.queue import Completion, Queue
from gristmill.common.wakeup import Wakeup

__all__ = [
    "CLAIM_BATCH",
    "ENQUEUE_BATCH",
    "ceiling_drain",
    "gristmill_drain",
    "gristmill_latency",
    "gristmill_sustained",
    "reset_workers",
]

#: The worker's claim batch in these scenarios (the queue's batching).
CLAIM_BATCH = 100
#: Jobs per ``Queue.enqueue`` call when loading a backlog (one transaction each).
ENQUEUE_BATCH = 1000
_POOL_SIZE = 10
_TIMEOUT_S = 900.0

_CEILING_TABLE = """
CREATE TABLE IF NOT EXISTS bench_ceiling (
    id      bigint PRIMARY KEY,
    running boolean NOT NULL DEFAULT false,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS bench_ceiling_claim_idx ON bench_ceiling (id) WHERE NOT running;
TRUNCATE bench_ceiling;
"""


@dataclass(frozen=True, slots=True)
class _Reset:
    """Close the pools and connections a worker process keeps between commands."""

    async def run(self, ctx: Context) -> None:
        await ctx.close()


async def reset_workers(procs: Processes) -> None:
    """Before a database is dropped and created again: no cached connection survives."""
    await procs.run_all([_Reset() for _ in range(procs.count)], 60)


@dataclass(frozen=True, slots=True)
class _WorkerLoop:
    """The worker's claim loop with its wake-up, for a window or a number of jobs."""

    dsn: str
    batch: int
    #: Count the jobs claimed within this many seconds after ready, then stop.
    seconds: float = 0.0
    #: Or: stop after this many jobs, recording enqueue -> claim-returned latencies.
    jobs: int = 0

    async def run(self, ctx: Context) -> dict[str, Any]:
        pool = await ctx.pool(self.dsn, _POOL_SIZE)
        queue = Queue(pool, notify=False)
        worker = f"bench-{os.getpid()}"
        count = 0
        latencies: list[float] = []
        async with Wakeup(self.dsn, [TAG], mode="notify") as wakeup:
            await wakeup.wait()  # returns once the listener is connected
            ctx.ready()
            start = time.monotonic()
            window_end = start + self.seconds
            while True:
                now = time.monotonic()
                if self.seconds and now > window_end:
                    break
                if self.jobs and len(latencies) >= self.jobs:
                    break
                jobs = await queue.claim(worker, [TAG], self.batch)
                claimed = time.monotonic_ns()
                if not jobs:
                    if self.seconds:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wakeup.wait(), max(window_end - now, 0.01))
                    else:
                        await wakeup.wait()
                    continue
                if self.jobs:
                    latencies += [(claimed - int(job.args["t0_ns"])) / 1e6 for job in jobs]
                if time.monotonic() <= window_end or not self.seconds:
                    count += len(jobs)
                await queue.complete_many([Completion(job) for job in jobs])
        return {"count": count, "latencies": latencies}


async def _enqueue_backlog(dsn: str, jobs: int) -> float:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        queue = Queue(pool, notify=True)
        batch = [new_job() for _ in range(jobs)]
        started = time.perf_counter()
        for offset in range(0, jobs, ENQUEUE_BATCH):
            await queue.enqueue(batch[offset : offset + ENQUEUE_BATCH])
        return jobs / (time.perf_counter() - started)
    finally:
        await pool.close()


def _drain_figures(results: list[DrainResult], expected: int) -> dict[str, float]:
    jobs = sum(r.jobs for r in results)
    if jobs != expected:
        raise RuntimeError(f"drained {jobs} jobs, expected {expected}")
    elapsed = (max(r.ended_ns for r in results) - min(r.started_ns for r in results)) / 1e9
    return {"jobs": float(jobs), "elapsed_s": elapsed, "jobs_per_s": jobs / elapsed}


async def gristmill_drain(dsn: str, procs: Processes, jobs: int, processes: int) -> dict[str, Any]:
    enqueue_rate = await _enqueue_backlog(dsn, jobs)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await pool.execute("VACUUM ANALYZE job_queue")
    finally:
        await pool.close()
    results = await procs.run_all(
        [DrainQueue(dsn, CLAIM_BATCH) for _ in range(processes)], _TIMEOUT_S
    )
    return _drain_figures(results, jobs) | {
        "enqueue_jobs_per_s": enqueue_rate,
        "settings": {"claim_batch": CLAIM_BATCH, "enqueue_batch": ENQUEUE_BATCH},
    }


async def ceiling_drain(
    dsn: str, procs: Processes, jobs: int, processes: int, batch: int
) -> dict[str, Any]:
    """The bare loop: claim ``batch`` rows (SKIP LOCKED), DELETE them in one statement."""
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await pool.execute(_CEILING_TABLE)
        await pool.execute(
            "INSERT INTO bench_ceiling (id) SELECT g FROM generate_series(1, $1::int) AS g", jobs
        )
        await pool.execute("VACUUM ANALYZE bench_ceiling")
    finally:
        await pool.close()
    results = await procs.run_all(
        [DrainCeiling(dsn, batch, batch > 1) for _ in range(processes)], _TIMEOUT_S
    )
    return _drain_figures(results, jobs) | {
        "settings": {"claim_batch": batch, "complete": "one DELETE per claim"}
    }


async def gristmill_sustained(
    dsn: str, procs: Processes, seconds: float, processes: int, producers: int
) -> dict[str, Any]:
    for index in range(processes):
        procs.send(index, _WorkerLoop(dsn, CLAIM_BATCH, seconds=seconds))
    for index in range(processes):
        await procs.wait_ready(index, 60)
    pool = await create_pool(dsn, min_size=producers, max_size=producers)
    try:
        queue = Queue(pool, notify=True)
        until = time.monotonic() + seconds

        async def lane() -> int:
            done = 0
            while time.monotonic() < until:
                await queue.enqueue([new_job()])
                done += 1
            return done

        enqueued = sum(await asyncio.gather(*(lane() for _ in range(producers))))
    finally:
        await pool.close()
    results = [await procs.result(i, seconds + 120) for i in range(processes)]
    done = sum(r["count"] for r in results)
    return {
        "enqueued_per_s": enqueued / seconds,
        "jobs_per_s": done / seconds,
        "backlog_growth": float(enqueued - done),
        "settings": {"claim_batch": CLAIM_BATCH, "wakeup": "LISTEN/NOTIFY", "producers": producers},
    }


async def gristmill_latency(
    dsn: str, procs: Processes, jobs: int, gap_ms: tuple[float, float]
) -> dict[str, Any]:
    procs.send(0, _WorkerLoop(dsn, 1, jobs=jobs))
    await procs.wait_ready(0, 60)
    await asyncio.sleep(0.5)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        queue = Queue(pool, notify=True)
        gaps = random.Random(1)
        for _ in range(jobs):
            await asyncio.sleep(gaps.uniform(*gap_ms) / 1000)
            await queue.enqueue([new_job({"t0_ns": time.monotonic_ns()})])
    finally:
        await pool.close()
    result = await procs.result(0, 120)
    samples: list[float] = result["latencies"]
    return {
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples),
        "samples": float(len(samples)),
        "settings": {"claim_batch": 1, "wakeup": "LISTEN/NOTIFY"},
    }
