"""Reading jobs back and canceling them (Windmill's ``jobs`` and ``jobs_u`` paths)."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State

from gristmill.common.db.queries import load_queries
from gristmill.common.errors import NotFound
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext

__all__ = ["ROUTES", "cancel_job", "get_job", "get_result_maybe", "get_update", "job_view"]

_Q = load_queries("queue.sql")
_log = structlog.get_logger(__name__)
_AuthRequest = Request[TokenInfo, str, Any]


async def _state(context: GatewayContext, workspace: str, job_id: uuid.UUID) -> Any:
    row = await context.pool.fetchrow(_Q["job_state"], job_id, workspace)
    if row is None:
        raise NotFound(f"job {job_id} not found in workspace {workspace!r}", location="id")
    return row


def job_view(row: Any, logs: str | None = None) -> dict[str, Any]:
    """The job in the API's shape: ``QueuedJob`` while it runs, ``CompletedJob`` after."""
    completed = row["status"] is not None
    view: dict[str, Any] = {
        "type": "CompletedJob" if completed else "QueuedJob",
        "id": str(row["id"]),
        "workspace_id": row["workspace_id"],
        "job_kind": row["kind"],
        "script_path": row["runnable_path"],
        "script_hash": row["runnable_hash"],
        "language": row["language"],
        "args": row["args"],
        "tag": row["tag"],
        "priority": row["priority"],
        "created_by": row["created_by"],
        "permissioned_as": f"u/{row['created_by']}",
        "created_at": row["created_at"].isoformat(),
        "scheduled_for": row["scheduled_for"].isoformat(),
        "parent_job": str(row["parent_job"]) if row["parent_job"] else None,
        "root_job": str(row["root_job"]) if row["root_job"] else None,
        "flow_step_id": row["flow_step"],
        "trigger_kind": row["trigger_kind"],
        "trigger": row["trigger_source"],
        "logs": logs,
    }
    if completed:
        started = row["completed_started_at"]
        view.update(
            {
                "success": row["status"] == "success",
                "canceled": row["status"] == "canceled",
                "canceled_by": row["canceled_by"],
                "status": row["status"],
                "result": row["result"] if row["status"] == "success" else _error_result(row),
                "exit_reason": row["exit_reason"],
                "started_at": started.isoformat() if started else None,
                "completed_at": row["completed_at"].isoformat(),
                "duration_ms": row["duration_ms"],
                "attempt": row["completed_attempt"],
                "worker": row["completed_worker"],
                "mem_peak": row["memory_peak_kb"],
            }
        )
    else:
        started = row["queue_started_at"]
        view.update(
            {
                "running": bool(row["running"]),
                "canceled": bool(row["cancel_requested"]),
                "started_at": started.isoformat() if started else None,
                "attempt": row["queue_attempt"],
                "worker": row["queue_worker"],
            }
        )
    return view


def _error_result(row: Any) -> dict[str, Any]:
    error = dict(row["error"] or {"name": "Error", "message": "failed"})
    return {"error": error}


@get("/api/w/{workspace:str}/jobs_u/get/{job_id:uuid}")
async def get_job(
    workspace: str, job_id: uuid.UUID, request: _AuthRequest, state: State, no_logs: bool = False
) -> dict[str, Any]:
    check_workspace(request.user, workspace)
    context = _ctx(state)
    row = await _state(context, workspace, job_id)
    logs = None
    if not no_logs:
        logs = "".join(chunk for _, chunk in await context.queue.read_logs(job_id))
    return job_view(row, logs)


@get("/api/w/{workspace:str}/jobs_u/getupdate/{job_id:uuid}")
async def get_update(
    workspace: str,
    job_id: uuid.UUID,
    request: _AuthRequest,
    state: State,
    log_offset: int = 0,
) -> dict[str, Any]:
    """Incremental logs: chunks from ``log_offset`` (a chunk sequence number) on."""
    check_workspace(request.user, workspace)
    context = _ctx(state)
    row = await _state(context, workspace, job_id)
    chunks = await context.queue.read_logs(job_id, log_offset)
    next_offset = chunks[-1][0] + 1 if chunks else log_offset
    return {
        "running": bool(row["running"]),
        "completed": row["status"] is not None,
        "new_logs": "".join(chunk for _, chunk in chunks),
        "log_offset": next_offset,
    }


@get("/api/w/{workspace:str}/jobs_u/completed/get_result_maybe/{job_id:uuid}")
async def get_result_maybe(
    workspace: str, job_id: uuid.UUID, request: _AuthRequest, state: State
) -> dict[str, Any]:
    check_workspace(request.user, workspace)
    row = await _state(_ctx(state), workspace, job_id)
    if row["status"] is None:
        return {
            "completed": False,
            "started": bool(row["running"]),
            "success": None,
            "result": None,
        }
    success = row["status"] == "success"
    return {
        "completed": True,
        "started": True,
        "success": success,
        "result": row["result"] if success else _error_result(row),
    }


@post("/api/w/{workspace:str}/jobs_u/queue/cancel/{job_id:uuid}", media_type="text/plain")
async def cancel_job(
    workspace: str, job_id: uuid.UUID, request: _AuthRequest, state: State
) -> Response[str]:
    check_workspace(request.user, workspace)
    context = _ctx(state)
    await _state(context, workspace, job_id)
    reason: str | None = None
    body = await request.body()
    if body:
        try:
            payload = msgspec.json.decode(body)
            if isinstance(payload, dict) and isinstance(payload.get("reason"), str):
                reason = payload["reason"]
        except msgspec.DecodeError:
            reason = None
    outcome = await context.queue.cancel(job_id, by=request.user.user_id, reason=reason)
    return Response(f"{outcome} {job_id}", status_code=200)


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


ROUTES = [get_job, get_update, get_result_maybe, cancel_job]
