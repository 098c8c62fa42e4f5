"""The bus interface shared by both transports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

__all__ = ["Bus", "Handler", "Message"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One delivered message: raw bytes plus where it came from.

    ``value`` is undecoded so that a consumer can park what it cannot decode.
    """

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int = 0
    offset: int = -1
    headers: tuple[tuple[str, bytes], ...] = ()


#: A consumer handler receives a batch and returns only once the batch is durable
#: downstream. If it raises, nothing in the batch is acknowledged and it is
#: delivered again.
Handler = Callable[[Sequence[Message]], Awaitable[None]]


class Bus(Protocol):
    """Publish run requests; consume them in batches.

    ``publish`` returns once the message is durable: in Kafka, acknowledged by all
    in-sync replicas; in process, committed by the consumer's handler.
    """

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> None: ...

    async def publish_many(
        self, topic: str, items: Sequence[tuple[bytes | None, bytes]]
    ) -> None: ...

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        stop: asyncio.Event,
        max_batch: int = 500,
    ) -> None:
        """Run ``handler`` on batches from ``topic`` as member of ``group`` until ``stop``."""
        ...
