"""procrastinate: no-op async tasks, psycopg 3 connector (procrastinate 3 has no asyncpg one).

Settings: one worker per process with ``concurrency=10`` (jobs fetched and run
concurrently), LISTEN/NOTIFY wake-up (its default) , a connection pool of 12;
finished jobs kept (its default ``delete_jobs="never"``: no extra delete). Backlogs are
deferred with ``batch_defer_async`` in batches of 1,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from multiprocessing.connection import Connection
from typing import Any

import procrastinate
from _driver import WorkerGroup, drain_result, emit, parse_args, ready, summary_latency

CONCURRENCY = 10
POOL = CONCURRENCY + 2
ENQUEUE_BATCH = 1000
QUEUE = "bench"


def _app(dsn: str, state: dict[str, Any] | None = None, pool: int = POOL) -> procrastinate.App:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=pool)
    )

    @app.task(name="noop", queue=QUEUE)
    async def noop(t0: int = 0) -> None:
        if state is not None:
            state["on_job"](t0)

    return app


async def _install(dsn: str) -> None:
    app = _app(dsn, pool=1)
    async with app.open_async():
        exists = await app.connector.execute_query_one_async(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS e"
        )
        if not exists["e"]:
            await app.schema_manager.apply_schema_async()


async def _worker(pipe: Connection, arg: dict[str, Any]) -> dict[str, Any]:
    mode = arg["mode"]
    done = asyncio.Event()
    result: dict[str, Any] = {"count": 0, "first": 0, "latencies": []}
    window = {"end": 0}

    def on_job(t0: int) -> None:
        now = time.monotonic_ns()
        if not result["first"]:
            result["first"] = now
        if mode == "latency":
            result["latencies"].append((now - t0) / 1e6)
            if len(result["latencies"]) >= arg["jobs"]:
                done.set()
        elif mode != "sustained" or now <= window["end"]:
            result["count"] += 1

    app = _app(arg["dsn"], {"on_job": on_job})
    async with app.open_async():
        await asyncio.to_thread(ready, pipe)
        go = time.monotonic_ns()
        options: dict[str, Any] = {
            "queues": [QUEUE],
            "concurrency": CONCURRENCY,
            "install_signal_handlers": False,
        }
        if mode == "drain":
            await app.run_worker_async(wait=False, **options)
        else:
            worker = asyncio.create_task(app.run_worker_async(wait=True, **options))
            if mode == "sustained":
                window["end"] = go + int(arg["seconds"] * 1e9)
                await asyncio.sleep(arg["seconds"] + 0.5)
            else:
                await done.wait()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    return {**result, "end": time.monotonic_ns()}


def _worker_main(pipe: Connection, arg: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_worker(pipe, arg))


async def _enqueue_backlog(dsn: str, jobs: int) -> float:
    app = _app(dsn, pool=1)
    async with app.open_async():
        task = app.tasks["noop"]
        started = time.perf_counter()
        for offset in range(0, jobs, ENQUEUE_BATCH):
            size = min(ENQUEUE_BATCH, jobs - offset)
            await task.batch_defer_async(*([{}] * size))
        return jobs / (time.perf_counter() - started)


async def _produce(dsn: str, producers: int, seconds: float) -> int:
    app = _app(dsn, pool=producers)
    async with app.open_async():
        task = app.tasks["noop"]
        until = time.monotonic() + seconds

        async def lane() -> int:
            n = 0
            while time.monotonic() < until:
                await task.defer_async()
                n += 1
            return n

        return sum(await asyncio.gather(*(lane() for _ in range(producers))))


async def _enqueue_spaced(dsn: str, jobs: int, gap_ms: tuple[float, float]) -> None:
    app = _app(dsn, pool=1)
    async with app.open_async():
        task = app.tasks["noop"]
        gaps = random.Random(1)
        for _ in range(jobs):
            await asyncio.sleep(gaps.uniform(*gap_ms) / 1000)
            await task.defer_async(t0=time.monotonic_ns())


def main() -> None:
    args = parse_args()
    if args.scenario == "probe":
        from importlib.metadata import version

        emit({"version": version("procrastinate")})
        return
    asyncio.run(_install(args.dsn))
    settings = {"connector": "psycopg3", "concurrency": CONCURRENCY, "wakeup": "LISTEN/NOTIFY"}
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
        group = WorkerGroup(_worker_main, [{"dsn": args.dsn, "mode": "latency", "jobs": args.jobs}])
        group.wait_ready()
        group.go()
        time.sleep(0.5)
        asyncio.run(_enqueue_spaced(args.dsn, args.jobs, tuple(args.gap_ms)))
        (result,) = group.results()
        emit(summary_latency(result["latencies"]) | {"settings": settings})


if __name__ == "__main__":
    main()
