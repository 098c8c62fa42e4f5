"""Reading jobs back, following them live and canceling them.

Windmill's ``/api/w/{workspace}/jobs_u/...`` (one job) and ``/jobs/...`` (lists)
paths. Shapes are in :mod:`gristmill.gateway.jobs_view`.

Logs are addressed by character: ``log_offset`` is how many characters of the log a
client already has (0 for all of it); every answer says the log's length, which is
the ``log_offset`` of the next call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest, NotFound
from gristmill.common.queue import CancelOutcome
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.jobs_view import (
    CompletedJob,
    Job,
    JobFilters,
    JobListScope,
    JobUpdate,
    LogPosition,
    ResultMaybe,
    error_result,
    fetch_job,
    job_not_found,
    list_jobs,
    read_update,
    read_update_after,
)

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "ROUTES",
    "SSE_MAX_LIFETIME_S",
    "SSE_PING_INTERVAL_S",
    "CancelBody",
    "QueueCount",
]

_Q = load_queries("jobs.sql")
_log = structlog.get_logger(__name__)
_AuthRequest = Request[TokenInfo, str, Any]
_json = msgspec.json.Encoder()

DEFAULT_PER_PAGE = 30
#: Largest page a list endpoint answers (larger ``per_page`` values are capped).
MAX_PER_PAGE = 1000
#: A live stream ends after this long with a ``timeout`` event; clients reconnect.
SSE_MAX_LIFETIME_S = 300.0
#: A ``ping`` event is sent when nothing else was for this long.
SSE_PING_INTERVAL_S = 5.0
#: Polling back-off of a live stream: from the first to the second while nothing changes.
_SSE_POLL_MIN_S = 0.05
_SSE_POLL_MAX_S = 1.0

_JobId = Annotated[uuid.UUID, PathParameter(description="the job id")]
_Workspace = Annotated[str, PathParameter(description="the workspace id")]


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _json_response(value: Any) -> Response[bytes]:
    return Response(_json.encode(value), media_type="application/json")


# -- one job -------------------------------------------------------------------------------


@get(
    "/api/w/{workspace:str}/jobs_u/get/{job_id:uuid}",
    summary="Get a job (queued, running or completed)",
    tags=["job"],
)
async def get_job(
    workspace: _Workspace,
    job_id: _JobId,
    request: _AuthRequest,
    state: State,
    no_logs: Annotated[bool, QueryParameter(description="leave the logs out")] = False,
) -> Job:
    """The job as a ``QueuedJob`` while it waits or runs, a ``CompletedJob`` after."""
    check_workspace(request.user, workspace)
    return await fetch_job(_ctx(state).pool, workspace, job_id, with_logs=not no_logs)


@get(
    "/api/w/{workspace:str}/jobs_u/completed/get/{job_id:uuid}",
    summary="Get a completed job",
    tags=["job"],
)
async def get_completed_job(
    workspace: _Workspace, job_id: _JobId, request: _AuthRequest, state: State
) -> CompletedJob:
    """404 while the job has not completed."""
    check_workspace(request.user, workspace)
    job = await fetch_job(_ctx(state).pool, workspace, job_id, with_logs=True)
    if not isinstance(job, CompletedJob):
        raise NotFound(f"job {job_id} has not completed yet", location="id")
    return job


@get(
    "/api/w/{workspace:str}/jobs_u/get_logs/{job_id:uuid}",
    summary="Get a job's logs",
    media_type="text/plain",
    tags=["job"],
)
async def get_logs(
    workspace: _Workspace, job_id: _JobId, request: _AuthRequest, state: State
) -> str:
    """The whole log so far, as text (empty when the job printed nothing)."""
    check_workspace(request.user, workspace)
    row = await _ctx(state).pool.fetchrow(_Q["job_logs"], job_id, workspace)
    if row is None:
        raise job_not_found(job_id, workspace)
    logs: str | None = row["logs"]
    return logs or ""


@get(
    "/api/w/{workspace:str}/jobs_u/get_args/{job_id:uuid}",
    summary="Get a job's arguments",
    tags=["job"],
)
async def get_args(
    workspace: _Workspace, job_id: _JobId, request: _AuthRequest, state: State
) -> dict[str, Any]:
    check_workspace(request.user, workspace)
    row = await _ctx(state).pool.fetchrow(_Q["job_outcome"], job_id, workspace)
    if row is None:
        raise job_not_found(job_id, workspace)
    args: dict[str, Any] = row["args"]
    return args


@get(
    "/api/w/{workspace:str}/jobs_u/completed/get_result/{job_id:uuid}",
    summary="Get a completed job's result",
    tags=["job"],
)
async def get_result(
    workspace: _Workspace, job_id: _JobId, request: _AuthRequest, state: State
) -> Response[bytes]:
    """The result as JSON; ``{"error": {...}}`` for a failed job; 404 until it completed."""
    check_workspace(request.user, workspace)
    row = await _ctx(state).pool.fetchrow(_Q["job_outcome"], job_id, workspace)
    if row is None:
        raise job_not_found(job_id, workspace)
    if row["status"] is None:
        raise NotFound(f"job {job_id} has not completed yet", location="id")
    if row["status"] == "success":
        return _json_response(row["result"])
    return _json_response(error_result(row["error"]))


@get(
    "/api/w/{workspace:str}/jobs_u/completed/get_result_maybe/{job_id:uuid}",
    summary="Get a job's result if it completed",
    tags=["job"],
)
async def get_result_maybe(
    workspace: _Workspace,
    job_id: _JobId,
    request: _AuthRequest,
    state: State,
    get_started: Annotated[
        bool, QueryParameter(description="accepted for compatibility; ``started`` is always set")
    ] = False,
) -> ResultMaybe:
    """``completed`` false (and ``started``: is it running) until the job ends."""
    check_workspace(request.user, workspace)
    row = await _ctx(state).pool.fetchrow(_Q["job_outcome"], job_id, workspace)
    if row is None:
        raise job_not_found(job_id, workspace)
    status = row["status"]
    if status is None:
        return ResultMaybe(completed=False, result=None, success=None, started=bool(row["running"]))
    success = status == "success"
    return ResultMaybe(
        completed=True,
        started=True,
        success=success,
        result=row["result"] if success else error_result(row["error"]),
    )


@get(
    "/api/w/{workspace:str}/jobs_u/get_root_job_id/{job_id:uuid}",
    summary="Get the id of the job at the root of a job's flow",
    tags=["job"],
)
async def get_root_job_id(
    workspace: _Workspace, job_id: _JobId, request: _AuthRequest, state: State
) -> Response[bytes]:
    """A JSON string: the root flow's id, or the job's own id when it is not a flow step."""
    check_workspace(request.user, workspace)
    root = await _ctx(state).pool.fetchval(_Q["job_root"], job_id, workspace)
    if root is None:
        raise job_not_found(job_id, workspace)
    return _json_response(str(root))


# -- following a job ---------------------------------------------------------------------


@get(
    "/api/w/{workspace:str}/jobs_u/getupdate/{job_id:uuid}",
    summary="Get a job's state and new logs",
    tags=["job"],
)
async def get_update(
    workspace: _Workspace,
    job_id: _JobId,
    request: _AuthRequest,
    state: State,
    log_offset: Annotated[
        int, QueryParameter(description="characters of the log already read (0: all of it)", ge=0)
    ] = 0,
    running: Annotated[
        bool | None, QueryParameter(description="accepted for compatibility; not used")
    ] = None,
    get_progress: Annotated[
        bool | None, QueryParameter(description="accepted for compatibility; not used")
    ] = None,
    no_logs: Annotated[bool, QueryParameter(description="leave the logs out")] = False,
) -> JobUpdate:
    """``new_logs`` from character ``log_offset`` on; ``log_offset`` of the answer is
    the log's length, to send next time."""
    check_workspace(request.user, workspace)
    update, _position = await read_update(_ctx(state).pool, workspace, job_id, log_offset)
    if no_logs:
        update = msgspec.structs.replace(update, new_logs=None)
    return update


