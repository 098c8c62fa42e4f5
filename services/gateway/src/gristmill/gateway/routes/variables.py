"""Variables and secrets: Windmill's ``/api/w/{workspace}/variables/...`` paths.

A secret's value leaves the server only when asked for in clear and allowed:
``get_value`` (what ``wmill.get_variable`` calls) and ``get`` with
``decrypt_secret=true``. ``get`` without it and ``list`` show ``null`` instead.
Who may read or write a path: ``gristmill.common.variables.may_access``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import HttpMethod, MediaType, Request, Response, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from gristmill.common.errors import Forbidden, InvalidRequest
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import Variable, VariableStore, may_access, validate_path
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext

__all__ = [
    "ROUTES",
    "CreateVariable",
    "EditVariable",
    "authorize_path",
    "checked_path",
    "item_path",
    "json_response",
    "page_bounds",
]

_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/variables"
_MAX_PER_PAGE = 10_000


class CreateVariable(msgspec.Struct, kw_only=True):
    """Windmill's ``CreateVariable``."""

    path: str
    value: str
    is_secret: bool = False
    description: str = ""
    #: OAuth accounts are not supported; accepted and ignored for compatibility.
    account: int | None = None
    is_oauth: bool = False


class EditVariable(msgspec.Struct, kw_only=True):
    """Windmill's ``EditVariable``: each field given is changed (``path`` renames)."""

    path: str | None = None
    value: str | None = None
    is_secret: bool | None = None
    description: str | None = None


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _store(state: State) -> VariableStore:
    context = _ctx(state)
    return VariableStore(context.pool, context.keystore)


def item_path(raw: str) -> str:
    """The item path of a ``{path:path}`` URL parameter (Litestar keeps its leading '/')."""
    return raw[1:] if raw.startswith("/") else raw


def authorize_path(info: TokenInfo, path: str, kind: str) -> None:
    """``Forbidden`` unless the token's user may access the item at ``path``."""
    if not may_access(path, user_id=info.user_id, is_admin=info.is_admin):
        raise Forbidden(
            f"user {info.user_id!r} may not access {kind} {path}: it belongs to another user",
            location="path",
        )


def checked_path(request: _AuthRequest, workspace: str, raw: str, kind: str = "variable") -> str:
    """The item path of the URL (a variable, resource, schedule or trigger of ``kind``),
    once the token may use the workspace and that path."""
    check_workspace(request.user, workspace)
    path = validate_path(item_path(raw), kind=kind)
    authorize_path(request.user, path, kind)
    return path


def json_response(value: Any, status_code: int = 200) -> Response[bytes]:
    """Any JSON value as the body (a string is sent as a JSON string)."""
    return Response(msgspec.json.encode(value), media_type=MediaType.JSON, status_code=status_code)


def page_bounds(page: int, per_page: int) -> tuple[int, int]:
    """``(limit, offset)`` of a 1-based ``page``; ``InvalidRequest`` when out of range."""
    if page < 1:
        raise InvalidRequest("page starts at 1", location="page")
    if not 1 <= per_page <= _MAX_PER_PAGE:
        raise InvalidRequest(f"per_page must be 1..{_MAX_PER_PAGE}", location="per_page")
    return per_page, (page - 1) * per_page


def _view(variable: Variable) -> dict[str, Any]:
    """Windmill's ``ListableVariable``."""
    return {
        "workspace_id": variable.workspace,
        "path": variable.path,
        "value": variable.value,
        "is_secret": variable.is_secret,
        "description": variable.description,
        "extra_perms": {},
        "account": None,
        "is_oauth": False,
        "is_expired": False,
        "is_linked": False,
        "is_refreshed": False,
        "created_by": variable.created_by,
        "edited_at": variable.edited_at.isoformat(),
    }


@post(f"{_BASE}/create", status_code=201, media_type=MediaType.TEXT, summary="Create a variable")
async def create_variable(
    workspace: FromPath[str],
    data: JSONBody[CreateVariable],
    request: _AuthRequest,
    state: State,
    already_encrypted: FromQuery[bool] = False,
) -> str:
    """Answers the path. With ``already_encrypted``, ``value`` is a ciphertext read back
    from this workspace and path with ``include_encrypted`` (a sync round trip)."""
    check_workspace(request.user, workspace)
    path = validate_path(data.path, kind="variable")
    authorize_path(request.user, path, "variable")
    await _store(state).create(
        workspace,
        path,
        value=data.value,
        is_secret=data.is_secret,
        description=data.description,
        created_by=request.user.user_id,
        already_encrypted=already_encrypted,
    )
    return path


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update a variable",
)
async def update_variable(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditVariable],
    request: _AuthRequest,
    state: State,
    already_encrypted: FromQuery[bool] = False,
) -> str:
    current = checked_path(request, workspace, path)
    if data.path is not None and data.path != current:
        authorize_path(request.user, validate_path(data.path, kind="variable"), "variable")
    target = await _store(state).update(
        workspace,
        current,
        value=data.value,
        is_secret=data.is_secret,
        description=data.description,
        new_path=data.path if data.path != current else None,
        already_encrypted=already_encrypted,
    )
    return f"variable {target} updated"


@get(f"{_BASE}/get/{{path:path}}", summary="Get a variable (a secret's value only if asked)")
async def get_variable(
    workspace: FromPath[str],
    path: FromPath[str],
    request: _AuthRequest,
    state: State,
    decrypt_secret: FromQuery[bool] = False,
    include_encrypted: FromQuery[bool] = False,
) -> dict[str, Any]:
    """A secret's ``value`` is ``null`` unless ``decrypt_secret`` (clear text) or
    ``include_encrypted`` (the stored ciphertext, for a sync round trip)."""
    item = checked_path(request, workspace, path)
    variable = await _store(state).get(
        workspace, item, decrypt=decrypt_secret, encrypted=include_encrypted
    )
    return _view(variable)


@get(f"{_BASE}/get_value/{{path:path}}", summary="A variable's value (decrypted), as JSON")
async def get_variable_value(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> Response[bytes]:
    item = checked_path(request, workspace, path)
    return json_response(await _store(state).get_value(workspace, item))


@get(f"{_BASE}/exists/{{path:path}}", summary="Whether a variable exists")
async def variable_exists(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    item = checked_path(request, workspace, path)
    return await _store(state).exists(workspace, item)


@get(f"{_BASE}/list", summary="List variables (secrets without their value)")
async def list_variables(
    workspace: FromPath[str],
    request: _AuthRequest,
    state: State,
    path_start: FromQuery[str | None] = None,
    page: FromQuery[int] = 1,
    per_page: FromQuery[int] = 1000,
) -> list[dict[str, Any]]:
    check_workspace(request.user, workspace)
    limit, offset = page_bounds(page, per_page)
    found = await _store(state).list_variables(
        workspace, path_start=path_start or None, limit=limit, offset=offset
    )
    info = request.user
    return [
        _view(v) for v in found if may_access(v.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE, HttpMethod.POST],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete a variable",
)
async def delete_variable(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path)
    await _store(state).delete(workspace, item)
    return f"variable {item} deleted"


ROUTES = [
    create_variable,
    update_variable,
    get_variable,
    get_variable_value,
    variable_exists,
    list_variables,
    delete_variable,
]
