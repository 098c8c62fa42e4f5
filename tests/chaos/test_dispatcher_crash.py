"""A dispatcher killed after its Postgres commit but before its bus commit: the batch is
redelivered and every request is inserted exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from gristmill.common.bus.kafka import KafkaBus
from gristmill.common.contracts.runs import (
    RawCode,
    RunRequest,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.queue import Queue
from gristmill.dispatcher.service import Dispatcher
from tests.harness.services import ROOT, wait_until

pytestmark = pytest.mark.kafka
REQUESTS = 300


async def test_redelivered_batch_is_inserted_once(
    kafka_broker: str, kafka_topic: str, database_url: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    group = f"dispatchers-{uuid.uuid4().hex[:6]}"
    requests = [
        RunRequest(
            job_id=uuid.uuid4(),
            workspace="main",
            runnable=RawCode(language="bash", content="echo $1"),
            requested_by="tester",
            trigger=Trigger(kind=TriggerKind.KAFKA, source=kafka_topic),
            args={"i": i},
        )
        for i in range(REQUESTS)
    ]
    async with KafkaBus(kafka_broker, client_id="producer") as bus:
        await bus.publish_many(
            kafka_topic, [(r.job_id.bytes, encode_run_request(r)) for r in requests]
        )
        await bus.publish(kafka_topic, b"\x00 not a run request")

    crashing = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("crashing_dispatcher.py")),
        kafka_broker,
        kafka_topic,
        group,
        database_url,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(crashing.communicate(), timeout=90)
    assert crashing.returncode == -9, output.decode()
    first_inserted = await pg_pool.fetchval("SELECT count(*) FROM jobs")
    assert first_inserted > 0, "the crashing dispatcher committed nothing; nothing was tested"

    # A healthy dispatcher in the same group gets the uncommitted batch again.
    dispatcher = Dispatcher(pg_pool, Queue(pg_pool))
    stop = asyncio.Event()
    async with KafkaBus(
        kafka_broker, client_id="healthy", session_timeout_ms=6000, heartbeat_interval_ms=1000
    ) as bus:
        consuming = asyncio.create_task(
            bus.consume(kafka_topic, group, dispatcher.handle, stop=stop)
        )

        async def all_seen() -> bool:
            return dispatcher.seen >= REQUESTS + 1  # every message, the bad one included

        await wait_until(all_seen, timeout=60, interval=0.2, what="redelivery")
        stop.set()
        await consuming
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs") == REQUESTS
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == REQUESTS
    ids = {r["id"] for r in await pg_pool.fetch("SELECT id FROM jobs")}
    assert ids == {r.job_id for r in requests}
    assert await pg_pool.fetchval("SELECT count(*) FROM dead_letters") == 1
    # The redelivered requests that were already committed inserted nothing new.
    assert dispatcher.inserted == REQUESTS - first_inserted
