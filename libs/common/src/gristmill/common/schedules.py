"""Cron schedules: what runs when, checked once here for the gateway and the scheduler.

A schedule lives at a path of its workspace (``u/<user>/<name>`` or
``f/<folder>/<name>``) and runs the script or flow at ``script_path`` with ``args`` at
every tick of its cron expression (:mod:`gristmill.common.cron`) in its time zone.
Saving a schedule checks everything a user can get wrong and names the field: the
expression and the time zone (``location`` ``"schedule"``/``"timezone"``), the
runnable and the handlers (404 when they do not exist), the tag, the retry policy.

The scheduler's state is kept on the row: ``next_fire_at``, the earliest tick not
handled yet, is set here when a schedule is created, edited or enabled (from *now*:
ticks missed while a schedule was disabled never fire) and moved on by the scheduler
as it fires ticks.

Runs are made on behalf of the schedule's last editor (``edited_by``, whose email
the schedule shows). Handlers (``on_failure``/``on_recovery``/``on_success``, with
their ``*_times``, ``on_failure_exact`` and ``*_extra_args``) are run by the scheduler
service as runs end; see ``gristmill.scheduler.outcomes``.

Not supported yet (kept as sent where Windmill has a field for it):
``ws_error_handler_muted`` (there is no workspace error handler), the
``random_factor`` of an exponential retry, ``extra_perms`` (always empty),
Windmill's ``/schedules/list_with_jobs`` and ``/schedules/setdefaulthandler``, and
dynamic skip handlers. ``catch_up`` and ``catch_up_max`` are Gristmill's own.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import asyncpg
import msgspec

from gristmill.common import scripts
from gristmill.common.contracts.runs import RetryPolicy
from gristmill.common.cron import CronSchedule, parse_schedule
from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from gristmill.common.queue import QueueLimits, validate_tag
from gristmill.common.variables import missing_workspace, validate_path

__all__ = [
    "CATCH_UP_POLICIES",
    "DEFAULT_CATCH_UP_MAX",
    "MAX_CATCH_UP",
    "MAX_PREVIEW",
    "EditSchedule",
    "Executor",
    "Handler",
    "NewSchedule",
    "Schedule",
    "ScheduleFilter",
    "create_schedule",
    "delete_schedule",
    "exists_schedule",
    "get_schedule",
    "list_schedules",
    "parse_handler",
    "preview",
    "retry_policy",
    "schedule_from_row",
    "set_enabled",
    "tick_key",
    "update_schedule",
]

#: ``skip``: after downtime, one run for the latest missed tick. ``all``: every missed
#: tick (the latest ``catch_up_max``).
CATCH_UP_POLICIES: Final = frozenset({"skip", "all"})
DEFAULT_CATCH_UP_MAX: Final = 100
MAX_CATCH_UP: Final = 10_000
#: Most instants a preview answers.
MAX_PREVIEW: Final = 100
_Q = load_queries("schedules.sql")
_json = msgspec.json.Encoder()
#: Where reads and single-statement writes run: a connection or the pool itself.
Executor: TypeAlias = "Conn | asyncpg.Pool"
CatchUp = Literal["skip", "all"]


class EditSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """Windmill's ``EditSchedule`` (every field but the path), plus Gristmill's catch-up."""

    schedule: str
    timezone: str
    script_path: str
    is_flow: bool = False
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    cron_version: str | None = None
    summary: str | None = None
    description: str | None = None
    tag: str | None = None
    no_flow_overlap: bool = False
    catch_up: str = "skip"
    catch_up_max: int = DEFAULT_CATCH_UP_MAX
    on_failure: str | None = None
    on_failure_times: int = 1
    on_failure_exact: bool = False
    on_failure_extra_args: dict[str, Any] | None = None
    on_recovery: str | None = None
    on_recovery_times: int = 1
    on_recovery_extra_args: dict[str, Any] | None = None
    on_success: str | None = None
    on_success_extra_args: dict[str, Any] | None = None
    ws_error_handler_muted: bool = False
    retry: dict[str, Any] | None = None
    paused_until: datetime | None = None


class NewSchedule(EditSchedule, frozen=True, kw_only=True):
    """Windmill's ``NewSchedule``."""

    path: str
    enabled: bool = True


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A saved schedule and the scheduler's state of it."""

    workspace_id: str
    path: str
    schedule: str
    timezone: str
    cron_version: str
    script_path: str
    is_flow: bool
    args: dict[str, Any]
    enabled: bool
    summary: str | None
    description: str | None
    tag: str | None
    no_flow_overlap: bool
    catch_up: str
    catch_up_max: int
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
    paused_until: datetime | None
    email: str
    edited_by: str
    edited_at: datetime
    created_at: datetime
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    error: str | None
    failure_streak: int
    success_streak: int
    unrecovered_failure: dict[str, Any] | None

    def cron(self) -> CronSchedule:
        """The expression in its time zone (valid: it was checked when saved)."""
        return _parsed(self.schedule, self.timezone, self.cron_version)


class ScheduleFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Filters of a listing (each ``None`` means: any)."""

    path: str | None = None
    path_start: str | None = None
    is_flow: bool | None = None
    #: Schedules whose args contain these (JSON containment).
    args: dict[str, Any] | None = None


class Handler(msgspec.Struct, frozen=True, kw_only=True):
    """A failure, recovery or success handler: the script or flow it runs."""

    is_flow: bool
    path: str


@functools.lru_cache(maxsize=4096)
def _parsed(expression: str, timezone: str, cron_version: str) -> CronSchedule:
    return parse_schedule(expression, timezone, cron_version=cron_version)


def schedule_from_row(row: asyncpg.Record) -> Schedule:
    return msgspec.convert(dict(row), Schedule)


def tick_key(workspace: str, path: str, tick: datetime) -> str:
    """The idempotency key of a tick: its job id derives from it (exactly one job)."""
    return f"schedule:{workspace}:{path}:{tick.strftime('%Y-%m-%dT%H:%M:%SZ')}"


# -- validation ------------------------------------------------------------------------------


def parse_handler(reference: str, *, location: str) -> Handler:
    """``script/<path>``, ``flow/<path>`` (Windmill's form) or a bare script path."""
    kind, _, rest = reference.partition("/")
    if kind in ("script", "flow") and rest:
        return Handler(is_flow=kind == "flow", path=scripts.validate_path(rest, location=location))
    return Handler(is_flow=False, path=scripts.validate_path(reference, location=location))


def retry_policy(retry: dict[str, Any] | None) -> RetryPolicy | None:
    """Windmill's ``Retry`` as a :class:`RetryPolicy`; ``InvalidRequest`` if malformed.

    ``constant``: ``attempts`` retries ``seconds`` apart. ``exponential``: ``attempts``
    retries, the n-th after ``multiplier * seconds**n`` seconds (``random_factor`` is
    ignored). Both: their attempts add up, at the constant delay.
    """
    if not retry:
        return None
    constant = _retry_part(retry, "constant", ("attempts", "seconds"))
    exponential = _retry_part(retry, "exponential", ("attempts", "seconds", "multiplier"))
    attempts = int(constant.get("attempts", 0) + exponential.get("attempts", 0))
    if attempts <= 0:
        return None
    if constant.get("attempts"):
        return RetryPolicy(
            max_attempts=attempts + 1, delay_s=float(constant.get("seconds", 0)), multiplier=1.0
        )
    base = float(exponential.get("seconds", 0))
    factor = float(exponential.get("multiplier", 1))
    return RetryPolicy(max_attempts=attempts + 1, delay_s=factor * base, multiplier=max(base, 1.0))


def _retry_part(retry: dict[str, Any], name: str, numbers: tuple[str, ...]) -> dict[str, float]:
    part = retry.get(name)
    if part is None:
        return {}
    if not isinstance(part, dict):
        raise InvalidRequest(f"retry.{name} must be an object", location=f"retry.{name}")
    values: dict[str, float] = {}
    for key in numbers:
        value = part.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InvalidRequest(
                f"must be a non-negative number, got {value!r}", location=f"retry.{name}.{key}"
            )
        values[key] = value
    return values


def _check_args(value: dict[str, Any] | None, location: str, limits: QueueLimits) -> None:
    if value is None:
        return
    encoded = _json.encode(value)
    if len(encoded) > limits.max_args_bytes:
        raise PayloadTooLarge(
            f"{len(encoded)} bytes encoded, over the limit of {limits.max_args_bytes}",
            location=location,
        )
    if b"\\u0000" in encoded:
        raise InvalidRequest("contains a NUL character (\\u0000)", location=location)


def _validate(edit: EditSchedule, limits: QueueLimits) -> CronSchedule:
    """Checks that need no database; the expression in its time zone."""
    cron = parse_schedule(edit.schedule, edit.timezone, cron_version=edit.cron_version)
    scripts.validate_path(edit.script_path, location="script_path")
    if edit.tag is not None:
        validate_tag(edit.tag)
    if edit.catch_up not in CATCH_UP_POLICIES:
        raise InvalidRequest(
            f"unknown catch_up policy {edit.catch_up!r}; expected 'skip' or 'all'",
            location="catch_up",
        )
    if not 1 <= edit.catch_up_max <= MAX_CATCH_UP:
        raise InvalidRequest(
            f"catch_up_max must be between 1 and {MAX_CATCH_UP}, got {edit.catch_up_max}",
            location="catch_up_max",
        )
    for name in ("on_failure_times", "on_recovery_times"):
        if getattr(edit, name) < 1:
            raise InvalidRequest(f"{name} must be at least 1", location=name)
    for name in ("on_failure", "on_recovery", "on_success"):
        reference = getattr(edit, name)
        if reference:
            parse_handler(reference, location=name)
    _check_args(edit.args, "args", limits)
    for name in ("on_failure_extra_args", "on_recovery_extra_args", "on_success_extra_args"):
        _check_args(getattr(edit, name), name, limits)
    for name in ("summary", "description"):
        if "\x00" in (getattr(edit, name) or ""):
            raise InvalidRequest(f"{name} contains a NUL character", location=name)
    retry_policy(edit.retry)
    return cron


async def _check_runnable(
    conn: Executor, workspace: str, is_flow: bool, path: str, location: str
) -> None:
    path = scripts.validate_path(path, location=location)
    if is_flow:
        if not await conn.fetchval(_Q["flow_exists"], workspace, path):
            raise NotFound(f"flow {path!r} not found in workspace {workspace!r}", location=location)
        return
    try:
        await scripts.runnable_by_path(conn, workspace, path)
    except NotFound as exc:
        raise NotFound(exc.message, location=location) from None


async def _check_references(conn: Executor, workspace: str, edit: EditSchedule) -> None:
    await _check_runnable(conn, workspace, edit.is_flow, edit.script_path, "script_path")
    for name in ("on_failure", "on_recovery", "on_success"):
        reference = getattr(edit, name)
        if reference:
            handler = parse_handler(reference, location=name)
            await _check_runnable(conn, workspace, handler.is_flow, handler.path, name)


def _first_tick(
    cron: CronSchedule, now: datetime, paused_until: datetime | None
) -> datetime | None:
    start = now if paused_until is None else max(now, paused_until - timedelta(seconds=1))
    return cron.next_after(start)


def _values(edit: EditSchedule) -> tuple[Any, ...]:
    """The editable columns, in the order of the insert and update queries."""
    return (
        edit.schedule.strip(),
        edit.timezone,
        edit.cron_version or "v2",
        edit.script_path.strip("/"),
        edit.is_flow,
        edit.args,
        edit.summary,
        edit.description,
        edit.tag or None,
        edit.no_flow_overlap,
        edit.catch_up,
        edit.catch_up_max,
        edit.on_failure or None,
        edit.on_failure_times,
        edit.on_failure_exact,
        edit.on_failure_extra_args,
        edit.on_recovery or None,
        edit.on_recovery_times,
        edit.on_recovery_extra_args,
        edit.on_success or None,
        edit.on_success_extra_args,
        edit.ws_error_handler_muted,
        edit.retry,
        edit.paused_until,
    )


# -- writes ----------------------------------------------------------------------------------


async def create_schedule(
    conn: Executor,
    workspace: str,
    new: NewSchedule,
    *,
    edited_by: str,
    now: datetime,
    limits: QueueLimits | None = None,
) -> Schedule:
    """Save a new schedule; its first tick is the first after ``now`` (and ``paused_until``).

    Raises:
        InvalidRequest: a bad path, expression, time zone, tag, handler or retry policy.
        NotFound: the runnable or a handler does not exist (or the workspace).
        Conflict: a schedule already exists at the path.
    """
    path = validate_path(new.path.strip("/"), kind="schedule")
    cron = _validate(new, limits or QueueLimits())
    await _check_references(conn, workspace, new)
    try:
        row = await conn.fetchrow(
            _Q["insert"],
            workspace,
            path,
            *_values(new),
            new.enabled,
            edited_by,
            now,
            _first_tick(cron, now, new.paused_until),
        )
    except asyncpg.ForeignKeyViolationError:
        raise missing_workspace(workspace) from None
    except asyncpg.DataError as exc:
        raise InvalidRequest(f"the schedule cannot be stored: {exc}") from None
    if row is None:
        raise Conflict(
            f"a schedule already exists at {path!r} in workspace {workspace!r}", location="path"
        )
    return schedule_from_row(row)


async def update_schedule(
    conn: Executor,
    workspace: str,
    path: str,
    edit: EditSchedule,
    *,
    edited_by: str,
    now: datetime,
    limits: QueueLimits | None = None,
) -> Schedule:
    """Replace a schedule's settings; its next tick is recomputed from ``now``."""
    path = validate_path(path.strip("/"), kind="schedule")
    cron = _validate(edit, limits or QueueLimits())
    await _check_references(conn, workspace, edit)
    try:
        row = await conn.fetchrow(
            _Q["update"],
            workspace,
            path,
            *_values(edit),
            edited_by,
            now,
            _first_tick(cron, now, edit.paused_until),
        )
    except asyncpg.DataError as exc:
        raise InvalidRequest(f"the schedule cannot be stored: {exc}") from None
    if row is None:
        raise _no_schedule(workspace, path)
    return schedule_from_row(row)


async def set_enabled(
    conn: Executor, workspace: str, path: str, enabled: bool, *, edited_by: str, now: datetime
) -> Schedule:
    """Enable (its next tick is the first after ``now``) or disable a schedule."""
    path = validate_path(path.strip("/"), kind="schedule")
    current = await get_schedule(conn, workspace, path)
    next_fire_at = (
        _first_tick(current.cron(), now, current.paused_until) if enabled else current.next_fire_at
    )
    row = await conn.fetchrow(
        _Q["set_enabled"], workspace, path, enabled, edited_by, now, next_fire_at
    )
    if row is None:
        raise _no_schedule(workspace, path)
    return schedule_from_row(row)


async def delete_schedule(conn: Executor, workspace: str, path: str) -> None:
    """Delete a schedule; runs it already started go on."""
    path = validate_path(path.strip("/"), kind="schedule")
    if await conn.fetchval(_Q["delete"], workspace, path) is None:
        raise _no_schedule(workspace, path)


# -- reads -----------------------------------------------------------------------------------


def _no_schedule(workspace: str, path: str) -> NotFound:
    return NotFound(f"schedule {path!r} not found in workspace {workspace!r}", location="path")


async def get_schedule(conn: Executor, workspace: str, path: str) -> Schedule:
    path = validate_path(path.strip("/"), kind="schedule")
    row = await conn.fetchrow(_Q["get"], workspace, path)
    if row is None:
        raise _no_schedule(workspace, path)
    return schedule_from_row(row)


async def exists_schedule(conn: Executor, workspace: str, path: str) -> bool:
    path = validate_path(path.strip("/"), kind="schedule")
    exists: bool = await conn.fetchval(_Q["exists"], workspace, path)
    return exists


async def list_schedules(
    conn: Executor,
    workspace: str,
    filters: ScheduleFilter | None = None,
    *,
    limit: int = 100,
    offset: int = 0,
) -> list[Schedule]:
    """Schedules passing ``filters``, by path."""
    filters = filters or ScheduleFilter()
    rows = await conn.fetch(
        _Q["list"],
        workspace,
        filters.path.strip("/") if filters.path else None,
        filters.path_start.lstrip("/") if filters.path_start else None,
        filters.is_flow,
        filters.args,
        limit,
        offset,
    )
    return [schedule_from_row(row) for row in rows]


def preview(
    expression: str,
    timezone: str,
    *,
    after: datetime,
    count: int = 5,
    cron_version: str | None = None,
) -> list[datetime]:
    """The next ``count`` ticks after ``after`` (UTC); ``InvalidRequest`` names the field."""
    if not 1 <= count <= MAX_PREVIEW:
        raise InvalidRequest(f"count must be between 1 and {MAX_PREVIEW}", location="count")
    return parse_schedule(expression, timezone, cron_version=cron_version).upcoming(after, count)
