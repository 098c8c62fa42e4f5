"""Starting jobs: ``/jobs/run/...`` and ``/jobs/run_wait_result/...`` (Windmill's paths).

Running a saved script (by path or by hash) is checked here before anything is
published: an unknown script is a 404, arguments that do not fit the script's input
schema are a 400 naming the argument. The request then names the exact version that
was checked (its hash), with the schema's defaults filled in, so the job runs what
its arguments were validated against.

``run_wait_result`` runs and waits for the outcome: the result as JSON (200), or the
job's error ``{"error": {"name", "message", "stack", ...}}`` with 422 when it failed
(Windmill's status). If the job has not finished after ``wait_timeout_s`` (at most
:data:`WAIT_RESULT_TIMEOUT_S`), the answer is a 504 whose body names the job, which
keeps running. Every run-and-wait answer carries the job id in ``X-Gristmill-Job-Id``.
Waiting polls the job's completion, every 2 ms at first, backing off gently to 50 ms,
and looks at once when the job's end is announced (``gristmill.common.job_done``).

Webhook extras (every run endpoint of a saved script or flow): ``?raw=true`` also
passes the request body, unparsed and in any content type, as the ``raw_string``
argument (for signature checks, XML, form posts); ``?include_header=a,b`` adds those
request headers' values as arguments, named in lower case with ``-`` as ``_``
(``X-Request-Id`` → ``x_request_id``). Credentials (``Authorization``, ``Cookie``)
are never passed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, TypeVar

import asyncpg
import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from gristmill.common import job_done, scripts
from gristmill.common.contracts.runs import (
    RawCode,
    Runnable,
    RunRequest,
    ScriptHash,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest
from gristmill.common.runs import idempotent_job_id, script_job_args, validate_request
from gristmill.common.tokens import TokenInfo
from gristmill.gateway.auth import check_workspace
from gristmill.gateway.context import GatewayContext

__all__ = [
    "JOB_ID_HEADER",
    "ROUTES",
    "WAIT_RESULT_TIMEOUT_S",
    "IncludeHeader",
    "PreviewBody",
    "Raw",
    "RunOptions",
    "body_args",
    "failed_response",
    "json_response",
    "payload_args",
    "poll",
    "request_extras",
    "run_preview",
    "run_request",
    "submit",
    "wait_timeout_response",
]

_log = structlog.get_logger(__name__)
_AuthRequest = Request[TokenInfo, str, Any]
_Q = load_queries("scripts.sql")
_json = msgspec.json.Encoder()
_decode_json = msgspec.json.Decoder()

#: Longest (and default) wait of ``run_wait_result``, in seconds (Windmill's default).
WAIT_RESULT_TIMEOUT_S: Final = 600.0
#: Header naming the job a run-and-wait answer is about.
JOB_ID_HEADER: Final = "X-Gristmill-Job-Id"
_T = TypeVar("_T")
_POLL_FIRST_S: Final = 0.002
_POLL_MAX_S: Final = 0.05
#: Growth of the wait between polls of a run-and-wait. Gentle, so that a job ending
#: after 30 ms is seen within a few ms, not after a doubled 32 ms gap.
_POLL_GROWTH: Final = 1.25
#: Status of a run-and-wait answer for a job that failed (Windmill answers 422).
_FAILED_STATUS: Final = 422

_JobIdParam = Annotated[
    uuid.UUID | None,
    Parameter(description="the job id to use (a job with this id already existing is reused)"),
]
_ScheduledFor = Annotated[
    datetime | None, Parameter(description="run no earlier than this instant")
]
_ScheduledIn = Annotated[
    int | None, Parameter(description="run no earlier than this many seconds from now")
]
_ParentJob = Annotated[uuid.UUID | None, Parameter(description="the job that asked for this one")]
_Tag = Annotated[str | None, Parameter(description="worker tag overriding the script's")]
_IdempotencyKey = Annotated[
    str | None,
    Parameter(description="requests with the same key in a workspace make one job"),
]
_InvisibleToOwner = Annotated[
    bool | None, Parameter(description="accepted for compatibility; ignored")
]
Raw = Annotated[
    bool | None,
    Parameter(description="also pass the body, unparsed (any content type), as `raw_string`"),
]
IncludeHeader = Annotated[
    str | None,
    Parameter(
        description="comma-separated request headers added to the arguments "
        "(lower case, '-' as '_')"
    ),
]
#: Headers that carry credentials: never copied into a job's arguments.
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
_WaitTimeout = Annotated[
    float | None,
    Parameter(
        gt=0,
        le=WAIT_RESULT_TIMEOUT_S,
        description=f"seconds to wait for the job (default and most: {WAIT_RESULT_TIMEOUT_S:g})",
    ),
]


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


class PreviewBody(msgspec.Struct, kw_only=True):
    """Code to run as it is, with its arguments."""

    content: str
    language: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    path: str | None = None
    tag: str | None = None
    lock: str | None = None


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the query string says about a run (Windmill's ``RunJobQuery``)."""

    job_id: uuid.UUID | None = None
    scheduled_for: datetime | None = None
    scheduled_in_secs: int | None = None
    parent_job: uuid.UUID | None = None
    tag: str | None = None
    idempotency_key: str | None = None
    #: The caller waits for the outcome: the job announces its end (``job_done``).
    waited: bool = False

    def job_id_for(self, workspace: str) -> uuid.UUID:
        if self.job_id is not None:
            return self.job_id
        if self.idempotency_key:
            return idempotent_job_id(workspace, self.idempotency_key)
        return uuid.uuid4()

    def when(self) -> datetime | None:
        if self.scheduled_for is not None:
            when = self.scheduled_for
            return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        if self.scheduled_in_secs is not None:
            return datetime.now(UTC) + timedelta(seconds=self.scheduled_in_secs)
        return None


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
    delay = _POLL_FIRST_S
    while loop.time() < deadline:
        if await context.pool.fetchval("SELECT 1 FROM jobs WHERE id = $1", job_id):
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX_S)
    _log.warning("job accepted but not yet dispatched", job_id=str(job_id), waited_s=limit_s)


