"""One real ``gristmill up`` per test module, for the HTTP tests of scripts and runs.

Starting the process takes a couple of seconds; the tests of a module share it (each
test uses its own script paths). ``tests/scripts/conftest.py`` provides the fixtures to
this folder; elsewhere, bind them in the test module::

    from tests.scripts import standalone as harness

    standalone = harness.standalone
    gristmill = harness.gristmill
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from gristmill.common.db.pool import create_pool
from gristmill.common.tokens import create_token
from tests.harness.postgres import PgServer
from tests.harness.services import GristmillProcess, free_port, wait_http

__all__ = ["TOKEN", "Standalone", "gristmill", "standalone", "wait_result"]

TOKEN = "scripts-test-admin-token-0123456789"


@dataclass(frozen=True)
class Standalone:
    """The running process, its base URL and its database."""

    process: GristmillProcess
    base_url: str
    database_url: str
    #: Its ``GRISTMILL_DATA_DIR`` (the master key file, the jobs' directories).
    data_dir: Path | None = None

    async def token_for(self, user: str, *, admin: bool = False) -> str:
        """A token of a (new) user."""
        pool = await create_pool(self.database_url, min_size=1, max_size=1)
        try:
            await pool.execute(
                "INSERT INTO users (id, is_admin) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                user,
                admin,
            )
            return await create_token(pool, user_id=user)
        finally:
            await pool.close()

    async def fetchval(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def standalone(
    pg_server: PgServer, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Standalone]:
    name = f"scripts_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    finally:
        await admin.close()
    workdir = tmp_path_factory.mktemp("standalone")
    port = free_port()
    url = pg_server.dsn_for(name)
    process = GristmillProcess(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(workdir / "data"),
            "GRISTMILL_WORKERS": "4",
        },
        workdir / "up.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/version", process=process)
        yield Standalone(
            process=process, base_url=base, database_url=url, data_dir=workdir / "data"
        )
        process.assert_alive()
    finally:
        process.terminate()
        admin = await asyncpg.connect(pg_server.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def gristmill(standalone: Standalone) -> Iterator[httpx.Client]:
    """An admin client of the module's ``gristmill up``."""
    with httpx.Client(
        base_url=standalone.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client


def wait_result(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """``get_result_maybe`` once the job completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(
            f"/api/w/main/jobs_u/completed/get_result_maybe/{job_id}"
        ).json()
        if body["completed"]:
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not complete in {timeout}s")
