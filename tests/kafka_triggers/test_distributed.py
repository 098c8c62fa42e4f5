"""Kafka triggers in the distributed shape: ``gristmill triggers`` and ``gristmill
dispatcher`` as processes over Kafka, killed mid-stream, and nothing lost or doubled.

Two triggers replicas share the trigger's consumer group (Kafka spreads the partitions
over them); one is killed mid-stream and started again. The test completes the jobs
itself, as a worker would (claim, then complete with the arguments it got), so that
what is measured is the ingress path: every message makes exactly one job, with the
arguments the message carried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gristmill.common import kafka_triggers, scripts
from gristmill.common.db.pool import create_pool
from gristmill.common.queue import Queue
from gristmill.common.resources import ResourceStore
from gristmill.common.tokens import ensure_bootstrap
from gristmill.common.variables import VariableStore
from tests.harness.services import GristmillProcess
from tests.kafka_triggers.conftest import TRIGGER_ENV, json_bytes, new_topic, produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TRIGGER = "u/admin/kt_many"
TOTAL = 5000


async def _count(pool: asyncpg.Pool, query: str) -> int:
    value: int = await pool.fetchval(query, TRIGGER)
    return value


_JOBS = "SELECT count(*) FROM jobs WHERE meta->'kafka'->>'trigger' = $1"
_DONE = (
    "SELECT count(*) FROM jobs j JOIN jobs_completed c ON c.id = j.id "
    "WHERE j.meta->'kafka'->>'trigger' = $1"
)


async def _until(pool: asyncpg.Pool, query: str, at_least: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = await _count(pool, query)
        if count >= at_least:
            return count
        if time.monotonic() > deadline:
            raise AssertionError(f"only {count} of {at_least} after {timeout}s")
        await asyncio.sleep(0.1)


async def _complete_forever(queue: Queue, seen: list[dict[str, Any]]) -> None:
    """Act as a worker: complete every job with its own arguments."""
    while True:
        claimed = await queue.claim("kafka-test-worker", ["python3"], limit=500)
        for job in claimed:
            seen.append(dict(job.args))
            await queue.complete(job, job.args)
        if not claimed:
            await asyncio.sleep(0.05)


def _messages(numbers: range) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    return [(f"k{n}".encode(), json_bytes({"n": n}), []) for n in numbers]


async def test_5000_messages_exactly_once_across_kills(
    database_url: str, spawn: Callable[..., GristmillProcess], kafka_broker: str, tmp_path: Path
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    completer: asyncio.Task[None] | None = None
    try:
        await ensure_bootstrap(pool, admin_token=None)
        async with pool.acquire() as conn:
            await scripts.create_script(
                conn,
                "main",
                scripts.NewScript(
                    path="u/admin/kt_many_script",
                    content="def main(n: int, key: str):\n    return n\n",
                    language="python3",
                ),
                created_by="admin",
            )
        await ResourceStore(pool, VariableStore(pool)).create(
            "main",
            "u/admin/kt_many_conn",
            value={"brokers": [kafka_broker]},
            resource_type="any",
            description="",
            created_by="admin",
        )
        topic = await new_topic(kafka_broker, "kt_many", partitions=4)
        await kafka_triggers.create(
            pool,
            "main",
            TRIGGER,
            kafka_triggers.TriggerSettings(
                kafka_resource_path="u/admin/kt_many_conn",
                topics=[topic],
                script_path="u/admin/kt_many_script",
                auto_offset_reset="earliest",
            ),
            editor="admin",
        )
        env = {
            "GRISTMILL_DATABASE_URL": database_url,
            "GRISTMILL_KAFKA_BOOTSTRAP": kafka_broker,
            "GRISTMILL_KAFKA_TOPIC_PREFIX": f"kt-{uuid.uuid4().hex[:8]}.",
            "GRISTMILL_KAFKA_PARTITIONS": "2",
            "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
            **TRIGGER_ENV,
        }
        dispatcher = spawn(["dispatcher"], env, name="dispatcher")
        triggers = spawn(["triggers"], env, name="triggers")
        other_replica = spawn(["triggers"], env, name="triggers-b")
        seen: list[dict[str, Any]] = []
        completer = asyncio.create_task(_complete_forever(Queue(pool, notify=False), seen))

        # A triggers replica is killed while messages are still coming in and
        # unpublished ones wait on the topic: the other one takes its partitions...
        await produce(kafka_broker, topic, _messages(range(0, 2000)))
        await _until(pool, _JOBS, 500)
        triggers.kill()
        assert await _count(pool, _JOBS) < TOTAL
        await produce(kafka_broker, topic, _messages(range(2000, 3500)))
        triggers = spawn(["triggers"], env, name="triggers")
        # ... then the dispatcher, while the triggers replicas publish.
        await _until(pool, _JOBS, 2500)
        dispatcher.kill()
        await produce(kafka_broker, topic, _messages(range(3500, TOTAL)))
        dispatcher = spawn(["dispatcher"], env, name="dispatcher")

        await _until(pool, _DONE, TOTAL, timeout=120)
        await asyncio.sleep(2)  # anything redelivered late would show up now
        assert await _count(pool, _JOBS) == TOTAL
        assert await _count(pool, _DONE) == TOTAL
        rows = await pool.fetch(
            "SELECT j.args, c.status FROM jobs j JOIN jobs_completed c ON c.id = j.id "
            "WHERE j.meta->'kafka'->>'trigger' = $1",
            TRIGGER,
        )
        assert {row["status"] for row in rows} == {"success"}
        numbers = sorted(row["args"]["n"] for row in rows)
        assert numbers == list(range(TOTAL))
        assert all(
            row["args"] == {"n": row["args"]["n"], "key": f"k{row['args']['n']}"} for row in rows
        )
        assert len(seen) == TOTAL
        for process in (triggers, other_replica, dispatcher):
            process.assert_alive()
        servers = await pool.fetchval(
            "SELECT server_id FROM kafka_triggers WHERE path = $1", TRIGGER
        )
        assert servers, "no triggers replica reported on the trigger"
    finally:
        if completer is not None:
            completer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await completer
        await pool.close()
