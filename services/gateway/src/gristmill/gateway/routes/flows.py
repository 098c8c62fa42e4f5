"""Saved flows over HTTP: Windmill's ``/api/w/{workspace}/flows/...`` paths.

Bodies are OpenFlow documents in JSON or YAML (``Content-Type: application/yaml``, or
any body that is not JSON). A save checks the flow (see ``flows.validate``) and
answers 400 naming the offending module. Documents come back as sent, fields this
version does not know included; ``flows/get`` answers YAML when asked for it
(``Accept: application/yaml``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from gristmill.common.errors import InvalidRequest
from gristmill.common.flows import store
from gristmill.common.flows.model import decode_document, encode_yaml, parse_value
from gristmill.common.flows.validate import ignored_settings
from gristmill.common.scripts import validate_path
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext

__all__ = ["DEFAULT_PER_PAGE", "MAX_PER_PAGE", "ROUTES", "WARNING_HEADER", "read_document"]

DEFAULT_PER_PAGE: Final = 30
MAX_PER_PAGE: Final = 1000
_AuthRequest = Request[TokenInfo, str, Any]
_json = msgspec.json.Encoder()
_YAML_MEDIA: Final = ("application/yaml", "application/x-yaml", "text/yaml")
#: Settings a saved flow asks for that are kept but not applied (see ``_saved``).
WARNING_HEADER: Final = "x-gristmill-warning"


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


async def read_document(request: Request[Any, Any, Any], *, empty: Any = None) -> Any:
    """The request's body, JSON or YAML; ``empty`` when there is none."""
    body = await request.body()
    if not body.strip():
        return empty
    return decode_document(body, request.headers.get("content-type"))


def _document_response(document: dict[str, Any], request: _AuthRequest) -> Response[bytes]:
    accept = request.headers.get("accept", "")
    if any(media in accept for media in _YAML_MEDIA):
        return Response(
            encode_yaml(msgspec.to_builtins(document)).encode(), media_type="application/yaml"
        )
    return Response(_json.encode(document), media_type="application/json")


@post(
    "/api/w/{workspace:str}/flows/create",
    status_code=201,
    media_type="text/plain",
    summary="Save a new flow (OpenFlow, JSON or YAML)",
    tags=["flow"],
)
async def create_flow(workspace: str, request: _AuthRequest, state: State) -> Response[str]:
    """Answers the flow's path; 409 if a flow exists there already."""
    check_workspace(request.user, workspace)
    document = await read_document(request)
    async with _ctx(state).pool.acquire() as conn, conn.transaction():
        path = await store.create_flow(conn, workspace, document, user=request.user.user_id)
    return _saved(path, document, status_code=201)


@post(
    "/api/w/{workspace:str}/flows/update/{path:path}",
    status_code=200,
    media_type="text/plain",
    summary="Save over a flow (its path in the body may rename it)",
    tags=["flow"],
)
async def update_flow(
    workspace: str, path: str, request: _AuthRequest, state: State
) -> Response[str]:
    check_workspace(request.user, workspace)
    document = await read_document(request)
    async with _ctx(state).pool.acquire() as conn, conn.transaction():
        saved = await store.update_flow(
            conn, workspace, validate_path(path.lstrip("/")), document, user=request.user.user_id
        )
    return _saved(saved, document, status_code=200)


def _saved(path: str, document: Any, *, status_code: int) -> Response[str]:
    """The answer to a save: the path (as Windmill answers), and in the header
    ``x-gristmill-warning`` the settings that are kept but not applied (one
    ``location: message`` per entry, separated by ``; ``)."""
    headers: dict[str, str] = {}
    ignored = ignored_settings(parse_value(document["value"]))
    if ignored:
        headers[WARNING_HEADER] = "; ".join(f"{p.location}: {p.message}" for p in ignored)
    return Response(path, status_code=status_code, media_type="text/plain", headers=headers)


@get(
    "/api/w/{workspace:str}/flows/get/{path:path}",
    summary="Get a saved flow",
    tags=["flow"],
)
async def get_flow(
    workspace: str, path: str, request: _AuthRequest, state: State
) -> Response[bytes]:
    check_workspace(request.user, workspace)
    saved = await store.get_flow(_ctx(state).pool, workspace, path.lstrip("/"))
    return _document_response(saved.document(), request)


@get(
    "/api/w/{workspace:str}/flows/exists/{path:path}",
    summary="Does a flow exist at this path",
    tags=["flow"],
)
async def exists_flow(workspace: str, path: str, request: _AuthRequest, state: State) -> bool:
    check_workspace(request.user, workspace)
    return await store.flow_exists(_ctx(state).pool, workspace, path.lstrip("/"))


@get(
    "/api/w/{workspace:str}/flows/list",
    summary="List saved flows, last edited first",
    tags=["flow"],
)
async def list_flows(
    workspace: str,
    request: _AuthRequest,
    state: State,
    page: Annotated[int, Parameter(ge=1, description="page number, from 1")] = 1,
    per_page: Annotated[
        int, Parameter(ge=1, description=f"flows per page (at most {MAX_PER_PAGE})")
    ] = DEFAULT_PER_PAGE,
    path_start: Annotated[str | None, Parameter(description="paths starting with this")] = None,
    created_by: Annotated[str | None, Parameter(description="flows created by this user")] = None,
    show_archived: Annotated[bool, Parameter(description="archived flows instead")] = False,
) -> Response[bytes]:
    check_workspace(request.user, workspace)
    limit = min(per_page, MAX_PER_PAGE)
    flows = await store.list_flows(
        _ctx(state).pool,
        workspace,
        show_archived=show_archived,
        path_start=path_start,
        created_by=created_by,
        limit=limit,
        offset=(page - 1) * limit,
    )
    return Response(_json.encode([f.document() for f in flows]), media_type="application/json")


class ArchiveBody(msgspec.Struct, kw_only=True):
    archived: bool = True


@post(
    "/api/w/{workspace:str}/flows/archive/{path:path}",
    status_code=200,
    media_type="text/plain",
    summary="Archive (or unarchive) a flow",
    tags=["flow"],
)
async def archive_flow(workspace: str, path: str, request: _AuthRequest, state: State) -> str:
    """The body is ``{"archived": true|false}`` (default: archive)."""
    check_workspace(request.user, workspace)
    body = await read_document(request, empty={})
    if not isinstance(body, dict) or not isinstance(body.get("archived", True), bool):
        raise InvalidRequest('the body must be {"archived": true|false}', location="archived")
    archived = bool(body.get("archived", True))
    await store.archive_flow(_ctx(state).pool, workspace, path.lstrip("/"), archived=archived)
    return f"flow {path.lstrip('/')} {'archived' if archived else 'unarchived'}"


@delete(
    "/api/w/{workspace:str}/flows/delete/{path:path}",
    status_code=200,
    media_type="text/plain",
    summary="Delete a flow",
    tags=["flow"],
)
async def delete_flow(workspace: str, path: str, request: _AuthRequest, state: State) -> str:
    check_workspace(request.user, workspace)
    await store.delete_flow(_ctx(state).pool, workspace, path.lstrip("/"))
    return f"flow {path.lstrip('/')} deleted"


ROUTES = [
    create_flow,
    update_flow,
    get_flow,
    exists_flow,
    list_flows,
    archive_flow,
    delete_flow,
]
