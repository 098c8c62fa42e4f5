"""Celery with a Redis broker: no-op tasks.

Settings: each worker process is ``celery worker --pool solo`` (no prefork child: the
process that reads the broker runs the task), ``worker_prefetch_multiplier=100``,
early acknowledgement (Celery's default), no result backend, gossip, mingle and
heartbeats off. Redis is a private server without persistence (``--save ""``,
``--appendonly no``): unlike the PostgreSQL queues, an acknowledged enqueue is not
on disk. Timing is done by the task itself (one pipelined Redis round trip per job,
which the other systems do not pay).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from _driver import emit, parse_args, summary_latency

HERE = Path(__file__).resolve().parent
_READY_TIMEOUT_S = 120.0


def _workers(redis_url: str, count: int) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, BENCH_REDIS_URL=redis_url, PYTHONPATH=str(HERE))
    celery = Path(sys.executable).with_name("celery")
    return [
        subprocess.Popen(
            [
                str(celery),
                "-A",
                "celery_app",
                "worker",
                "--pool",
                "solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
                "-n",
                f"bench{i}@%h",
                "-Q",
                "bench",
            ],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _count(r: redis.Redis) -> int:
    return int(r.get("bench:done") or 0)


def _wait_done(r: redis.Redis, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _count(r) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{_count(r)} of {count} jobs done in {timeout:g}s")
        time.sleep(0.005)


def _warm(r: redis.Redis, processes: int) -> None:
    """Start-up: wait until every worker has run a task (so none is still booting)."""
    from celery_app import noop

    with noop.app.producer_or_acquire() as producer:
        for _ in range(processes * 20):
            noop.apply_async(producer=producer)
    _wait_done(r, processes * 20, _READY_TIMEOUT_S)
    time.sleep(0.5)
    r.flushdb()


def main() -> None:
    args = parse_args()
    if args.scenario == "probe":
        from importlib.metadata import version

        emit({"version": version("celery")})
        return
    os.environ["BENCH_REDIS_URL"] = args.redis
    sys.path.insert(0, str(HERE))
    from celery_app import noop

    r = redis.Redis.from_url(args.redis)
    r.flushdb()
    settings = {"pool": "solo", "prefetch_multiplier": 100, "broker": "redis (no persistence)"}
    if args.scenario == "drain":
        started = time.perf_counter()
        with noop.app.producer_or_acquire() as producer:
            for _ in range(args.jobs):
                noop.apply_async(producer=producer)
        enqueue_rate = args.jobs / (time.perf_counter() - started)
        procs = _workers(args.redis, args.processes)
        try:
            _wait_done(r, args.jobs, 600)
        finally:
            _stop(procs)
        first = int(r.get("bench:first") or 0)
        end = max(int(v) for v in r.mget(list(r.scan_iter("bench:last:*"))) if v)
        elapsed = (end - first) / 1e9
        emit(
            {
                "jobs": float(args.jobs),
                "elapsed_s": elapsed,
                "jobs_per_s": args.jobs / elapsed,
                "enqueue_jobs_per_s": enqueue_rate,
                "settings": settings,
            }
        )
        return
    procs = _workers(args.redis, args.processes)
    try:
        _warm(r, args.processes)
        if args.scenario == "sustained":
            until = time.monotonic() + args.seconds
            window_end = time.monotonic_ns() + int(args.seconds * 1e9)
            counts = [0] * args.producers

            def lane(index: int) -> None:
                with noop.app.producer_pool.acquire(block=True) as producer:
                    while time.monotonic() < until:
                        noop.apply_async(kwargs={"window_end": window_end}, producer=producer)
                        counts[index] += 1

            threads = [threading.Thread(target=lane, args=(i,)) for i in range(args.producers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(0.5)
            done = int(r.get("bench:done") or 0)
            emit(
                {
                    "enqueued_per_s": sum(counts) / args.seconds,
                    "jobs_per_s": done / args.seconds,
                    "backlog_growth": float(sum(counts) - done),
                    "settings": settings | {"producers": args.producers},
                }
            )
        elif args.scenario == "latency":
            gaps = random.Random(1)
            with noop.app.producer_or_acquire() as producer:
                for _ in range(args.jobs):
                    time.sleep(gaps.uniform(*args.gap_ms) / 1000)
                    noop.apply_async(kwargs={"t0": time.monotonic_ns()}, producer=producer)
            _wait_done(r, args.jobs, 120)
            samples = [int(v) / 1e6 for v in r.lrange("bench:latency", 0, -1)]
            emit(summary_latency(samples) | {"settings": settings})
    finally:
        _stop(procs)
        r.flushdb()


if __name__ == "__main__":
    main()
