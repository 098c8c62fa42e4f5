"""Pytest fixtures for tests that need PostgreSQL.

Load them from a conftest with ``pytest_plugins = ["tests.harness.postgres"]``.

* ``pg_server`` (session): the server. ``GRISTMILL_TEST_DATABASE_URL`` (a superuser
  URL) points the suite at an existing server; otherwise an :class:`EmbeddedPostgres`
  with test-speed settings runs in a temporary directory for the session.
* ``pg_template`` (session): name of a template database holding the migrated schema.
* ``database_url`` (function): URL of a fresh database cloned from the template,
  dropped after the test.
* ``pg_pool`` (function): an asyncpg pool (Gristmill's codecs) on ``database_url``.
* ``restartable_pg`` (function): a server of the test's own, with a migrated
  database, that the test may ``kill()``, ``stop()`` and ``start()`` at will.

Embedded clusters live on tmpfs (/dev/shm) when it has room, where CREATE DATABASE
is about twenty times faster than on ext4; ``GRISTMILL_TEST_PG_TMPDIR`` overrides.
Async fixtures run on the session event loop: use them from tests on that loop
(the default of this suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from gristmill.cli.postgres import EmbeddedPostgres, EmbeddedPostgresError

__all__ = [
    "SCRATCH_DIR_ENV",
    "TEST_DATABASE_URL_ENV",
    "PgServer",
    "RestartablePg",
    "database_url",
    "pg_pool",
    "pg_server",
    "pg_template",
    "restartable_pg",
    "temporary_data_dir",
    "with_database",
]

#: Set to a superuser URL to run the suite against an existing server.
TEST_DATABASE_URL_ENV = "GRISTMILL_TEST_DATABASE_URL"

#: Directory for the embedded test clusters (default: /dev/shm if it has room).
SCRATCH_DIR_ENV = "GRISTMILL_TEST_PG_TMPDIR"

_POOL_CLOSE_SECONDS = 10.0
_SHM = "/dev/shm"
_MIN_SHM_FREE = 1 << 30


def with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database replaced by ``database`` (other parts kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scratch_root() -> str | None:
    """Where test clusters live: tmpfs when there is room, else the system temp dir.

    On a disk file system CREATE DATABASE spends its time creating a few hundred
    files (about 230 ms per clone on ext4, against about 10 ms on tmpfs).
    """
    explicit = os.environ.get(SCRATCH_DIR_ENV)
    if explicit:
        return explicit
    try:
        shm = os.statvfs(_SHM)
    except OSError:
        return None
    if shm.f_bavail * shm.f_frsize >= _MIN_SHM_FREE and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return None


@contextlib.contextmanager
def temporary_data_dir(prefix: str = "gristmill-pg-") -> Iterator[Path]:
    """An empty directory for a data directory, removed afterwards.

    Made directly under a world-traversable directory (not pytest's ``tmp_path``,
    whose parents are private to the user): when tests run as root, PostgreSQL runs
    as an unprivileged system user that must be able to reach it.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch_root()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class PgServer:
    """The session's server: a superuser URL, and the manager when it is embedded."""

    dsn: str
    embedded: EmbeddedPostgres | None

    def dsn_for(self, database: str) -> str:
        """Superuser URL of ``database`` on this server."""
        return with_database(self.dsn, database)


@dataclass(frozen=True, slots=True)
class RestartablePg:
    """A server owned by one test, and the URL of its migrated database."""

    server: EmbeddedPostgres
    database_url: str


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(dsn: str) -> None:
    # Imported here so that the manager's own tests do not depend on the schema.
    from gristmill.common.db.migrations import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of the test session."""
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        yield PgServer(dsn=external, embedded=None)
        return
    with (
        temporary_data_dir("gristmill-test-pg-") as data_dir,
        EmbeddedPostgres(data_dir, durable=False) as embedded,
    ):
        yield PgServer(dsn=embedded.dsn, embedded=embedded)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_template(pg_server: PgServer) -> AsyncIterator[str]:
    """Name of a template database with every migration applied."""
    conn = await asyncpg.connect(pg_server.dsn)
    try:
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            pytest.fail(
                f"{TEST_DATABASE_URL_ENV} must name a superuser: the fixtures create, "
                "clone and force-drop databases",
                pytrace=False,
            )
    finally:
        await conn.close()
    name = f"gristmill_template_{secrets.token_hex(4)}"
    await _admin(pg_server.dsn, f"CREATE DATABASE {_ident(name)}")
    try:
        await _migrate(pg_server.dsn_for(name))
        # No connections: CREATE DATABASE ... TEMPLATE fails while anyone is connected.
        await _admin(
            pg_server.dsn,
            f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
        )
        yield name
    finally:
        await _admin(
            pg_server.dsn,
            f"ALTER DATABASE {_ident(name)} WITH IS_TEMPLATE false",
            f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)",
        )


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(pg_server: PgServer, pg_template: str) -> AsyncIterator[str]:
    """URL of a new database with the schema, for this test only."""
    name = f"test_{secrets.token_hex(6)}"
    await _admin(pg_server.dsn, f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(pg_template)}")
    try:
        yield pg_server.dsn_for(name)
    finally:
        conn = await asyncpg.connect(pg_server.dsn)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pg_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on ``database_url``; the test must release what it acquires."""
    from gristmill.common.db.pool import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), _POOL_CLOSE_SECONDS)
        except TimeoutError:
            pool.terminate()
            pytest.fail(
                f"pg_pool: connections still acquired {_POOL_CLOSE_SECONDS:g}s after the "
                "test; release every connection you acquire",
                pytrace=False,
            )


@pytest_asyncio.fixture(loop_scope="session")
async def restartable_pg() -> AsyncIterator[RestartablePg]:
    """A server for this test alone, with a migrated database; kill and restart it freely.

    Settings survive a killed *process* (``synchronous_commit`` on, so a commit that
    returned is in the kernel), but not a lost machine (``fsync`` off): right for
    chaos tests that SIGKILL Postgres and check that nothing acknowledged was lost.
    """
    with temporary_data_dir("gristmill-chaos-pg-") as data_dir:
        server = EmbeddedPostgres(data_dir, durable=False, settings={"synchronous_commit": "on"})
        await asyncio.to_thread(server.start)
        try:
            url = await asyncio.to_thread(server.create_database, "gristmill")
            await _migrate(url)
            yield RestartablePg(server=server, database_url=url)
        finally:
            await asyncio.to_thread(_discard, server)


def _discard(server: EmbeddedPostgres) -> None:
    """Stop a server whose data is thrown away next, even if the test killed it.

    A killed server leaves its shared memory (a SysV segment, files in /dev/shm)
    until a server starts on the same directory, so start it once more first.
    """
    if not server.is_running():
        with contextlib.suppress(EmbeddedPostgresError):
            server.start()
    server.stop("immediate")
