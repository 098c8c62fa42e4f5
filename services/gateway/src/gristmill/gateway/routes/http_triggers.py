"""HTTP routes over HTTP: Windmill's ``/api/w/{workspace}/http_triggers/...`` paths.

Saving checks the route pattern (400 naming ``route_path``), the method and the
authentication method (400), that the script exists (404), and that no trigger of
any workspace holds the same method and an equivalent pattern (409; routes are
global, as in Windmill). Only scripts are supported (``is_flow: false``). The
``signature`` method's ``signature_secret`` is written, never read back: reads
answer ``has_signature_secret``. See ``gristmill.common.http_triggers``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import HttpMethod, MediaType, Request, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from gristmill.common import http_triggers, scripts
from gristmill.common.errors import Forbidden, InvalidRequest, NotFound
from gristmill.common.flows import store
from gristmill.common.http_triggers import HttpTrigger, TriggerSettings
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import may_access
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.variables import checked_path

__all__ = ["ROUTES", "EditHttpTriggerBody", "HttpTriggerView", "NewHttpTriggerBody"]

_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/http_triggers"
_KIND = "http trigger"


class EditHttpTriggerBody(msgspec.Struct, kw_only=True):
    """Windmill's ``EditHttpTrigger`` (the fields Gristmill supports)."""

    route_path: str
    http_method: str
    script_path: str
    is_flow: bool = False
    is_async: bool = False
    #: ``none``, ``windmill`` (a token) or ``signature`` (HMAC-SHA256, ``X-Signature``).
    authentication_method: str | None = None
    #: The HMAC key of the ``signature`` method (kept when an update omits it).
    signature_secret: str | None = None
    enabled: bool | None = None
    #: Newer Windmill's form of ``is_async``: ``sync`` or ``async`` (wins when given).
    request_type: str | None = None
    #: Served at ``/api/r/<workspace>/<route_path>`` (any user); otherwise the route is
    #: instance-wide, which only an admin may claim.
    workspaced_route: bool | None = None
    #: The body is passed whole as ``body`` instead of spread into arguments.
    wrap_body: bool | None = None
    #: The body is also passed, unparsed, as ``raw_string``.
    raw_string: bool | None = None
    #: Not supported: only ``false`` is accepted.
    is_static_website: bool | None = None

    def settings(self) -> TriggerSettings:
        if self.is_static_website:
            raise InvalidRequest("is_static_website is not supported", location="is_static_website")
        is_async = self.is_async
        if self.request_type is not None:
            if self.request_type not in ("sync", "async"):
                raise InvalidRequest(
                    "request_type must be 'sync' or 'async'", location="request_type"
                )
            is_async = self.request_type == "async"
        return TriggerSettings(
            route_path=self.route_path,
            http_method=self.http_method.lower(),
            script_path=self.script_path,
            is_flow=self.is_flow,
            is_async=is_async,
            authentication_method=self.authentication_method or "none",
            signature_secret=self.signature_secret,
            enabled=self.enabled,
            workspaced_route=bool(self.workspaced_route),
            wrap_body=bool(self.wrap_body),
            raw_string=bool(self.raw_string),
        )


class NewHttpTriggerBody(EditHttpTriggerBody, kw_only=True):
    """Windmill's ``NewHttpTrigger``."""

    path: str


class HttpTriggerView(msgspec.Struct, kw_only=True):
    """Windmill's ``HttpTrigger`` (without the secret)."""

    workspace_id: str
    path: str
    route_path: str
    http_method: str
    script_path: str
    is_flow: bool
    is_async: bool
    request_type: str
    authentication_method: str
    has_signature_secret: bool
    enabled: bool
    workspaced_route: bool
    wrap_body: bool
    raw_string: bool
    email: str
    edited_by: str
    edited_at: str
    extra_perms: dict[str, bool]


class _EnabledBody(msgspec.Struct, kw_only=True):
    enabled: bool


