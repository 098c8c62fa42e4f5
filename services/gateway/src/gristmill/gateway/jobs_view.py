"""Jobs as the API shows them: Windmill's ``QueuedJob`` / ``CompletedJob`` shapes.

A job is read from its definition (``jobs``) joined with whichever table holds its
state (``job_queue`` + ``job_runtime`` while it is queued or running,
``jobs_completed`` once it ended). The queries live in ``sql/jobs.sql``.

Field names and types follow Windmill's OpenAPI document so that its clients work
unchanged; Gristmill's own fields (``exit_reason``, ``attempt``, ``worker``,
``trigger_kind``, ``trigger``, ...) sit beside them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, TypeAlias

import asyncpg
import msgspec

from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest, NotFound
from gristmill.common.flows.view import flow_status_json

__all__ = [
    "CompletedJob",
    "Job",
    "JobFilters",
    "JobListScope",
    "JobUpdate",
    "LogPosition",
    "QueuedJob",
    "ResultMaybe",
    "error_result",
    "fetch_job",
    "job_from_row",
    "job_not_found",
    "list_jobs",
    "read_update",
    "read_update_after",
]

_Q = load_queries("jobs.sql")


class _JobFields(msgspec.Struct, kw_only=True):
    """Fields shared by queued and completed jobs."""

    id: uuid.UUID
    workspace_id: str
    job_kind: str
    script_path: str | None
    script_hash: str | None
    language: str | None
    raw_code: str | None
    raw_flow: dict[str, Any] | None
    args: dict[str, Any] | None
    tag: str
    priority: int
    created_by: str
    permissioned_as: str
    email: str
    created_at: datetime
    started_at: datetime | None
    parent_job: uuid.UUID | None
    is_flow_step: bool
    canceled: bool
    canceled_by: str | None
    canceled_reason: str | None
    schedule_path: str | None
    mem_peak: int | None
    logs: str | None
    flow_status: dict[str, Any] | None = None
    visible_to_owner: bool = True
    # Gristmill's own fields.
    root_job: uuid.UUID | None
    flow_step_id: str | None
    trigger_kind: str
    trigger: str | None
    attempt: int
    worker: str | None


class QueuedJob(_JobFields, kw_only=True, tag_field="type", tag="QueuedJob"):
    """A job waiting for a worker or running."""

    running: bool
    scheduled_for: datetime
    last_ping: datetime | None


class CompletedJob(_JobFields, kw_only=True, tag_field="type", tag="CompletedJob"):
    """A job that ended: succeeded, failed or was canceled.

    ``result`` is the job's return value, or ``{"error": {"name", "message", "stack",
    ...}}`` when it did not succeed.
    """

    success: bool
    result: Any
    duration_ms: int
    completed_at: datetime
    deleted: bool = False
    is_skipped: bool = False
    #: ``success``, ``failure`` or ``canceled``.
    status: str
    #: Why it stopped: ``ok``, ``error``, ``timeout``, ``canceled``, ``signal``, ``oom``, ``lost``.
    exit_reason: str


Job: TypeAlias = QueuedJob | CompletedJob


class JobUpdate(msgspec.Struct, kw_only=True):
    """What changed since a client's last look (``getupdate``)."""

    running: bool
    completed: bool
    #: The log from the requested ``log_offset`` on (``None`` with ``no_logs``).
    new_logs: str | None
    #: Length of the whole log in characters: the ``log_offset`` of the next call.
    log_offset: int
    mem_peak: int | None
    flow_status: dict[str, Any] | None = None
    #: Set by ``wmill.set_progress`` (not tracked yet).
    progress: int | None = None


class ResultMaybe(msgspec.Struct, kw_only=True):
    """A job's result if it ended (``get_result_maybe``)."""

    completed: bool
    result: Any
    success: bool | None
    started: bool


class LogPosition(msgspec.Struct, kw_only=True):
    """Where a log reader stands: characters seen and the last chunk read."""

    offset: int
    last_seq: int | None


