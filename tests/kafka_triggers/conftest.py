"""Fixtures of the Kafka trigger tests: a ``gristmill up`` per module that consumes from
the session's broker, and helpers to produce messages and to read what they ran."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from gristmill.common.bus.kafka import ensure_topics
from tests.harness.broker import unique_name
from tests.harness.postgres import PgServer
from tests.harness.services import GristmillProcess, free_port, wait_http

__all__ = [
    "TOKEN",
    "KafkaStandalone",
    "api",
    "json_bytes",
    "kafka_standalone",
    "new_topic",
    "produce",
]

TOKEN = "kafka-triggers-admin-token-0123456789"
#: Consumer group sessions of the triggers under test: Tansu's group joins take about
#: half of it, so it is kept low.
SESSION_TIMEOUT_MS = 3000
#: Settings every triggers process of these tests runs with.
TRIGGER_ENV = {
    "GRISTMILL_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
    "GRISTMILL_KAFKA_TRIGGERS_RELOAD_S": "1",
    "GRISTMILL_KAFKA_TRIGGERS_MAX_BACKOFF_S": "2",
}


@dataclass(frozen=True)
class KafkaStandalone:
    """The running ``gristmill up``, its base URL, its database and the broker."""

    process: GristmillProcess
    base_url: str
    database_url: str
    bootstrap: str

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def kafka_standalone(
    pg_server: PgServer,
    pg_template: str,
    kafka_broker: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[KafkaStandalone]:
    name = f"kafka_triggers_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await admin.close()
    workdir = tmp_path_factory.mktemp("kafka_standalone")
    port = free_port()
    url = pg_server.dsn_for(name)
    process = GristmillProcess(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(workdir / "data"),
            "GRISTMILL_WORKERS": "2",
            **TRIGGER_ENV,
        },
        workdir / "up.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/version", process=process)
        yield KafkaStandalone(
            process=process, base_url=base, database_url=url, bootstrap=kafka_broker
        )
        process.assert_alive()
    finally:
        process.terminate()
        admin = await asyncpg.connect(pg_server.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def api(kafka_standalone: KafkaStandalone) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the module's ``gristmill up``."""
    async with httpx.AsyncClient(
        base_url=kafka_standalone.base_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ) as client:
        yield client


async def new_topic(bootstrap: str, base: str, partitions: int = 4) -> str:
    """A fresh topic named after ``base`` (a test name) plus a random suffix."""
    name = unique_name(base)
    await ensure_topics(bootstrap, {name: partitions})
    return name


async def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]],
) -> None:
    """Send ``(key, value, headers)`` messages and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        acks = [
            await producer.send(topic, value, key=key, headers=list(headers) or None)
            for key, value, headers in messages
        ]
        for ack in acks:
            await ack
    finally:
        await producer.stop()


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()
