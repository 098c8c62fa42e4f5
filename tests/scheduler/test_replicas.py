"""Exactly once across replicas: every tick becomes one job, however many schedulers race
for it, and whichever of them dies mid-way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

import pytest

from gristmill.common.bus.base import Bus
from gristmill.common.db.pool import create_pool
from tests.harness.services import wait_until
from tests.scheduler.conftest import START, System

TICKS = 200


async def _stop_all(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    stop.set()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_three_replicas_fire_each_of_200_ticks_exactly_once(
    system: System, database_url: str
) -> None:
    await system.schedule(catch_up="all", catch_up_max=1000)
    pools = [await create_pool(database_url, min_size=1, max_size=2) for _ in range(3)]
    replicas = [system.scheduler(pool, grace_s=3600) for pool in pools]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(replica.run(stop)) for replica in replicas]
    try:
        for step in range(TICKS):
            system.clock.advance(1)
            await asyncio.sleep(0.004)  # the replicas race for the tick meanwhile
            if step == TICKS // 2:
                tasks[0].cancel()  # one replica dies mid-way, wherever it was

        async def all_fired() -> bool:
            return len(await system.jobs()) >= TICKS

        await wait_until(all_fired, timeout=30, what=f"{TICKS} jobs")
        await asyncio.sleep(0.2)  # anything extra would show up now
    finally:
        await _stop_all(stop, tasks)
        for pool in pools:
            await pool.close()
    jobs = await system.jobs()
    assert [job["scheduled_for"] for job in jobs] == [
        START + timedelta(seconds=n) for n in range(1, TICKS + 1)
    ]
    assert len({job["idempotency_key"] for job in jobs}) == TICKS
    assert jobs[0]["idempotency_key"] == "schedule:main:u/admin/every_second:2024-01-08T12:00:01Z"
    # Replicas share the ticks: about one publish per tick, not one per replica and tick
    # (a survivor publishes again the few ticks the cancelled replica published without
    # committing, if it died between the two).
    assert TICKS <= system.dispatcher.seen <= TICKS + 10
    assert sum(1 for replica in replicas if replica.fired) >= 2, "one replica did everything"
    assert await system.pool.fetchval("SELECT count(*) FROM schedule_fires") == TICKS


class CrashAfterPublish:
    """A bus through which a scheduler "dies" right after its publish returned, before
    its transaction commits (the request is durable; the schedule did not move on)."""

    def __init__(self, inner: Bus, crashes: int) -> None:
        self._inner = inner
        self.crashes = crashes

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        await self.publish_many(topic, [(key, value)])

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, bytes]]) -> None:
        await self._inner.publish_many(topic, items)
        if self.crashes > 0:
            self.crashes -= 1
            raise RuntimeError("the scheduler died after publishing")

    async def consume(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


async def test_a_tick_published_again_after_a_crash_makes_no_second_job(system: System) -> None:
    schedule = await system.schedule()
    crashing = system.scheduler(bus=CrashAfterPublish(system.bus, crashes=1))
    survivor = system.scheduler()
    system.clock.advance(3)
    with pytest.raises(RuntimeError, match="died after publishing"):
        await crashing.run_once()
    assert len(await system.jobs()) == 3  # durable before the crash...
    row = await system.pool.fetchrow("SELECT next_fire_at, last_fired_at FROM schedules")
    assert row["next_fire_at"] == schedule.next_fire_at  # ...but not recorded as fired
    assert row["last_fired_at"] is None

    report = await survivor.run_once()
    assert report.fired == 3  # the same three ticks, published again
    assert system.dispatcher.seen == 6
    jobs = await system.jobs()
    assert [job["scheduled_for"] for job in jobs] == [
        START + timedelta(seconds=n) for n in (1, 2, 3)
    ]
    row = await system.pool.fetchrow("SELECT next_fire_at, last_fired_at FROM schedules")
    assert row["next_fire_at"] == START + timedelta(seconds=4)
    assert row["last_fired_at"] == START + timedelta(seconds=3)
    assert (await survivor.run_once()).fired == 0


async def test_replicas_holding_no_lock_skip_a_claimed_schedule(
    system: System, database_url: str
) -> None:
    """While one replica holds a schedule (between its claim and its commit), another
    neither waits for it nor fires it."""
    await system.schedule()
    system.clock.advance(1)
    other_pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with system.pool.acquire() as conn, conn.transaction():
            held = await conn.fetch("SELECT path FROM schedules FOR UPDATE")
            assert held
            report = await asyncio.wait_for(system.scheduler(other_pool).run_once(), timeout=5)
            assert report.fired == 0
        assert (await system.scheduler(other_pool).run_once()).fired == 1
    finally:
        await other_pool.close()
