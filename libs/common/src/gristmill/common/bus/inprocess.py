"""The standalone transport: ``publish`` runs the topic's handler and returns after it.

There is no broker. The handler (the dispatcher) commits to Postgres before it
returns, so a request acknowledged to its source is durable, exactly as with Kafka.
Concurrent publishers are coalesced into batches, so one Postgres commit serves many
requests under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gristmill.common.bus.base import Handler, Message

__all__ = ["InProcessBus"]


class _Pending:
    __slots__ = ("done", "message")

    def __init__(self, message: Message, done: asyncio.Future[None]) -> None:
        self.message = message
        self.done = done


class _Topic:
    def __init__(self, handler: Handler, max_batch: int) -> None:
        self.handler = handler
        self.max_batch = max_batch
        self.pending: list[_Pending] = []
        self.flushing = False
        self.offset = 0


class InProcessBus:
    """Bus whose consumers live in this process. ``consume`` registers a handler."""

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._registered = asyncio.Condition()

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        await self.publish_many(topic, [(key, value)])

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, bytes]]) -> None:
        state = await self._topic(topic)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for key, value in items:
            future: asyncio.Future[None] = loop.create_future()
            state.offset += 1
            state.pending.append(
                _Pending(Message(topic=topic, value=value, key=key, offset=state.offset), future)
            )
            futures.append(future)
        if not state.flushing:
            state.flushing = True
            asyncio.get_running_loop().create_task(self._flush(state))
        await asyncio.gather(*futures)

    async def _flush(self, state: _Topic) -> None:
        try:
            while state.pending:
                batch, state.pending = (
                    state.pending[: state.max_batch],
                    state.pending[state.max_batch :],
                )
                try:
                    await state.handler([p.message for p in batch])
                except BaseException as exc:  # the publishers learn of it; nothing is acked
                    for pending in batch:
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for pending in batch:
                        if not pending.done.done():
                            pending.done.set_result(None)
        finally:
            state.flushing = False

    async def _topic(self, topic: str) -> _Topic:
        async with self._registered:
            await asyncio.wait_for(
                self._registered.wait_for(lambda: topic in self._topics), timeout=30
            )
            return self._topics[topic]

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        stop: asyncio.Event,
        max_batch: int = 500,
    ) -> None:
        """Serve ``topic`` with ``handler`` until ``stop`` is set."""
        async with self._registered:
            if topic in self._topics:
                raise RuntimeError(f"topic {topic!r} already has a consumer in this process")
            self._topics[topic] = _Topic(handler, max_batch)
            self._registered.notify_all()
        try:
            await stop.wait()
        finally:
            async with self._registered:
                del self._topics[topic]
