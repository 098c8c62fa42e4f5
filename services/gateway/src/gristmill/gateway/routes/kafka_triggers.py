"""Kafka triggers over HTTP: Windmill's ``/api/w/{workspace}/kafka_triggers/...`` paths.

Saving checks the topics (400 naming ``topics[i]``: none, an illegal name, twice),
the group id and ``auto_offset_reset`` (400), the connection resource (404 if it does
not exist, 400 if its value is no Kafka connection) and the script or flow (404
naming ``script_path``). ``group_id`` defaults to ``gristmill-<workspace>-<path>``.
Reads answer Windmill's ``KafkaTrigger``: ``error`` is the consumer's last error
(``null`` while it works), ``error_at`` when it happened, ``server_id`` and
``last_server_ping`` which triggers server last reported and when. Changes take effect
in the triggers service without a restart.

Gristmill adds ``GET .../kafka_triggers/parked/{path}`` (the trigger's parked
messages, newest first: messages that could not become runs, with the error) and
``DELETE .../kafka_triggers/parked/{path}`` (forget them).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import msgspec
from litestar import HttpMethod, MediaType, Request, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from gristmill.common import kafka_triggers, scripts
from gristmill.common.errors import NotFound
from gristmill.common.flows import store as flows
from gristmill.common.kafka_triggers import KafkaTrigger, ParkedMessage, TriggerSettings
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import may_access
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.variables import checked_path, page_bounds

__all__ = [
    "ROUTES",
    "EditKafkaTriggerBody",
    "KafkaTriggerView",
    "NewKafkaTriggerBody",
    "ParkedMessageView",
]

_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/kafka_triggers"
_KIND = "kafka trigger"


class EditKafkaTriggerBody(msgspec.Struct, kw_only=True):
    """Windmill's ``EditKafkaTrigger`` (``path`` renames), plus ``auto_offset_reset``."""

    kafka_resource_path: str
    topics: list[str]
    script_path: str
    is_flow: bool = False
    group_id: str | None = None
    #: Where a new consumer group starts: ``latest`` (default) or ``earliest``.
    auto_offset_reset: str | None = None
    path: str | None = None
    enabled: bool | None = None

    def settings(self) -> TriggerSettings:
        return TriggerSettings(
            kafka_resource_path=self.kafka_resource_path.strip(),
            topics=self.topics,
            script_path=self.script_path.strip(),
            is_flow=self.is_flow,
            group_id=self.group_id or "",
            auto_offset_reset=self.auto_offset_reset or "latest",
            enabled=self.enabled,
        )


class NewKafkaTriggerBody(EditKafkaTriggerBody, kw_only=True):
    """Windmill's ``NewKafkaTrigger``."""

    #: Required here (optional on update, where it renames).
    path: str


class KafkaTriggerView(msgspec.Struct, kw_only=True):
    """Windmill's ``KafkaTrigger``, with ``error_at`` and ``auto_offset_reset``."""

    workspace_id: str
    path: str
    kafka_resource_path: str
    group_id: str
    topics: list[str]
    script_path: str
    is_flow: bool
    auto_offset_reset: str
    enabled: bool
    email: str
    edited_by: str
    edited_at: str
    error: str | None
    error_at: str | None
    server_id: str | None
    last_server_ping: str | None
    extra_perms: dict[str, bool]


class ParkedMessageView(msgspec.Struct, kw_only=True):
    """A parked message: ``key``/``value`` as text, and as base64 for binary payloads."""

    id: int
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    value_base64: str | None
    headers: list[list[Any]]
    error: dict[str, Any]
    parked_at: str


class _EnabledBody(msgspec.Struct, kw_only=True):
    enabled: bool


def _view(trigger: KafkaTrigger) -> KafkaTriggerView:
    return KafkaTriggerView(
        workspace_id=trigger.workspace_id,
        path=trigger.path,
        kafka_resource_path=trigger.kafka_resource_path,
        group_id=trigger.group_id,
        topics=trigger.topics,
        script_path=trigger.script_path,
        is_flow=trigger.is_flow,
        auto_offset_reset=trigger.auto_offset_reset,
        enabled=trigger.enabled,
        email=trigger.email,
        edited_by=trigger.edited_by,
        edited_at=trigger.edited_at.isoformat(),
        error=trigger.error,
        error_at=trigger.error_at.isoformat() if trigger.error_at else None,
        server_id=trigger.server_id,
        last_server_ping=trigger.last_server_ping.isoformat() if trigger.last_server_ping else None,
        extra_perms={},
    )


def _parked_view(message: ParkedMessage) -> ParkedMessageView:
    return ParkedMessageView(
        id=message.id,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=None if message.key is None else message.key.decode("utf-8", "replace"),
        value=None if message.value is None else message.value.decode("utf-8", "replace"),
        value_base64=None if message.value is None else base64.b64encode(message.value).decode(),
        headers=message.headers,
        error=message.error,
        parked_at=message.parked_at.isoformat(),
    )


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


