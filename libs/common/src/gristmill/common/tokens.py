"""Bearer tokens: random secrets shown once, stored as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime

import asyncpg
import msgspec

from gristmill.common.db.pool import Conn

__all__ = [
    "TokenInfo",
    "create_job_token",
    "create_token",
    "ensure_bootstrap",
    "hash_token",
    "lookup_token",
]

_PREFIX_LEN = 8


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    is_admin: bool
    workspace: str | None
    job_id: uuid.UUID | None
    expires_at: datetime | None
    label: str | None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    conn: Conn | asyncpg.Pool,
    *,
    user_id: str,
    label: str | None = None,
    workspace: str | None = None,
    job_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    token: str | None = None,
) -> str:
    """Create a token and return it in clear (the only time it is seen)."""
    clear = token or secrets.token_urlsafe(24)
    await conn.execute(
        """
        INSERT INTO tokens (token_hash, prefix, user_id, label, workspace_id, job_id, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (token_hash) DO NOTHING
        """,
        hash_token(clear),
        clear[:_PREFIX_LEN],
        user_id,
        label,
        workspace,
        job_id,
        expires_at,
    )
    return clear


async def create_job_token(
    conn: Conn | asyncpg.Pool,
    *,
    user_id: str,
    workspace: str,
    job_id: uuid.UUID,
    expires_at: datetime,
) -> str | None:
    """A token for a running job, acting as ``user_id``; ``None`` if that user does not
    exist. Never raises for a missing user, so it can run inside a caller's
    transaction (the worker's claim) without aborting it."""
    clear = secrets.token_urlsafe(24)
    made = await conn.fetchval(
        """
        INSERT INTO tokens (token_hash, prefix, user_id, label, workspace_id, job_id, expires_at)
        SELECT $1, $2, $3, $4, $5, $6, $7
        WHERE EXISTS (SELECT 1 FROM users WHERE id = $3)
        RETURNING true
        """,
        hash_token(clear),
        clear[:_PREFIX_LEN],
        user_id,
        f"job {job_id}",
        workspace,
        job_id,
        expires_at,
    )
    return clear if made else None


async def lookup_token(conn: Conn | asyncpg.Pool, token: str) -> TokenInfo | None:
    """The token's owner and scope, or ``None`` if unknown or expired."""
    row = await conn.fetchrow(
        """
        SELECT t.user_id, u.is_admin, t.workspace_id, t.job_id, t.expires_at, t.label
        FROM tokens t JOIN users u ON u.id = t.user_id
        WHERE t.token_hash = $1 AND (t.expires_at IS NULL OR t.expires_at > now())
        """,
        hash_token(token),
    )
    if row is None:
        return None
    return TokenInfo(
        user_id=row["user_id"],
        is_admin=row["is_admin"],
        workspace=row["workspace_id"],
        job_id=row["job_id"],
        expires_at=row["expires_at"],
        label=row["label"],
    )


async def ensure_bootstrap(
    pool: asyncpg.Pool, *, admin_token: str | None, workspace: str = "main"
) -> str | None:
    """Create the default workspace and the admin user on first start.

    With ``admin_token`` the admin's token is that value. Without it, a token is
    generated the first time only and returned (``None`` on later starts).
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO workspaces (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", workspace
        )
        await conn.execute(
            "INSERT INTO users (id, email, is_admin) VALUES ('admin', 'admin@localhost', true) "
            "ON CONFLICT DO NOTHING"
        )
        if admin_token is not None:
            await create_token(conn, user_id="admin", label="bootstrap", token=admin_token)
            return admin_token
        existing = await conn.fetchval(
            "SELECT 1 FROM tokens WHERE user_id = 'admin' AND label = 'bootstrap'"
        )
        if existing is not None:
            return None
        return await create_token(conn, user_id="admin", label="bootstrap")
