"""WebSocket triggers over HTTP: Windmill's ``/api/w/{workspace}/websocket_triggers/...``.

Saving checks the URL (400 naming ``url``: a ``ws://``/``wss://`` URL, or
``$script:<path>``/``$flow:<path>``), the filters and initial messages (400 naming the
entry), and that every runnable named exists (404 naming the field). ``mode``
(``enabled``/``disabled``, newer Windmill) is accepted beside ``enabled``. Reads
answer the connection state too: ``error`` (why the last connection failed, ``null``
while connected), ``server_id`` and ``last_server_ping`` (the triggers replica
connecting it). See ``gristmill.common.websocket_triggers``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import HttpMethod, MediaType, Request, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from gristmill.common import websocket_triggers
from gristmill.common.errors import InvalidRequest
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import may_access
from gristmill.common.websocket_triggers import (
    Filter,
    InitialMessage,
    TriggerSettings,
    WebsocketTrigger,
)
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.variables import checked_path

__all__ = [
    "ROUTES",
    "EditWebsocketTriggerBody",
    "NewWebsocketTriggerBody",
    "WebsocketTriggerView",
]

_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/websocket_triggers"
_KIND = "websocket trigger"


def _enabled(enabled: bool | None, mode: str | None) -> bool | None:
    if mode is None:
        return enabled
    if mode not in ("enabled", "disabled"):
        raise InvalidRequest("mode must be 'enabled' or 'disabled'", location="mode")
    return mode == "enabled"


class EditWebsocketTriggerBody(msgspec.Struct, kw_only=True):
    """Windmill's ``EditWebsocketTrigger`` (the fields Gristmill supports)."""

    url: str
    script_path: str
    is_flow: bool = False
    filters: list[Filter] | None = None
    filter_logic: str | None = None
    initial_messages: list[InitialMessage] | None = None
    url_runnable_args: dict[str, Any] | None = None
    can_return_message: bool | None = None
    can_return_error_result: bool | None = None
    enabled: bool | None = None
    mode: str | None = None
    #: Sent by Windmill's clients on update; the URL names the trigger.
    path: str | None = None

    def settings(self) -> TriggerSettings:
        return TriggerSettings(
            url=self.url,
            script_path=self.script_path,
            is_flow=self.is_flow,
            url_runnable_args=self.url_runnable_args,
            filters=tuple(self.filters or ()),
            filter_logic=self.filter_logic or "and",
            initial_messages=tuple(self.initial_messages or ()),
            can_return_message=bool(self.can_return_message),
            can_return_error_result=bool(self.can_return_error_result),
            enabled=_enabled(self.enabled, self.mode),
        )


class NewWebsocketTriggerBody(EditWebsocketTriggerBody, kw_only=True):
    """Windmill's ``NewWebsocketTrigger``."""

    #: Required here, optional on update.
    path: str


class WebsocketTriggerView(msgspec.Struct, kw_only=True):
    """Windmill's ``WebsocketTrigger``."""

    workspace_id: str
    path: str
    url: str
    url_runnable_args: dict[str, Any] | None
    script_path: str
    is_flow: bool
    filters: list[Filter]
    filter_logic: str
    initial_messages: list[InitialMessage]
    can_return_message: bool
    can_return_error_result: bool
    enabled: bool
    mode: str
    email: str
    edited_by: str
    edited_at: str
    server_id: str | None
    last_server_ping: str | None
    error: str | None
    extra_perms: dict[str, bool]


class _EnabledBody(msgspec.Struct, kw_only=True):
    enabled: bool | None = None
    mode: str | None = None


def _view(trigger: WebsocketTrigger) -> WebsocketTriggerView:
    return WebsocketTriggerView(
        workspace_id=trigger.workspace_id,
        path=trigger.path,
        url=trigger.url,
        url_runnable_args=trigger.url_runnable_args,
        script_path=trigger.script_path,
        is_flow=trigger.is_flow,
        filters=trigger.filters,
        filter_logic=trigger.filter_logic,
        initial_messages=trigger.initial_messages,
        can_return_message=trigger.can_return_message,
        can_return_error_result=trigger.can_return_error_result,
        enabled=trigger.enabled,
        mode="enabled" if trigger.enabled else "disabled",
        email=trigger.email,
        edited_by=trigger.edited_by,
        edited_at=trigger.edited_at.isoformat(),
        server_id=trigger.server_id,
        last_server_ping=(
            trigger.last_server_ping.isoformat() if trigger.last_server_ping else None
        ),
        error=trigger.error,
        extra_perms={},
    )


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


@post(
    f"{_BASE}/create",
    status_code=201,
    media_type=MediaType.TEXT,
    summary="Create a WebSocket trigger",
    tags=["websocket_trigger"],
)
async def create_websocket_trigger(
    workspace: FromPath[str],
    data: JSONBody[NewWebsocketTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the trigger's path."""
    path = checked_path(request, workspace, data.path.strip("/"), _KIND)
    saved = await websocket_triggers.create(
        _ctx(state).pool, workspace, path, data.settings(), editor=request.user.user_id
    )
    return saved.path


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update a WebSocket trigger",
    tags=["websocket_trigger"],
)
async def update_websocket_trigger(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditWebsocketTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    saved = await websocket_triggers.update(
        _ctx(state).pool, workspace, item, data.settings(), editor=request.user.user_id
    )
    return saved.path


@post(
    f"{_BASE}/setenabled/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Enable or disable a WebSocket trigger",
    tags=["websocket_trigger"],
)
async def set_websocket_trigger_enabled(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[_EnabledBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    enabled = _enabled(data.enabled, data.mode)
    if enabled is None:
        raise InvalidRequest("send enabled (true/false) or mode", location="enabled")
    await websocket_triggers.set_enabled(_ctx(state).pool, workspace, item, enabled)
    return f"websocket trigger {item} {'enabled' if enabled else 'disabled'}"


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete a WebSocket trigger",
    tags=["websocket_trigger"],
)
async def delete_websocket_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    await websocket_triggers.delete(_ctx(state).pool, workspace, item)
    return f"websocket trigger {item} deleted"


@get(f"{_BASE}/get/{{path:path}}", summary="Get a WebSocket trigger", tags=["websocket_trigger"])
async def get_websocket_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> WebsocketTriggerView:
    item = checked_path(request, workspace, path, _KIND)
    return _view(await websocket_triggers.get(_ctx(state).pool, workspace, item))


@get(
    f"{_BASE}/exists/{{path:path}}",
    summary="Whether a WebSocket trigger exists",
    tags=["websocket_trigger"],
)
async def exists_websocket_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    item = checked_path(request, workspace, path, _KIND)
    return await websocket_triggers.exists(_ctx(state).pool, workspace, item)


@get(f"{_BASE}/list", summary="List WebSocket triggers", tags=["websocket_trigger"])
async def list_websocket_triggers(
    workspace: FromPath[str], request: _AuthRequest, state: State
) -> list[WebsocketTriggerView]:
    check_workspace(request.user, workspace)
    info = request.user
    return [
        _view(trigger)
        for trigger in await websocket_triggers.list_triggers(_ctx(state).pool, workspace)
        if may_access(trigger.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


ROUTES = [
    create_websocket_trigger,
    update_websocket_trigger,
    set_websocket_trigger_enabled,
    delete_websocket_trigger,
    get_websocket_trigger,
    exists_websocket_trigger,
    list_websocket_triggers,
]