async def _check_targets(
    context: GatewayContext, workspace: str, body: EditKafkaTriggerBody
) -> TriggerSettings:
    """The settings, once what they name exists: 404/400 naming the field otherwise."""
    settings = body.settings()
    if settings.is_flow:
        if not await flows.flow_exists(context.pool, workspace, settings.script_path):
            raise NotFound(
                f"flow {settings.script_path} not found in workspace {workspace!r}",
                location="script_path",
            )
    else:
        try:
            await scripts.runnable_by_path(context.pool, workspace, settings.script_path)
        except NotFound as exc:
            raise NotFound(exc.message, location="script_path") from None
    value = await kafka_triggers.resource_value(
        context.pool, workspace, settings.kafka_resource_path
    )
    kafka_triggers.parse_connection(value, allow_references=True)
    return settings


@post(
    f"{_BASE}/create",
    status_code=201,
    media_type=MediaType.TEXT,
    summary="Create a Kafka trigger",
    tags=["kafka_trigger"],
)
async def create_kafka_trigger(
    workspace: FromPath[str],
    data: JSONBody[NewKafkaTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the trigger's path."""
    path = checked_path(request, workspace, data.path.strip("/"), _KIND)
    context = _ctx(state)
    settings = await _check_targets(context, workspace, data)
    saved = await kafka_triggers.create(
        context.pool, workspace, path, settings, editor=request.user.user_id
    )
    return saved.path


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update a Kafka trigger",
    tags=["kafka_trigger"],
)
async def update_kafka_trigger(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditKafkaTriggerBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the trigger's path (the new one after a rename)."""
    item = checked_path(request, workspace, path, _KIND)
    new_path = checked_path(request, workspace, data.path.strip("/"), _KIND) if data.path else None
    context = _ctx(state)
    settings = await _check_targets(context, workspace, data)
    saved = await kafka_triggers.update(
        context.pool, workspace, item, settings, editor=request.user.user_id, new_path=new_path
    )
    return saved.path


@post(
    f"{_BASE}/setenabled/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Enable or disable a Kafka trigger",
    tags=["kafka_trigger"],
)
async def set_kafka_trigger_enabled(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[_EnabledBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    await kafka_triggers.set_enabled(_ctx(state).pool, workspace, item, data.enabled)
    return f"kafka trigger {item} {'enabled' if data.enabled else 'disabled'}"


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete a Kafka trigger",
    tags=["kafka_trigger"],
)
async def delete_kafka_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    await kafka_triggers.delete(_ctx(state).pool, workspace, item)
    return f"kafka trigger {item} deleted"


@get(f"{_BASE}/get/{{path:path}}", summary="Get a Kafka trigger", tags=["kafka_trigger"])
async def get_kafka_trigger(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> KafkaTriggerView:
    item = checked_path(request, workspace, path, _KIND)
    return _view(await kafka_triggers.get(_ctx(state).pool, workspace, item))


@get(
    f"{_BASE}/exists/{{path:path}}",
    summary="Whether a Kafka trigger exists",
    tags=["kafka_trigger"],
)
async def kafka_trigger_exists(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    item = checked_path(request, workspace, path, _KIND)
    return await kafka_triggers.exists(_ctx(state).pool, workspace, item)


@get(f"{_BASE}/list", summary="List Kafka triggers", tags=["kafka_trigger"])
async def list_kafka_triggers(
    workspace: FromPath[str], request: _AuthRequest, state: State
) -> list[KafkaTriggerView]:
    check_workspace(request.user, workspace)
    info = request.user
    return [
        _view(trigger)
        for trigger in await kafka_triggers.list_triggers(_ctx(state).pool, workspace)
        if may_access(trigger.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


@get(
    f"{_BASE}/parked/{{path:path}}",
    summary="List a Kafka trigger's parked messages",
    tags=["kafka_trigger"],
)
async def list_parked_messages(
    workspace: FromPath[str],
    path: FromPath[str],
    request: _AuthRequest,
    state: State,
    page: Annotated[int, QueryParameter()] = 1,
    per_page: Annotated[int, QueryParameter()] = 100,
) -> list[ParkedMessageView]:
    item = checked_path(request, workspace, path, _KIND)
    limit, offset = page_bounds(page, per_page)
    parked = await kafka_triggers.list_parked(
        _ctx(state).pool, workspace, item, limit=limit, offset=offset
    )
    return [_parked_view(message) for message in parked]


@route(
    f"{_BASE}/parked/{{path:path}}",
    http_method=[HttpMethod.DELETE],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Forget a Kafka trigger's parked messages",
    tags=["kafka_trigger"],
)
async def delete_parked_messages(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, _KIND)
    count = await kafka_triggers.delete_parked(_ctx(state).pool, workspace, item)
    return f"{count} parked message(s) of kafka trigger {item} deleted"


ROUTES = [
    create_kafka_trigger,
    update_kafka_trigger,
    set_kafka_trigger_enabled,
    delete_kafka_trigger,
    get_kafka_trigger,
    kafka_trigger_exists,
    list_kafka_triggers,
    list_parked_messages,
    delete_parked_messages,
]