class JobFilters(msgspec.Struct, kw_only=True, frozen=True):
    """The filters of the list endpoints (Windmill's query parameters)."""

    created_by: str | None = None
    script_path_exact: str | None = None
    script_path_start: str | None = None
    script_hash: str | None = None
    success: bool | None = None
    running: bool | None = None
    job_kinds: tuple[str, ...] | None = None
    tag: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    started_before: datetime | None = None
    started_after: datetime | None = None
    has_null_parent: bool | None = None
    is_skipped: bool | None = None
    is_flow_step: bool | None = None
    parent_job: uuid.UUID | None = None
    trigger_kind: str | None = None
    args: dict[str, Any] | None = None
    result: Any = None
    is_not_schedule: bool | None = None
    scheduled_for_before_now: bool | None = None
    order_desc: bool = True

    def parameters(self) -> list[Any]:
        """The filter parameters ``$2``..``$22`` of ``job_filters_fragment``, in order."""
        return [
            self.created_by,
            self.script_path_exact,
            self.script_path_start,
            self.script_hash,
            self.success,
            self.running,
            list(self.job_kinds) if self.job_kinds is not None else None,
            self.tag,
            self.created_before,
            self.created_after,
            self.started_before,
            self.started_after,
            self.has_null_parent,
            self.is_skipped,
            self.is_flow_step,
            self.parent_job,
            self.trigger_kind,
            self.args,
            self.result,
            self.is_not_schedule,
            self.scheduled_for_before_now,
        ]


#: Which jobs a list endpoint shows.
JobListScope: TypeAlias = Literal["all", "completed", "queued"]


def _list_query(scope: JobListScope, *, descending: bool) -> str:
    order = "" if descending else "_asc"
    return "\n".join(
        (
            _Q["job_list_fragment"],
            _Q["job_filters_fragment"],
            _Q[f"scope_{scope}{order}_fragment"],
        )
    )


_SCOPES: tuple[JobListScope, ...] = ("all", "completed", "queued")
_LIST_QUERIES = {
    (scope, descending): _list_query(scope, descending=descending)
    for scope in _SCOPES
    for descending in (True, False)
}


def error_result(error: Any) -> dict[str, Any]:
    """The ``result`` of a job that did not succeed: ``{"error": {...}}``."""
    if isinstance(error, dict):
        return {"error": error}
    return {"error": {"name": "Error", "message": "the job failed"}}


def _canceled_reason(row: asyncpg.Record) -> str | None:
    error = row["error"]
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message: str = error["message"]
        return message
    return None


def job_from_row(row: asyncpg.Record) -> Job:
    """A row of ``job_get`` / the list queries in the API's shape."""
    trigger_kind = row["trigger_kind"]
    common: dict[str, Any] = {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "job_kind": row["kind"],
        "script_path": row["runnable_path"],
        "script_hash": row["runnable_hash"],
        "language": row["language"],
        "raw_code": row["code"],
        "raw_flow": row["flow_value"],
        "args": row["args"],
        "tag": row["tag"],
        "priority": row["priority"],
        "created_by": row["created_by"],
        "permissioned_as": f"u/{row['created_by']}",
        "email": row["email"],
        "created_at": row["created_at"],
        "parent_job": row["parent_job"],
        "root_job": row["root_job"],
        "is_flow_step": row["flow_step"] is not None,
        "flow_step_id": row["flow_step"],
        "schedule_path": row["trigger_source"] if trigger_kind == "schedule" else None,
        "trigger_kind": trigger_kind,
        "trigger": row["trigger_source"],
        "logs": row["logs"],
    }
    status = row["status"]
    if status is None:
        return QueuedJob(
            **common,
            running=bool(row["running"]),
            scheduled_for=row["scheduled_for"],
            started_at=row["queue_started_at"],
            last_ping=row["ping"],
            canceled=bool(row["cancel_requested"]),
            canceled_by=row["queue_canceled_by"],
            canceled_reason=row["cancel_reason"],
            mem_peak=row["runtime_memory_peak_kb"],
            attempt=row["queue_attempt"] or 0,
            worker=row["queue_worker"],
        )
    success = status == "success"
    canceled = status == "canceled"
    completed_at = row["completed_at"]
    return CompletedJob(
        **common,
        success=success,
        status=status,
        exit_reason=row["exit_reason"],
        result=row["result"] if success else error_result(row["error"]),
        # Never started (canceled while queued, rejected): it "ran" for no time at its end.
        started_at=row["completed_started_at"] or completed_at,
        completed_at=completed_at,
        duration_ms=row["duration_ms"] or 0,
        canceled=canceled,
        canceled_by=row["completed_canceled_by"],
        canceled_reason=_canceled_reason(row) if canceled else None,
        mem_peak=row["completed_memory_peak_kb"],
        attempt=row["completed_attempt"],
        worker=row["completed_worker"],
    )


