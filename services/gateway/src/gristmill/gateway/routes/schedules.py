"""Cron schedules over HTTP: Windmill's ``/api/w/{workspace}/schedules/...`` paths and
``/api/schedules/preview``.

Saving checks the cron expression and the time zone (400 naming ``schedule`` or
``timezone``), the script or flow and the handlers (404 naming the field). Reads
answer Windmill's ``Schedule`` with Gristmill's fields beside it: ``catch_up``,
``catch_up_max`` and the scheduler's state (``next_fire_at``, ``last_fired_at``).
Who may manage a schedule follows the rule of every item at a path
(``gristmill.common.variables.may_access``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import HttpMethod, MediaType, Request, get, post, route
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from gristmill.common import schedules
from gristmill.common.errors import InvalidRequest
from gristmill.common.schedules import EditSchedule, NewSchedule, Schedule, ScheduleFilter
from gristmill.common.tokens import TokenInfo
from gristmill.common.variables import may_access, validate_path
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.variables import authorize_path, checked_path, page_bounds

__all__ = [
    "DEFAULT_PREVIEW",
    "ROUTES",
    "EditScheduleBody",
    "NewScheduleBody",
    "PreviewBody",
    "ScheduleView",
    "schedule_view",
]

#: Instants a preview answers unless asked for another number (Windmill answers 5).
DEFAULT_PREVIEW: Final = 5
_AuthRequest = Request[TokenInfo, str, Any]
_BASE = "/api/w/{workspace:str}/schedules"
_decode_json = msgspec.json.Decoder()


class EditScheduleBody(msgspec.Struct, kw_only=True):
    """Windmill's ``EditSchedule``, plus ``catch_up`` and ``catch_up_max``.

    ``null`` stands for "not set" everywhere (Windmill's clients send it).
    """

    schedule: str
    timezone: str
    script_path: str
    is_flow: bool = False
    args: dict[str, Any] | None = None
    cron_version: str | None = None
    summary: str | None = None
    description: str | None = None
    tag: str | None = None
    no_flow_overlap: bool | None = None
    #: ``skip`` (default) or ``all``: what happens to ticks missed while down.
    catch_up: str | None = None
    #: With ``catch_up: all``, at most this many missed ticks run (the latest).
    catch_up_max: int | None = None
    on_failure: str | None = None
    on_failure_times: float | None = None
    on_failure_exact: bool | None = None
    on_failure_extra_args: dict[str, Any] | None = None
    on_recovery: str | None = None
    on_recovery_times: float | None = None
    on_recovery_extra_args: dict[str, Any] | None = None
    on_success: str | None = None
    on_success_extra_args: dict[str, Any] | None = None
    ws_error_handler_muted: bool | None = None
    retry: dict[str, Any] | None = None
    paused_until: datetime | None = None

    def settings(self) -> dict[str, Any]:
        """The fields of :class:`EditSchedule`, defaults where ``null`` was sent."""
        values: dict[str, Any] = {
            "schedule": self.schedule,
            "timezone": self.timezone,
            "script_path": self.script_path,
            "is_flow": self.is_flow,
            "args": self.args or {},
            "cron_version": self.cron_version or None,
            "summary": self.summary,
            "description": self.description,
            "tag": self.tag or None,
            "no_flow_overlap": bool(self.no_flow_overlap),
            "catch_up": self.catch_up or "skip",
            "catch_up_max": (
                schedules.DEFAULT_CATCH_UP_MAX if self.catch_up_max is None else self.catch_up_max
            ),
            "on_failure": self.on_failure or None,
            "on_failure_times": _count(self.on_failure_times, "on_failure_times"),
            "on_failure_exact": bool(self.on_failure_exact),
            "on_failure_extra_args": self.on_failure_extra_args,
            "on_recovery": self.on_recovery or None,
            "on_recovery_times": _count(self.on_recovery_times, "on_recovery_times"),
            "on_recovery_extra_args": self.on_recovery_extra_args,
            "on_success": self.on_success or None,
            "on_success_extra_args": self.on_success_extra_args,
            "ws_error_handler_muted": bool(self.ws_error_handler_muted),
            "retry": self.retry,
            "paused_until": _aware(self.paused_until),
        }
        return values

    def to_edit(self) -> EditSchedule:
        return EditSchedule(**self.settings())


class NewScheduleBody(EditScheduleBody, kw_only=True):
    """Windmill's ``NewSchedule``."""

    path: str
    enabled: bool | None = None

    def to_new(self) -> NewSchedule:
        return NewSchedule(path=self.path, enabled=self.enabled is not False, **self.settings())


class PreviewBody(msgspec.Struct, kw_only=True):
    schedule: str
    timezone: str
    cron_version: str | None = None


class _EnabledBody(msgspec.Struct, kw_only=True):
    enabled: bool


class ScheduleView(msgspec.Struct, kw_only=True):
    """Windmill's ``Schedule``, with Gristmill's catch-up settings and scheduler state."""

    workspace_id: str
    path: str
    edited_by: str
    edited_at: datetime
    schedule: str
    timezone: str
    cron_version: str
    enabled: bool
    script_path: str
    is_flow: bool
    args: dict[str, Any]
    extra_perms: dict[str, bool]
    email: str
    error: str | None
    on_failure: str | None
    on_failure_times: int
    on_failure_exact: bool
    on_failure_extra_args: dict[str, Any] | None
    on_recovery: str | None
    on_recovery_times: int
    on_recovery_extra_args: dict[str, Any] | None
    on_success: str | None
    on_success_extra_args: dict[str, Any] | None
    ws_error_handler_muted: bool
    retry: dict[str, Any] | None
    summary: str | None
    description: str | None
    no_flow_overlap: bool
    tag: str | None
    paused_until: datetime | None
    catch_up: str
    catch_up_max: int
    next_fire_at: datetime | None
    last_fired_at: datetime | None


def schedule_view(schedule: Schedule) -> ScheduleView:
    return ScheduleView(
        workspace_id=schedule.workspace_id,
        path=schedule.path,
        edited_by=schedule.edited_by,
        edited_at=schedule.edited_at,
        schedule=schedule.schedule,
        timezone=schedule.timezone,
        cron_version=schedule.cron_version,
        enabled=schedule.enabled,
        script_path=schedule.script_path,
        is_flow=schedule.is_flow,
        args=schedule.args,
        extra_perms={},
        email=schedule.email,
        error=schedule.error,
        on_failure=schedule.on_failure,
        on_failure_times=schedule.on_failure_times,
        on_failure_exact=schedule.on_failure_exact,
        on_failure_extra_args=schedule.on_failure_extra_args,
        on_recovery=schedule.on_recovery,
        on_recovery_times=schedule.on_recovery_times,
        on_recovery_extra_args=schedule.on_recovery_extra_args,
        on_success=schedule.on_success,
        on_success_extra_args=schedule.on_success_extra_args,
        ws_error_handler_muted=schedule.ws_error_handler_muted,
        retry=schedule.retry,
        summary=schedule.summary,
        description=schedule.description,
        no_flow_overlap=schedule.no_flow_overlap,
        tag=schedule.tag,
        paused_until=schedule.paused_until,
        catch_up=schedule.catch_up,
        catch_up_max=schedule.catch_up_max,
        next_fire_at=schedule.next_fire_at,
        last_fired_at=schedule.last_fired_at,
    )


def _count(value: float | None, location: str) -> int:
    """A Windmill ``number`` that counts runs: a whole number, 1 when unset."""
    if value is None:
        return 1
    if value != int(value):
        raise InvalidRequest(f"must be a whole number, got {value!r}", location=location)
    return int(value)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _now() -> datetime:
    return datetime.now(UTC)


# -- writes ----------------------------------------------------------------------------------


@post(
    f"{_BASE}/create",
    status_code=201,
    media_type=MediaType.TEXT,
    summary="Create a schedule",
    tags=["schedule"],
)
async def create_schedule(
    workspace: FromPath[str],
    data: JSONBody[NewScheduleBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Answers the path. 400 for a bad expression or time zone, 404 for an unknown
    script, flow or handler, 409 when the path is taken."""
    check_workspace(request.user, workspace)
    authorize_path(request.user, validate_path(data.path.strip("/"), kind="schedule"), "schedule")
    context = _ctx(state)
    saved = await schedules.create_schedule(
        context.pool,
        workspace,
        data.to_new(),
        edited_by=request.user.user_id,
        now=_now(),
        limits=context.limits,
    )
    return saved.path


@post(
    f"{_BASE}/update/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Update a schedule (its next tick is recomputed from now)",
    tags=["schedule"],
)
async def update_schedule(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[EditScheduleBody],
    request: _AuthRequest,
    state: State,
) -> str:
    item = checked_path(request, workspace, path, "schedule")
    context = _ctx(state)
    saved = await schedules.update_schedule(
        context.pool,
        workspace,
        item,
        data.to_edit(),
        edited_by=request.user.user_id,
        now=_now(),
        limits=context.limits,
    )
    return saved.path


@post(
    f"{_BASE}/setenabled/{{path:path}}",
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Enable or disable a schedule",
    tags=["schedule"],
)
async def set_schedule_enabled(
    workspace: FromPath[str],
    path: FromPath[str],
    data: JSONBody[_EnabledBody],
    request: _AuthRequest,
    state: State,
) -> str:
    """Enabling starts from the next tick after now: ticks missed while disabled never
    run."""
    item = checked_path(request, workspace, path, "schedule")
    saved = await schedules.set_enabled(
        _ctx(state).pool,
        workspace,
        item,
        data.enabled,
        edited_by=request.user.user_id,
        now=_now(),
    )
    return f"schedule {saved.path} {'enabled' if saved.enabled else 'disabled'}"


@route(
    f"{_BASE}/delete/{{path:path}}",
    http_method=[HttpMethod.DELETE],
    status_code=200,
    media_type=MediaType.TEXT,
    summary="Delete a schedule (runs already started go on)",
    tags=["schedule"],
)
async def delete_schedule(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> str:
    item = checked_path(request, workspace, path, "schedule")
    await schedules.delete_schedule(_ctx(state).pool, workspace, item)
    return f"schedule {item} deleted"


# -- reads -----------------------------------------------------------------------------------


@get(f"{_BASE}/get/{{path:path}}", summary="Get a schedule", tags=["schedule"])
async def get_schedule(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> ScheduleView:
    item = checked_path(request, workspace, path, "schedule")
    return schedule_view(await schedules.get_schedule(_ctx(state).pool, workspace, item))


@get(f"{_BASE}/exists/{{path:path}}", summary="Whether a schedule exists", tags=["schedule"])
async def schedule_exists(
    workspace: FromPath[str], path: FromPath[str], request: _AuthRequest, state: State
) -> bool:
    item = checked_path(request, workspace, path, "schedule")
    return await schedules.exists_schedule(_ctx(state).pool, workspace, item)


@get(f"{_BASE}/list", summary="List schedules", tags=["schedule"])
async def list_schedules(
    workspace: FromPath[str],
    request: _AuthRequest,
    state: State,
    page: Annotated[int, QueryParameter(description="page to return, from 1")] = 1,
    per_page: Annotated[int, QueryParameter(description="schedules per page")] = 1000,
    args: Annotated[
        str | None,
        QueryParameter(description="JSON object the schedule's args must contain"),
    ] = None,
    path: Annotated[str | None, QueryParameter(description="exact path")] = None,
    is_flow: Annotated[
        bool | None, QueryParameter(description="flows only (true) or scripts only (false)")
    ] = None,
    path_start: Annotated[str | None, QueryParameter(description="path prefix")] = None,
) -> list[ScheduleView]:
    """Ordered by path; only the schedules the token's user may access."""
    check_workspace(request.user, workspace)
    limit, offset = page_bounds(page, per_page)
    filters = ScheduleFilter(
        path=path or None,
        path_start=path_start or None,
        is_flow=is_flow,
        args=_args_filter(args),
    )
    found = await schedules.list_schedules(
        _ctx(state).pool, workspace, filters, limit=limit, offset=offset
    )
    info = request.user
    return [
        schedule_view(schedule)
        for schedule in found
        if may_access(schedule.path, user_id=info.user_id, is_admin=info.is_admin)
    ]


def _args_filter(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = _decode_json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"args must be a JSON object: {exc}", location="args") from None
    if not isinstance(value, dict):
        raise InvalidRequest("args must be a JSON object", location="args")
    return value


@post(
    "/api/schedules/preview",
    status_code=200,
    summary="The next instants a cron expression fires at (UTC)",
    tags=["schedule"],
)
async def preview_schedule(
    data: JSONBody[PreviewBody],
    count: Annotated[
        int, QueryParameter(description=f"how many instants (1..{schedules.MAX_PREVIEW})")
    ] = DEFAULT_PREVIEW,
    after: Annotated[
        datetime | None, QueryParameter(description="from this instant instead of now")
    ] = None,
) -> list[datetime]:
    """400 with ``location`` ``schedule`` or ``timezone`` when either is wrong."""
    return schedules.preview(
        data.schedule,
        data.timezone,
        after=_aware(after) or _now(),
        count=count,
        cron_version=data.cron_version or None,
    )


ROUTES = [
    create_schedule,
    update_schedule,
    set_schedule_enabled,
    delete_schedule,
    get_schedule,
    schedule_exists,
    list_schedules,
    preview_schedule,
]
