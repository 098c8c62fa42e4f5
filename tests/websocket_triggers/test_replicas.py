"""Several triggers replicas on one database: each WebSocket trigger is connected by one.

The replicas are real ``WebsocketSource`` instances on a real Postgres, publishing on the
in-process bus to a real dispatcher (jobs are inserted; no worker runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from gristmill.common import scripts, websocket_triggers
from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.contracts.topics import Topic
from gristmill.common.db.pool import create_pool
from gristmill.common.queue import Queue
from gristmill.common.settings import Settings
from gristmill.common.tokens import ensure_bootstrap
from gristmill.common.websocket_triggers import TriggerSettings
from gristmill.dispatcher.service import Dispatcher
from gristmill.triggers.service import TriggerContext
from gristmill.triggers.websocket import WebsocketSource
from tests.harness.services import wait_until
from tests.websocket_triggers.feed import feed

SCRIPT = "u/admin/ws_count"
TRIGGER = "u/admin/ws_shared"


@dataclass
class Replicas:
    context: TriggerContext
    running: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=dict)

    def start(self, server_id: str, context: TriggerContext | None = None) -> None:
        source = WebsocketSource(
            context or self.context, server_id=server_id, lease_s=3.0, poll_s=0.5
        )
        stop = asyncio.Event()
        self.running[server_id] = (stop, asyncio.create_task(source.run(stop)))

    async def stop(self, server_id: str) -> None:
        stop, task = self.running.pop(server_id)
        stop.set()
        await asyncio.wait_for(task, 10)

    async def stop_all(self) -> None:
        for server_id in list(self.running):
            await self.stop(server_id)


@pytest.fixture
async def replicas(pg_pool: asyncpg.Pool) -> AsyncIterator[Replicas]:
    await ensure_bootstrap(pg_pool, admin_token="ws-replicas-admin-token-0123456789")
    async with pg_pool.acquire() as conn:
        await scripts.create_script(
            conn,
            "main",
            scripts.NewScript(
                path=SCRIPT, content="def main(msg: str):\n    return 1\n", language="python3"
            ),
            created_by="admin",
        )
    bus = InProcessBus()
    stop = asyncio.Event()
    dispatcher = Dispatcher(pg_pool, Queue(pg_pool, notify=False))
    consumer = asyncio.create_task(
        bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
    )
    group = Replicas(TriggerContext(pool=pg_pool, bus=bus, settings=Settings()))
    try:
        yield group
    finally:
        await group.stop_all()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def _jobs(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch(
        "SELECT args->>'msg' AS msg FROM jobs "
        "WHERE trigger_kind = 'websocket' AND trigger_source = $1",
        TRIGGER,
    )
    return sorted(row["msg"] for row in rows)


async def _owner(pool: asyncpg.Pool) -> str | None:
    owner: str | None = await pool.fetchval(
        "SELECT server_id FROM websocket_triggers WHERE path = $1", TRIGGER
    )
    return owner


async def test_one_replica_connects_each_trigger_and_another_takes_over(
    replicas: Replicas, pg_pool: asyncpg.Pool
) -> None:
    async with feed() as server:
        await websocket_triggers.create(
            pg_pool,
            "main",
            TRIGGER,
            TriggerSettings(url=server.url, script_path=SCRIPT),
            editor="admin",
        )
        for name in ("replica-a", "replica-b", "replica-c"):
            replicas.start(name)
        await server.wait_connected(1)
        # Several lease periods: the holder renews, the others never connect.
        await asyncio.sleep(7)
        assert (server.connections, server.most_open) == (1, 1)
        first = await _owner(pg_pool)
        assert first in replicas.running

        sent = [json.dumps({"n": n}) for n in range(20)]
        for text in sent:
            await server.push(text)
        await wait_until(lambda: _count(pg_pool, 20), what="20 jobs")

        # The holder stops: it hands the trigger over, and another replica connects it.
        assert first is not None
        await replicas.stop(first)
        await server.wait_connected(2)
        second = await _owner(pg_pool)
        assert second in replicas.running
        assert second != first
        more = [json.dumps({"n": n}) for n in range(20, 30)]
        for text in more:
            await server.push(text)
        await wait_until(lambda: _count(pg_pool, 30), what="30 jobs")
        await asyncio.sleep(1)
        assert await _jobs(pg_pool) == sorted(sent + more)
        assert (server.connections, server.most_open) == (2, 1)


async def _count(pool: asyncpg.Pool, count: int) -> bool:
    return len(await _jobs(pool)) >= count


async def test_a_replica_cut_off_from_the_database_lets_go_and_another_takes_over(
    replicas: Replicas, pg_pool: asyncpg.Pool, database_url: str
) -> None:
    own_pool = await create_pool(database_url, min_size=1, max_size=3)
    try:
        async with feed() as server:
            await websocket_triggers.create(
                pg_pool,
                "main",
                TRIGGER,
                TriggerSettings(url=server.url, script_path=SCRIPT),
                editor="admin",
            )
            replicas.start(
                "replica-cut",
                TriggerContext(pool=own_pool, bus=replicas.context.bus, settings=Settings()),
            )
            await server.wait_connected(1)
            assert await _owner(pg_pool) == "replica-cut"
            replicas.start("replica-b")
            await server.push(json.dumps({"n": 0}))
            await wait_until(lambda: _count(pg_pool, 1), what="the first job")

            # Its database connections die: it cannot renew its lease, so it disconnects,
            # and once the lease expired the other replica connects the trigger.
            own_pool.terminate()
            await server.wait_for(
                lambda: server.connections >= 2 and len(server.open) == 1, timeout=30
            )
            assert await _owner(pg_pool) == "replica-b"
            await server.push(json.dumps({"n": 1}))
            await wait_until(lambda: _count(pg_pool, 2), what="the second job")
            await asyncio.sleep(0.5)
            assert await _jobs(pg_pool) == [json.dumps({"n": 0}), json.dumps({"n": 1})]
    finally:
        await replicas.stop_all()
        own_pool.terminate()