def job_not_found(job_id: uuid.UUID, workspace: str) -> NotFound:
    """The error for a job id unknown in ``workspace`` (or in another workspace)."""
    return NotFound(f"job {job_id} not found in workspace {workspace!r}", location="id")


async def fetch_job(
    pool: asyncpg.Pool, workspace: str, job_id: uuid.UUID, *, with_logs: bool
) -> Job:
    """The job, or :class:`NotFound`."""
    row = await pool.fetchrow(_Q["job_get"], job_id, workspace, with_logs)
    if row is None:
        raise job_not_found(job_id, workspace)
    job = job_from_row(row)
    if job.job_kind in FLOW_KINDS:
        status = await flow_status_json(pool, workspace, job_id)
        job = msgspec.structs.replace(job, flow_status=status)
    return job


async def list_jobs(
    pool: asyncpg.Pool,
    workspace: str,
    filters: JobFilters,
    *,
    scope: JobListScope,
    limit: int,
    offset: int,
) -> list[Job]:
    """One page of ``scope`` (``all``, ``completed`` or ``queued``) jobs."""
    query = _LIST_QUERIES[(scope, filters.order_desc)]
    rows = await pool.fetch(query, workspace, *filters.parameters(), limit, offset)
    return [job_from_row(row) for row in rows]


async def read_update(
    pool: asyncpg.Pool, workspace: str, job_id: uuid.UUID, log_offset: int
) -> tuple[JobUpdate, LogPosition]:
    """State and the log from character ``log_offset`` on (0-based).

    An offset past the end reads nothing; the answer's ``log_offset`` is always the
    log's length, where the next read starts.
    """
    if log_offset < 0:
        raise InvalidRequest("log_offset must be 0 or more", location="log_offset")
    row = await pool.fetchrow(_Q["job_update"], job_id, workspace, log_offset)
    if row is None:
        raise job_not_found(job_id, workspace)
    update = JobUpdate(
        running=bool(row["running"]),
        completed=row["status"] is not None,
        new_logs=row["new_logs"],
        log_offset=row["log_end"],
        mem_peak=row["mem_peak"],
        flow_status=await _flow_status(pool, workspace, job_id, row["kind"]),
    )
    return update, LogPosition(offset=row["log_end"], last_seq=row["last_seq"])


async def read_update_after(
    pool: asyncpg.Pool, workspace: str, job_id: uuid.UUID, position: LogPosition
) -> tuple[JobUpdate, LogPosition]:
    """Like :func:`read_update`, for a reader that knows the last chunk it read.

    Reads only the chunks after it, so a long-lived stream costs no more per poll
    than what is new.
    """
    after = -1 if position.last_seq is None else position.last_seq
    row = await pool.fetchrow(_Q["job_update_after_seq"], job_id, workspace, after)
    if row is None:
        raise job_not_found(job_id, workspace)
    new_logs: str = row["new_logs"]
    offset = position.offset + len(new_logs)
    last_seq = row["last_seq"] if row["last_seq"] is not None else position.last_seq
    update = JobUpdate(
        running=bool(row["running"]),
        completed=row["status"] is not None,
        new_logs=new_logs,
        log_offset=offset,
        mem_peak=row["mem_peak"],
        flow_status=await _flow_status(pool, workspace, job_id, row["kind"]),
    )
    return update, LogPosition(offset=offset, last_seq=last_seq)


#: Job kinds whose views carry a ``flow_status``.
FLOW_KINDS = frozenset({"flow", "flowpreview"})


async def _flow_status(
    pool: asyncpg.Pool, workspace: str, job_id: uuid.UUID, kind: str
) -> dict[str, Any] | None:
    if kind not in FLOW_KINDS:
        return None
    return await flow_status_json(pool, workspace, job_id)