def run_request(
    workspace: str,
    user: TokenInfo,
    runnable: Runnable,
    args: dict[str, Any],
    options: RunOptions,
    *,
    source: str,
    tag: str | None = None,
) -> RunRequest:
    return RunRequest(
        job_id=options.job_id_for(workspace),
        workspace=workspace,
        runnable=runnable,
        requested_by=user.user_id,
        trigger=Trigger(kind=TriggerKind.API, source=source),
        args=args,
        tag=options.tag or tag,
        idempotency_key=options.idempotency_key or None,
        scheduled_for=options.when(),
        parent_job=options.parent_job,
        requested_at=datetime.now(UTC),
        meta={job_done.META_KEY: True} if options.waited else {},
    )


async def _submit_script(
    context: GatewayContext,
    workspace: str,
    user: TokenInfo,
    *,
    path: str | None = None,
    hash_: str | None = None,
    args: dict[str, Any] | None,
    options: RunOptions,
    source: str,
) -> uuid.UUID:
    """Check the script and the arguments, then publish a run of that exact version."""
    check_workspace(user, workspace)
    async with context.pool.acquire() as conn:
        if path is not None:
            script = await scripts.runnable_by_path(conn, workspace, path)
        else:
            script = await scripts.runnable_by_hash(conn, workspace, hash_ or "")
    checked = script_job_args(script, args or {})
    run = run_request(
        workspace, user, ScriptHash(hash=script.hash), checked, options, source=source
    )
    await submit(context, run)
    return run.job_id


# -- the outcome of a run-and-wait -----------------------------------------------------------


async def poll(
    probe: Callable[[], Awaitable[_T | None]],
    limit_s: float,
    *,
    context: GatewayContext | None = None,
    job_id: uuid.UUID | None = None,
) -> _T | None:
    """``probe()`` until it answers, with a growing pause (2 ms first, 50 ms at most);
    ``None`` if it did not within ``limit_s``.

    With ``context`` and ``job_id`` (a job run with ``RunOptions.waited``), a pause
    also ends as soon as the job's end is announced (``job_done``).
    """
    listener = None if context is None or job_id is None else context.done
    if listener is None or job_id is None:
        return await _poll(probe, limit_s, None)
    with listener.watch(job_id) as ended:
        return await _poll(probe, limit_s, ended)


