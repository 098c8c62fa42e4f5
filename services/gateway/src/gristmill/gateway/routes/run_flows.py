"""Running flows and talking to running flows (Windmill's paths).

* ``POST /jobs/run/f/{path}`` and ``/jobs/run/preview_flow`` start a flow (the job id,
  201); ``/jobs/run_wait_result/f/{path}`` waits for its result (or for the result of
  its ``early_return`` step): 200, 422 with the error if it failed, 504 naming the job
  if it is still running. Bodies may be JSON or YAML.
* ``/jobs/flow/user_states/{flow_id}/{key}``: a flow's user states (GET, POST).
* Approvals: ``/jobs/resume_urls/{job_id}/{resume_id}`` answers the signed URLs of a
  suspended step's job; ``/jobs_u/resume/...`` and ``/jobs_u/cancel/...`` (GET or
  POST, the body is the payload) approve or deny it; ``/jobs/flow/resume/{job_id}``
  approves as an authenticated user.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from gristmill.common.argschema import validate_args
from gristmill.common.contracts.runs import (
    FlowPath,
    FlowPreview,
)
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Forbidden, InvalidRequest, NotFound
from gristmill.common.flows import store, view
from gristmill.common.flows.engine import resume_signature, resume_step
from gristmill.common.flows.validate import validate_value
from gristmill.common.scripts import validate_path
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.flows import read_document
from gristmill.gateway.routes.run import (
    WAIT_RESULT_TIMEOUT_S,
    IncludeHeader,
    Raw,
    RunOptions,
    body_args,
    failed_response,
    json_response,
    payload_args,
    poll,
    request_extras,
    run_request,
    submit,
    wait_timeout_response,
)

__all__ = ["ROUTES", "resume_urls_for"]

_AuthRequest = Request[TokenInfo, str, Any]
_Q = load_queries("flows.sql")
_json = msgspec.json.Encoder()
_POLL_FIRST_S: Final = 0.002
_POLL_MAX_S: Final = 0.05
_FAILED_STATUS: Final = 422

_JobIdParam = Annotated[
    uuid.UUID | None, Parameter(description="the job id to use (reused if it exists)")
]
_ScheduledIn = Annotated[
    int | None, Parameter(description="run no earlier than this many seconds from now")
]
_ParentJob = Annotated[uuid.UUID | None, Parameter(description="the job that asked for this one")]
_Tag = Annotated[str | None, Parameter(description="worker tag of the flow job")]
_IdempotencyKey = Annotated[
    str | None, Parameter(description="requests with the same key in a workspace make one job")
]
_WaitTimeout = Annotated[
    float | None,
    Parameter(gt=0, le=WAIT_RESULT_TIMEOUT_S, description="seconds to wait for the result"),
]
_Approver = Annotated[str | None, Parameter(description="who approves (part of the signature)")]


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _args(body: Any, location: str = "body") -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the arguments must be an object, got {type(body).__name__}", location=location
        )
    return body


async def _request_args(
    request: _AuthRequest, *, raw: bool | None, include_header: str | None
) -> dict[str, Any]:
    """The flow's arguments: the body (JSON or YAML; any body as ``raw_string`` with
    ``raw``) and the headers asked for (see ``routes.run``)."""
    args = await body_args(request, raw=True) if raw else _args(await read_document(request))
    return request_extras(request, args, include_header=include_header) or {}


async def _checked_path(
    context: GatewayContext, workspace: str, path: str, args: dict[str, Any]
) -> dict[str, Any]:
    """The arguments checked against the saved flow's schema (404 if there is none)."""
    saved = await store.get_flow(context.pool, workspace, path)
    if saved.archived:
        raise NotFound(f"flow {path!r} is archived", location="path")
    return validate_args(saved.schema, args)


async def _wait(
    context: GatewayContext, workspace: str, job_id: uuid.UUID, wait_timeout_s: float | None
) -> Response[bytes]:
    limit_s = WAIT_RESULT_TIMEOUT_S if wait_timeout_s is None else wait_timeout_s

    async def outcome() -> Any:
        row = await view.flow_outcome(context.pool, workspace, job_id)
        if row is None:
            raise NotFound(f"job {job_id} not found", location="id")
        done = row["status"] is not None or row["has_early_result"]
        return row if done else None

    row = await poll(outcome, limit_s, context=context, job_id=job_id)
    if row is None:
        return wait_timeout_response(
            job_id,
            limit_s,
            f"flow {job_id} did not finish within {limit_s:g}s; it is still running",
        )
    if row["status"] == "success":
        return json_response(row["result"], 200, job_id)
    if row["status"] is not None:
        return failed_response(job_id, row["status"], row["error"])
    return json_response(row["early_result"], 200, job_id)


