"""Wiring of the scheduler: its settings from ``GRISTMILL_SCHEDULER_*``."""

from __future__ import annotations

import asyncio

import asyncpg

from gristmill.common.bus.base import Bus
from gristmill.common.settings import Settings
from gristmill.scheduler.service import Scheduler, SchedulerSettings

__all__ = ["make_scheduler", "run_scheduler"]


def make_scheduler(pool: asyncpg.Pool, bus: Bus, settings: Settings) -> Scheduler:
    return Scheduler(
        pool,
        bus,
        settings=SchedulerSettings(
            interval_s=settings.scheduler_interval_s,
            grace_s=settings.scheduler_grace_s,
            batch_size=settings.scheduler_batch_size,
        ),
    )


async def run_scheduler(
    pool: asyncpg.Pool, bus: Bus, settings: Settings, stop: asyncio.Event
) -> None:
    """Fire schedules until ``stop``."""
    await make_scheduler(pool, bus, settings).run(stop)