class _StreamUpdate(
    msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type", tag="update"
):
    """One ``update`` event of a live stream (Windmill's shape)."""

    running: bool
    completed: bool
    log_offset: int
    new_logs: str | msgspec.UnsetType = msgspec.UNSET
    mem_peak: int | None = None
    flow_status: dict[str, Any] | None = None
    #: The completed job (its logs left out: the stream carried them).
    job: Job | msgspec.UnsetType = msgspec.UNSET
    #: The result alone, with ``only_result``.
    only_result: Any = msgspec.UNSET


_PING = msgspec.json.encode({"type": "ping"}).decode()
_TIMEOUT = msgspec.json.encode({"type": "timeout"}).decode()
_NOT_FOUND = msgspec.json.encode({"type": "not_found"}).decode()
_STREAM_ERROR = msgspec.json.encode(
    {"type": "error", "error": "the database is unavailable; reconnect shortly"}
).decode()
#: Errors that end a stream with an ``error`` event rather than a broken connection.
_DB_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresError)


def _event(update: _StreamUpdate) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=_json.encode(update).decode(), id=update.log_offset)


async def _job_events(
    pool: asyncpg.Pool,
    workspace: str,
    job_id: uuid.UUID,
    *,
    log_offset: int,
    with_logs: bool,
    only_result: bool,
    max_poll_s: float,
) -> AsyncIterator[ServerSentEventMessage]:
    """Poll the job until it completes (or the stream's lifetime ends).

    Sends an ``update`` when something changed (new logs, started, memory, the
    ``flow_status`` of a flow's steps), a ``ping`` when nothing was sent for a while,
    and a last ``update`` with ``completed: true`` and the job. The client going away
    cancels the generator; a database failure ends the stream with an ``error`` event
    (the client reconnects).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    last_sent = started
    delay = _SSE_POLL_MIN_S
    position: LogPosition | None = None
    previous: tuple[bool, int | None, dict[str, Any] | None] | None = None
    while True:
        try:
            if position is None:
                update, position = await read_update(pool, workspace, job_id, log_offset)
            else:
                update, position = await read_update_after(pool, workspace, job_id, position)
            new_logs = update.new_logs or ""
            if update.completed:
                final = await _completed_update(
                    pool,
                    workspace,
                    job_id,
                    update,
                    new_logs,
                    with_logs=with_logs,
                    only_result=only_result,
                )
                yield _event(final)
                return
        except NotFound:  # deleted meanwhile (retention)
            yield ServerSentEventMessage(data=_NOT_FOUND)
            return
        except _DB_ERRORS as exc:
            _log.warning("job stream stopped", job_id=str(job_id), error=f"{type(exc).__name__}")
            yield ServerSentEventMessage(data=_STREAM_ERROR)
            return
        now = loop.time()
        state = (update.running, update.mem_peak, update.flow_status)
        if (new_logs and with_logs) or state != previous:
            previous = state
            last_sent = now
            delay = _SSE_POLL_MIN_S
            yield _event(
                _StreamUpdate(
                    running=update.running,
                    completed=False,
                    log_offset=update.log_offset,
                    new_logs=new_logs if with_logs else msgspec.UNSET,
                    mem_peak=update.mem_peak,
                    flow_status=update.flow_status,
                )
            )
        else:
            delay = min(delay * 2, max_poll_s)
            if now - last_sent >= SSE_PING_INTERVAL_S:
                last_sent = now
                yield ServerSentEventMessage(data=_PING)
        if now - started >= SSE_MAX_LIFETIME_S:
            yield ServerSentEventMessage(data=_TIMEOUT)
            return
        await asyncio.sleep(delay)


async def _completed_update(
    pool: asyncpg.Pool,
    workspace: str,
    job_id: uuid.UUID,
    update: JobUpdate,
    new_logs: str,
    *,
    with_logs: bool,
    only_result: bool,
) -> _StreamUpdate:
    job = await fetch_job(pool, workspace, job_id, with_logs=False)
    result = job.result if isinstance(job, CompletedJob) else None
    return _StreamUpdate(
        running=False,
        completed=True,
        log_offset=update.log_offset,
        new_logs=new_logs if with_logs and not only_result else msgspec.UNSET,
        mem_peak=update.mem_peak,
        flow_status=update.flow_status,
        job=msgspec.UNSET if only_result else job,
        only_result=result if only_result else msgspec.UNSET,
    )


@get(
    "/api/w/{workspace:str}/jobs_u/getupdate_sse/{job_id:uuid}",
    summary="Follow a job live (server-sent events)",
    media_type="text/event-stream",
    response_description="JSON messages: update, ping, timeout, not_found, error",
    tags=["job"],
)
async def get_update_sse(
    workspace: _Workspace,
    job_id: _JobId,
    request: _AuthRequest,
    state: State,
    log_offset: Annotated[
        int, QueryParameter(description="characters of the log already read (0: all of it)", ge=0)
    ] = 0,
    running: Annotated[
        bool | None, QueryParameter(description="accepted for compatibility; not used")
    ] = None,
    no_logs: Annotated[bool, QueryParameter(description="send no logs")] = False,
    only_result: Annotated[
        bool, QueryParameter(description="send no logs, and the result alone at the end")
    ] = False,
    fast: Annotated[
        bool, QueryParameter(description="accepted for compatibility; not used")
    ] = False,
    poll_delay_ms: Annotated[
        int | None, QueryParameter(description="longest wait between two looks (50-5000 ms)")
    ] = None,
) -> ServerSentEvent:
    """A ``text/event-stream`` of JSON messages, as Windmill sends them:

    ``{"type": "update", "running", "completed", "new_logs", "log_offset", ...}`` each
    time something changed; the last ``update`` has ``completed: true`` and ``job``
    (the ``CompletedJob``; ``only_result`` instead with ``only_result=true``).
    ``{"type": "ping"}`` keeps a quiet stream alive; ``{"type": "timeout"}`` ends a
    stream that lived ``SSE_MAX_LIFETIME_S`` (reconnect with the last ``log_offset``,
    also sent as the event id: ``Last-Event-ID`` is honoured).
    """
    check_workspace(request.user, workspace)
    pool = _ctx(state).pool
    last_event_id = request.headers.get("last-event-id", "")
    if last_event_id.isdigit():
        log_offset = int(last_event_id)
    # Answer 404 with a status (not in the stream) when the job is unknown.
    if await pool.fetchval(_Q["job_root"], job_id, workspace) is None:
        raise job_not_found(job_id, workspace)
    max_poll_s = _SSE_POLL_MAX_S
    if poll_delay_ms is not None:
        max_poll_s = min(max(poll_delay_ms, 50), 5000) / 1000
    return ServerSentEvent(
        _job_events(
            pool,
            workspace,
            job_id,
            log_offset=log_offset,
            with_logs=not (no_logs or only_result),
            only_result=only_result,
            max_poll_s=max_poll_s,
        )
    )


# -- canceling -----------------------------------------------------------------------------


class CancelBody(msgspec.Struct, kw_only=True):
    """Why the job is canceled (shown in its error)."""

    reason: str | None = None


@post(
    "/api/w/{workspace:str}/jobs_u/queue/cancel/{job_id:uuid}",
    summary="Cancel a queued or running job",
    media_type="text/plain",
    status_code=200,
    tags=["job"],
)
async def cancel_job(
    workspace: _Workspace,
    job_id: _JobId,
    request: _AuthRequest,
    state: State,
    data: JSONBody[CancelBody | None] = None,
) -> str:
    """A queued job ends at once as canceled; a running one is stopped by its worker.

    Answers the job id, or a note when the job had already completed.
    """
    check_workspace(request.user, workspace)
    context = _ctx(state)
    if await context.pool.fetchval(_Q["job_root"], job_id, workspace) is None:
        raise job_not_found(job_id, workspace)
    reason = data.reason if data is not None else None
    outcome = await context.queue.cancel(job_id, by=request.user.user_id, reason=reason)
    _log.info("job cancel", job_id=str(job_id), outcome=str(outcome), by=request.user.user_id)
    if outcome == CancelOutcome.ALREADY_COMPLETED:
        return f"queued job id {job_id} is already completed"
    return str(job_id)


# -- lists --------------------------------------------------------------------------------


def _kinds(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    kinds = tuple(kind.strip() for kind in value.split(",") if kind.strip())
    return kinds or None


def _json_filter(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"{name} must be JSON: {exc}", location=name) from exc


def _job_filters(
    created_by: Annotated[str | None, QueryParameter(description="exact creator")] = None,
    script_path_exact: Annotated[
        str | None, QueryParameter(description="exact script path")
    ] = None,
    script_path_start: Annotated[
        str | None, QueryParameter(description="script paths starting with this")
    ] = None,
    script_hash: Annotated[str | None, QueryParameter(description="exact script hash")] = None,
    success: Annotated[
        bool | None, QueryParameter(description="completed jobs that succeeded (or not)")
    ] = None,
    running: Annotated[bool | None, QueryParameter(description="running jobs (or not)")] = None,
    job_kinds: Annotated[
        str | None, QueryParameter(description="comma-separated kinds: preview, script, flow, ...")
    ] = None,
    tag: Annotated[str | None, QueryParameter(description="exact worker tag")] = None,
    created_before: Annotated[
        datetime | None, QueryParameter(description="created at or before (inclusive)")
    ] = None,
    created_after: Annotated[
        datetime | None, QueryParameter(description="created after (exclusive)")
    ] = None,
    started_before: Annotated[
        datetime | None, QueryParameter(description="started at or before (inclusive)")
    ] = None,
    started_after: Annotated[
        datetime | None, QueryParameter(description="started after (exclusive)")
    ] = None,
    has_null_parent: Annotated[
        bool | None, QueryParameter(description="top-level jobs (no parent)")
    ] = None,
    is_skipped: Annotated[
        bool | None, QueryParameter(description="skipped flow steps (there are none yet)")
    ] = None,
    is_flow_step: Annotated[bool | None, QueryParameter(description="flow steps (or not)")] = None,
    parent_job: Annotated[
        uuid.UUID | None, QueryParameter(description="children of this job")
    ] = None,
    trigger_kind: Annotated[
        str | None, QueryParameter(description="how the job was started: api, schedule, http, ...")
    ] = None,
    args: Annotated[
        str | None, QueryParameter(description="JSON object the job's args contain (@>)")
    ] = None,
    result: Annotated[
        str | None, QueryParameter(description="JSON value the job's result contains (@>)")
    ] = None,
    is_not_schedule: Annotated[
        bool | None, QueryParameter(description="jobs not started by a schedule")
    ] = None,
    scheduled_for_before_now: Annotated[
        bool | None, QueryParameter(description="queued jobs that are due")
    ] = None,
    order_desc: Annotated[bool, QueryParameter(description="newest first (default)")] = True,
) -> JobFilters:
    parsed_args = _json_filter(args, "args")
    if parsed_args is not None and not isinstance(parsed_args, dict):
        raise InvalidRequest("args must be a JSON object", location="args")
    return JobFilters(
        created_by=created_by,
        script_path_exact=script_path_exact,
        script_path_start=script_path_start,
        script_hash=script_hash,
        success=success,
        running=running,
        job_kinds=_kinds(job_kinds),
        tag=tag,
        created_before=created_before,
        created_after=created_after,
        started_before=started_before,
        started_after=started_after,
        has_null_parent=has_null_parent,
        is_skipped=is_skipped,
        is_flow_step=is_flow_step,
        parent_job=parent_job,
        trigger_kind=trigger_kind,
        args=parsed_args,
        result=_json_filter(result, "result"),
        is_not_schedule=is_not_schedule,
        scheduled_for_before_now=scheduled_for_before_now,
        order_desc=order_desc,
    )


class _Page(msgspec.Struct, frozen=True):
    limit: int
    offset: int


def _page(
    page: Annotated[int, QueryParameter(description="page to return, from 1")] = 1,
    per_page: Annotated[
        int, QueryParameter(description=f"jobs per page (default 30, at most {MAX_PER_PAGE})")
    ] = DEFAULT_PER_PAGE,
) -> _Page:
    limit = min(max(per_page, 1), MAX_PER_PAGE)
    return _Page(limit=limit, offset=(max(page, 1) - 1) * limit)


_LIST_DEPENDENCIES = {
    "filters": Provide(_job_filters, sync_to_thread=False),
    "pagination": Provide(_page, sync_to_thread=False),
}


async def _list(
    state: State,
    request: _AuthRequest,
    workspace: str,
    filters: JobFilters,
    pagination: _Page,
    scope: JobListScope,
) -> list[Job]:
    check_workspace(request.user, workspace)
    return await list_jobs(
        _ctx(state).pool,
        workspace,
        filters,
        scope=scope,
        limit=pagination.limit,
        offset=pagination.offset,
    )


@get(
    "/api/w/{workspace:str}/jobs/list",
    summary="List jobs (queued, running and completed), newest first",
    dependencies=_LIST_DEPENDENCIES,
    tags=["job"],
)
async def list_all_jobs(
    workspace: _Workspace,
    request: _AuthRequest,
    state: State,
    filters: NamedDependency[JobFilters],
    pagination: NamedDependency[_Page],
) -> list[Job]:
    """Ordered by creation time. Logs and code are left out; fetch one job for them."""
    return await _list(state, request, workspace, filters, pagination, "all")


@get(
    "/api/w/{workspace:str}/jobs/completed/list",
    summary="List completed jobs, latest completion first",
    dependencies=_LIST_DEPENDENCIES,
    tags=["job"],
)
async def list_completed_jobs(
    workspace: _Workspace,
    request: _AuthRequest,
    state: State,
    filters: NamedDependency[JobFilters],
    pagination: NamedDependency[_Page],
) -> list[Job]:
    """Ordered by completion time. Logs and code are left out."""
    return await _list(state, request, workspace, filters, pagination, "completed")


@get(
    "/api/w/{workspace:str}/jobs/queue/list",
    summary="List queued and running jobs, newest first",
    dependencies=_LIST_DEPENDENCIES,
    tags=["job"],
)
async def list_queued_jobs(
    workspace: _Workspace,
    request: _AuthRequest,
    state: State,
    filters: NamedDependency[JobFilters],
    pagination: NamedDependency[_Page],
) -> list[Job]:
    """Ordered by creation time. Logs and code are left out."""
    return await _list(state, request, workspace, filters, pagination, "queued")


class QueueCount(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How many jobs a table holds for the workspace."""

    database_length: int
    suspended: int | None = None


@get(
    "/api/w/{workspace:str}/jobs/completed/count",
    summary="Count completed jobs",
    tags=["job"],
)
async def completed_count(workspace: _Workspace, request: _AuthRequest, state: State) -> QueueCount:
    check_workspace(request.user, workspace)
    count = await _ctx(state).pool.fetchval(_Q["completed_count"], workspace)
    return QueueCount(database_length=count)


@get(
    "/api/w/{workspace:str}/jobs/queue/count",
    summary="Count queued and running jobs",
    tags=["job"],
)
async def queue_count(workspace: _Workspace, request: _AuthRequest, state: State) -> QueueCount:
    check_workspace(request.user, workspace)
    count = await _ctx(state).pool.fetchval(_Q["queue_count"], workspace)
    return QueueCount(database_length=count, suspended=0)


ROUTES = [
    get_job,
    get_completed_job,
    get_logs,
    get_args,
    get_result,
    get_result_maybe,
    get_root_job_id,
    get_update,
    get_update_sse,
    cancel_job,
    list_all_jobs,
    list_completed_jobs,
    list_queued_jobs,
    completed_count,
    queue_count,
]
