"""The triggers service: runs every trigger source (Kafka, WebSocket, email) side by side.

Each source is independent: one that crashes is logged and restarted with a capped
back-off while the others keep serving. Every event becomes a run request published
on the bus; a source acknowledges its event (commits an offset, answers ``250``)
only after ``bus.publish`` returned, i.e. once the request is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog

from gristmill.common.bus.base import Bus
from gristmill.common.secrets import MasterKeyring
from gristmill.common.settings import Settings

__all__ = ["TriggerContext", "TriggerSource", "TriggersService"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TriggerContext:
    """What every source may use: the database, the bus and the settings."""

    pool: asyncpg.Pool
    bus: Bus
    settings: Settings
    #: ``None`` when no master key is configured (secret variables unreadable).
    keyring: MasterKeyring | None = None


class TriggerSource(Protocol):
    """One kind of trigger. ``run`` serves all triggers of its kind until ``stop`` is set."""

    kind: str

    async def run(self, stop: asyncio.Event) -> None: ...


class TriggersService:
    """Supervise sources: a crashed source restarts after 0.5 s, doubling up to 30 s."""

    def __init__(self, sources: Sequence[TriggerSource], *, max_backoff_s: float = 30.0) -> None:
        self._sources = list(sources)
        self._max_backoff_s = max_backoff_s

    async def run(self, stop: asyncio.Event) -> None:
        if not self._sources:
            await stop.wait()
            return
        async with asyncio.TaskGroup() as tasks:
            for source in self._sources:
                tasks.create_task(self._supervise(source, stop), name=f"trigger-{source.kind}")

    async def _supervise(self, source: TriggerSource, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                await source.run(stop)
                return
            except Exception:
                _log.exception("trigger source crashed; restarting", kind=source.kind, in_s=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, self._max_backoff_s)
