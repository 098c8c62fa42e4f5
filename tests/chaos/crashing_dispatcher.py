"""Test helper process: consumes one batch, commits it to Postgres, then dies by SIGKILL
before its handler returns (so the bus offset is never committed)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from gristmill.common.bus.base import Message
from gristmill.common.bus.kafka import KafkaBus
from gristmill.common.db.pool import create_pool
from gristmill.common.queue import Queue
from gristmill.dispatcher.service import Dispatcher


async def main(bootstrap: str, topic: str, group: str, dsn: str) -> None:
    pool = await create_pool(dsn)
    dispatcher = Dispatcher(pool, Queue(pool))
    stop = asyncio.Event()

    async def handle_then_die(batch: Sequence[Message]) -> None:
        await dispatcher.handle(batch)  # committed to Postgres
        print(f"inserted {dispatcher.inserted}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before the offset commit

    async with KafkaBus(
        bootstrap, client_id="crashing", session_timeout_ms=6000, heartbeat_interval_ms=1000
    ) as bus:
        await bus.consume(topic, group, handle_then_die, stop=stop, max_batch=10_000)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
