"""User-defined HTTP routes: ``ANY /api/r/<route>`` runs the script or flow of the
matching HTTP trigger (``gristmill.common.http_triggers``).

Routes are global to the instance (Windmill's default), so the URL names no
workspace. A request is matched by method and pattern: no route → 404 (a disabled
route does not exist), a route for other methods only → 405. The route's
authentication applies (this path is public to the token middleware): ``none``;
``windmill``, a token (``Authorization: Bearer`` or ``?token=``) of a user of the
route's workspace (401 without a valid one, 403 for another workspace); or
``signature``, ``X-Signature`` the hex HMAC-SHA256 of the raw body (401 if wrong).

The script's arguments: the fields of a JSON object body (any other JSON value, or a
non-JSON body as text, is ``body``), then the query parameters, then the path
parameters; ``raw_body`` (the body as text) and ``headers`` are given only to
scripts (and flows) whose input schema has parameters of those names. With an input
schema, only its parameters are passed.

A synchronous route answers the script's (or flow's, or its ``early_return`` step's)
result as JSON; a result object with
``windmill_status_code`` / ``windmill_headers`` / ``windmill_content_type`` keys sets
the status, headers and content type, and its ``result`` key (else the other keys)
is the body. A failed job answers 500 with ``{"error": ...}``; one still running
after :data:`~gristmill.gateway.routes.run.WAIT_RESULT_TIMEOUT_S`, 504. An
asynchronous route answers 202 with the job id as text. Every answer that started a
job names it in ``X-Gristmill-Job-Id``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from litestar import HttpMethod, Request, Response, route
from litestar.datastructures import State

from gristmill.common import http_triggers, job_done, scripts
from gristmill.common.argschema import validate_args
from gristmill.common.contracts.runs import (
    FlowPath,
    Runnable,
    RunRequest,
    ScriptHash,
    Trigger,
    TriggerKind,
)
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from gristmill.common.flows import store, view
from gristmill.common.http_triggers import HttpTrigger
from gristmill.common.runs import script_job_args
from gristmill.common.tokens import lookup_token
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.routes.run import JOB_ID_HEADER, WAIT_RESULT_TIMEOUT_S, poll, submit

__all__ = ["ROUTES", "SIGNATURE_HEADER", "serve_route"]

#: Header carrying the hex HMAC-SHA256 of the body (``signature`` routes).
SIGNATURE_HEADER: Final = "X-Signature"
_Q = load_queries("scripts.sql")
_json = msgspec.json.Encoder()
_decode_json = msgspec.json.Decoder()
_HIDDEN_HEADERS: Final = frozenset({"authorization", "cookie"})


def _ctx(state: State) -> GatewayContext:
    context: GatewayContext = state.gristmill
    return context


def _token_of(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return request.query_params.get("token") or None


async def _requester(
    context: GatewayContext, trigger: HttpTrigger, request: Request[Any, Any, Any], body: bytes
) -> str:
    """Who the job runs for, once the route's authentication passed."""
    method = trigger.authentication_method
    if method == "windmill":
        token = _token_of(request)
        if token is None:
            raise Unauthorized("this route needs a token: send 'Authorization: Bearer <token>'")
        info = await lookup_token(context.pool, token)
        if info is None:
            raise Unauthorized("invalid or expired token")
        if info.workspace is not None and info.workspace != trigger.workspace_id:
            raise Forbidden(f"this token is limited to workspace {info.workspace!r}")
        return info.user_id
    if method == "signature":
        secret = await http_triggers.signature_secret(context.pool, context.keystore, trigger) or ""
        if not secret or not http_triggers.signature_ok(
            secret, body, request.headers.get(SIGNATURE_HEADER.lower())
        ):
            raise Unauthorized(f"missing or invalid {SIGNATURE_HEADER} signature")
    return trigger.edited_by


def _args(
    request: Request[Any, Any, Any],
    trigger: HttpTrigger,
    body: bytes,
    params: dict[str, str],
    schema: dict[str, Any] | None,
) -> dict[str, Any]:
    args: dict[str, Any] = {}
    drop_token = trigger.authentication_method == "windmill"
    if body and trigger.wrap_body:
        args["body"] = _body_value(request, body)
    elif body:
        if "json" in request.headers.get("content-type", ""):
            try:
                value = _decode_json.decode(body)
            except msgspec.DecodeError as exc:
                raise InvalidRequest(
                    f"the body is not valid JSON: {exc}", location="body"
                ) from None
            if isinstance(value, dict):
                args.update(value)
            else:
                args["body"] = value
        else:
            args["body"] = body.decode("utf-8", "replace")
    for name, value in request.query_params.items():
        if not (drop_token and name == "token"):
            args[name] = value
    args.update(params)
    if trigger.raw_string:
        args["raw_string"] = body.decode("utf-8", "replace")
    properties = (schema or {}).get("properties")
    if isinstance(properties, dict):
        if "raw_body" in properties:
            args["raw_body"] = body.decode("utf-8", "replace")
        if "headers" in properties:
            args["headers"] = {
                k: v for k, v in request.headers.items() if k.lower() not in _HIDDEN_HEADERS
            }
        args = {k: v for k, v in args.items() if k in properties}
    return args


