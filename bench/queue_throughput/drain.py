"""Throughput: queue no-op jobs, then let worker processes claim and complete them all.

Two paths are measured side by side on the same server:

* the queue itself (``Queue.enqueue`` in batches, then ``Queue.claim`` with a batch
  size and ``Queue.complete_many`` for the batch: one statement, one commit, as a
  worker's ``CompletionBatcher`` records the successes that finish together);
* the physical ceiling: a bare asyncpg loop on a trivial table, claiming with the
  same ``FOR UPDATE SKIP LOCKED`` pattern and completing with ``DELETE``: one row per
  statement (a claimed batch spread over as many connections as a queue worker has),
  or the whole batch in one statement.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from bench._procs import Context, Processes
from bench._stats import CpuMeter, Measurements
from bench.queue_throughput._jobs import TAG, clear_queue, new_job
from gristmill.common.db import create_pool
from gristmill.common.queue import Completion, Queue

__all__ = ["DrainPlan", "DrainResults", "measure_drains"]

_DRAIN_TIMEOUT_S = 600.0
#: Connections per worker process: completions of a claimed batch run concurrently.
_WORKER_POOL_SIZE = 10

_CEILING_TABLE = """
CREATE TABLE IF NOT EXISTS bench_ceiling (
    id      bigint PRIMARY KEY,
    running boolean NOT NULL DEFAULT false,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS bench_ceiling_claim_idx ON bench_ceiling (id) WHERE NOT running;
"""
_CEILING_FILL = """
INSERT INTO bench_ceiling (id) SELECT g FROM generate_series(1, $1::int) AS g
"""
_CEILING_CLAIM = """
UPDATE bench_ceiling SET running = true
WHERE id IN (
    SELECT id FROM bench_ceiling WHERE NOT running ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
_CEILING_COMPLETE_ONE = "DELETE FROM bench_ceiling WHERE id = $1"
_CEILING_COMPLETE_MANY = "DELETE FROM bench_ceiling WHERE id = ANY($1::bigint[])"


@dataclass(frozen=True, slots=True)
class DrainResult:
    jobs: int
    lost: int
    started_ns: int
    ended_ns: int
    cpu_s: float


@dataclass(frozen=True, slots=True)
class DrainQueue:
    """Claim ``batch`` jobs at a time and complete them together, until none is left."""

    dsn: str
    batch: int

    async def run(self, ctx: Context) -> DrainResult:
        pool = await ctx.pool(self.dsn, _WORKER_POOL_SIZE)
        queue = Queue(pool, notify=False)
        worker = f"bench-{os.getpid()}"
        done = lost = 0
        cpu = time.process_time()
        started = time.monotonic_ns()
        while jobs := await queue.claim(worker, [TAG], self.batch):
            outcomes = await queue.complete_many([Completion(job) for job in jobs])
            done += len(jobs)
            lost += outcomes.count(False)
        ended = time.monotonic_ns()
        return DrainResult(done, lost, started, ended, time.process_time() - cpu)


@dataclass(frozen=True, slots=True)
class DrainCeiling:
    """The bare loop: claim ``batch`` rows; delete them one per statement, or all at once.

    Plain connections and prepared statements, no pool: per-row deletes of a batch are
    spread over the same number of connections as the queue's workers have.
    """

    dsn: str
    batch: int
    complete_in_one_statement: bool

    async def run(self, ctx: Context) -> DrainResult:
        # asyncpg prepares each statement once per connection and reuses it.
        conns = await ctx.connections(self.dsn, _WORKER_POOL_SIZE)
        first = conns[0]

        async def delete_each(conn: asyncpg.Connection, ids: list[int]) -> None:
            for job_id in ids:
                await conn.execute(_CEILING_COMPLETE_ONE, job_id)

        done = 0
        cpu = time.process_time()
        started = time.monotonic_ns()
        while ids := [row[0] for row in await first.fetch(_CEILING_CLAIM, self.batch)]:
            if len(ids) == 1:
                await first.execute(_CEILING_COMPLETE_ONE, ids[0])
            elif self.complete_in_one_statement:
                await first.execute(_CEILING_COMPLETE_MANY, ids)
            else:
                n = len(conns)
                await asyncio.gather(*(delete_each(conns[i], ids[i::n]) for i in range(n)))
            done += len(ids)
        ended = time.monotonic_ns()
        return DrainResult(done, 0, started, ended, time.process_time() - cpu)


@dataclass(frozen=True, slots=True)
class DrainPlan:
    rounds: int
    jobs: int
    ceiling_jobs: int
    enqueue_batch: int = 100
    processes: tuple[int, ...] = (1, 2)
    claim_batches: tuple[int, ...] = (1, 10, 100)
    #: (claim batch, complete the batch in one statement)
    ceiling_modes: tuple[tuple[int, bool], ...] = ((1, False), (50, False), (50, True))


@dataclass(frozen=True, slots=True)
class DrainResults:
    queue: list[Measurements]
    ceiling: list[Measurements]


def _record(point: Measurements, results: list[DrainResult], expected: int, busy: float) -> float:
    jobs = sum(r.jobs for r in results)
    if jobs != expected:
        raise RuntimeError(f"{point.params}: drained {jobs} jobs, expected {expected}")
    elapsed = (max(r.ended_ns for r in results) - min(r.started_ns for r in results)) / 1e9
    rate = jobs / elapsed
    point.add(
        jobs_per_s=rate,
        elapsed_s=elapsed,
        lost=float(sum(r.lost for r in results)),
        client_cpu_cores=sum(r.cpu_s for r in results) / elapsed,
        machine_cpu_busy=busy,
    )
    return rate


async def _enqueue(queue: Queue, count: int, batch: int) -> float:
    """Queue ``count`` jobs in transactions of ``batch``; return jobs/s."""
    jobs = [new_job() for _ in range(count)]
    started = time.perf_counter()
    for offset in range(0, count, batch):
        await queue.enqueue(jobs[offset : offset + batch])
    return count / (time.perf_counter() - started)


async def measure_drains(
    dsn: str, procs: Processes, plan: DrainPlan, say: Callable[[str], None]
) -> DrainResults:
    queue_points = {
        (n, b): Measurements({"processes": n, "claim_batch": b, "jobs": plan.jobs})
        for n in plan.processes
        for b in plan.claim_batches
    }
    ceiling_points = {
        (n, b, one): Measurements(
            {
                "processes": n,
                "claim_batch": b,
                "complete_in_one_statement": one,
                "jobs": plan.ceiling_jobs,
            }
        )
        for n in plan.processes
        for b, one in plan.ceiling_modes
    }
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        # As in production: enqueues NOTIFY (nobody listens in this scenario).
        queue = Queue(pool, notify=True)
        await pool.execute(_CEILING_TABLE)
        meter = CpuMeter()
        for round_no in range(1, plan.rounds + 1):
            for (n, batch), point in queue_points.items():
                await clear_queue(pool)
                await pool.execute("VACUUM ANALYZE job_queue")
                enqueue_rate = await _enqueue(queue, plan.jobs, plan.enqueue_batch)
                meter.start()
                results = await procs.run_all(
                    [DrainQueue(dsn, batch) for _ in range(n)], _DRAIN_TIMEOUT_S
                )
                rate = _record(point, results, plan.jobs, meter.stop().busy)
                point.add(enqueue_jobs_per_s=enqueue_rate)
                say(
                    f"round {round_no} queue  procs={n} claim_batch={batch:<3} "
                    f"{rate:8.0f} jobs/s  (enqueue {enqueue_rate:.0f} jobs/s)"
                )
            for (n, batch, one), point in ceiling_points.items():
                await pool.execute("TRUNCATE bench_ceiling")
                await pool.execute(_CEILING_FILL, plan.ceiling_jobs)
                await pool.execute("VACUUM ANALYZE bench_ceiling")
                meter.start()
                results = await procs.run_all(
                    [DrainCeiling(dsn, batch, one) for _ in range(n)], _DRAIN_TIMEOUT_S
                )
                rate = _record(point, results, plan.ceiling_jobs, meter.stop().busy)
                how = "one statement" if one else "per row"
                say(
                    f"round {round_no} ceiling procs={n} claim_batch={batch:<3} "
                    f"complete {how:<13} {rate:8.0f} jobs/s"
                )
        await clear_queue(pool)
        await pool.execute("DROP TABLE bench_ceiling")
    finally:
        await pool.close()
    return DrainResults(list(queue_points.values()), list(ceiling_points.values()))
