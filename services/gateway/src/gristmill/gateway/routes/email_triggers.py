"""Email triggers over HTTP: Windmill's ``/api/w/{workspace}/email_triggers/...`` paths.

Saving checks the local part (400 naming ``local_part``), that the script or flow
exists (404 naming ``script_path``) and that no trigger of any workspace answers to
the same address (409; addresses are global). ``mode`` (``enabled``/``disabled``) is
accepted beside ``enabled``. Reads answer ``address``, the local part mail is matched
on (``<workspace>-<local_part>`` with ``workspaced_local_part``). The SMTP server is in
the triggers service; see ``gristmill.common.email_triggers``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import HttpMethod, MediaType, Request, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from gristmill.common import email_triggers
from gristmill.common.email_triggers import EmailTrigger, TriggerSettings
from gristmill.common.errors import InvalidRequest
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import may_access
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.variables import checked_path

__all__ = ["ROUTES", "EditEmailTriggerBody", "EmailTriggerView", "NewEmailTriggerBody"]

_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/email_triggers"
_KIND = "email trigger"


def _enabled(enabled: bool | None, mode: str | None) -> bool | None:
    if mode is None:
        return enabled
    if mode not in ("enabled", "disabled"):
        raise InvalidRequest("mode must be 'enabled' or 'disabled'", location="mode")
    return mode == "enabled"


class EditEmailTriggerBody(msgspec.Struct, kw_only=True):
    """Windmill's ``EditEmailTrigger`` (the fields Gristmill supports)."""

    local_part: str
    script_path: str
    is_flow: bool = False
    workspaced_local_part: bool | None = None
    enabled: bool | None = None
    mode: str | None = None
    #: Sent by Windmill's clients on update; the URL names the trigger.
    path: str | None = None

    def settings(self) -> TriggerSettings:
        return TriggerSettings(
            local_part=self.local_part,
            script_path=self.script_path,
            is_flow=self.is_flow,
            workspaced_local_part=bool(self.workspaced_local_part),
            enabled=_enabled(self.enabled, self.mode),
        )


class NewEmailTriggerBody(EditEmailTriggerBody, kw_only=True):
    """Windmill's ``NewEmailTrigger``."""

    #: Required here, optional on update.
    path: str


class EmailTriggerView(msgspec.Struct, kw_only=True):
    """Windmill's ``EmailTrigger``, with ``address``."""

    workspace_id: str
    path: str
    local_part: str
    workspaced_local_part: bool
    address: str
    script_path: str
    is_flow: bool
    enabled: bool
    mode: str
    email: str
    edited_by: str
    edited_at: str
    extra_perms: dict[str, bool]


class _EnabledBody(msgspec.Struct, kw_only=True):
    enabled: bool | None = None
    mode: str | None = None


def _view(trigger: EmailTrigger) -> EmailTriggerView:
    return EmailTriggerView(
        workspace_id=trigger.workspace_id,
        path=trigger.path,
        local_part=trigger.local_part,
        workspaced_local_part=trigger.workspaced_local_part,
        address=trigger.address,
        script_path=trigger.script_path,
        is_flow=trigger.is_flow,
        enabled=trigger.enabled,
        mode="enabled" if trigger.enabled else "disabled",
        email=trigger.email,
        edited_by=trigger.edited_by,
        edited_at=trigger.edited_at.isoformat(),
        extra_perms={},
    )


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


@post(
    f"{_BASE}/create",
    status_code=201,
    media_type=MediaType.TEXT,
    summary="Create an email trigger",
    tags=["email_trigger"],
)
async def create_email_trigger(
    workspace: FromPath[str],
    data: JSONBody[NewEmailTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the trigger's path."""
    path = checked_path(request, workspace, data.path.strip("/"), _KIND)
    saved = await email_triggers.create(
        _ctx(state).pool, workspace, path, data.settings(), editor=request.user.user_id
    )
    return saved.path


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update an email trigger",
    tags=["email_trigger"],
)
async def update_email_trigger(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditEmailTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    saved = await email_triggers.update(
        _ctx(state).pool, workspace, item, data.settings(), editor=request.user.user_id
    )
    return saved.path


@post(
    f"{_BASE}/setenabled/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Enable or disable an email trigger",
    tags=["email_trigger"],
)
async def set_email_trigger_enabled(
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
    await email_triggers.set_enabled(_ctx(state).pool, workspace, item, enabled)
    return f"email trigger {item} {'enabled' if enabled else 'disabled'}"


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete an email trigger",
    tags=["email_trigger"],
)
async def delete_email_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    await email_triggers.delete(_ctx(state).pool, workspace, item)
    return f"email trigger {item} deleted"


@get(f"{_BASE}/get/{{path:path}}", summary="Get an email trigger", tags=["email_trigger"])
async def get_email_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> EmailTriggerView:
    item = checked_path(request, workspace, path, _KIND)
    return _view(await email_triggers.get(_ctx(state).pool, workspace, item))


@get(
    f"{_BASE}/exists/{{path:path}}",
    summary="Whether an email trigger exists",
    tags=["email_trigger"],
)
async def exists_email_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    item = checked_path(request, workspace, path, _KIND)
    return await email_triggers.exists(_ctx(state).pool, workspace, item)


@get(f"{_BASE}/list", summary="List email triggers", tags=["email_trigger"])
async def list_email_triggers(
    workspace: FromPath[str], request: _AuthRequest, state: State
) -> list[EmailTriggerView]:
    check_workspace(request.user, workspace)
    info = request.user
    return [
        _view(trigger)
        for trigger in await email_triggers.list_triggers(_ctx(state).pool, workspace)
        if may_access(trigger.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


ROUTES = [
    create_email_trigger,
    update_email_trigger,
    set_email_trigger_enabled,
    delete_email_trigger,
    get_email_trigger,
    exists_email_trigger,
    list_email_triggers,
]
