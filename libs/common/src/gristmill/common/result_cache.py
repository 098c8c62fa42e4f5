"""Results reused instead of recomputed (``cache_ttl`` of scripts, flows and flow steps).

A cached run is identified by a key: a SHA-256 over the workspace, what runs (a script
version's hash, an inline script's language, code and lock, a flow's value) and the
canonical JSON of its arguments (keys sorted). A job that should fill the cache
carries ``meta["cache"] = {"key": ..., "ttl_s": ...}``; whoever ends it successfully
stores its result in the same transaction (``store``). A later run with the same key
within the TTL is served from the cache (``lookup``): by the queue when a worker claims
it, or by the flow engine before it would enqueue a step.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Final

import msgspec

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries

__all__ = [
    "CacheHit",
    "cache_meta",
    "cache_of",
    "flow_key",
    "lookup",
    "purge_expired",
    "rawscript_key",
    "script_key",
    "store",
    "ttl_of",
]

_Q = load_queries("result_cache.sql")
_canonical = msgspec.json.Encoder(order="sorted")
#: Where a job's cache settings sit in its ``meta``.
META_KEY: Final = "cache"


class CacheHit(msgspec.Struct, frozen=True, kw_only=True):
    result: Any
    #: The job that computed the result.
    job_id: uuid.UUID


def _key(workspace: str, kind: str, version: str, args: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for part in (workspace.encode(), kind.encode(), version.encode(), _canonical.encode(args)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def script_key(workspace: str, script_hash: str, args: dict[str, Any]) -> str:
    """The key of a run of a saved script version."""
    return _key(workspace, "script", script_hash, args)


def rawscript_key(
    workspace: str, language: str, code: str, lock: str | None, args: dict[str, Any]
) -> str:
    """The key of a run of inline code (a flow's ``rawscript`` step)."""
    version = hashlib.sha256(_canonical.encode([language, code, lock])).hexdigest()
    return _key(workspace, "rawscript", version, args)


def flow_key(workspace: str, value: dict[str, Any], args: dict[str, Any]) -> str:
    """The key of a run of a flow (its OpenFlow ``value`` is its version)."""
    version = hashlib.sha256(_canonical.encode(value)).hexdigest()
    return _key(workspace, "flow", version, args)


def ttl_of(value: Any) -> float | None:
    """A positive TTL in seconds, or ``None`` (no caching) for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def cache_meta(key: str, ttl_s: float) -> dict[str, Any]:
    """The ``meta`` entry that makes a job fill the cache when it succeeds."""
    return {META_KEY: {"key": key, "ttl_s": ttl_s}}


def cache_of(meta: dict[str, Any] | None) -> tuple[str, float] | None:
    """``(key, ttl_s)`` of a job's ``meta``, if it is to be cached."""
    found = (meta or {}).get(META_KEY)
    if not isinstance(found, dict):
        return None
    key, ttl = found.get("key"), ttl_of(found.get("ttl_s"))
    if not isinstance(key, str) or ttl is None:
        return None
    return key, ttl


async def lookup(conn: Conn, key: str) -> CacheHit | None:
    row = await conn.fetchrow(_Q["lookup"], key)
    if row is None:
        return None
    return CacheHit(result=row["result"], job_id=row["job_id"])


async def store(
    conn: Conn, *, key: str, workspace: str, result: Any, job_id: uuid.UUID, ttl_s: float
) -> None:
    await conn.execute(_Q["store"], key, workspace, result, job_id, ttl_s)


async def purge_expired(conn: Conn, *, batch: int = 1000) -> int:
    """Delete expired entries (up to ``batch``); returns how many."""
    rows = await conn.fetch(_Q["purge_expired"], batch)
    return len(rows)
