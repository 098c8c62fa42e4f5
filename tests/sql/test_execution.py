"""PostgreSQL jobs against the test server: typed placeholders, rows, errors, timeouts."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from gristmill.common.contracts.jobs import ExitReason, JobStatus
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    execute,
    supported_languages,
)
from gristmill.worker.execution.runners.postgresql import statement_timeout_ms

SETTINGS = ExecutorSettings(kill_grace_s=0.5)


def _resource(dsn: str) -> dict[str, Any]:
    """A ``postgresql`` resource's value for ``dsn``."""
    url = urlsplit(dsn)
    return {
        "host": url.hostname or "localhost",
        "port": url.port or 5432,
        "user": unquote(url.username or ""),
        "password": unquote(url.password or ""),
        "dbname": url.path.lstrip("/"),
        "sslmode": "disable",
    }


class Jobs:
    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp_path = tmp_path
        self.database = _resource(database_url)

    async def run(
        self, code: str, args: dict[str, Any] | None = None, *, timeout_s: float = 30.0
    ) -> ExecutionOutcome:
        job_id = uuid.uuid4()
        workdir = self.tmp_path / "jobs" / str(job_id)
        workdir.mkdir(parents=True, mode=0o700)

        async def on_log(text: str) -> None:
            pass

        request = ExecutionRequest(
            job_id=job_id,
            language="postgresql",
            code=textwrap.dedent(code),
            args={"database": self.database, **(args or {})},
            env={},
            timeout_s=timeout_s,
            workdir=workdir,
        )
        return await execute(request, on_log=on_log, cancel=asyncio.Event(), settings=SETTINGS)


@pytest.fixture
def jobs(tmp_path: Path, database_url: str) -> Jobs:
    return Jobs(tmp_path, database_url)


def test_registered() -> None:
    assert "postgresql" in supported_languages()


def test_statement_timeout_leaves_a_margin() -> None:
    assert statement_timeout_ms(None) is None
    assert statement_timeout_ms(2.0) == 1600
    assert statement_timeout_ms(900.0) == 899_000


async def test_typed_placeholders_give_rows(jobs: Jobs) -> None:
    code = """
        -- $1 name
        -- $2 count = 3
        -- $3 meta
        -- $4 day
        -- $5 tags
        SELECT $1::text AS name, $2::int * 2 AS double, $3::jsonb AS meta,
               $4::date AS day, $5::text[] AS tags, 1.50::numeric AS price,
               NULL::int AS nothing
    """
    args = {"name": "mill", "meta": {"a": [1, 2]}, "day": "2024-02-29", "tags": ["x", "y"]}
    outcome = await jobs.run(code, args)
    assert outcome.error is None, outcome.error
    assert outcome.status is JobStatus.SUCCESS
    assert outcome.result == [
        {
            "name": "mill",
            "double": 6,
            "meta": {"a": [1, 2]},
            "day": "2024-02-29",
            "tags": ["x", "y"],
            "price": "1.50",
            "nothing": None,
        }
    ]


async def test_statements_run_in_order_and_the_last_gives_the_result(
    jobs: Jobs, database_url: str
) -> None:
    code = """
        -- $1 a
        -- $2 b
        CREATE TABLE things (id int PRIMARY KEY, label text);
        INSERT INTO things VALUES (1, $2::text), (2, 'semi;colon');
        SELECT id, label FROM things WHERE id >= $1::int ORDER BY id;
    """
    outcome = await jobs.run(code, {"a": 1, "b": "one"})
    assert outcome.error is None, outcome.error
    assert outcome.result == [{"id": 1, "label": "one"}, {"id": 2, "label": "semi;colon"}]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM things") == 2
    finally:
        await conn.close()


async def test_a_statement_without_rows_gives_an_empty_list(jobs: Jobs) -> None:
    outcome = await jobs.run("CREATE TEMP TABLE t (x int)")
    assert outcome.result == []


async def test_sql_error_is_structured(jobs: Jobs) -> None:
    code = "SELECT 1;\nSELECT * FROM no_such_table"
    outcome = await jobs.run(code)
    assert outcome.status is JobStatus.FAILURE
    assert outcome.error is not None
    assert outcome.error.name == "UndefinedTableError"
    assert outcome.error.message == 'relation "no_such_table" does not exist'
    assert outcome.error.location == "line 2, column 15"


async def test_bad_argument_is_reported(jobs: Jobs) -> None:
    outcome = await jobs.run("-- $1 n\nSELECT $1::int", {"n": "twelve"})
    assert outcome.error is not None
    assert outcome.error.name == "InvalidArguments"
    assert "$1" in outcome.error.message


async def test_missing_connection(jobs: Jobs) -> None:
    jobs.database = {}
    outcome = await jobs.run("SELECT 1")
    assert outcome.error is not None
    assert outcome.error.name in ("InvalidArguments", "ConnectionError")


async def test_statement_timeout_is_the_servers_error(jobs: Jobs) -> None:
    started = time.perf_counter()
    outcome = await jobs.run("SELECT pg_sleep(30)", timeout_s=2.0)
    elapsed = time.perf_counter() - started
    assert outcome.exit_reason is not ExitReason.TIMEOUT
    assert outcome.error is not None
    assert outcome.error.name == "QueryCanceledError"
    assert "statement timeout" in outcome.error.message
    assert elapsed < 5


async def test_database_annotation_is_resolved_with_the_jobs_token(
    tmp_path: Path, database_url: str
) -> None:
    """``-- database f/...``: the job reads the resource from the API with its token."""
    resource = json.dumps(_resource(database_url)).encode()
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen.append(head)
        ok = head.startswith("GET /api/w/main/resources/get_value_interpolated/f/data/db ")
        ok = ok and "authorization: bearer job-token" in head.lower()
        body = resource if ok else b'"forbidden"'
        status = b"200 OK" if ok else b"403 Forbidden"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    workdir = tmp_path / "job"
    workdir.mkdir()
    request = ExecutionRequest(
        job_id=uuid.uuid4(),
        language="postgresql",
        code="-- database f/data/db\n-- $1 n\nSELECT $1::int + 1 AS n",
        args={"n": 41},
        env={
            "BASE_INTERNAL_URL": f"http://127.0.0.1:{port}",
            "WM_TOKEN": "job-token",
            "WM_WORKSPACE": "main",
        },
        timeout_s=30.0,
        workdir=workdir,
    )

    async def on_log(text: str) -> None:
        pass

    async with server:
        outcome = await execute(request, on_log=on_log, cancel=asyncio.Event(), settings=SETTINGS)
    assert outcome.error is None, outcome.error
    assert outcome.result == [{"n": 42}]
    assert len(seen) == 1
