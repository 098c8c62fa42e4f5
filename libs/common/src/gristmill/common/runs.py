"""Turning a run request into a job: validation and resolution of what to run.

Used by the gateway (to answer bad requests at once, with the field at fault) and
by the dispatcher (which trusts nothing that arrives on the bus).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from gristmill.common import scripts
from gristmill.common.argschema import validate_args
from gristmill.common.contracts.runs import (
    FlowPath,
    FlowPreview,
    RawCode,
    RunRequest,
    ScriptHash,
    ScriptPath,
)
from gristmill.common.db.pool import Conn
from gristmill.common.errors import InvalidRequest, NotFound, PayloadTooLarge
from gristmill.common.flows.jobs import flow_job
from gristmill.common.queue import CONCURRENCY_WINDOW, NewJob, QueueLimits, validate_tag
from gristmill.common.scripts import SUPPORTED_LANGUAGES, Script

__all__ = [
    "SUPPORTED_LANGUAGES",
    "default_tag",
    "idempotent_job_id",
    "resolve",
    "script_job_args",
    "validate_request",
]

_WORKSPACE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_json = msgspec.json.Encoder()
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d9c1e-4b0a-4c55-9d8e-2a7f0c3e5b11")


def default_tag(language: str) -> str:
    return language


def idempotent_job_id(workspace: str, idempotency_key: str) -> uuid.UUID:
    """The job id for an idempotency key: a retried request names the same job."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{workspace}\x00{idempotency_key}")


def validate_request(request: RunRequest, limits: QueueLimits) -> None:
    """Checks that need no database. Raises ``InvalidRequest`` naming the field."""
    if not request.workspace or not set(request.workspace) <= _WORKSPACE_CHARS:
        raise InvalidRequest(f"invalid workspace id {request.workspace!r}", location="workspace")
    if request.tag is not None:
        validate_tag(request.tag)
    if not 0 <= request.priority <= limits.max_priority:
        raise InvalidRequest(
            f"priority must be between 0 and {limits.max_priority}, got {request.priority}",
            location="priority",
        )
    if request.timeout_s is not None and request.timeout_s <= 0:
        raise InvalidRequest("timeout_s must be positive", location="timeout_s")
    if request.retry is not None and request.retry.max_attempts < 1:
        raise InvalidRequest("retry.max_attempts must be at least 1", location="retry")
    if request.concurrency_key is not None and (request.concurrency_limit or 0) < 1:
        raise InvalidRequest(
            "concurrency_limit must be at least 1 when concurrency_key is set",
            location="concurrency_limit",
        )
    encoded = _json.encode(request.args)
    if len(encoded) > limits.max_args_bytes:
        raise PayloadTooLarge(
            f"args are {len(encoded)} bytes encoded, over the limit of {limits.max_args_bytes}",
            location="args",
        )
    if b"\\u0000" in encoded:  # jsonb cannot store NUL characters
        where = _nul_location(request.args, "args")
        if where is not None:
            raise InvalidRequest(
                "contains a NUL character (\\u0000), which cannot be stored", location=where
            )
    runnable = request.runnable
    if isinstance(runnable, RawCode) and runnable.language not in SUPPORTED_LANGUAGES:
        raise InvalidRequest(
            f"unsupported language {runnable.language!r}; "
            f"supported: {', '.join(sorted(SUPPORTED_LANGUAGES))}",
            location="runnable.language",
        )


def _nul_location(value: Any, where: str) -> str | None:
    """Where the first NUL character sits in a JSON value (a key or a string), if any."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_location(key, f"{where}.{key}") or _nul_location(item, f"{where}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_location(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def script_job_args(script: Script, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` checked against ``script``'s input schema, with its defaults applied.

    Raises ``InvalidRequest`` naming the argument (``location`` ``"args.<name>"``).
    """
    return validate_args(script.schema, args)


async def _script(conn: Conn, request: RunRequest, runnable: ScriptPath | ScriptHash) -> Script:
    try:
        if isinstance(runnable, ScriptPath):
            return await scripts.runnable_by_path(conn, request.workspace, runnable.path)
        return await scripts.runnable_by_hash(conn, request.workspace, runnable.hash)
    except NotFound as exc:
        raise NotFound(exc.message, location="runnable") from None


async def resolve(conn: Conn, request: RunRequest) -> NewJob:
    """The job a request describes. Raises ``NotFound``/``InvalidRequest``.

    A script runnable becomes a ``script`` job carrying the version's code: the
    latest non-archived version for a path, the version itself for a hash (archived
    versions run by hash; deleted ones do not). Its arguments are checked against
    the version's input schema, and its defaults filled in.
    """
    runnable = request.runnable
    common = {
        "id": request.job_id,
        "workspace": request.workspace,
        "created_by": request.requested_by,
        "trigger_kind": str(request.trigger.kind),
        "trigger_source": request.trigger.source,
        "args": request.args,
        "priority": request.priority,
        "idempotency_key": request.idempotency_key,
        "parent_job": request.parent_job,
        "root_job": request.root_job,
        "flow_step": request.flow_step,
        "timeout_s": request.timeout_s,
        "retry": request.retry,
        "concurrency_key": request.concurrency_key,
        "concurrency_limit": request.concurrency_limit,
        "meta": request.meta,
        "scheduled_for": request.scheduled_for,
    }
    if isinstance(runnable, RawCode):
        return NewJob(
            kind="preview",
            tag=request.tag or default_tag(runnable.language),
            runnable_path=runnable.path,
            language=runnable.language,
            code=runnable.content,
            lock=runnable.lock,
            **common,  # type: ignore[arg-type]  # keys match NewJob's fields
        )
    if isinstance(runnable, ScriptPath | ScriptHash):
        script = await _script(conn, request, runnable)
        args = common["args"] = script_job_args(script, request.args)
        common["timeout_s"] = request.timeout_s or script.timeout_s
        common["priority"] = request.priority or script.priority or 0
        limits = scripts.job_limits(script, args)
        script_meta = limits.pop("meta", {})
        if request.concurrency_key is not None:  # the request's own limit wins
            limits = {}
            script_meta.pop(CONCURRENCY_WINDOW, None)
        common.update(limits, meta={**request.meta, **script_meta})
        return NewJob(
            kind="script",
            tag=request.tag or script.job_tag,
            runnable_path=script.path,
            runnable_hash=script.hash,
            language=script.language,
            code=script.content,
            lock=script.lock,
            **common,  # type: ignore[arg-type]  # keys match NewJob's fields
        )
    if isinstance(runnable, FlowPath | FlowPreview):
        # A flow job: the saved or previewed OpenFlow value (gristmill.common.flows.jobs).
        return await flow_job(conn, request, common)
    raise InvalidRequest("unknown runnable", location="runnable")
