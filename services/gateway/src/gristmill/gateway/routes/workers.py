"""Workers as they report themselves: Windmill's ``/api/workers/...`` paths.

Each worker process keeps one row in ``workers``: written when it starts, refreshed
at every heartbeat (ping time, current job, jobs done, resident memory), deleted
when it stops cleanly. A worker that crashed leaves its row behind; it ages out of
lists filtered by ``ping_since``. Any authenticated user may read them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.context import GatewayContext

__all__ = [
    "DEFAULT_PING_SINCE_S",
    "MAX_PER_PAGE",
    "ROUTES",
    "WorkerPing",
    "exists_worker_with_tag",
    "list_workers",
    "queue_counts",
    "worker_from_row",
]

_Q = load_queries("workers.sql")
_AuthRequest = Request[TokenInfo, str, Any]

#: Without ``ping_since``, workers that pinged within this many seconds (Windmill's default).
DEFAULT_PING_SINCE_S = 300
MAX_PER_PAGE = 1000

_PingSince = Annotated[
    int | None,
    QueryParameter(
        description=(
            "only workers that pinged within this many seconds "
            f"(default {DEFAULT_PING_SINCE_S}; crashed workers age out of the list)"
        ),
        ge=0,
    ),
]


class WorkerPing(msgspec.Struct, kw_only=True):
    """Windmill's ``WorkerPing``, with Gristmill's own fields beside it."""

    #: The worker's id (one worker process).
    worker: str
    #: The host it runs on.
    worker_instance: str
    #: Seconds since its last heartbeat.
    last_ping: float
    started_at: datetime
    #: Not tracked; empty.
    ip: str
    jobs_executed: int
    #: The tags the worker claims jobs of.
    custom_tags: list[str]
    worker_group: str
    wm_version: str
    #: The job it runs now (``None`` when idle).
    last_job_id: str | None
    last_job_workspace_id: str | None
    #: Total memory available to the worker: not tracked.
    memory: int | None
    #: The worker process's resident memory (bytes) at its last heartbeat.
    memory_usage: int | None
    wm_memory_usage: int | None
    # Gristmill's own fields.
    #: Same as ``custom_tags``.
    tags: list[str]
    #: Same as ``last_job_id`` / ``last_job_workspace_id``.
    current_job_id: str | None
    current_job_workspace_id: str | None
    #: When the last heartbeat was written.
    last_ping_at: datetime
    #: ``memory_usage`` in KiB, as the worker reported it.
    memory_kb: int | None
    #: How the worker isolates jobs (its sandbox mode), when it says.
    sandbox: str | None


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _window(ping_since: int | None) -> float:
    return float(DEFAULT_PING_SINCE_S if ping_since is None else ping_since)


def worker_from_row(row: asyncpg.Record) -> WorkerPing:
    """A ``workers`` row (``list_workers`` in ``sql/workers.sql``) as the API shows it."""
    current = None if row["current_job"] is None else str(row["current_job"])
    memory_kb: int | None = row["memory_kb"]
    memory_bytes = None if memory_kb is None else memory_kb * 1024
    tags = list(row["tags"])
    return WorkerPing(
        worker=row["id"],
        worker_instance=row["hostname"] or "",
        last_ping=max(0.0, round(row["last_ping_s"], 3)),
        started_at=row["started_at"],
        ip="",
        jobs_executed=row["jobs_done"],
        custom_tags=tags,
        worker_group=row["worker_group"],
        wm_version=row["version"] or "",
        last_job_id=current,
        last_job_workspace_id=row["current_job_workspace_id"],
        memory=None,
        memory_usage=memory_bytes,
        wm_memory_usage=memory_bytes,
        tags=tags,
        current_job_id=current,
        current_job_workspace_id=row["current_job_workspace_id"],
        last_ping_at=row["last_ping"],
        memory_kb=memory_kb,
        sandbox=row["sandbox"],
    )


@get("/api/workers/list", summary="List workers", tags=["worker"])
async def list_workers(
    request: _AuthRequest,
    state: State,
    ping_since: _PingSince = None,
    page: Annotated[int, QueryParameter(description="page to return, from 1")] = 1,
    per_page: Annotated[
        int, QueryParameter(description=f"workers per page (at most {MAX_PER_PAGE})")
    ] = 1000,
) -> list[WorkerPing]:
    """Workers that pinged recently, most recently started first."""
    if page < 1:
        raise InvalidRequest("page starts at 1", location="page")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"per_page must be 1..{MAX_PER_PAGE}", location="per_page")
    rows = await _ctx(state).pool.fetch(
        _Q["list_workers"], _window(ping_since), per_page, (page - 1) * per_page
    )
    return [worker_from_row(row) for row in rows]


@get(
    "/api/workers/exists_worker_with_tag",
    summary="Whether a live worker claims a tag",
    tags=["worker"],
)
async def exists_worker_with_tag(
    request: _AuthRequest,
    state: State,
    tag: Annotated[str, QueryParameter(description="the job tag")],
    ping_since: _PingSince = None,
) -> bool:
    """True when a worker that pinged within ``ping_since`` seconds claims ``tag``."""
    found: bool = await _ctx(state).pool.fetchval(
        _Q["exists_worker_with_tag"], tag, _window(ping_since)
    )
    return found


@get(
    "/api/workers/queue_counts",
    summary="Jobs waiting for a worker, per tag",
    tags=["worker"],
)
async def queue_counts(request: _AuthRequest, state: State) -> dict[str, int]:
    """Due jobs no worker has claimed yet, by tag (tags with none are left out)."""
    rows = await _ctx(state).pool.fetch(_Q["queue_counts"])
    return {row["tag"]: row["waiting"] for row in rows}


ROUTES = [list_workers, exists_worker_with_tag, queue_counts]
