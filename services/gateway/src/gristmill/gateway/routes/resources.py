"""Resource types, resources and scripts' state: Windmill's ``/api/w/{workspace}/resources/...``.

State: ``wmill.set_state`` calls ``resources/get`` (404: none yet), then
``resources/create`` with type ``state`` or ``resources/update_value``;
``wmill.get_state`` calls ``resources/get_value_interpolated`` and reads any error as
"no state yet". The ``state`` type is created on first use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import HttpMethod, MediaType, Request, Response, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody

from gristmill.common.resources import Resource, ResourceStore, ResourceType, validate_type_name
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import VariableStore, may_access, validate_path
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.variables import (
    authorize_path,
    checked_path,
    json_response,
    page_bounds,
)

__all__ = [
    "ROUTES",
    "CreateResource",
    "CreateResourceType",
    "EditResource",
    "EditResourceType",
    "ResourceValue",
]

_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/resources"


class CreateResource(msgspec.Struct, kw_only=True):
    """Windmill's ``CreateResource``."""

    path: str
    value: Any
    resource_type: str
    description: str = ""


class EditResource(msgspec.Struct, kw_only=True):
    """Windmill's ``EditResource``: each field given is changed (``path`` renames)."""

    path: str | None = None
    description: str | None = None
    value: Any | msgspec.UnsetType = msgspec.UNSET
    resource_type: FromQuery[str | None] = None


class ResourceValue(msgspec.Struct, kw_only=True):
    """The body of ``update_value``."""

    value: Any


class CreateResourceType(msgspec.Struct, kw_only=True):
    """Windmill's ``ResourceType`` as sent to create one."""

    name: str
    schema: Any = None
    description: str = ""


class EditResourceType(msgspec.Struct, kw_only=True):
    """Windmill's ``EditResourceType``: ``schema`` given (even ``null``) replaces it."""

    schema: Any | msgspec.UnsetType = msgspec.UNSET
    description: str | None = None


def _store(state: State) -> ResourceStore:
    context: GatewayContext = state.gristmill
    return ResourceStore(context.pool, VariableStore(context.pool, context.keystore))


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _view(resource: Resource) -> dict[str, Any]:
    """Windmill's ``Resource``/``ListableResource``."""
    return {
        "workspace_id": resource.workspace,
        "path": resource.path,
        "resource_type": resource.resource_type,
        "value": resource.value,
        "description": resource.description,
        "is_oauth": False,
        "extra_perms": {},
        "is_expired": False,
        "is_linked": False,
        "is_refreshed": False,
        "created_by": resource.created_by,
        "edited_at": _iso(resource.edited_at),
    }


def _type_view(kind: ResourceType) -> dict[str, Any]:
    """Windmill's ``ResourceType``."""
    return {
        "workspace_id": kind.workspace,
        "name": kind.name,
        "schema": kind.schema,
        "description": kind.description,
        "created_by": kind.created_by,
        "edited_at": _iso(kind.edited_at),
        "format_extension": None,
    }


def _type_names(raw: str | None, location: str) -> list[str] | None:
    """A comma-separated list of type names (``None``: no filter)."""
    if not raw:
        return None
    return [validate_type_name(n.strip(), location=location) for n in raw.split(",") if n.strip()]


# -- resource types -------------------------------------------------------------------


