"""Who am I, and API tokens: created over HTTP, usable at once, never shown again."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest_asyncio

from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.queue import Queue
from gristmill.common.tokens import create_token, ensure_bootstrap
from gristmill.gateway.context import GatewayContext
from tests.gateway.test_jobs_api import quiet_app, serve


class Users:
    def __init__(self, client: httpx.AsyncClient, pool: asyncpg.Pool, admin: str) -> None:
        self.client = client
        self.pool = pool
        self.admin = admin

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def create(self, token: str | None = None, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/api/users/tokens/create", json=body, headers=self.headers(token or self.admin)
        )

    async def new_token(self, token: str | None = None, **body: Any) -> str:
        response = await self.create(token, **body)
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    async def whoami(self, token: str) -> httpx.Response:
        return await self.client.get("/api/users/whoami", headers=self.headers(token))

    async def tokens(self, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get(
            "/api/users/tokens/list", params=params, headers=self.headers(token or self.admin)
        )
        assert response.status_code == 200, response.text
        assert self.admin not in response.text
        listed: list[dict[str, Any]] = response.json()
        return listed


@pytest_asyncio.fixture(loop_scope="session")
async def users(pg_pool: asyncpg.Pool) -> AsyncIterator[Users]:
    admin = f"users-{secrets.token_hex(12)}"
    await ensure_bootstrap(pg_pool, admin_token=admin)
    app = quiet_app(GatewayContext(pool=pg_pool, queue=Queue(pg_pool), bus=InProcessBus()))
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield Users(client, pg_pool, admin)


def in_utc(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


async def test_whoami_in_windmills_shapes(users: Users) -> None:
    me = await users.whoami(users.admin)
    assert me.status_code == 200
    body = me.json()
    assert body["username"] == "admin"
    assert body["email"] == "admin@localhost"
    assert body["is_admin"] is True
    assert body["is_super_admin"] is True
    assert body["super_admin"] is True  # GlobalUserInfo's name for it
    assert body["login_type"] == "password"
    assert body["verified"] is True
    assert body["workspace"] is None

    in_workspace = await users.client.get(
        "/api/w/main/users/whoami", headers=users.headers(users.admin)
    )
    assert in_workspace.status_code == 200
    user = in_workspace.json()
    for key in ("email", "username", "is_admin", "is_super_admin", "created_at", "operator"):
        assert key in user, key
    assert user["username"] == "admin"
    assert user["disabled"] is False
    assert user["folders"] == []
    assert user["folders_owners"] == []
    missing = await users.client.get(
        "/api/w/nowhere/users/whoami", headers=users.headers(users.admin)
    )
    assert missing.status_code == 404
    anonymous = await users.client.get("/api/users/whoami")
    assert anonymous.status_code == 401


async def test_a_created_token_works_lists_without_secret_and_dies_when_deleted(
    users: Users,
) -> None:
    # The payload the wmill client sends (a naive time with a Z).
    expiration = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    token = await users.new_token(
        label="refresh 1.5", expiration=expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    assert len(token) >= 32
    me = await users.whoami(token)
    assert me.status_code == 200
    assert me.json()["username"] == "admin"

    listed = await users.tokens()
    ours = [t for t in listed if t["token_prefix"] == token[:8]]
    assert len(ours) == 1
    assert ours[0]["label"] == "refresh 1.5"
    assert in_utc(ours[0]["expiration"]) == expiration
    assert ours[0]["email"] == "admin@localhost"
    assert ours[0]["created_at"]
    assert "last_used_at" in ours[0]
    for entry in listed:
        assert len(entry["token_prefix"]) == 8
        assert "token" not in entry
        assert token not in str(entry.values())
    assert any(t["label"] == "bootstrap" for t in listed)

    deleted = await users.client.delete(
        f"/api/users/tokens/delete/{token[:8]}", headers=users.headers(users.admin)
    )
    assert deleted.status_code == 200
    assert token[:8] in deleted.text
    assert all(t["token_prefix"] != token[:8] for t in await users.tokens())
    # This process may have the token's lookup cached for a few seconds.
    deadline = time.monotonic() + 10
    while (await users.whoami(token)).status_code != 401:
        assert time.monotonic() < deadline, "deleted token still accepted"
        await asyncio.sleep(0.2)
    again = await users.client.delete(
        f"/api/users/tokens/delete/{token[:8]}", headers=users.headers(users.admin)
    )
    assert again.status_code == 404


async def test_a_token_deleting_itself_stops_at_once(users: Users) -> None:
    token = await users.new_token(label="self")
    assert (await users.whoami(token)).status_code == 200  # now cached
    response = await users.client.delete(
        f"/api/users/tokens/delete/{token[:8]}", headers=users.headers(token)
    )
    assert response.status_code == 200
    assert (await users.whoami(token)).status_code == 401


async def test_expirations(users: Users) -> None:
    past = await users.create(expiration="2001-01-01T00:00:00Z")
    assert past.status_code == 400
    assert past.json()["error"]["location"] == "expiration"
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    short = await users.new_token(label="short", expiration=soon.isoformat())
    await asyncio.sleep(2)
    assert (await users.whoami(short)).status_code == 401  # never used: not cached either
    # A token never outlives the one that made it.
    parent_expiry = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    parent = await create_token(
        users.pool, user_id="admin", label="parent", expires_at=parent_expiry
    )
    child = await users.new_token(parent, label="child", expiration="2100-01-01T00:00:00Z")
    listed = {t["label"]: t for t in await users.tokens()}
    assert in_utc(listed["child"]["expiration"]) == parent_expiry
    assert (await users.whoami(child)).status_code == 200
    forever = await users.new_token(label="forever")
    assert (await users.whoami(forever)).status_code == 200
    assert {t["label"]: t for t in await users.tokens()}["forever"]["expiration"] is None


async def test_workspace_limits_carry_over(users: Users) -> None:
    await users.pool.execute("INSERT INTO workspaces (id, name) VALUES ('other', 'Other')")
    limited = await users.new_token(label="main only", workspace_id="main")
    ok = await users.client.get("/api/w/main/users/whoami", headers=users.headers(limited))
    assert ok.status_code == 200
    refused = await users.client.get("/api/w/other/users/whoami", headers=users.headers(limited))
    assert refused.status_code == 403
    assert (await users.whoami(limited)).json()["workspace"] == "main"

    escalate = await users.create(limited, label="x", workspace_id="other")
    assert escalate.status_code == 403
    inherited = await users.new_token(limited, label="inherits")
    listed = {t["label"]: t for t in await users.tokens()}
    assert listed["inherits"]["workspace_id"] == "main"
    assert listed["main only"]["workspace_id"] == "main"
    refused = await users.client.get("/api/w/other/users/whoami", headers=users.headers(inherited))
    assert refused.status_code == 403

    unknown = await users.create(label="x", workspace_id="nowhere")
    assert unknown.status_code == 404
    scoped = await users.create(label="x", scopes=["jobs:read"])
    assert scoped.status_code == 400
    assert scoped.json()["error"]["location"] == "scopes"
    malformed = await users.create(label=["not", "a", "string"])
    assert malformed.status_code == 400


async def test_job_tokens_make_job_tokens(users: Users) -> None:
    job_token = await create_token(users.pool, user_id="admin", job_id=uuid.uuid4())
    made = await users.new_token(job_token, label="from a job")
    assert (await users.whoami(made)).status_code == 200
    everything = {t["label"]: t for t in await users.tokens()}
    assert everything["from a job"]["job_id"] is not None
    durable = {t["label"] for t in await users.tokens(exclude_ephemeral="true")}
    assert "from a job" not in durable
    assert "bootstrap" in durable


async def test_tokens_are_per_user(users: Users) -> None:
    await users.pool.execute("INSERT INTO users (id, email) VALUES ('bob', 'bob@example.com')")
    bob = await create_token(users.pool, user_id="bob", label="bob's")
    mine = await users.new_token(label="mine")
    assert all(t["label"] != "bob's" for t in await users.tokens())
    assert [t["label"] for t in await users.tokens(bob)] == ["bob's"]
    assert (await users.tokens(bob))[0]["email"] == "bob@example.com"
    stolen = await users.client.delete(
        f"/api/users/tokens/delete/{mine[:8]}", headers=users.headers(bob)
    )
    assert stolen.status_code == 404
    assert (await users.whoami(mine)).status_code == 200
    me = (await users.whoami(bob)).json()
    assert me["username"] == "bob"
    assert me["is_admin"] is False

    for index in range(5):
        await users.new_token(bob, label=f"page {index}")
    first = await users.tokens(bob, per_page=4)
    second = await users.tokens(bob, per_page=4, page=2)
    assert len(first) == 4
    assert len(second) == 2
    assert not {t["token_prefix"] for t in first} & {t["token_prefix"] for t in second}


async def test_users_endpoints_need_a_token(users: Users) -> None:
    for method, path in (
        ("GET", "/api/users/whoami"),
        ("GET", "/api/w/main/users/whoami"),
        ("POST", "/api/users/tokens/create"),
        ("GET", "/api/users/tokens/list"),
        ("DELETE", "/api/users/tokens/delete/abcdefgh"),
    ):
        response = await users.client.request(method, path, json={"label": "x"})
        assert response.status_code == 401, (method, path)
