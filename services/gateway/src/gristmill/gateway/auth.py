"""Bearer-token authentication for every endpoint not explicitly public.

The token comes from ``Authorization: Bearer <token>`` or ``?token=<token>``.
Lookups are cached for a few seconds to keep the database off the hot path.
"""

from __future__ import annotations

import time

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from gristmill.common.tokens import TokenInfo, lookup_token

__all__ = ["PUBLIC_PATHS", "TokenAuthMiddleware", "check_workspace"]

#: Paths (regexes) that answer without a token.
PUBLIC_PATHS = [
    "^/api/version$",
    "^/api/openapi",
    "^/api/health$",
    # Approval links: the per-step signature in the URL is the credential.
    "^/api/w/[^/]+/jobs_u/(resume|cancel|get_flow)/",
    # User-defined HTTP routes authenticate per route (gateway.routes.http_routes).
    "^/api/r/",
]
#: Other gateway processes may accept a deleted token for at most this long.
_CACHE_TTL_S = 2.0
_cache: dict[str, tuple[float, TokenInfo | None]] = {}


def _token_of(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]  # any app/state
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    token = connection.query_params.get("token")
    return token or None


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self,
        connection: ASGIConnection,  # type: ignore[type-arg]  # any app/state
    ) -> AuthenticationResult:
        token = _token_of(connection)
        if token is None:
            raise NotAuthorizedException(
                "missing token: send 'Authorization: Bearer <token>' or '?token=<token>'"
            )
        now = time.monotonic()
        cached = _cache.get(token)
        if cached is not None and now - cached[0] < _CACHE_TTL_S:
            info = cached[1]
        else:
            context = connection.app.state.gristmill
            info = await lookup_token(context.pool, token)
            # Job tokens die with their job: never serve them from the cache.
            if info is not None and info.job_id is None:
                _cache[token] = (now, info)
                if len(_cache) > 10_000:
                    _cache.clear()
        if info is None:
            raise NotAuthorizedException("invalid or expired token")
        return AuthenticationResult(user=info, auth=token)


def forget_token(token: str) -> None:
    _cache.pop(token, None)


def forget_prefix(prefix: str) -> None:
    """Drop cached lookups of tokens starting with ``prefix`` (after a deletion)."""
    for token in [t for t in _cache if t.startswith(prefix)]:
        _cache.pop(token, None)


def check_workspace(info: TokenInfo, workspace: str) -> None:
    if info.workspace is not None and info.workspace != workspace:
        raise PermissionDeniedException(
            f"this token is limited to workspace {info.workspace!r}, not {workspace!r}"
        )