# -- running ---------------------------------------------------------------------------------


@post(
    "/api/w/{workspace:str}/jobs/run/f/{path:path}",
    status_code=201,
    media_type="text/plain",
    summary="Run a saved flow",
    tags=["flow"],
)
async def run_flow_by_path(
    workspace: str,
    path: str,
    request: _AuthRequest,
    state: State,
    scheduled_in_secs: _ScheduledIn = None,
    parent_job: _ParentJob = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    idempotency_key: _IdempotencyKey = None,
    raw: Raw = None,
    include_header: IncludeHeader = None,
) -> str:
    """The body is the flow's arguments. Answers the job id."""
    check_workspace(request.user, workspace)
    context = _ctx(state)
    clean = validate_path(path.lstrip("/"))
    given = await _request_args(request, raw=raw, include_header=include_header)
    args = await _checked_path(context, workspace, clean, given)
    run = run_request(
        workspace,
        request.user,
        FlowPath(path=clean),
        args,
        RunOptions(
            job_id=job_id,
            scheduled_in_secs=scheduled_in_secs,
            parent_job=parent_job,
            tag=tag,
            idempotency_key=idempotency_key,
        ),
        source=f"jobs/run/f/{clean}",
    )
    await submit(context, run)
    return str(run.job_id)


@post(
    "/api/w/{workspace:str}/jobs/run_wait_result/f/{path:path}",
    status_code=200,
    summary="Run a saved flow and wait for its result",
    tags=["flow"],
)
async def run_wait_flow_by_path(
    workspace: str,
    path: str,
    request: _AuthRequest,
    state: State,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    idempotency_key: _IdempotencyKey = None,
    wait_timeout_s: _WaitTimeout = None,
    raw: Raw = None,
    include_header: IncludeHeader = None,
) -> Response[bytes]:
    """The result (or the ``early_return`` step's), 422 with the error, or 504."""
    check_workspace(request.user, workspace)
    context = _ctx(state)
    clean = validate_path(path.lstrip("/"))
    given = await _request_args(request, raw=raw, include_header=include_header)
    args = await _checked_path(context, workspace, clean, given)
    run = run_request(
        workspace,
        request.user,
        FlowPath(path=clean),
        args,
        RunOptions(job_id=job_id, tag=tag, idempotency_key=idempotency_key, waited=True),
        source=f"jobs/run_wait_result/f/{clean}",
    )
    await submit(context, run)
    return await _wait(context, workspace, run.job_id, wait_timeout_s)


@get(
    "/api/w/{workspace:str}/jobs/run_wait_result/f/{path:path}",
    summary="Run a saved flow, arguments in the query, and wait for its result",
    tags=["flow"],
)
async def run_wait_flow_by_path_get(
    workspace: str,
    path: str,
    request: _AuthRequest,
    state: State,
    payload: Annotated[
        str | None, Parameter(description="the arguments: a JSON object, base64-encoded")
    ] = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    wait_timeout_s: _WaitTimeout = None,
    include_header: IncludeHeader = None,
) -> Response[bytes]:
    check_workspace(request.user, workspace)
    context = _ctx(state)
    clean = validate_path(path.lstrip("/"))
    given = request_extras(request, payload_args(payload), include_header=include_header)
    args = await _checked_path(context, workspace, clean, given or {})
    run = run_request(
        workspace,
        request.user,
        FlowPath(path=clean),
        args,
        RunOptions(job_id=job_id, tag=tag, waited=True),
        source=f"jobs/run_wait_result/f/{clean}",
    )
    await submit(context, run)
    return await _wait(context, workspace, run.job_id, wait_timeout_s)


@post(
    "/api/w/{workspace:str}/jobs/run/preview_flow",
    status_code=201,
    media_type="text/plain",
    summary="Run a flow sent in the body",
    tags=["flow"],
)
async def run_preview_flow(
    workspace: str,
    request: _AuthRequest,
    state: State,
    job_id: _JobIdParam = None,
    idempotency_key: _IdempotencyKey = None,
) -> str:
    """The body is ``{"value": <FlowValue>, "path"?: ..., "args": {...}}``. Answers the job id."""
    check_workspace(request.user, workspace)
    body = await read_document(request)
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be {"value": ..., "args": ...}', location="body")
    validate_value(body.get("value"))
    path = body.get("path")
    run = run_request(
        workspace,
        request.user,
        FlowPreview(value=body["value"], path=path if isinstance(path, str) else None),
        _args(body.get("args"), "args"),
        RunOptions(
            job_id=job_id,
            tag=body.get("tag") if isinstance(body.get("tag"), str) else None,
            idempotency_key=idempotency_key,
        ),
        source="jobs/run/preview_flow",
    )
    await submit(_ctx(state), run)
    return str(run.job_id)


