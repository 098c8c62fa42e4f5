"""A real WebSocket server for the tests: it records what clients send and pushes messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["Feed", "feed"]


class Feed:
    """The server's view: connections made, the one open now, and what clients sent."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.open: list[ServerConnection] = []
        self.most_open = 0
        self.received: list[str] = []
        self.changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/feed"

    async def handler(self, connection: ServerConnection) -> None:
        async with self.changed:
            self.connections += 1
            self.open.append(connection)
            self.most_open = max(self.most_open, len(self.open))
            self.changed.notify_all()
        try:
            async for message in connection:
                async with self.changed:
                    self.received.append(message if isinstance(message, str) else message.decode())
                    self.changed.notify_all()
        except ConnectionClosed:  # a client dropped: the test looks at what it saw
            pass
        finally:
            async with self.changed:
                self.open.remove(connection)
                self.changed.notify_all()

    async def wait_for(self, predicate: object, timeout: float = 30) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)  # type: ignore[arg-type]

    async def wait_connected(self, count: int, timeout: float = 30) -> ServerConnection:
        """The open connection, once ``count`` connections were made in all."""
        await self.wait_for(lambda: self.connections >= count and self.open, timeout)
        return self.open[-1]

    async def push(self, message: str) -> None:
        assert len(self.open) == 1, f"{len(self.open)} connections open"
        await self.open[0].send(message)


@asynccontextmanager
async def feed() -> AsyncIterator[Feed]:
    state = Feed()
    async with serve(state.handler, "127.0.0.1", 0) as server:
        state.port = next(iter(server.sockets)).getsockname()[1]
        yield state