@post(f"{_BASE}/type/create", status_code=201, media_type=MediaType.TEXT, summary="Create a type")
async def create_resource_type(
    workspace: FromPath[str],
    data: JSONBody[CreateResourceType],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the name. ``schema``, a JSON Schema, checks the values of its resources."""
    check_workspace(request.user, workspace)
    await _store(state).create_type(
        workspace,
        data.name,
        schema=data.schema,
        description=data.description,
        created_by=request.user.user_id,
    )
    return data.name


@get(f"{_BASE}/type/get/{{name:str}}", summary="Get a resource type")
async def get_resource_type(
    workspace: FromPath[str], name: FromPath[str], request: _AuthRequest, state: State
) -> dict[str, Any]:
    check_workspace(request.user, workspace)
    return _type_view(await _store(state).get_type(workspace, name))


@get(f"{_BASE}/type/exists/{{name:str}}", summary="Whether a resource type exists")
async def resource_type_exists(
    workspace: FromPath[str], name: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    check_workspace(request.user, workspace)
    return await _store(state).type_exists(workspace, name)


@get(f"{_BASE}/type/list", summary="List resource types")
async def list_resource_types(
    workspace: FromPath[str], request: _AuthRequest, state: State
) -> list[dict[str, Any]]:
    check_workspace(request.user, workspace)
    return [_type_view(k) for k in await _store(state).list_types(workspace)]


@get(f"{_BASE}/type/listnames", summary="List resource type names")
async def list_resource_type_names(
    workspace: FromPath[str], request: _AuthRequest, state: State
) -> list[str]:
    check_workspace(request.user, workspace)
    return [k.name for k in await _store(state).list_types(workspace)]


@post(
    f"{_BASE}/type/update/{{name:str}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update a resource type",
)
async def update_resource_type(
    workspace: FromPath[str],
    name: FromPath[str],
    data: JSONBody[EditResourceType],
    request: _AuthRequest,
    state: State,
) -> str:
    check_workspace(request.user, workspace)
    await _store(state).update_type(
        workspace, name, schema=data.schema, description=data.description
    )
    return f"resource type {name} updated"


@route(
    f"{_BASE}/type/delete/{{name:str}}",
    http_method=[HttpMethod.DELETE, HttpMethod.POST],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete a resource type no resource uses",
)
async def delete_resource_type(
    workspace: FromPath[str], name: FromPath[str], request: _AuthRequest, state: State
) -> str:
    check_workspace(request.user, workspace)
    await _store(state).delete_type(workspace, name)
    return f"resource type {name} deleted"


# -- resources ------------------------------------------------------------------------


@post(f"{_BASE}/create", status_code=201, media_type=MediaType.TEXT, summary="Create a resource")
async def create_resource(
    workspace: FromPath[str],
    data: JSONBody[CreateResource],
    request: _AuthRequest,
    state: State,
    update_if_exists: FromQuery[bool] = False,
) -> str:
    """Answers the path. The value is checked against the type's schema, if any."""
    check_workspace(request.user, workspace)
    path = validate_path(data.path, kind="resource")
    authorize_path(request.user, path, "resource")
    await _store(state).create(
        workspace,
        path,
        value=data.value,
        resource_type=data.resource_type,
        description=data.description,
        created_by=request.user.user_id,
        update_if_exists=update_if_exists,
    )
    return path


@get(f"{_BASE}/get/{{path:path}}", summary="Get a resource (references unresolved)")
async def get_resource(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> dict[str, Any]:
    item = checked_path(request, workspace, path, "resource")
    return _view(await _store(state).get(workspace, item))


@get(f"{_BASE}/get_value/{{path:path}}", summary="A resource's value (references unresolved)")
async def get_resource_value(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> Response[bytes]:
    item = checked_path(request, workspace, path, "resource")
    return json_response(await _store(state).get_value(workspace, item))


@get(
    f"{_BASE}/get_value_interpolated/{{path:path}}",
    summary="A resource's value with $var: and $res: references resolved",
)
async def get_resource_value_interpolated(
    workspace: FromPath[str],
    path: FromPath[str],
    request: _AuthRequest,
    state: State,
    job_id: FromQuery[str | None] = None,
) -> Response[bytes]:
    """Secrets referenced by ``$var:`` are decrypted; the token must be allowed to read
    every variable and resource reached. ``job_id`` is accepted and ignored."""
    del job_id
    item = checked_path(request, workspace, path, "resource")
    info = request.user

    def authorize(target: str) -> None:
        authorize_path(info, target, "item")

    value = await _store(state).get_value_interpolated(workspace, item, authorize=authorize)
    return json_response(value)


@get(f"{_BASE}/exists/{{path:path}}", summary="Whether a resource exists")
async def resource_exists(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    item = checked_path(request, workspace, path, "resource")
    return await _store(state).exists(workspace, item)


@get(f"{_BASE}/list", summary="List resources")
async def list_resources(
    workspace: FromPath[str],
    request: _AuthRequest,
    state: State,
    resource_type: FromQuery[str | None] = None,
    resource_type_exclude: FromQuery[str | None] = None,
    path_start: FromQuery[str | None] = None,
    page: FromQuery[int] = 1,
    per_page: FromQuery[int] = 1000,
) -> list[dict[str, Any]]:
    """``resource_type`` and ``resource_type_exclude``: comma-separated type names."""
    check_workspace(request.user, workspace)
    limit, offset = page_bounds(page, per_page)
    found = await _store(state).list_resources(
        workspace,
        resource_types=_type_names(resource_type, "resource_type"),
        exclude_types=_type_names(resource_type_exclude, "resource_type_exclude"),
        path_start=path_start or None,
        limit=limit,
        offset=offset,
    )
    info = request.user
    return [
        _view(r) for r in found if may_access(r.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update a resource",
)
async def update_resource(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditResource],
    request: _AuthRequest,
    state: State,
) -> str:
    current = checked_path(request, workspace, path, "resource")
    if data.path is not None and data.path != current:
        authorize_path(request.user, validate_path(data.path, kind="resource"), "resource")
    target = await _store(state).update(
        workspace,
        current,
        value=data.value,
        description=data.description,
        new_path=data.path if data.path != current else None,
        resource_type=data.resource_type,
        edited_by=request.user.user_id,
    )
    return f"resource {target} updated"


@post(
    f"{_BASE}/update_value/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Replace a resource's value",
)
async def update_resource_value(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[ResourceValue],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, "resource")
    await _store(state).update_value(workspace, item, data.value, edited_by=request.user.user_id)
    return f"resource {item} updated"


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE, HttpMethod.POST],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete a resource",
)
async def delete_resource(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, "resource")
    await _store(state).delete(workspace, item)
    return f"resource {item} deleted"


ROUTES = [
    create_resource_type,
    get_resource_type,
    resource_type_exists,
    list_resource_types,
    list_resource_type_names,
    update_resource_type,
    delete_resource_type,
    create_resource,
    get_resource,
    get_resource_value,
    get_resource_value_interpolated,
    resource_exists,
    list_resources,
    update_resource,
    update_resource_value,
    delete_resource,
]
