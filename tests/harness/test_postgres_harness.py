"""The embedded PostgreSQL manager and the PostgreSQL fixtures, against real servers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gristmill.cli import postgres
from gristmill.cli.postgres import (
    SUPERUSER,
    DataDirNotUsable,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    PostgresBinariesMissing,
    PostgresStartFailed,
)
from tests.harness.postgres import RestartablePg, temporary_data_dir, with_database


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with temporary_data_dir("gristmill-pg-harness-") as path:
        yield path


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_durable_server_keeps_data_across_stop_start_and_restart(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir, durable=True) as pg:
        assert await fetchval(pg.dsn, "SHOW fsync") == "on"
        await execute(pg.dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        port = pg.port

        pg.stop()
        assert not pg.is_running()
        pg.stop()  # idempotent
        pg.start()
        assert pg.port == port  # an automatically chosen port is kept
        assert await fetchval(pg.dsn, "SELECT x FROM kept") == 42

        pg.restart()
        assert await fetchval(pg.dsn, "SELECT x FROM kept") == 42
    assert not pg.is_running()

    # A new manager on the same directory finds the cluster and its password.
    with EmbeddedPostgres(data_dir) as again:
        assert await fetchval(again.dsn, "SELECT x FROM kept") == 42


async def test_kill_then_start_recovers_committed_data(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir, durable=True) as pg:
        await execute(pg.dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)")
        victim = await asyncpg.connect(pg.dsn)
        try:
            pid = pg.pid
            pg.kill()
            assert not pg.is_running()
            with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                await victim.fetchval("SELECT 1")
        finally:
            victim.terminate()
        pg.kill()  # a no-op once dead
        assert (data_dir / "postmaster.pid").exists()  # left behind, as after a crash

        pg.start()
        assert pg.pid != pid
        assert await fetchval(pg.dsn, "SELECT x FROM kept") == 1
        assert "automatic recovery in progress" in pg.log_file.read_text()


async def test_listens_on_tcp_only_and_requires_the_password(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir, durable=False) as pg:
        assert pg.dsn.startswith(f"postgresql://{SUPERUSER}:")
        assert f"@127.0.0.1:{pg.port}/postgres" in pg.dsn
        assert await fetchval(pg.dsn, "SHOW listen_addresses") == "127.0.0.1"
        assert await fetchval(pg.dsn, "SHOW unix_socket_directories") == ""
        assert await fetchval(pg.dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", SUPERUSER)
        for name, value in [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "200"),
        ]:
            assert await fetchval(pg.dsn, f"SHOW {name}") == value
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host="127.0.0.1", port=pg.port, user=SUPERUSER, password="wrong", database="x"
            )
        mode = (data_dir / "gristmill-superuser.password").stat().st_mode
        assert mode & 0o077 == 0


async def test_two_instances_coexist_on_different_ports() -> None:
    with (
        temporary_data_dir() as dir_a,
        temporary_data_dir() as dir_b,
        EmbeddedPostgres(dir_a, durable=False) as a,
        EmbeddedPostgres(dir_b, durable=False) as b,
    ):
        assert a.port != b.port
        await execute(a.dsn, "CREATE TABLE which AS SELECT 'a' AS name")
        await execute(b.dsn, "CREATE TABLE which AS SELECT 'b' AS name")
        assert await fetchval(a.dsn, "SELECT name FROM which") == "a"
        assert await fetchval(b.dsn, "SELECT name FROM which") == "b"
        a.stop()
        assert await fetchval(b.dsn, "SELECT name FROM which") == "b"


async def test_start_adopts_a_running_server_and_creates_databases(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir, durable=False) as pg:
        adopted = EmbeddedPostgres(data_dir)
        adopted.start()
        assert (adopted.port, adopted.pid) == (pg.port, pg.pid)

        wrong_port = EmbeddedPostgres(data_dir, pg.port + 1 if pg.port < 65535 else 1024)
        with pytest.raises(EmbeddedPostgresError, match="already running"):
            wrong_port.start()

        url = pg.create_database("Mixed Case-db")
        assert pg.create_database("Mixed Case-db") == url  # idempotent
        assert url == with_database(pg.dsn, "Mixed Case-db")
        assert await fetchval(url, "SELECT current_database()") == "Mixed Case-db"


def test_a_taken_port_is_reported_or_avoided(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        with pytest.raises(PostgresStartFailed, match="Address already in use") as failure:
            EmbeddedPostgres(data_dir, taken, durable=False).start()
        assert failure.value.data["port"] == taken

        # An automatically chosen port that is taken meanwhile is replaced by another.
        free_ports = iter([taken])
        monkeypatch.setattr(postgres, "_free_port", lambda: next(free_ports, 0) or _free())
        with EmbeddedPostgres(data_dir, durable=False) as pg:
            assert pg.port != taken
            assert pg.is_running()


def _free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_missing_binaries_are_reported(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PostgresBinariesMissing, match="initdb, pg_ctl, postgres, psql"):
        EmbeddedPostgres(data_dir, bin_dir=tmp_path).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
def test_a_data_dir_owned_by_someone_else_is_refused(data_dir: Path) -> None:
    (data_dir / "PG_VERSION").write_text("18\n")
    os.chown(data_dir, 65534, 65534)
    with pytest.raises(DataDirNotUsable, match="belongs to"):
        EmbeddedPostgres(data_dir).start()


def test_a_non_empty_directory_is_refused_untouched(data_dir: Path) -> None:
    (data_dir / "notes.txt").write_text("mine\n")
    data_dir.chmod(0o755)
    before = data_dir.stat()
    with pytest.raises(DataDirNotUsable, match="not empty"):
        EmbeddedPostgres(data_dir).start()
    after = data_dir.stat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)


async def test_database_url_is_a_fresh_migrated_database(
    database_url: str, pg_template: str
) -> None:
    name = await fetchval(database_url, "SELECT current_database()")
    assert name.startswith("test_")
    assert name != pg_template
    assert await fetchval(database_url, "SELECT count(*) FROM schema_migrations") > 0


async def test_pg_pool_works(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT $1::jsonb", {"a": [1]}) == {"a": [1]}


async def test_restartable_pg_survives_kill(restartable_pg: RestartablePg) -> None:
    url = restartable_pg.database_url
    await execute(url, "CREATE TABLE acked (x int); INSERT INTO acked VALUES (7)")
    restartable_pg.server.kill()
    restartable_pg.server.start()
    assert await fetchval(url, "SELECT x FROM acked") == 7
    assert await fetchval(url, "SELECT count(*) FROM schema_migrations") > 0
    restartable_pg.server.kill()  # left dead: the fixture still cleans up after it
