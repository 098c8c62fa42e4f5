"""Starting jobs: ``/jobs/run/...`` (Windmill's paths)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import structlog
from litestar import Request, post
from litestar.datastructures import State

from gristmill.common.contracts.runs import (
    RawCode,
    RunRequest,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.runs import idempotent_job_id, validate_request
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext

__all__ = ["ROUTES", "run_preview", "submit"]

_log = structlog.get_logger(__name__)
_AuthRequest = Request[TokenInfo, str, Any]


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


class PreviewBody(msgspec.Struct, kw_only=True):
    content: str
    language: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    path: str | None = None
    tag: str | None = None
    lock: str | None = None


def _scheduled(scheduled_in_secs: int | None) -> datetime | None:
    if scheduled_in_secs is None:
        return None
    return datetime.now(UTC) + timedelta(seconds=scheduled_in_secs)


async def submit(context: GatewayContext, request: RunRequest) -> None:
    """Validate, then publish; returns once the request is durable."""
    validate_request(request, context.limits)
    await context.bus.publish(
        Topic.RUN_REQUESTS, encode_run_request(request), key=request.job_id.bytes
    )
    if context.await_job_visible_s is not None:
        await _await_visible(context, request.job_id, context.await_job_visible_s)


async def _await_visible(context: GatewayContext, job_id: uuid.UUID, limit_s: float) -> None:
    """Wait until a dispatcher inserted the job (it is durable on the bus already)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    delay = 0.002
    while loop.time() < deadline:
        if await context.pool.fetchval("SELECT 1 FROM jobs WHERE id = $1", job_id):
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    _log.warning("job accepted but not yet dispatched", job_id=str(job_id), waited_s=limit_s)


@post("/api/w/{workspace:str}/jobs/run/preview", status_code=201, media_type="text/plain")
async def run_preview(
    workspace: str,
    data: PreviewBody,
    request: _AuthRequest,
    state: State,
    job_id: uuid.UUID | None = None,
    scheduled_in_secs: int | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Run code sent in the body. Answers the job id."""
    check_workspace(request.user, workspace)
    context = _ctx(state)
    if idempotency_key and job_id is None:
        job_id = idempotent_job_id(workspace, idempotency_key)
    run = RunRequest(
        job_id=job_id or uuid.uuid4(),
        workspace=workspace,
        runnable=RawCode(
            language=data.language, content=data.content, path=data.path, lock=data.lock
        ),
        requested_by=request.user.user_id,
        trigger=Trigger(kind=TriggerKind.API, source="jobs/run/preview"),
        args=data.args,
        tag=data.tag,
        idempotency_key=idempotency_key,
        scheduled_for=_scheduled(scheduled_in_secs),
        requested_at=datetime.now(UTC),
    )
    await submit(context, run)
    return str(run.job_id)


ROUTES = [run_preview]
