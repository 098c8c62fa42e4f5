"""Consume run requests, validate them, batch-insert jobs; keep the queue healthy.

A batch from the bus becomes one Postgres transaction: the valid requests are
inserted as jobs, requests that decode but cannot run are recorded as failed jobs
(their id then explains why), and bytes that do not decode are parked as dead
letters. Only after that commit does the handler return, so only then does the bus
acknowledge the batch. Redelivery inserts nothing twice (job ids are keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
import structlog

from gristmill.common.bus.base import Bus, Message
from gristmill.common.contracts.jobs import JobError
from gristmill.common.contracts.runs import (
    FlowPath,
    FlowPreview,
    RawCode,
    RunRequest,
    decode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.db.pool import Conn
from gristmill.common.errors import GristmillError
from gristmill.common.flows.same_worker import release_lost_workers
from gristmill.common.queue import NewJob, Queue
from gristmill.common.runs import resolve, validate_request

__all__ = ["Dispatcher", "MaintenanceSettings"]

_log = structlog.get_logger(__name__)
CONSUMER_GROUP = "gristmill-dispatcher"


class MaintenanceSettings(msgspec.Struct, frozen=True, kw_only=True):
    interval_s: float = 5.0
    zombie_timeout_s: float = 30.0
    timeout_grace_s: float = 5.0
    retention_s: float = 30 * 24 * 3600.0
    purge_every_s: float = 60.0


class Dispatcher:
    """Owns nothing it did not create: pool and bus come from the caller."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queue: Queue,
        *,
        maintenance: MaintenanceSettings | None = None,
    ) -> None:
        self._pool = pool
        self._queue = queue
        self._maintenance = maintenance or MaintenanceSettings()
        #: Counters since start: messages handled, jobs inserted, messages parked.
        self.seen = 0
        self.inserted = 0
        self.parked = 0

    async def handle(self, batch: Sequence[Message]) -> None:
        """Make a batch durable in one transaction; raise to have it redelivered."""
        requests: list[tuple[Message, RunRequest]] = []
        dead: list[tuple[Message, str]] = []
        for message in batch:
            try:
                requests.append((message, decode_run_request(message.value)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                dead.append((message, f"undecodable run request: {exc}"))
        async with self._pool.acquire() as conn, conn.transaction():
            jobs: list[NewJob] = []
            for _message, request in requests:
                try:
                    validate_request(request, self._queue.limits)
                    job = await resolve(conn, request)
                    self._queue.validate([job])
                except GristmillError as exc:
                    await self._record_failed(conn, request, exc)
                    continue
                jobs.append(job)
            inserted = await self._queue.enqueue(jobs, conn=conn)
            for message, error in dead:
                await Queue.park(
                    conn,
                    source=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    payload=message.value,
                    error=error,
                )
        self.seen += len(batch)
        self.inserted += len(inserted)
        self.parked += len(dead)
        if dead:
            _log.warning("parked undecodable messages", count=len(dead), first=dead[0][1])

    async def _record_failed(self, conn: Conn, request: RunRequest, exc: GristmillError) -> None:
        runnable = request.runnable
        path = getattr(runnable, "path", None)
        language = runnable.language if isinstance(runnable, RawCode) else None
        if isinstance(runnable, RawCode):
            kind = "preview"
        elif isinstance(runnable, FlowPath):
            kind, language = "flow", "flow"
        elif isinstance(runnable, FlowPreview):
            kind, language = "flowpreview", "flow"
        else:
            kind = "script"
        args: dict[str, Any] = request.args
        if exc.code == "payload_too_large" or b"\\u0000" in msgspec.json.encode(args):
            # Not storable (too big, or a NUL Postgres text cannot hold): keep the error only.
            args = {}
        _log.info("run request rejected", job_id=str(request.job_id), error=str(exc))
        await self._queue.record_failed(
            conn,
            job_id=request.job_id,
            workspace=request.workspace,
            kind=kind,
            runnable_path=path,
            args=args,
            tag=request.tag or language or "unknown",
            created_by=request.requested_by,
            trigger_kind=str(request.trigger.kind),
            trigger_source=request.trigger.source,
            idempotency_key=request.idempotency_key,
            parent_job=request.parent_job,
            root_job=request.root_job,
            flow_step=request.flow_step,
            error=JobError(name=type(exc).__name__, message=exc.message, location=exc.location),
        )

    async def run(self, bus: Bus, stop: asyncio.Event) -> None:
        """Consume run requests and do queue upkeep until ``stop``."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                bus.consume(Topic.RUN_REQUESTS, CONSUMER_GROUP, self.handle, stop=stop)
            )
            tasks.create_task(self.maintain(stop))

    async def maintain(self, stop: asyncio.Event) -> None:
        """Zombie recovery, lost same_worker pins, timeouts and retention, every
        ``interval_s``."""
        settings = self._maintenance
        last_purge = 0.0
        while not stop.is_set():
            try:
                await self.maintain_once(
                    purge=time.monotonic() - last_purge >= settings.purge_every_s
                )
                if time.monotonic() - last_purge >= settings.purge_every_s:
                    last_purge = time.monotonic()
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ) as exc:
                _log.warning("queue maintenance failed; will retry", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.interval_s)

    async def maintain_once(self, *, purge: bool = True) -> dict[str, int]:
        settings = self._maintenance
        counts = {
            "zombies": await self._queue.recover_zombies(settings.zombie_timeout_s),
            # After zombies: the steps a lost worker ran are queued for it again.
            "lost_pins": await release_lost_workers(self._queue, settings.zombie_timeout_s),
            "timeouts": await self._queue.enforce_timeouts(settings.timeout_grace_s),
            "purged": await self._queue.purge(settings.retention_s) if purge else 0,
        }
        if any(counts.values()):
            _log.info("queue maintenance", **counts)
        return counts
