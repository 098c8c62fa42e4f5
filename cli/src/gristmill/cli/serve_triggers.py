"""Wiring of the triggers service: which trigger sources run, with which settings."""

from __future__ import annotations

import asyncio

import asyncpg

from gristmill.common.bus.base import Bus
from gristmill.common.secrets import MasterKeyring
from gristmill.common.settings import Settings
from gristmill.triggers.service import TriggerContext, TriggerSource, TriggersService

__all__ = ["make_sources", "run_triggers"]


def make_sources(context: TriggerContext) -> list[TriggerSource]:
    """Every trigger source this process serves."""
    sources: list[TriggerSource] = []
    return sources


async def run_triggers(
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    stop: asyncio.Event,
    *,
    keyring: MasterKeyring | None = None,
) -> None:
    """Serve every trigger source until ``stop``."""
    context = TriggerContext(pool=pool, bus=bus, settings=settings, keyring=keyring)
    await TriggersService(make_sources(context)).run(stop)