async def _poll(
    probe: Callable[[], Awaitable[_T | None]], limit_s: float, ended: asyncio.Event | None
) -> _T | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    delay = _POLL_FIRST_S
    while True:
        if ended is not None:
            ended.clear()
        found = await probe()
        if found is not None:
            return found
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        pause = min(delay, remaining)
        if ended is None:
            await asyncio.sleep(pause)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), pause)
        delay = min(delay * _POLL_GROWTH, _POLL_MAX_S)


def json_response(
    value: Any, status: int = 200, job_id: uuid.UUID | None = None
) -> Response[bytes]:
    """``value`` as JSON; with ``job_id``, the job's id in a header too."""
    headers = {JOB_ID_HEADER: str(job_id)} if job_id is not None else None
    return Response(
        _json.encode(value), status_code=status, media_type="application/json", headers=headers
    )


def failed_response(job_id: uuid.UUID, status: str, error: Any) -> Response[bytes]:
    """A run-and-wait whose job did not succeed: 422 with its error and id."""
    body = dict(error or {"name": "Error", "message": f"the job ended as {status}"})
    body["job_id"] = str(job_id)
    return json_response({"error": body}, _FAILED_STATUS, job_id)


def wait_timeout_response(job_id: uuid.UUID, limit_s: float, message: str) -> Response[bytes]:
    """A run-and-wait that gave up: 504; the job goes on running."""
    return json_response(
        {
            "error": {
                "code": "wait_timeout",
                "message": message,
                "data": {"job_id": str(job_id), "waited_s": limit_s},
            }
        },
        504,
        job_id,
    )


async def _run_and_wait(
    context: GatewayContext,
    workspace: str,
    job_id: uuid.UUID,
    wait_timeout_s: float | None,
) -> Response[bytes]:
    limit_s = WAIT_RESULT_TIMEOUT_S if wait_timeout_s is None else wait_timeout_s

    async def outcome() -> asyncpg.Record | None:
        row: asyncpg.Record | None = await context.pool.fetchrow(
            _Q["job_outcome"], job_id, workspace
        )
        return row

    row = await poll(outcome, limit_s, context=context, job_id=job_id)
    if row is None:
        return wait_timeout_response(
            job_id,
            limit_s,
            f"job {job_id} did not finish within {limit_s:g}s; it is still running: read "
            f"its outcome at /api/w/{workspace}/jobs_u/completed/get_result_maybe/{job_id}",
        )
    if row["status"] == "success":
        return json_response(row["result"], 200, job_id)
    return failed_response(job_id, row["status"], row["error"])


async def body_args(request: Request[Any, Any, Any], *, raw: bool | None) -> dict[str, Any] | None:
    """The arguments in the body (a JSON object; ``None`` without a body). With ``raw``,
    any body is accepted and also passed as ``raw_string``."""
    body = await request.body()
    args: dict[str, Any] | None = None
    if body.strip():
        try:
            value = _decode_json.decode(body)
        except msgspec.DecodeError as exc:
            if not raw:
                raise InvalidRequest(
                    f"the body must be a JSON object of arguments ({exc}); send ?raw=true "
                    "to receive any body as the raw_string argument",
                    location="body",
                ) from None
            value = None
        if isinstance(value, dict):
            args = value
        elif value is not None and not raw:
            raise InvalidRequest(
                f"the body must be a JSON object of arguments, got {type(value).__name__}",
                location="body",
            )
    if raw:
        args = {**(args or {}), "raw_string": body.decode("utf-8", "replace")}
    return args


def request_extras(
    request: Request[Any, Any, Any],
    args: dict[str, Any] | None,
    *,
    include_header: str | None,
) -> dict[str, Any] | None:
    """``args`` with the headers named by ``include_header`` added (see the module doc)."""
    if not include_header:
        return args
    extended = dict(args or {})
    for raw_name in include_header.split(","):
        name = raw_name.strip().lower()
        if not name:
            continue
        if name in _CREDENTIAL_HEADERS:
            raise InvalidRequest(
                f"header {name!r} carries credentials and is never passed to a job",
                location="include_header",
            )
        value = request.headers.get(name)
        if value is not None:
            extended[name.replace("-", "_")] = value
    return extended


def payload_args(payload: str | None) -> dict[str, Any]:
    """Arguments from ``?payload=``: base64 (standard or URL-safe) of a JSON object."""
    if not payload:
        return {}
    text = payload.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        args = _decode_json.decode(decoded)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidRequest(
            f"payload must be base64-encoded JSON: {exc}", location="payload"
        ) from None
    if not isinstance(args, dict):
        raise InvalidRequest(
            f"payload must encode a JSON object of arguments, got {type(args).__name__}",
            location="payload",
        )
    return args


