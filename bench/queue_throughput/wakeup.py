"""How fast an idle worker notices a new job, and what NOTIFY costs the enqueuers.

Wake-up latency: a worker process runs the worker's loop (claim; if nothing, wait
on ``Wakeup``) while the parent enqueues single jobs at random intervals. A sample
is enqueue call start -> start of the claim call that got the job, on one clock
(``CLOCK_MONOTONIC`` is system-wide on Linux).

NOTIFY cost: 1 or k concurrent enqueuers, one job per transaction, for a fixed time,
with ``Queue(notify=False)``, with ``notify=False`` plus one ``SELECT 1`` in the
transaction (the round trip that the NOTIFY statement adds), and with
``Queue(notify=True)``; a listening connection is open throughout, as when workers run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench._procs import Context, Processes
from bench._stats import CpuMeter, Measurements, percentile
from bench.queue_throughput._jobs import TAG, clear_queue, new_job
from gristmill.common.db import create_pool
from gristmill.common.queue import WAKE_CHANNEL, Queue
from gristmill.common.wakeup import Wakeup

__all__ = ["NotifyPlan", "WakeMode", "WakePlan", "measure_notify_cost", "measure_wakeup"]

#: Fallback poll of the notify mode: the production default of ``Wakeup``.
_NOTIFY_FALLBACK_S = 0.5


@dataclass(frozen=True, slots=True)
class WakeMode:
    mode: str  # "notify" or "poll"
    poll_interval_s: float

    @property
    def label(self) -> str:
        interval = f"{self.poll_interval_s * 1000:g} ms"
        return f"notify (poll fallback {interval})" if self.mode == "notify" else f"poll {interval}"


@dataclass(frozen=True, slots=True)
class WakeResult:
    latencies_ms: list[float]
    #: (start on the monotonic clock in ns, duration in ms) of claims that found nothing
    empty_claims: list[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class WakeListener:
    """The worker's loop, in its own process, until it has claimed ``jobs`` jobs."""

    dsn: str
    wake: WakeMode
    jobs: int
    timeout_s: float

    async def run(self, ctx: Context) -> WakeResult:
        pool = await ctx.pool(self.dsn, 2)
        queue = Queue(pool, notify=False)
        worker = f"bench-wake-{os.getpid()}"
        latencies: list[float] = []
        empty: list[tuple[int, float]] = []
        async with Wakeup(
            self.dsn, [TAG], mode=self.wake.mode, poll_interval_s=self.wake.poll_interval_s
        ) as wakeup:
            if self.wake.mode == "notify":
                # The first wait returns once the listener is connected.
                await wakeup.wait()
            await asyncio.sleep(0.2)
            ctx.ready()
            deadline = time.monotonic() + self.timeout_s
            while len(latencies) < self.jobs and time.monotonic() < deadline:
                claim_start = time.monotonic_ns()
                jobs = await queue.claim(worker, [TAG], 1)
                if not jobs:
                    empty.append((claim_start, (time.monotonic_ns() - claim_start) / 1e6))
                    await wakeup.wait()
                    continue
                for job in jobs:
                    latencies.append((claim_start - int(job.args["t0_ns"])) / 1e6)
                    await queue.complete(job, None)
        return WakeResult(latencies, empty)


@dataclass(frozen=True, slots=True)
class WakePlan:
    rounds: int
    jobs: int
    #: Before the first job: how long the worker is watched idling.
    idle_s: float
    gap_s: tuple[float, float] = (0.02, 0.08)
    modes: tuple[WakeMode, ...] = (
        WakeMode("notify", _NOTIFY_FALLBACK_S),
        WakeMode("poll", 0.05),
        WakeMode("poll", 0.5),
    )


