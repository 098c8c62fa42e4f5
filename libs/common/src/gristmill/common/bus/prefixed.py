"""A bus whose topic and group names carry a deployment prefix.

Several deployments (or test runs) can share one Kafka cluster: each sees only its
own ``<prefix>gristmill.run-requests`` and its own consumer groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gristmill.common.bus.base import Bus, Handler

__all__ = ["PrefixedBus"]


class PrefixedBus:
    def __init__(self, inner: Bus, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix

    def name(self, topic: str) -> str:
        return f"{self._prefix}{topic}"

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None) -> None:
        await self._inner.publish(self.name(topic), value, key=key)

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, bytes]]) -> None:
        await self._inner.publish_many(self.name(topic), items)

    async def consume(
        self,
        topic: str,
        group: str,
        handler: Handler,
        *,
        stop: asyncio.Event,
        max_batch: int = 500,
    ) -> None:
        await self._inner.consume(
            self.name(topic), self.name(group), handler, stop=stop, max_batch=max_batch
        )