# -- user states -------------------------------------------------------------------------------


@get(
    "/api/w/{workspace:str}/jobs/flow/user_states/{job_id:uuid}/{key:str}",
    summary="Get a flow's user state",
    tags=["flow"],
)
async def get_user_state(
    workspace: str, job_id: uuid.UUID, key: str, request: _AuthRequest, state: State
) -> Response[bytes]:
    """``job_id`` is the flow's (its root flow's, for a step)."""
    check_workspace(request.user, workspace)
    value = await view.get_user_state(_ctx(state).pool, workspace, job_id, key)
    return json_response(value)


@post(
    "/api/w/{workspace:str}/jobs/flow/user_states/{job_id:uuid}/{key:str}",
    status_code=200,
    media_type="text/plain",
    summary="Set a flow's user state",
    tags=["flow"],
)
async def set_user_state(
    workspace: str, job_id: uuid.UUID, key: str, request: _AuthRequest, state: State
) -> str:
    """The body is the value (any JSON)."""
    check_workspace(request.user, workspace)
    value = await read_document(request)
    await view.set_user_state(_ctx(state).pool, workspace, job_id, key, value)
    return "ok"


# -- approvals -------------------------------------------------------------------------------


def _resume_id(text: str) -> int:
    """A resume id (a nonce the caller chose): a non-negative integer."""
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest(
            f"resume id must be a non-negative integer, got {text!r}", location="resume_id"
        )
    return int(text)


async def resume_urls_for(
    context: GatewayContext,
    base_url: str,
    workspace: str,
    job_id: uuid.UUID,
    resume_id: int,
    approver: str | None,
) -> dict[str, str]:
    """The signed ``resume``, ``cancel`` and ``approvalPage`` URLs of a step's job."""
    row = await context.pool.fetchrow(_Q["step_job"], job_id, workspace)
    if row is None or row["resume_secret"] is None:
        raise NotFound(f"job {job_id} is not a step of a flow in {workspace!r}", location="id")
    signature = resume_signature(bytes(row["resume_secret"]), job_id, resume_id, approver)
    query = f"?approver={approver}" if approver else ""
    tail = f"{job_id}/{resume_id}/{signature}{query}"
    base = base_url.rstrip("/")
    return {
        "approvalPage": f"{base}/api/w/{workspace}/jobs_u/get_flow/{tail}",
        "resume": f"{base}/api/w/{workspace}/jobs_u/resume/{tail}",
        "cancel": f"{base}/api/w/{workspace}/jobs_u/cancel/{tail}",
    }


@get(
    "/api/w/{workspace:str}/jobs/resume_urls/{job_id:uuid}/{resume_id:str}",
    summary="Get the signed URLs that resume or cancel a suspended step",
    tags=["flow"],
)
async def get_resume_urls(
    workspace: str,
    job_id: uuid.UUID,
    resume_id: str,
    request: _AuthRequest,
    state: State,
    approver: _Approver = None,
    flow_level: Annotated[
        bool | None, Parameter(description="accepted for compatibility; not used")
    ] = None,
) -> dict[str, str]:
    check_workspace(request.user, workspace)
    context = _ctx(state)
    base = context.base_url or str(request.base_url)
    return await resume_urls_for(context, base, workspace, job_id, _resume_id(resume_id), approver)


async def _signed_resume(
    context: GatewayContext,
    request: Request[Any, Any, Any],
    workspace: str,
    job_id: uuid.UUID,
    resume_id_text: str,
    signature: str,
    approver: str | None,
    *,
    approved: bool,
) -> str:
    resume_id = _resume_id(resume_id_text)
    row = await context.pool.fetchrow(_Q["step_job"], job_id, workspace)
    if row is None or row["resume_secret"] is None:
        raise NotFound(f"job {job_id} is not a step of a flow in {workspace!r}", location="id")
    expected = resume_signature(bytes(row["resume_secret"]), job_id, resume_id, approver)
    if not hmac.compare_digest(expected, signature):
        raise Forbidden(
            "invalid signature for this job, resume id and approver", location="signature"
        )
    payload = await read_document(request) if request.method == "POST" else None
    if request.method == "GET" and request.query_params:
        extra = {k: v for k, v in request.query_params.items() if k not in {"approver", "token"}}
        payload = extra or None
    async with context.pool.acquire() as conn, conn.transaction():
        await resume_step(
            context.queue,
            conn,
            workspace=workspace,
            job_id=job_id,
            resume_id=resume_id,
            approved=approved,
            payload=payload,
            approver=approver,
        )
    return "approved" if approved else "denied"


_SIGNED_PATH: Final = "{job_id:uuid}/{resume_id:str}/{signature:str}"


