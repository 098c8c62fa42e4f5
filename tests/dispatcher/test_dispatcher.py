"""The dispatcher turns bus messages into jobs, parks what it cannot read, loses nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from gristmill.common.bus.base import Message
from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.contracts.runs import (
    RawCode,
    RunRequest,
    ScriptPath,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.queue import Queue, QueueLimits
from gristmill.dispatcher.service import Dispatcher


def request(**overrides: Any) -> RunRequest:
    values: dict[str, Any] = {
        "job_id": uuid.uuid4(),
        "workspace": "main",
        "runnable": RawCode(language="python3", content="def main(): return 1"),
        "requested_by": "tester",
        "trigger": Trigger(kind=TriggerKind.API),
    }
    values.update(overrides)
    return RunRequest(**values)


def message(value: bytes, offset: int = 0, partition: int = 0) -> Message:
    return Message(topic=Topic.RUN_REQUESTS, value=value, partition=partition, offset=offset)


@pytest.fixture
def dispatcher(pg_pool: asyncpg.Pool) -> Dispatcher:
    return Dispatcher(pg_pool, Queue(pg_pool, limits=QueueLimits(max_args_bytes=4096)))


async def test_batch_becomes_jobs_and_redelivery_inserts_nothing(
    dispatcher: Dispatcher, pg_pool: asyncpg.Pool
) -> None:
    batch = [message(encode_run_request(request(args={"i": i})), offset=i) for i in range(50)]
    await dispatcher.handle(batch)
    await dispatcher.handle(batch)  # the bus redelivers after a crash before its commit
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs") == 50
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 50
    assert dispatcher.inserted == 50


async def test_malformed_messages_are_parked_not_dropped(
    dispatcher: Dispatcher, pg_pool: asyncpg.Pool
) -> None:
    good = request()
    batch = [
        message(b"{not json", offset=10),
        message(b'{"type":"run_request","workspace":"main"}', offset=11),
        message(encode_run_request(good), offset=12),
    ]
    await dispatcher.handle(batch)
    await dispatcher.handle(batch)
    rows = await pg_pool.fetch(
        'SELECT "offset", payload, error FROM dead_letters ORDER BY "offset"'
    )
    assert [r["offset"] for r in rows] == [10, 11]
    assert rows[0]["payload"] == b"{not json"
    assert "undecodable run request" in rows[0]["error"]
    assert "job_id" in rows[1]["error"]  # names the missing field
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue WHERE id = $1", good.job_id) == 1


@pytest.mark.parametrize(
    ("overrides", "location", "fragment"),
    [
        ({"tag": "no spaces allowed"}, "tag", "invalid tag"),
        ({"priority": -5}, "priority", "got -5"),
        ({"args": {"blob": "x" * 10_000}}, "args", "over the limit of 4096"),
        ({"runnable": RawCode(language="cobol", content="")}, "runnable.language", "unsupported"),
        ({"runnable": ScriptPath(path="u/admin/missing")}, "runnable", "not found"),
    ],
)
async def test_understood_but_invalid_requests_become_failed_jobs(
    dispatcher: Dispatcher,
    pg_pool: asyncpg.Pool,
    overrides: dict[str, Any],
    location: str,
    fragment: str,
) -> None:
    bad = request(**overrides)
    await dispatcher.handle([message(encode_run_request(bad))])
    row = await pg_pool.fetchrow(
        "SELECT status, error FROM jobs_completed WHERE id = $1", bad.job_id
    )
    assert row is not None, "the request vanished"
    assert row["status"] == "failure"
    assert row["error"]["location"] == location
    assert fragment in row["error"]["message"]
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 0


async def test_in_process_publish_returns_after_commit(
    dispatcher: Dispatcher, pg_pool: asyncpg.Pool
) -> None:
    bus = InProcessBus()
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
    )
    try:
        requests = [request() for _ in range(200)]

        async def publish(r: RunRequest) -> None:
            await bus.publish(Topic.RUN_REQUESTS, encode_run_request(r))
            # Acknowledged means committed: visible from another connection right now.
            assert await pg_pool.fetchval("SELECT 1 FROM jobs WHERE id = $1", r.job_id) == 1

        await asyncio.gather(*(publish(r) for r in requests))
        assert await pg_pool.fetchval("SELECT count(*) FROM jobs") == 200
    finally:
        stop.set()
        await consumer


async def test_in_process_publish_fails_when_the_commit_fails(pg_pool: asyncpg.Pool) -> None:
    async def broken(_batch: Any) -> None:
        raise ConnectionError("database unreachable")

    bus = InProcessBus()
    stop = asyncio.Event()
    consumer = asyncio.create_task(bus.consume(Topic.RUN_REQUESTS, "d", broken, stop=stop))
    try:
        with pytest.raises(ConnectionError):
            await bus.publish(Topic.RUN_REQUESTS, encode_run_request(request()))
    finally:
        stop.set()
        await consumer


async def test_maintenance_runs_all_sweeps(dispatcher: Dispatcher) -> None:
    counts = await dispatcher.maintain_once()
    assert counts == {"zombies": 0, "lost_pins": 0, "timeouts": 0, "purged": 0}


async def test_request_with_unstorable_args_becomes_a_failed_job(
    dispatcher: Dispatcher, pg_pool: asyncpg.Pool
) -> None:
    bad = request(args={"text": "nul\x00byte"})
    await dispatcher.handle([message(encode_run_request(bad))])
    row = await pg_pool.fetchrow(
        "SELECT c.status, c.error, j.args FROM jobs_completed c JOIN jobs j USING (id) "
        "WHERE c.id = $1",
        bad.job_id,
    )
    assert row is not None
    assert row["status"] == "failure"
    assert row["args"] == {}
    assert "args" in row["error"]["location"]