def _body_value(request: Request[Any, Any, Any], body: bytes) -> Any:
    """The body as JSON when it says it is, else as text."""
    if "json" not in request.headers.get("content-type", ""):
        return body.decode("utf-8", "replace")
    try:
        return _decode_json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", location="body") from None


async def _outcome(
    context: GatewayContext, workspace: str, job_id: uuid.UUID, *, flow: bool
) -> tuple[str, Any, Any] | None:
    """``(status, result, error)`` once the job ended (or, for a flow, returned early)."""
    if not flow:
        row = await context.pool.fetchrow(_Q["job_outcome"], job_id, workspace)
        return None if row is None else (row["status"], row["result"], row["error"])
    row = await view.flow_outcome(context.pool, workspace, job_id)
    if row is None:
        return None
    if row["status"] is not None:
        return row["status"], row["result"], row["error"]
    return ("success", row["early_result"], None) if row["has_early_result"] else None


async def _wait(
    context: GatewayContext, workspace: str, job_id: uuid.UUID, *, flow: bool
) -> tuple[str, Any, Any] | None:
    async def probe() -> tuple[str, Any, Any] | None:
        return await _outcome(context, workspace, job_id, flow=flow)

    return await poll(probe, WAIT_RESULT_TIMEOUT_S, context=context, job_id=job_id)


def _answer(result: Any, job_id: uuid.UUID) -> Response[bytes]:
    headers = {JOB_ID_HEADER: str(job_id)}
    if not (isinstance(result, dict) and "windmill_status_code" in result):
        return Response(
            _json.encode(result), status_code=200, media_type="application/json", headers=headers
        )
    status = result.get("windmill_status_code")
    if not isinstance(status, int) or not 100 <= status <= 599:
        status = 200
    extra = result.get("windmill_headers")
    if isinstance(extra, dict):
        headers.update({str(k): str(v) for k, v in extra.items()})
    if "result" in result:
        body = result["result"]
    else:
        body = {k: v for k, v in result.items() if not k.startswith("windmill_")}
    content_type = result.get("windmill_content_type")
    if isinstance(content_type, str) and isinstance(body, str):
        return Response(body.encode(), status_code=status, media_type=content_type, headers=headers)
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


@route(
    "/api/r/{route:path}",
    http_method=[
        HttpMethod.GET,
        HttpMethod.POST,
        HttpMethod.PUT,
        HttpMethod.DELETE,
        HttpMethod.PATCH,
    ],
    status_code=200,
    include_in_schema=False,
)
async def serve_route(route: str, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    context = _ctx(state)
    method = request.method.lower()
    found = await http_triggers.match(context.pool, route, method)
    if found is None:
        raise NotFound(f"no route /{route.strip('/')}", location="route")
    if found is False:
        return Response(
            _json.encode(
                {"error": {"code": "method_not_allowed", "message": f"no {method.upper()} route"}}
            ),
            status_code=405,
            media_type="application/json",
        )
    assert found is not True
    trigger, params = found
    body = await request.body()
    user = await _requester(context, trigger, request, body)
    workspace = trigger.workspace_id
    runnable: Runnable
    if trigger.is_flow:
        flow = await store.get_flow(context.pool, workspace, trigger.script_path)
        if flow.archived:
            raise NotFound(f"flow {trigger.script_path!r} is archived", location="script_path")
        args = _args(request, trigger, body, params, flow.schema)
        args = validate_args(flow.schema, args)
        runnable = FlowPath(path=trigger.script_path)
    else:
        script = await scripts.runnable_by_path(context.pool, workspace, trigger.script_path)
        args = _args(request, trigger, body, params, script.schema)
        args = script_job_args(script, args)
        runnable = ScriptHash(hash=script.hash)
    run = RunRequest(
        job_id=uuid.uuid4(),
        workspace=workspace,
        runnable=runnable,
        requested_by=user,
        trigger=Trigger(kind=TriggerKind.HTTP, source=trigger.path),
        args=args,
        requested_at=datetime.now(UTC),
        # A synchronous route waits: the job announces its end (``job_done``).
        meta={} if trigger.is_async else {job_done.META_KEY: True},
    )
    await submit(context, run)
    if trigger.is_async:
        return Response(
            str(run.job_id).encode(),
            status_code=202,
            media_type="text/plain",
            headers={JOB_ID_HEADER: str(run.job_id)},
        )
    outcome = await _wait(context, workspace, run.job_id, flow=trigger.is_flow)
    if outcome is None:
        return Response(
            _json.encode({"error": {"code": "wait_timeout", "job_id": str(run.job_id)}}),
            status_code=504,
            media_type="application/json",
            headers={JOB_ID_HEADER: str(run.job_id)},
        )
    status, result, job_error = outcome
    if status != "success":
        error = dict(job_error or {"message": f"the job ended as {status}"})
        error["job_id"] = str(run.job_id)
        return Response(
            _json.encode({"error": error}),
            status_code=500,
            media_type="application/json",
            headers={JOB_ID_HEADER: str(run.job_id)},
        )
    return _answer(result, run.job_id)


ROUTES = [serve_route]
