"""Version, health and identity."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State

from gristmill.common.tokens import TokenInfo

__all__ = ["ROUTES", "health", "version", "whoami"]


@get("/api/version", media_type="text/plain", summary="Server version")
async def version(state: State) -> str:
    return f"Gristmill v{state.gristmill.version}"


@get("/api/health", summary="Liveness and database reachability")
async def health(state: State) -> dict[str, Any]:
    ok = await state.gristmill.pool.fetchval("SELECT 1") == 1
    return {"status": "ok" if ok else "degraded", "database": ok}


@get("/api/users/whoami", summary="The token's user")
async def whoami(request: Request[TokenInfo, str, Any]) -> dict[str, Any]:
    info = request.user
    return {
        "username": info.user_id,
        "email": f"{info.user_id}@localhost",
        "is_admin": info.is_admin,
        "is_super_admin": info.is_admin,
        "workspace": info.workspace,
    }


ROUTES = [version, health, whoami]
