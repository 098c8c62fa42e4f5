"""Map Gristmill's error tree to HTTP responses with a clear JSON body."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gristmill.common import errors

__all__ = ["exception_handlers"]

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
            return _STATUS[cls]  # type: ignore[index]  # mro entries are the keys' types
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


exception_handlers: dict[Any, Any] = {
    errors.GristmillError: _gristmill_error,
    HTTPException: _http_error,
    msgspec.DecodeError: _decode_error,
}
