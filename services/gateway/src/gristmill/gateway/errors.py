"""Map Gristmill's error tree to HTTP responses with a clear JSON body."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gristmill.common import errors

__all__ = ["exception_handlers"]

_log = structlog.get_logger(__name__)

_STATUS = {
    errors.InvalidRequest: 400,
    errors.PayloadTooLarge: 413,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
}


def _status_of(exc: errors.GristmillError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _gristmill_error(_request: Request[Any, Any, Any], exc: errors.GristmillError) -> Response[Any]:
    return Response({"error": exc.to_dict()}, status_code=_status_of(exc))


def _http_error(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code = {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
    }.get(exc.status_code, "http_error")
    body: dict[str, Any] = {"code": code, "message": exc.detail}
    if isinstance(exc, ValidationException) and exc.extra:
        body["data"] = exc.extra
    return Response({"error": body}, status_code=exc.status_code, headers=exc.headers)


def _decode_error(_request: Request[Any, Any, Any], exc: msgspec.DecodeError) -> Response[Any]:
    return Response(
        {"error": {"code": "invalid_request", "message": f"malformed JSON body: {exc}"}},
        status_code=400,
    )


def _database_unavailable(_request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    _log.warning("database unavailable", error=f"{type(exc).__name__}: {exc}")
    return Response(
        {
            "error": {
                "code": "unavailable",
                "message": "the database is unavailable; nothing was accepted, retry shortly",
            }
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )


exception_handlers: dict[Any, Any] = {
    OSError: _database_unavailable,
    asyncpg.InterfaceError: _database_unavailable,
    asyncpg.InternalClientError: _database_unavailable,
    asyncpg.PostgresConnectionError: _database_unavailable,
    asyncpg.CannotConnectNowError: _database_unavailable,
    asyncpg.AdminShutdownError: _database_unavailable,
    errors.GristmillError: _gristmill_error,
    HTTPException: _http_error,
    msgspec.DecodeError: _decode_error,
}