def _view(trigger: HttpTrigger) -> HttpTriggerView:
    return HttpTriggerView(
        workspace_id=trigger.workspace_id,
        path=trigger.path,
        route_path=trigger.route_path,
        http_method=trigger.http_method,
        script_path=trigger.script_path,
        is_flow=trigger.is_flow,
        is_async=trigger.is_async,
        request_type="async" if trigger.is_async else "sync",
        authentication_method=trigger.authentication_method,
        has_signature_secret=trigger.has_signature_secret,
        enabled=trigger.enabled,
        workspaced_route=trigger.workspaced_route,
        wrap_body=trigger.wrap_body,
        raw_string=trigger.raw_string,
        email=trigger.email,
        edited_by=trigger.edited_by,
        edited_at=trigger.edited_at.isoformat(),
        extra_perms={},
    )


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


async def _check_target(
    context: GatewayContext, user: TokenInfo, workspace: str, body: EditHttpTriggerBody
) -> None:
    """The route's target exists (404 naming it otherwise)."""
    if not body.workspaced_route and not user.is_admin:
        raise Forbidden(
            "only an admin may claim an instance-wide route; set workspaced_route: true to "
            f"serve it at /api/r/{workspace}/{body.route_path.strip('/')}",
            location="workspaced_route",
        )
    if body.is_flow:
        flow = await store.get_flow(context.pool, workspace, body.script_path)
        if flow.archived:
            raise NotFound(f"flow {body.script_path!r} is archived", location="script_path")
    else:
        await scripts.runnable_by_path(context.pool, workspace, body.script_path)


@post(
    f"{_BASE}/create",
    status_code=201,
    media_type=MediaType.TEXT,
    summary="Create an HTTP route",
    tags=["http_trigger"],
)
async def create_http_trigger(
    workspace: FromPath[str],
    data: JSONBody[NewHttpTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the trigger's path."""
    path = checked_path(request, workspace, data.path.strip("/"), _KIND)
    context = _ctx(state)
    settings = data.settings()
    http_triggers.parse_route(settings.route_path)
    await _check_target(context, request.user, workspace, data)
    async with context.pool.acquire() as conn, conn.transaction():
        saved = await http_triggers.create(
            conn,
            workspace,
            path,
            settings,
            editor=request.user.user_id,
            keystore=context.keystore,
        )
    return saved.path


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update an HTTP route",
    tags=["http_trigger"],
)
async def update_http_trigger(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditHttpTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    context = _ctx(state)
    settings = data.settings()
    http_triggers.parse_route(settings.route_path)
    await _check_target(context, request.user, workspace, data)
    async with context.pool.acquire() as conn, conn.transaction():
        saved = await http_triggers.update(
            conn,
            workspace,
            item,
            settings,
            editor=request.user.user_id,
            keystore=context.keystore,
        )
    return saved.path


@post(
    f"{_BASE}/setenabled/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Enable or disable an HTTP route",
    tags=["http_trigger"],
)
async def set_http_trigger_enabled(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[_EnabledBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    await http_triggers.set_enabled(_ctx(state).pool, workspace, item, data.enabled)
    return f"http trigger {item} {'enabled' if data.enabled else 'disabled'}"


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete an HTTP route",
    tags=["http_trigger"],
)
async def delete_http_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    await http_triggers.delete(_ctx(state).pool, workspace, item)
    return f"http trigger {item} deleted"


@get(f"{_BASE}/get/{{path:path}}", summary="Get an HTTP route", tags=["http_trigger"])
async def get_http_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> HttpTriggerView:
    item = checked_path(request, workspace, path, _KIND)
    return _view(await http_triggers.get(_ctx(state).pool, workspace, item))


@get(f"{_BASE}/list", summary="List HTTP routes", tags=["http_trigger"])
async def list_http_triggers(
    workspace: FromPath[str], request: _AuthRequest, state: State
) -> list[HttpTriggerView]:
    check_workspace(request.user, workspace)
    info = request.user
    return [
        _view(trigger)
        for trigger in await http_triggers.list_triggers(_ctx(state).pool, workspace)
        if may_access(trigger.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


ROUTES = [
    create_http_trigger,
    update_http_trigger,
    set_http_trigger_enabled,
    delete_http_trigger,
    get_http_trigger,
    list_http_triggers,
]
