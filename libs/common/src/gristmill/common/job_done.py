"""How a caller waiting for a job learns that it ended, without polling fast.

A job run by someone who waits for it carries ``meta.notify_done`` (``META_KEY``);
when its outcome is stored, Postgres announces its id on ``CHANNEL`` (a trigger on
``jobs_completed``, whatever statement stored it: migration 0012). ``DoneListener``
keeps one listening connection per process and wakes the waiters of that id.

The waiter still reads the outcome itself, and still looks now and then: a lost
notification (the listener reconnecting, Postgres restarting) costs at most one of
its polling pauses, never the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, Final

import asyncpg
import structlog

__all__ = ["CHANNEL", "META_KEY", "DoneListener"]

_log = structlog.get_logger(__name__)
CHANNEL: Final = "gristmill_done"
#: The ``meta`` entry of a job whose end is announced on ``CHANNEL``.
META_KEY: Final = "notify_done"
#: How often a held listening connection is checked (asyncpg notices a dead socket
#: only when it uses it).
_CHECK_S = 5.0


class DoneListener:
    """One LISTEN connection (taken from ``pool``) waking the waiters of ended jobs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        #: Set while a connection listens (waiters may rely on notifications).
        self.listening = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen_forever())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake_all()

    @contextlib.contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when ``job_id`` is announced (or when notifications may have
        been missed); the caller clears it after each look."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[job_id]

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            job_id = uuid.UUID(str(payload))
        except ValueError:
            return
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _on_terminate(self, _conn: Any) -> None:
        self._lost.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            conn = None
            try:
                conn = await self._pool.acquire()
                conn.add_termination_listener(self._on_terminate)
                await conn.add_listener(CHANNEL, self._on_notify)
                self._lost.clear()
                self.listening.set()
                self._wake_all()  # ends missed while away: let every waiter look
                delay = 0.1
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), timeout=_CHECK_S)
                    if self._lost.is_set() or conn.is_closed():
                        break
                    await conn.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                _log.info("job-done listener lost its connection; reconnecting", error=str(exc))
            finally:
                self.listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.remove_listener(CHANNEL, self._on_notify)
                    with contextlib.suppress(Exception):
                        await self._pool.release(conn, timeout=2)
            self._wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
