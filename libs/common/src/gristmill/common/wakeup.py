"""How idle workers learn that jobs arrived: LISTEN/NOTIFY with a slow poll behind it.

Enqueues ``pg_notify('gristmill_jobs', tag)`` in their transaction; a worker process
keeps one listening connection and wakes its loops when one of its tags is named.
The poll interval still bounds the wait, so a lost notification (listener
reconnecting, Postgres restart, a job whose ``scheduled_for`` just came due) costs
at most one interval. ``mode="poll"`` skips the listener (measured in
bench/queue_throughput; see docs/adr/0004-worker-wakeup.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import asyncpg
import structlog

from gristmill.common.queue import WAKE_CHANNEL

__all__ = ["Wakeup"]

_log = structlog.get_logger(__name__)


class Wakeup:
    def __init__(
        self,
        dsn: str,
        tags: Iterable[str],
        *,
        mode: str = "notify",
        poll_interval_s: float = 0.5,
    ) -> None:
        if mode not in ("notify", "poll"):
            raise ValueError(f"wake mode must be 'notify' or 'poll', not {mode!r}")
        self._dsn = dsn
        self._tags = frozenset(tags)
        self._mode = mode
        self.poll_interval_s = poll_interval_s
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._lost = asyncio.Event()

    async def __aenter__(self) -> Wakeup:
        if self._mode == "notify":
            self._task = asyncio.get_running_loop().create_task(self._listen_forever())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_conn()

    def listen_for(self, tag: str) -> None:
        """Wake on ``tag`` too (e.g. a worker's own ``worker:<id>``), unless on all."""
        if self._tags:
            self._tags = self._tags | {tag}

    def poke(self) -> None:
        """Wake every waiter (e.g. a job finished here and more may be claimable)."""
        self._event.set()

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Return when woken, when the poll interval passed, or when ``stop`` is set."""
        waiters = [asyncio.ensure_future(self._event.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=self.poll_interval_s, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._event.clear()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if not self._tags or payload in self._tags:
            self._event.set()

    def _on_terminate(self, _conn: Any) -> None:
        self._lost.set()

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    async def _listen_forever(self) -> None:
        delay = 0.1
        while not self._closing.is_set():
            try:
                conn = await asyncpg.connect(self._dsn)
                self._conn = conn
                conn.add_termination_listener(self._on_terminate)
                await conn.add_listener(WAKE_CHANNEL, self._on_notify)
                delay = 0.1
                self._lost.clear()
                self._event.set()  # jobs may have arrived while we were away
                while not self._closing.is_set():
                    # asyncpg notices a dead socket only when it uses it: check now and then
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), timeout=5)
                    if self._lost.is_set() or conn.is_closed():
                        break
                    await conn.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                _log.info("wake-up listener lost its connection; reconnecting", error=str(exc))
            await self._close_conn()
            if self._closing.is_set():
                return
            self._event.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
