"""Numbered SQL migrations, applied in order, each once, under an advisory lock.

Several processes may start at once (standalone, or replicas in the distributed
shape): the first takes the lock and migrates, the others wait and find nothing to do.
"""

from __future__ import annotations

import re
from importlib import resources

import asyncpg
import structlog

__all__ = ["Migration", "available_migrations", "migrate", "pending_migrations", "schema_sql"]

_log = structlog.get_logger(__name__)
_LOCK_ID = 0x6772_6973_746D  # arbitrary, constant: "gristm"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Migration:
    __slots__ = ("name", "sql", "version")

    def __init__(self, version: int, name: str, sql: str) -> None:
        self.version = version
        self.name = name
        self.sql = sql

    def __repr__(self) -> str:
        return f"Migration({self.version:04d}_{self.name})"


def available_migrations() -> list[Migration]:
    folder = resources.files("gristmill.common.db").joinpath("sql", "migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def schema_sql() -> str:
    """The full schema, as it must be after every migration (see the schema test)."""
    path = resources.files("gristmill.common.db").joinpath("sql", "schema.sql")
    return path.read_text(encoding="utf-8")


async def _ensure_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


async def pending_migrations(conn: asyncpg.Connection) -> list[Migration]:
    await _ensure_table(conn)
    done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m for m in available_migrations() if m.version not in done]


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply every pending migration; return those applied by this call."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        applied: list[Migration] = []
        for migration in await pending_migrations(conn):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            _log.info("migration applied", version=migration.version, name=migration.name)
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