# -- preview -----------------------------------------------------------------------------------


def _preview_request(
    workspace: str, data: PreviewBody, user: TokenInfo, options: RunOptions, source: str
) -> RunRequest:
    runnable = RawCode(language=data.language, content=data.content, path=data.path, lock=data.lock)
    return run_request(workspace, user, runnable, data.args, options, source=source, tag=data.tag)


@post(
    "/api/w/{workspace:str}/jobs/run/preview",
    status_code=201,
    media_type="text/plain",
    summary="Run code sent in the body",
    tags=["job"],
)
async def run_preview(
    workspace: str,
    data: PreviewBody,
    request: _AuthRequest,
    state: State,
    job_id: _JobIdParam = None,
    scheduled_in_secs: _ScheduledIn = None,
    idempotency_key: _IdempotencyKey = None,
) -> str:
    """Answers the job id."""
    check_workspace(request.user, workspace)
    options = RunOptions(
        job_id=job_id, scheduled_in_secs=scheduled_in_secs, idempotency_key=idempotency_key
    )
    run = _preview_request(workspace, data, request.user, options, "jobs/run/preview")
    await submit(_ctx(state), run)
    return str(run.job_id)


@post(
    "/api/w/{workspace:str}/jobs/run_wait_result/preview",
    status_code=200,
    summary="Run code sent in the body and wait for its result",
    tags=["job"],
)
async def run_wait_result_preview(
    workspace: str,
    data: PreviewBody,
    request: _AuthRequest,
    state: State,
    job_id: _JobIdParam = None,
    idempotency_key: _IdempotencyKey = None,
    wait_timeout_s: _WaitTimeout = None,
) -> Response[bytes]:
    check_workspace(request.user, workspace)
    context = _ctx(state)
    options = RunOptions(job_id=job_id, idempotency_key=idempotency_key, waited=True)
    run = _preview_request(workspace, data, request.user, options, "jobs/run_wait_result/preview")
    await submit(context, run)
    return await _run_and_wait(context, workspace, run.job_id, wait_timeout_s)


# -- saved scripts: asynchronous ---------------------------------------------------------------


@post(
    "/api/w/{workspace:str}/jobs/run/p/{path:path}",
    status_code=201,
    media_type="text/plain",
    summary="Run the latest version of a script",
    tags=["job"],
)
async def run_by_path(
    workspace: str,
    path: str,
    request: _AuthRequest,
    state: State,
    raw: Raw = None,
    include_header: IncludeHeader = None,
    scheduled_for: _ScheduledFor = None,
    scheduled_in_secs: _ScheduledIn = None,
    parent_job: _ParentJob = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    invisible_to_owner: _InvisibleToOwner = None,
    idempotency_key: _IdempotencyKey = None,
) -> str:
    """The body is the arguments object. Answers the job id."""
    options = RunOptions(
        job_id=job_id,
        scheduled_for=scheduled_for,
        scheduled_in_secs=scheduled_in_secs,
        parent_job=parent_job,
        tag=tag,
        idempotency_key=idempotency_key,
    )
    clean = scripts.validate_path(path)
    job = await _submit_script(
        _ctx(state),
        workspace,
        request.user,
        path=clean,
        args=request_extras(
            request, await body_args(request, raw=raw), include_header=include_header
        ),
        options=options,
        source=f"jobs/run/p/{clean}",
    )
    return str(job)


@post(
    "/api/w/{workspace:str}/jobs/run/h/{hash:str}",
    status_code=201,
    media_type="text/plain",
    summary="Run one version of a script",
    tags=["job"],
)
async def run_by_hash(
    workspace: str,
    hash: str,
    request: _AuthRequest,
    state: State,
    raw: Raw = None,
    include_header: IncludeHeader = None,
    scheduled_for: _ScheduledFor = None,
    scheduled_in_secs: _ScheduledIn = None,
    parent_job: _ParentJob = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    invisible_to_owner: _InvisibleToOwner = None,
    idempotency_key: _IdempotencyKey = None,
) -> str:
    """The body is the arguments object. Archived versions run; deleted ones do not."""
    options = RunOptions(
        job_id=job_id,
        scheduled_for=scheduled_for,
        scheduled_in_secs=scheduled_in_secs,
        parent_job=parent_job,
        tag=tag,
        idempotency_key=idempotency_key,
    )
    job = await _submit_script(
        _ctx(state),
        workspace,
        request.user,
        hash_=hash,
        args=request_extras(
            request, await body_args(request, raw=raw), include_header=include_header
        ),
        options=options,
        source=f"jobs/run/h/{hash}",
    )
    return str(job)


