"""Fixtures of this folder: one ``gristmill up`` per module with its SMTP server on, an API
client, and the SMTP server's address."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import pytest_asyncio

from gristmill.common.db.pool import create_pool
from tests.harness.postgres import PgServer
from tests.harness.services import GristmillProcess, free_port, wait_http
from tests.scripts.standalone import TOKEN

__all__ = ["DOMAIN", "MAX_MESSAGE_BYTES", "Mailhost", "api", "db", "mailhost"]

DOMAIN = "mail.gristmill.test"
MAX_MESSAGE_BYTES = 200_000


@dataclass(frozen=True)
class Mailhost:
    process: GristmillProcess
    base_url: str
    database_url: str
    smtp_port: int


def _wait_smtp(port: int, process: GristmillProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.assert_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"SMTP server not ready on port {port} after {timeout}s")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mailhost(
    pg_server: PgServer, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mailhost]:
    name = f"email_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await admin.close()
    workdir = tmp_path_factory.mktemp("mailhost")
    port, smtp_port = free_port(), free_port()
    url = pg_server.dsn_for(name)
    process = GristmillProcess(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(workdir / "data"),
            "GRISTMILL_WORKERS": "2",
            "GRISTMILL_SMTP_PORT": str(smtp_port),
            "GRISTMILL_SMTP_DOMAIN": DOMAIN,
            "GRISTMILL_SMTP_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        },
        workdir / "up.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/version", process=process)
        _wait_smtp(smtp_port, process)
        yield Mailhost(process=process, base_url=base, database_url=url, smtp_port=smtp_port)
        process.assert_alive()
    finally:
        process.terminate()
        admin = await asyncpg.connect(pg_server.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def api(mailhost: Mailhost) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=mailhost.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def db(mailhost: Mailhost) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(mailhost.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
