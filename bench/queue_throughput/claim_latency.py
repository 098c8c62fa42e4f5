"""Claim latency: one ``Queue.claim(limit=1)`` at a time on an idle server, by backlog.

Each backlog size gets its own database, filled in one ``INSERT ... SELECT
generate_series``, vacuumed and analysed. A sample is the wall time of one ``claim`` call as
the caller sees it (BEGIN, the claim statement, COMMIT with its WAL flush); the job
is then completed (not timed) and, after the round, as many jobs are queued again,
so that the backlog stays at its size.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench._stats import Measurements, percentile
from bench.queue_throughput._jobs import TAG, bulk_load
from gristmill.common.db import create_pool
from gristmill.common.db.queries import load_queries
from gristmill.common.queue import Queue

__all__ = ["LatencyPlan", "measure_claim_latency"]

_CLAIM_SQL = load_queries("queue.sql")["claim"]
_WORKER = "bench-latency"
#: Taken even past the time budget, so that p50 means something at huge backlogs.
_MIN_SAMPLES = 10


@dataclass(frozen=True, slots=True)
class LatencyPlan:
    rounds: int
    backlogs: tuple[int, ...]
    samples: int
    #: Per round and backlog: stop sampling after this long (big backlogs are slow).
    budget_s: float


async def measure_claim_latency(
    database: Callable[[str], Awaitable[str]],
    plan: LatencyPlan,
    say: Callable[[str], None],
) -> list[Measurements]:
    points: list[Measurements] = []
    dsns: list[str] = []
    for backlog in plan.backlogs:
        dsn = await database(f"bench_latency_{backlog}")
        dsns.append(dsn)
        conn = await create_pool(dsn, min_size=1, max_size=1)
        try:
            started = time.perf_counter()
            await bulk_load(conn, backlog)
            # VACUUM too (it includes ANALYZE), and a checkpoint: otherwise autovacuum and
            # the checkpointer process the load in the middle of the measurements.
            await conn.execute("VACUUM (ANALYZE) jobs")
            await conn.execute("VACUUM (ANALYZE) job_queue")
            await conn.execute("CHECKPOINT")
            load_s = time.perf_counter() - started
            query_plan = [
                row[0] for row in await conn.fetch("EXPLAIN " + _CLAIM_SQL, [TAG], 1, _WORKER)
            ]
        finally:
            await conn.close()
        say(f"claim latency: {backlog} queued rows loaded in {load_s:.1f}s")
        points.append(
            Measurements(
                {"backlog": backlog},
                extra={
                    "load_s": load_s,
                    "claim_uses_claim_index": any("job_queue_claim_idx" in s for s in query_plan),
                    "claim_plan": query_plan,
                },
            )
        )

    for round_no in range(1, plan.rounds + 1):
        for point, dsn in zip(points, dsns, strict=True):
            pool = await create_pool(dsn, min_size=1, max_size=1)
            try:
                queue = Queue(pool, notify=False)
                samples: list[float] = []
                deadline = time.perf_counter() + plan.budget_s
                while len(samples) < plan.samples and (
                    time.perf_counter() < deadline or len(samples) < _MIN_SAMPLES
                ):
                    started = time.perf_counter()
                    jobs = await queue.claim(_WORKER, [TAG], 1)
                    samples.append((time.perf_counter() - started) * 1000)
                    if not jobs:
                        raise RuntimeError("claim latency: the backlog ran dry")
                    await queue.complete(jobs[0], None)
                await bulk_load(pool, len(samples))
            finally:
                await pool.close()
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            point.add(p50_ms=p50, p99_ms=p99, samples=float(len(samples)))
            say(
                f"round {round_no} claim latency backlog={point.params['backlog']:<8} "
                f"p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  ({len(samples)} claims)"
            )
    return points