# -- saved scripts: run and wait -----------------------------------------------------------------


@post(
    "/api/w/{workspace:str}/jobs/run_wait_result/p/{path:path}",
    status_code=200,
    summary="Run the latest version of a script and wait for its result",
    tags=["job"],
)
async def run_wait_result_by_path(
    workspace: str,
    path: str,
    request: _AuthRequest,
    state: State,
    raw: Raw = None,
    include_header: IncludeHeader = None,
    parent_job: _ParentJob = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    idempotency_key: _IdempotencyKey = None,
    wait_timeout_s: _WaitTimeout = None,
) -> Response[bytes]:
    """The result (200); the job's error (422) if it failed; 504 naming the job if it
    did not finish in time (it keeps running)."""
    context = _ctx(state)
    options = RunOptions(
        job_id=job_id, parent_job=parent_job, tag=tag, idempotency_key=idempotency_key, waited=True
    )
    clean = scripts.validate_path(path)
    job = await _submit_script(
        context,
        workspace,
        request.user,
        path=clean,
        args=request_extras(
            request, await body_args(request, raw=raw), include_header=include_header
        ),
        options=options,
        source=f"jobs/run_wait_result/p/{clean}",
    )
    return await _run_and_wait(context, workspace, job, wait_timeout_s)


@get(
    "/api/w/{workspace:str}/jobs/run_wait_result/p/{path:path}",
    summary="Run the latest version of a script, arguments in the query, and wait",
    tags=["job"],
)
async def run_wait_result_by_path_get(
    workspace: str,
    path: str,
    request: _AuthRequest,
    state: State,
    payload: Annotated[
        str | None,
        Parameter(description="the arguments: a JSON object, base64-encoded"),
    ] = None,
    parent_job: _ParentJob = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    idempotency_key: _IdempotencyKey = None,
    wait_timeout_s: _WaitTimeout = None,
    include_header: IncludeHeader = None,
) -> Response[bytes]:
    """Like the POST, with ``?payload=`` holding the arguments."""
    context = _ctx(state)
    options = RunOptions(
        job_id=job_id, parent_job=parent_job, tag=tag, idempotency_key=idempotency_key, waited=True
    )
    clean = scripts.validate_path(path)
    job = await _submit_script(
        context,
        workspace,
        request.user,
        path=clean,
        args=request_extras(request, payload_args(payload), include_header=include_header),
        options=options,
        source=f"jobs/run_wait_result/p/{clean}",
    )
    return await _run_and_wait(context, workspace, job, wait_timeout_s)


@post(
    "/api/w/{workspace:str}/jobs/run_wait_result/h/{hash:str}",
    status_code=200,
    summary="Run one version of a script and wait for its result",
    tags=["job"],
)
async def run_wait_result_by_hash(
    workspace: str,
    hash: str,
    request: _AuthRequest,
    state: State,
    raw: Raw = None,
    include_header: IncludeHeader = None,
    parent_job: _ParentJob = None,
    job_id: _JobIdParam = None,
    tag: _Tag = None,
    idempotency_key: _IdempotencyKey = None,
    wait_timeout_s: _WaitTimeout = None,
) -> Response[bytes]:
    context = _ctx(state)
    options = RunOptions(
        job_id=job_id, parent_job=parent_job, tag=tag, idempotency_key=idempotency_key, waited=True
    )
    job = await _submit_script(
        context,
        workspace,
        request.user,
        hash_=hash,
        args=request_extras(
            request, await body_args(request, raw=raw), include_header=include_header
        ),
        options=options,
        source=f"jobs/run_wait_result/h/{hash}",
    )
    return await _run_and_wait(context, workspace, job, wait_timeout_s)


ROUTES = [
    run_preview,
    run_wait_result_preview,
    run_by_path,
    run_by_hash,
    run_wait_result_by_path,
    run_wait_result_by_path_get,
    run_wait_result_by_hash,
]
