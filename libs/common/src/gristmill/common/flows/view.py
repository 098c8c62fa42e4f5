"""Flows as clients read them: ``flow_status`` of a flow job, user states.

``flow_status`` follows Windmill's ``FlowStatus`` (``step``, ``modules`` with ``type``,
``id``, ``job``, ``count``, ``flow_jobs``, ``flow_jobs_success``, ``branch_chosen``,
``approvers``, ``failed_retries``, ``skipped``; ``failure_module``; ``user_states``)
and adds each module's ``result``, ``started_at``, ``duration_ms`` and ``error``, and
``cached``/``cached_from`` (the job whose result it reused) for a step served from the
result cache.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import NotFound
from gristmill.common.flows.status import FlowState, ModuleState, decode_state

__all__ = ["flow_outcome", "flow_status_json", "get_user_state", "set_user_state"]

_Q = load_queries("flows.sql")
#: Where reads run: a connection or the pool itself.
Executor: TypeAlias = "Conn | asyncpg.Pool"


def _duration(started: datetime | None, finished: datetime | None) -> int | None:
    if started is None or finished is None:
        return None
    return int((finished - started).total_seconds() * 1000)


def _module(
    ms: ModuleState, children: dict[uuid.UUID, asyncpg.Record], by_step: dict[str, list[Any]]
) -> dict[str, Any]:
    view: dict[str, Any] = {"type": str(ms.type), "id": ms.id}
    if ms.job is not None:
        view["job"] = str(ms.job)
    child = children.get(ms.job) if ms.job is not None else None
    started = ms.started_at
    finished = ms.finished_at
    if child is not None:
        started = child["started_at"] or child["queue_started_at"] or started
        finished = child["completed_at"] or finished
    if started is not None:
        view["started_at"] = started.isoformat()
    duration = child["duration_ms"] if child is not None else None
    view["duration_ms"] = duration if duration is not None else _duration(started, finished)
    if ms.result is not msgspec.UNSET:
        view["result"] = ms.result
    if ms.error is not None:
        view["error"] = ms.error
    if ms.count is not None or ms.started:
        view["count"] = ms.count
        view["progress"] = ms.finished
        iterations = by_step.get(ms.id, [])
        view["flow_jobs"] = [str(row["id"]) for row in iterations]
        view["flow_jobs_success"] = [
            None if row["status"] is None else row["status"] == "success" for row in iterations
        ]
    if ms.branch_chosen is not None:
        view["branch_chosen"] = (
            {"type": "default"}
            if ms.branch_chosen < 0
            else {"type": "branch", "branch": ms.branch_chosen}
        )
    if ms.approvers is not None:
        view["approvers"] = [
            {"resume_id": index, "approver": who} for index, who in enumerate(ms.approvers)
        ]
    if ms.suspend_until is not None:
        view["suspend_until"] = ms.suspend_until.isoformat()
    if ms.failed_retries:
        view["failed_retries"] = [str(job) for job in ms.failed_retries]
    if ms.skipped:
        view["skipped"] = True
    if ms.cached_from is not None:
        view["cached"] = True
        view["cached_from"] = str(ms.cached_from)
    return view


async def _results(conn: Executor, state: FlowState) -> dict[uuid.UUID, Any]:
    ids = [ms.job for ms in state.modules if ms.job is not None and ms.result is msgspec.UNSET]
    if state.failure_module is not None and state.failure_module.job is not None:
        ids.append(state.failure_module.job)
    if not ids:
        return {}
    rows = await conn.fetch(_Q["job_outcomes"], ids)
    return {
        row["id"]: row["result"] if row["status"] == "success" else {"error": row["error"]}
        for row in rows
    }


async def flow_status_json(
    conn: Executor, workspace: str, job_id: uuid.UUID
) -> dict[str, Any] | None:
    """The ``flow_status`` of a flow job (``None``: not a flow, or not started yet)."""
    row = await conn.fetchrow(_Q["flow_state_of"], job_id, workspace)
    if row is None:
        return None
    state = decode_state(row["state"])
    child_rows = await conn.fetch(_Q["children_of"], job_id)
    children = {r["id"]: r for r in child_rows}
    by_step: dict[str, list[Any]] = {}
    for child in child_rows:
        if child["index"] is not None and child["kind"] == "flow":
            by_step.setdefault(child["flow_step"], []).append(child)
    for rows in by_step.values():
        rows.sort(key=lambda r: r["index"])
    results = await _results(conn, state)
    modules = []
    for ms in state.modules:
        view = _module(ms, children, by_step)
        if "result" not in view and ms.job in results:
            view["result"] = results[ms.job]
        modules.append(view)
    status: dict[str, Any] = {
        "step": state.step,
        "phase": str(state.phase),
        "modules": modules,
        "failure_module": {"type": "WaitingForPriorSteps", "id": "failure"},
        "user_states": row["user_states"] or {},
        "retry": {
            "fail_count": sum(ms.retries for ms in state.modules),
            "failed_jobs": [str(j) for ms in state.modules for j in ms.failed_retries],
        },
    }
    if state.failure_module is not None:
        failure = _module(state.failure_module, children, by_step)
        if "result" not in failure and state.failure_module.job in results:
            failure["result"] = results[state.failure_module.job]
        failure["parent_module"] = (state.error or {}).get("step_id")
        status["failure_module"] = failure
    if state.preprocessor_module is not None:
        status["preprocessor_module"] = _module(state.preprocessor_module, children, by_step)
    if state.early_result is not msgspec.UNSET:
        status["early_result"] = state.early_result
    if state.stopped:
        status["stopped_early"] = True
    if state.skipped:
        status["skipped"] = True
    return status


async def flow_outcome(conn: Executor, workspace: str, job_id: uuid.UUID) -> asyncpg.Record | None:
    """Status/result/error once the flow ended, and its early result if it has one."""
    row: asyncpg.Record | None = await conn.fetchrow(_Q["flow_outcome"], job_id, workspace)
    return row


async def get_user_state(conn: Executor, workspace: str, flow_id: uuid.UUID, key: str) -> Any:
    """A flow's user state at ``key`` (``None`` when unset); ``NotFound`` if no such flow."""
    row = await conn.fetchrow(_Q["user_state_get"], flow_id, workspace, key)
    if row is None:
        raise NotFound(f"job {flow_id} is not a flow in {workspace!r}", location="id")
    return row["value"]


async def set_user_state(
    conn: Executor, workspace: str, flow_id: uuid.UUID, key: str, value: Any
) -> None:
    found = await conn.fetchval(_Q["user_state_set"], flow_id, workspace, key, value)
    if found is None:
        raise NotFound(f"job {flow_id} is not a flow in {workspace!r}", location="id")