@get(
    f"/api/w/{{workspace:str}}/jobs_u/resume/{_SIGNED_PATH}",
    media_type="text/plain",
    tags=["flow"],
    summary="Approve a suspended step (signed URL)",
)
async def resume_get(
    workspace: str,
    job_id: uuid.UUID,
    resume_id: str,
    signature: str,
    request: _AuthRequest,
    state: State,
    approver: _Approver = None,
) -> str:
    """Query parameters (other than ``approver``) become the payload."""
    return await _signed_resume(
        _ctx(state), request, workspace, job_id, resume_id, signature, approver, approved=True
    )


@post(
    f"/api/w/{{workspace:str}}/jobs_u/resume/{_SIGNED_PATH}",
    status_code=200,
    media_type="text/plain",
    tags=["flow"],
    summary="Approve a suspended step (signed URL)",
)
async def resume_post(
    workspace: str,
    job_id: uuid.UUID,
    resume_id: str,
    signature: str,
    request: _AuthRequest,
    state: State,
    approver: _Approver = None,
) -> str:
    """The body (JSON or YAML) becomes the payload: the step's result."""
    return await _signed_resume(
        _ctx(state), request, workspace, job_id, resume_id, signature, approver, approved=True
    )


@get(
    f"/api/w/{{workspace:str}}/jobs_u/cancel/{_SIGNED_PATH}",
    media_type="text/plain",
    tags=["flow"],
    summary="Deny a suspended step (signed URL)",
)
async def cancel_get(
    workspace: str,
    job_id: uuid.UUID,
    resume_id: str,
    signature: str,
    request: _AuthRequest,
    state: State,
    approver: _Approver = None,
) -> str:
    return await _signed_resume(
        _ctx(state), request, workspace, job_id, resume_id, signature, approver, approved=False
    )


@post(
    f"/api/w/{{workspace:str}}/jobs_u/cancel/{_SIGNED_PATH}",
    status_code=200,
    media_type="text/plain",
    tags=["flow"],
    summary="Deny a suspended step (signed URL)",
)
async def cancel_post(
    workspace: str,
    job_id: uuid.UUID,
    resume_id: str,
    signature: str,
    request: _AuthRequest,
    state: State,
    approver: _Approver = None,
) -> str:
    return await _signed_resume(
        _ctx(state), request, workspace, job_id, resume_id, signature, approver, approved=False
    )


@get(
    f"/api/w/{{workspace:str}}/jobs_u/get_flow/{_SIGNED_PATH}",
    tags=["flow"],
    summary="The flow a signed approval URL is about",
)
async def approval_page(
    workspace: str,
    job_id: uuid.UUID,
    resume_id: str,
    signature: str,
    request: _AuthRequest,
    state: State,
    approver: _Approver = None,
) -> Response[bytes]:
    context = _ctx(state)
    row = await context.pool.fetchrow(_Q["step_job"], job_id, workspace)
    if row is None or row["resume_secret"] is None:
        raise NotFound(f"job {job_id} is not a step of a flow in {workspace!r}", location="id")
    nonce = _resume_id(resume_id)
    expected = resume_signature(bytes(row["resume_secret"]), job_id, nonce, approver)
    if not hmac.compare_digest(expected, signature):
        raise Forbidden("invalid signature", location="signature")
    status = await view.flow_status_json(context.pool, workspace, row["parent_job"])
    return json_response(
        {"job_id": str(row["parent_job"]), "step": row["flow_step"], "flow_status": status}
    )


@post(
    "/api/w/{workspace:str}/jobs/flow/resume/{job_id:uuid}",
    status_code=200,
    media_type="text/plain",
    summary="Approve a suspended step as an authenticated user",
    tags=["flow"],
)
async def resume_as_user(
    workspace: str, job_id: uuid.UUID, request: _AuthRequest, state: State
) -> str:
    """``job_id`` is the suspended step's job; the body is the payload."""
    check_workspace(request.user, workspace)
    context = _ctx(state)
    payload = await read_document(request)
    async with context.pool.acquire() as conn, conn.transaction():
        await resume_step(
            context.queue,
            conn,
            workspace=workspace,
            job_id=job_id,
            resume_id=uuid.uuid4().int % (2**62),
            approved=True,
            payload=payload,
            approver=request.user.user_id,
            user=request.user.user_id,
        )
    return "approved"


ROUTES = [
    run_flow_by_path,
    run_wait_flow_by_path,
    run_wait_flow_by_path_get,
    run_preview_flow,
    get_user_state,
    set_user_state,
    get_resume_urls,
    resume_get,
    resume_post,
    cancel_get,
    cancel_post,
    approval_page,
    resume_as_user,
]
