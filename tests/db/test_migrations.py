"""The migrations and schema.sql describe the same database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gristmill.common.db.migrations import (
    available_migrations,
    migrate,
    pending_migrations,
    schema_sql,
)
from tests.harness.postgres import PgServer

# Everything that makes up the schema, as comparable text.
_SNAPSHOT = """
SELECT 'column' AS kind, c.table_name || '.' || c.column_name AS name,
       concat_ws(' ', c.data_type, c.udt_name, c.is_nullable, c.column_default,
                 c.ordinal_position) AS def
FROM information_schema.columns c WHERE c.table_schema = 'public'
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'function', p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
ORDER BY 1, 2
"""


@pytest.fixture
async def empty_databases(pg_server: PgServer) -> AsyncIterator[tuple[str, str]]:
    names = [f"schema_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        yield pg_server.dsn_for(names[0]), pg_server.dsn_for(names[1])
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _snapshot(dsn: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_SNAPSHOT)
    finally:
        await conn.close()
    return [(r["kind"], r["name"], r["def"]) for r in rows if "schema_migrations" not in r["name"]]


async def test_migrations_yield_exactly_schema_sql(empty_databases: tuple[str, str]) -> None:
    migrated, declared = empty_databases
    conn = await asyncpg.connect(migrated)
    try:
        applied = await migrate(conn)
        assert [m.version for m in applied] == [m.version for m in available_migrations()]
    finally:
        await conn.close()
    conn = await asyncpg.connect(declared)
    try:
        await conn.execute(schema_sql())
    finally:
        await conn.close()
    migrated_snapshot = await _snapshot(migrated)
    assert migrated_snapshot, "the snapshot query saw nothing"
    assert migrated_snapshot == await _snapshot(declared)


async def test_migrate_is_idempotent_and_concurrent_safe(empty_databases: tuple[str, str]) -> None:
    dsn, _ = empty_databases
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(available_migrations())]
        assert await pending_migrations(conns[0]) == []
        assert await migrate(conns[0]) == []
    finally:
        for c in conns:
            await c.close()
