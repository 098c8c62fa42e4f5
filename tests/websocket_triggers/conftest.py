"""Fixtures of this folder: a ``gristmill up`` per test module (``tests/scripts/standalone.py``),
an API client and a pool on its database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest_asyncio

from gristmill.common.db.pool import create_pool
from tests.scripts.standalone import TOKEN, Standalone, gristmill, standalone

__all__ = ["api", "db", "gristmill", "standalone"]


@pytest_asyncio.fixture(loop_scope="session")
async def api(standalone: Standalone) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of the module's ``gristmill up`` (async: the tests serve sockets)."""
    async with httpx.AsyncClient(
        base_url=standalone.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def db(standalone: Standalone) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(standalone.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