async def measure_wakeup(
    dsn: str, procs: Processes, plan: WakePlan, say: Callable[[str], None]
) -> list[Measurements]:
    points = {
        wake: Measurements(
            {"mode": wake.mode, "poll_interval_ms": wake.poll_interval_s * 1000, "jobs": plan.jobs}
        )
        for wake in plan.modes
    }
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await clear_queue(pool)
        for round_no in range(1, plan.rounds + 1):
            for wake, point in points.items():
                queue = Queue(pool, notify=wake.mode == "notify")
                timeout = plan.jobs * (plan.gap_s[1] + wake.poll_interval_s) + 30
                procs.send(0, WakeListener(dsn, wake, plan.jobs, timeout))
                await procs.wait_ready(0, 60)
                idle_from = time.monotonic_ns()
                await asyncio.sleep(plan.idle_s)
                gaps = random.Random(round_no)  # same arrivals for every mode of a round
                idle_until = 0
                for _ in range(plan.jobs):
                    await asyncio.sleep(gaps.uniform(*plan.gap_s))
                    t0 = time.monotonic_ns()
                    idle_until = idle_until or t0
                    await queue.enqueue([new_job({"t0_ns": t0})])
                result: WakeResult = await procs.result(0, timeout + 30)
                if len(result.latencies_ms) != plan.jobs:
                    raise RuntimeError(
                        f"wake-up {wake.label}: claimed {len(result.latencies_ms)} of "
                        f"{plan.jobs} jobs"
                    )
                p50 = percentile(result.latencies_ms, 50)
                p99 = percentile(result.latencies_ms, 99)
                idle_claims = [c for c in result.empty_claims if idle_from <= c[0] < idle_until]
                point.add(
                    p50_ms=p50,
                    p99_ms=p99,
                    max_ms=max(result.latencies_ms),
                    idle_claims_per_s=len(idle_claims) / ((idle_until - idle_from) / 1e9),
                    empty_claim_p50_ms=percentile([c[1] for c in result.empty_claims], 50),
                )
                say(
                    f"round {round_no} wake-up {wake.label:<28} "
                    f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
                )
    finally:
        await pool.close()
    return list(points.values())


#: (notify, one extra statement per transaction): the second splits NOTIFY's cost into
#: its round trip and the rest.
_NOTIFY_VARIANTS = ((False, False), (False, True), (True, False))


@dataclass(frozen=True, slots=True)
class NotifyPlan:
    rounds: int
    seconds: float
    enqueuers: tuple[int, ...] = (1, 4)


@dataclass(slots=True)
class _Counter:
    value: int = 0

    def on_notify(self, _conn: Any, _pid: int, _channel: str, _payload: object) -> None:
        self.value += 1


async def _enqueue_for(queue: Queue, until: float, *, extra_round_trip: bool) -> int:
    done = 0
    pool = queue.pool
    while time.perf_counter() < until:
        if extra_round_trip:
            # What enqueue does, plus one statement: the round trip NOTIFY adds.
            async with pool.acquire() as conn, conn.transaction():
                await queue.enqueue([new_job()], conn=conn)
                await conn.execute("SELECT 1")
        else:
            await queue.enqueue([new_job()])
        done += 1
    return done


async def measure_notify_cost(
    dsn: str, plan: NotifyPlan, say: Callable[[str], None]
) -> list[Measurements]:
    points = {
        (k, notify, extra): Measurements(
            {"enqueuers": k, "notify": notify, "extra_round_trip": extra, "jobs_per_enqueue": 1}
        )
        for k in plan.enqueuers
        for notify, extra in _NOTIFY_VARIANTS
    }
    counter = _Counter()
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(WAKE_CHANNEL, counter.on_notify)
    meter = CpuMeter()
    try:
        for round_no in range(1, plan.rounds + 1):
            for (k, notify, extra), point in points.items():
                pool = await create_pool(dsn, min_size=k, max_size=k)
                try:
                    await clear_queue(pool)
                    await pool.execute("VACUUM ANALYZE job_queue")
                    queue = Queue(pool, notify=notify)
                    counter.value = 0
                    cpu = time.process_time()
                    meter.start()
                    started = time.perf_counter()
                    until = started + plan.seconds
                    counts = await asyncio.gather(
                        *(_enqueue_for(queue, until, extra_round_trip=extra) for _ in range(k))
                    )
                    elapsed = time.perf_counter() - started
                    busy = meter.stop().busy
                    client_cpu = (time.process_time() - cpu) / elapsed
                finally:
                    await pool.close()
                await asyncio.sleep(0.05)  # let the last notifications arrive
                rate = sum(counts) / elapsed
                point.add(
                    jobs_per_s=rate,
                    client_cpu_cores=client_cpu,
                    machine_cpu_busy=busy,
                    notifications=float(counter.value),
                )
                variant = "+1 round trip" if extra else ""
                say(
                    f"round {round_no} enqueue enqueuers={k} notify={notify!s:<5} "
                    f"{variant:<13} {rate:8.0f} jobs/s"
                )
        await clear_queue(listener)
    finally:
        await listener.close()
    return list(points.values())
