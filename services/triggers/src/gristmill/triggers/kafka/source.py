"""The Kafka trigger source: one consumer per enabled trigger, kept in step with the table.

The source reads every enabled trigger (with its connection resource's stored value)
and reconciles the running consumers with them: a new or re-enabled trigger gets a
consumer, a deleted or disabled one loses it, a changed one (connection, topics,
group, what it runs) is restarted. It reads again when the table notifies
``gristmill_kafka_triggers`` (a table trigger does, on every change of what a
consumer uses) and at least every ``reload_s`` (a lost notification, a change of a
resource's value, a consumer that ended).

Every replica of the triggers service runs a consumer for every enabled trigger; the
consumers of one trigger share its consumer group, so Kafka spreads the partitions
over the replicas and moves them when one goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass

import asyncpg
import msgspec
import structlog
from structlog.typing import FilteringBoundLogger

from gristmill.common.db.queries import load_queries
from gristmill.common.kafka_triggers import CHANGES_CHANNEL
from gristmill.triggers.kafka.consumer import ConsumerSettings, TriggerConsumer, TriggerSpec
from gristmill.triggers.service import TriggerContext

__all__ = ["KafkaTriggerSource", "SourceSettings", "default_server_id"]

_log: FilteringBoundLogger = structlog.get_logger(__name__)
_Q = load_queries("kafka_triggers.sql")
_json = msgspec.json.Encoder()
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def default_server_id() -> str:
    """``<host>-<pid>``: which process serves a trigger, as its ``server_id`` says."""
    return f"{socket.gethostname()}-{os.getpid()}"


class SourceSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: Longest time between two reads of the triggers (notifications come sooner).
    reload_s: float = 5.0
    #: A consumer asked to stop that is still busy after this long is cancelled.
    stop_timeout_s: float = 30.0
    consumer: ConsumerSettings = msgspec.field(
        default_factory=lambda: ConsumerSettings(server_id=default_server_id())
    )


@dataclass(slots=True)
class _Running:
    consumer: TriggerConsumer
    stop: asyncio.Event
    task: asyncio.Task[None]


class KafkaTriggerSource:
    """The ``kafka`` trigger source (see the module)."""

    kind = "kafka"

    def __init__(self, context: TriggerContext, settings: SourceSettings | None = None) -> None:
        self._context = context
        self._settings = settings or SourceSettings()
        self._changed = asyncio.Event()
        self._running: dict[tuple[str, str], _Running] = {}

    @property
    def consumers(self) -> dict[tuple[str, str], TriggerConsumer]:
        """The running consumers by ``(workspace, path)``."""
        return {key: running.consumer for key, running in self._running.items()}

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop), name="kafka-triggers-listen")
        try:
            while not stop.is_set():
                self._changed.clear()
                try:
                    specs = await self._load()
                except _DB_ERRORS as exc:
                    _log.warning("kafka_triggers.load_failed", error=str(exc))
                else:
                    await self._reconcile(specs)
                waiters = [
                    asyncio.ensure_future(self._changed.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                try:
                    await asyncio.wait(
                        waiters, timeout=self._settings.reload_s, return_when="FIRST_COMPLETED"
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._stop_all(list(self._running))

    async def _load(self) -> dict[tuple[str, str], TriggerSpec]:
        rows = await self._context.pool.fetch(_Q["enabled_with_resources"])
        return {
            (row["workspace_id"], row["path"]): TriggerSpec(
                workspace=row["workspace_id"],
                path=row["path"],
                resource_path=row["kafka_resource_path"],
                resource_json=_json.encode(row["resource_value"])
                if row["resource_found"]
                else None,
                group_id=row["group_id"],
                topics=tuple(row["topics"]),
                script_path=row["script_path"],
                is_flow=row["is_flow"],
                auto_offset_reset=row["auto_offset_reset"],
                edited_by=row["edited_by"],
                edited_at=row["edited_at"],
            )
            for row in rows
        }

    async def _reconcile(self, specs: dict[tuple[str, str], TriggerSpec]) -> None:
        stale = [
            key
            for key, running in self._running.items()
            if specs.get(key) != running.consumer.spec or running.task.done()
        ]
        if stale:
            await self._stop_all(stale)
        for key, spec in specs.items():
            if key not in self._running:
                self._start(key, spec)

    def _start(self, key: tuple[str, str], spec: TriggerSpec) -> None:
        consumer = TriggerConsumer(spec, self._context, self._settings.consumer)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop), name=f"kafka-trigger-{spec.path}")
        self._running[key] = _Running(consumer=consumer, stop=stop, task=task)
        _log.info("kafka_trigger.started", workspace=spec.workspace, trigger=spec.path)

    async def _stop_all(self, keys: list[tuple[str, str]]) -> None:
        """Stop these consumers together: each finishes (and commits) its batch in hand."""
        stopping = [self._running.pop(key) for key in keys if key in self._running]
        for running in stopping:
            running.stop.set()
        if not stopping:
            return
        tasks = [running.task for running in stopping]
        _done, pending = await asyncio.wait(tasks, timeout=self._settings.stop_timeout_s)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for running, result in zip(stopping, results, strict=True):
            spec = running.consumer.spec
            if isinstance(result, Exception):
                _log.error(
                    "kafka_trigger.stopped_with_error",
                    workspace=spec.workspace,
                    trigger=spec.path,
                    exc_info=result,
                )
            else:
                _log.info("kafka_trigger.stopped", workspace=spec.workspace, trigger=spec.path)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold one connection listening for changes; reconnect when it is lost."""
        delay = 0.1
        while not stop.is_set():
            try:
                async with self._context.pool.acquire() as conn:
                    await conn.add_listener(CHANGES_CHANNEL, self._on_change)
                    try:
                        delay = 0.1
                        self._changed.set()  # changes may have happened while away
                        while not stop.is_set():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), timeout=5)
                            await conn.execute("SELECT 1")  # notice a dead connection
                    finally:
                        with contextlib.suppress(*_DB_ERRORS):
                            await conn.remove_listener(CHANGES_CHANNEL, self._on_change)
            except _DB_ERRORS as exc:
                _log.info("kafka_triggers.listener_lost", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 5.0)

    def _on_change(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self._changed.set()
