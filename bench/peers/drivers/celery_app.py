"""The Celery application the Celery driver's workers run (``celery -A celery_app worker``).

Broker: Redis at ``BENCH_REDIS_URL``. No result backend (``ignore_result``): the task
itself records what the benchmark needs in Redis, in one pipelined round trip.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery  # type: ignore[import-untyped]  # Celery ships no types

QUEUE = "bench"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_prefetch_multiplier=100,
    worker_disable_rate_limits=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_client: dict[str, Any] = {}


def _redis() -> redis.Redis:
    if "r" not in _client:
        _client["r"] = redis.Redis.from_url(URL)
    client: redis.Redis = _client["r"]
    return client


@app.task(name="noop", ignore_result=True)  # type: ignore[untyped-decorator]  # untyped Celery
def noop(t0: int = 0, window_end: int = 0) -> None:
    now = time.monotonic_ns()
    pipe = _redis().pipeline(transaction=False)
    pipe.set("bench:first", now, nx=True)
    if t0:
        pipe.rpush("bench:latency", now - t0)
    if not window_end or now <= window_end:
        pipe.incr("bench:done")
    # A solo worker runs its tasks one after the other: its last write is its last job.
    pipe.set(f"bench:last:{os.getpid()}", now)
    pipe.execute()
