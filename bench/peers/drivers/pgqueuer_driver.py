"""pgqueuer: no-op jobs, asyncpg driver, dequeue in batches of 100 (its batching).

Settings: ``QueueManager.run(batch_size=100)``; completions go through pgqueuer's
buffered status log (flushed every ``batch_size`` jobs); LISTEN/NOTIFY wake-up (its
default). Enqueue of a backlog in batches of 1,000 (list arguments to ``enqueue``).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no asyncpg-stubs in the peers venv
from _driver import WorkerGroup, drain_result, emit, parse_args, ready, summary_latency
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Queries, QueueManager
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

BATCH = 100
ENQUEUE_BATCH = 1000
ENTRYPOINT = "noop"


async def _install(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('pgqueuer') IS NOT NULL"):
            await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


async def _worker(pipe: Connection, arg: dict[str, Any]) -> dict[str, Any]:
    conn = await asyncpg.connect(arg["dsn"])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    state: dict[str, Any] = {"count": 0, "first": 0, "latencies": []}
    mode = arg["mode"]
    window_end = 0

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        now = time.monotonic_ns()
        if not state["first"]:
            state["first"] = now
        if mode == "latency":
            assert job.payload is not None
            state["latencies"].append((now - int(job.payload)) / 1e6)
            if len(state["latencies"]) >= arg["jobs"]:
                qm.shutdown.set()
        elif mode == "sustained":
            if now <= window_end:
                state["count"] += 1
        else:
            state["count"] += 1

    await asyncio.to_thread(ready, pipe)
    go = time.monotonic_ns()
    if mode == "drain":
        await qm.run(batch_size=BATCH, mode=QueueExecutionMode.drain)
    else:
        if mode == "sustained":
            window_end = go + int(arg["seconds"] * 1e9)
            asyncio.get_running_loop().call_later(arg["seconds"] + 0.5, qm.shutdown.set)
        await qm.run(batch_size=BATCH, dequeue_timeout=timedelta(seconds=1))
    return {**state, "end": time.monotonic_ns()}


def _worker_main(pipe: Connection, arg: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_worker(pipe, arg))


async def _enqueue_backlog(dsn: str, jobs: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        started = time.perf_counter()
        for offset in range(0, jobs, ENQUEUE_BATCH):
            size = min(ENQUEUE_BATCH, jobs - offset)
            await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def _produce(dsn: str, producers: int, seconds: float) -> int:
    pool = await asyncpg.create_pool(dsn, min_size=producers, max_size=producers)
    try:
        queries = Queries(AsyncpgPoolDriver(pool))
        until = time.monotonic() + seconds

        async def lane() -> int:
            done = 0
            while time.monotonic() < until:
                await queries.enqueue(ENTRYPOINT, None)
                done += 1
            return done

        return sum(await asyncio.gather(*(lane() for _ in range(producers))))
    finally:
        await pool.close()


async def _enqueue_spaced(dsn: str, jobs: int, gap_ms: tuple[float, float]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        gaps = random.Random(1)
        for _ in range(jobs):
            await asyncio.sleep(gaps.uniform(*gap_ms) / 1000)
            await queries.enqueue(ENTRYPOINT, str(time.monotonic_ns()).encode())
    finally:
        await conn.close()


def main() -> None:
    args = parse_args()
    asyncio.run(_install(args.dsn))
    settings = {"batch_size": BATCH, "driver": "asyncpg", "wakeup": "LISTEN/NOTIFY"}
    if args.scenario == "drain":
        group = WorkerGroup(_worker_main, [{"dsn": args.dsn, "mode": "drain"}] * args.processes)
        group.wait_ready()
        enqueue_rate = asyncio.run(_enqueue_backlog(args.dsn, args.jobs))
        group.go()
        results = group.results()
        done = sum(r["count"] for r in results)
        if done != args.jobs:
            raise RuntimeError(f"drained {done} of {args.jobs} jobs")
        first = min(r["first"] for r in results if r["first"])
        emit(
            drain_result(done, first, [r["end"] for r in results])
            | {"enqueue_jobs_per_s": enqueue_rate, "settings": settings}
        )
    elif args.scenario == "sustained":
        arg = {"dsn": args.dsn, "mode": "sustained", "seconds": args.seconds}
        group = WorkerGroup(_worker_main, [arg] * args.processes)
        group.wait_ready()
        group.go()
        enqueued = asyncio.run(_produce(args.dsn, args.producers, args.seconds))
        results = group.results()
        done = sum(r["count"] for r in results)
        emit(
            {
                "enqueued_per_s": enqueued / args.seconds,
                "jobs_per_s": done / args.seconds,
                "backlog_growth": float(enqueued - done),
                "settings": settings | {"producers": args.producers},
            }
        )
    elif args.scenario == "latency":
        arg = {"dsn": args.dsn, "mode": "latency", "jobs": args.jobs}
        group = WorkerGroup(_worker_main, [arg])
        group.wait_ready()
        group.go()
        time.sleep(0.5)  # let the worker reach its first wait (LISTEN set up)
        asyncio.run(_enqueue_spaced(args.dsn, args.jobs, tuple(args.gap_ms)))
        (result,) = group.results()
        emit(summary_latency(result["latencies"]) | {"settings": settings})
    else:
        from importlib.metadata import version

        emit({"version": version("pgqueuer")})


if __name__ == "__main__":
    main()
