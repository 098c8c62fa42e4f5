"""The PostgreSQL server a side-by-side run uses: a private one, or one given.

``GRISTMILL_BENCH_DSN`` (a superuser URL) points the benchmarks that use this module at
an existing server; otherwise the embedded server starts with production durability
(see ``bench._pg.server``). Every system gets fresh databases on the same server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from bench._pg import server
from gristmill.common.db import migrate

__all__ = ["DSN_ENV", "Cluster", "cluster"]

DSN_ENV = "GRISTMILL_BENCH_DSN"


@dataclass(frozen=True, slots=True)
class Cluster:
    admin_dsn: str
    #: "embedded" or "given" (GRISTMILL_BENCH_DSN)
    origin: str

    def dsn_for(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + quote(database, safe="")))

    async def fresh_database(self, name: str, *, migrated: bool = False) -> str:
        """Drop and create database ``name`` (with Gristmill's schema if ``migrated``)."""
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        dsn = self.dsn_for(name)
        if migrated:
            conn = await asyncpg.connect(dsn)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        return dsn

    async def drop_database(self, name: str) -> None:
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextmanager
def cluster() -> Iterator[Cluster]:
    given = os.environ.get(DSN_ENV)
    if given:
        yield Cluster(given, "given")
        return
    with server() as pg:
        yield Cluster(pg.dsn, "embedded")
