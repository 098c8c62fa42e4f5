"""Wiring of the triggers service: which trigger sources run, with which settings."""

from __future__ import annotations

import asyncio

import asyncpg

from gristmill.common.bus.base import Bus
from gristmill.common.secrets import MasterKeyring
from gristmill.common.settings import Settings
from gristmill.triggers.email import EmailSource
from gristmill.triggers.service import TriggerContext, TriggerSource, TriggersService
from gristmill.triggers.websocket import WebsocketSource

__all__ = ["make_sources", "run_triggers"]


def make_sources(context: TriggerContext) -> list[TriggerSource]:
    """Every trigger source this process serves."""
    sources: list[TriggerSource] = []
    sources.append(_kafka_source(context))
    sources.append(WebsocketSource(context))
    sources.append(EmailSource(context))
    return sources


def _kafka_source(context: TriggerContext) -> TriggerSource:
    from gristmill.triggers.kafka import (
        ConsumerSettings,
        KafkaTriggerSource,
        SourceSettings,
        default_server_id,
    )

    settings = context.settings
    return KafkaTriggerSource(
        context,
        SourceSettings(
            reload_s=settings.kafka_triggers_reload_s,
            consumer=ConsumerSettings(
                server_id=default_server_id(),
                session_timeout_ms=settings.kafka_session_timeout_ms,
                max_backoff_s=settings.kafka_triggers_max_backoff_s,
                check_interval_s=settings.kafka_triggers_reload_s,
            ),
        ),
    )


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
