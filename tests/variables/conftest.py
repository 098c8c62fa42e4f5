"""Fixtures: the gateway app in process on a real database, with a master keyring.

The app runs on the test's event loop through ``httpx.ASGITransport`` (Litestar's own
test clients run it on a loop of their own in a thread, where the test's asyncpg pool
cannot go).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from litestar import Litestar

from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.queue import Queue
from gristmill.common.secrets import MasterKeyring
from gristmill.common.tokens import create_token, ensure_bootstrap
from gristmill.gateway.app import create_app
from gristmill.gateway.context import GatewayContext

ADMIN_TOKEN = "variables-admin-token-0123456789"
ALICE_TOKEN = "variables-alice-token-0123456789"

Client = httpx.AsyncClient


@pytest.fixture
def keyring() -> MasterKeyring:
    return MasterKeyring([("k1", MasterKeyring.generate_key())])


@pytest.fixture
async def users(pg_pool: asyncpg.Pool) -> asyncpg.Pool:
    """Workspaces ``main`` and ``other``; ``admin`` (ADMIN_TOKEN) and ``alice`` (ALICE_TOKEN)."""
    await ensure_bootstrap(pg_pool, admin_token=ADMIN_TOKEN)
    await pg_pool.execute("INSERT INTO workspaces (id, name) VALUES ('other', 'other')")
    await pg_pool.execute("INSERT INTO users (id, email) VALUES ('alice', 'alice@localhost')")
    await create_token(pg_pool, user_id="alice", token=ALICE_TOKEN)
    return pg_pool


def gateway_context(pool: asyncpg.Pool, keyring: MasterKeyring | None) -> GatewayContext:
    return GatewayContext(pool=pool, queue=Queue(pool), bus=InProcessBus(), keyring=keyring)


def gateway_app(pool: asyncpg.Pool, keyring: MasterKeyring | None) -> Litestar:
    """``create_app`` on a real pool.

    Litestar 2.25 warns about handlers declared in its older style; other route modules
    still are (their owners are moving them). Those warnings are tolerated here, but
    none may name a variables or resources endpoint.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = create_app(gateway_context(pool, keyring))
    ours = [str(w.message) for w in caught if "/variables/" in str(w.message)]
    ours += [str(w.message) for w in caught if "/resources/" in str(w.message)]
    assert not ours, ours
    return app


@pytest.fixture
async def api(users: asyncpg.Pool, keyring: MasterKeyring) -> AsyncIterator[Client]:
    """An HTTP client of the gateway, authenticated as the admin."""
    async with client_of(gateway_app(users, keyring)) as client:
        yield client


def client_of(app: Litestar, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
    """An HTTP client of ``app`` on this event loop, authenticated with ``token``."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gateway.test",
        headers={"Authorization": f"Bearer {token}"},
    )
