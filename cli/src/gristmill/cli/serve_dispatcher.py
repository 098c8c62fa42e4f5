"""Wiring of the dispatcher: queue upkeep settings."""

from __future__ import annotations

import asyncpg

from gristmill.common.queue import Queue
from gristmill.common.settings import Settings
from gristmill.dispatcher.service import Dispatcher, MaintenanceSettings

__all__ = ["make_dispatcher"]


def make_dispatcher(pool: asyncpg.Pool, queue: Queue, settings: Settings) -> Dispatcher:
    return Dispatcher(
        pool,
        queue,
        maintenance=MaintenanceSettings(
            interval_s=settings.maintenance_interval_s,
            zombie_timeout_s=settings.zombie_timeout_s,
            retention_s=settings.retention_s,
        ),
    )
