"""Version, health and the OpenAPI document (all public: no token needed)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State

from gristmill.common.db.queries import load_queries

__all__ = ["ROUTES", "Health", "health", "openapi_json", "version"]


_Q = load_queries("workers.sql")


class Health(msgspec.Struct, kw_only=True):
    """Whether the gateway can reach its database."""

    status: str
    database: bool


@get("/api/version", media_type="text/plain", summary="Server version", tags=["settings"])
async def version(state: State) -> str:
    """The version; a warning follows it while any live worker runs jobs unsandboxed."""
    text = f"Gristmill v{state.gristmill.version}"
    try:
        insecure = await state.gristmill.pool.fetchval(_Q["insecure_workers"])
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return text  # the version must answer even while the database is away
    if insecure:
        text += f" (WARNING: {insecure} worker(s) run jobs without a sandbox)"
    return text


@get("/api/health", summary="Liveness and database reachability", tags=["settings"])
async def health(state: State) -> Health:
    ok = await state.gristmill.pool.fetchval("SELECT 1") == 1
    return Health(status="ok" if ok else "degraded", database=ok)


@get("/api/openapi.json", summary="The OpenAPI document", include_in_schema=False)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The document also served at ``/api/openapi/openapi.json`` (Windmill's path)."""
    schema = request.app.openapi_schema.to_schema()
    return Response(msgspec.json.encode(schema), media_type="application/json")


ROUTES = [version, health, openapi_json]
