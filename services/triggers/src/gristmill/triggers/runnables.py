"""What WebSocket and email sources share: the arguments a runnable takes, publishing a
run request, and waiting for a run's result (a URL, an initial message, a reply).

Runs are published on the bus like every other ingress; the dispatcher resolves and
checks them (a missing script becomes a failed job saying so). Waiting reads
``jobs_completed``, as the gateway's synchronous runs do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from gristmill.common import scripts
from gristmill.common.contracts.runs import (
    FlowPath,
    RunRequest,
    ScriptPath,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import GristmillError, NotFound
from gristmill.common.flows.store import get_flow
from gristmill.triggers.service import TriggerContext

__all__ = [
    "RunFailed",
    "SchemaCache",
    "as_text",
    "fit_args",
    "publish",
    "request",
    "run_and_wait",
    "wait_outcome",
]

_Q = load_queries("scripts.sql")
_POLL_FIRST_S: Final = 0.01
_POLL_MAX_S: Final = 0.2


class RunFailed(GristmillError):
    """A run whose result was needed failed or did not end in time."""

    code = "run_failed"


def fit_args(
    schema: dict[str, Any] | None, candidates: dict[str, Any], fallback: tuple[str, ...]
) -> dict[str, Any]:
    """The candidate arguments the runnable takes.

    With a schema listing ``properties`` (and no ``additionalProperties``), those of
    the candidates it names; with ``additionalProperties``, all of them; without a
    usable schema, the ``fallback`` names only.
    """
    properties = (schema or {}).get("properties")
    if not isinstance(properties, dict):
        return {name: candidates[name] for name in fallback if name in candidates}
    if (schema or {}).get("additionalProperties") not in (None, False):
        return dict(candidates)
    return {name: value for name, value in candidates.items() if name in properties}


class SchemaCache:
    """Input schemas of runnables, read at most every ``ttl_s`` per runnable."""

    def __init__(self, context: TriggerContext, ttl_s: float = 5.0) -> None:
        self._context = context
        self._ttl_s = ttl_s
        self._items: dict[tuple[str, bool, str], tuple[float, dict[str, Any] | None]] = {}

    async def get(self, workspace: str, is_flow: bool, path: str) -> dict[str, Any] | None:
        key = (workspace, is_flow, path)
        now = time.monotonic()
        cached = self._items.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        schema: dict[str, Any] | None
        try:
            if is_flow:
                schema = (await get_flow(self._context.pool, workspace, path)).schema
            else:
                schema = (
                    await scripts.runnable_by_path(self._context.pool, workspace, path)
                ).schema
        except NotFound:
            schema = None  # the run fails in the dispatcher, saying so
        self._items[key] = (now + self._ttl_s, schema)
        return schema


def request(
    *,
    workspace: str,
    is_flow: bool,
    path: str,
    args: dict[str, Any],
    requested_by: str,
    kind: TriggerKind,
    source: str,
    idempotency_key: str | None = None,
    job_id: uuid.UUID | None = None,
    meta: dict[str, Any] | None = None,
) -> RunRequest:
    return RunRequest(
        job_id=job_id or uuid.uuid4(),
        workspace=workspace,
        runnable=FlowPath(path=path) if is_flow else ScriptPath(path=path),
        requested_by=requested_by,
        trigger=Trigger(kind=kind, source=source),
        args=args,
        idempotency_key=idempotency_key,
        requested_at=datetime.now(UTC),
        meta=meta or {},
    )


async def publish(context: TriggerContext, requests: list[RunRequest]) -> None:
    """Returns once every request is durable (bus ack, or the dispatcher's commit)."""
    if requests:
        await context.bus.publish_many(
            Topic.RUN_REQUESTS,
            [(item.job_id.bytes, encode_run_request(item)) for item in requests],
        )


async def wait_outcome(
    context: TriggerContext, workspace: str, job_id: uuid.UUID, timeout_s: float
) -> tuple[bool, Any]:
    """``(succeeded, result or error)`` once the job ended; ``RunFailed`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = _POLL_FIRST_S
    while True:
        row = await context.pool.fetchrow(_Q["job_outcome"], job_id, workspace)
        if row is not None:
            if row["status"] == "success":
                return True, row["result"]
            return False, row["error"] or {"message": f"the job ended as {row['status']}"}
        if loop.time() >= deadline:
            raise RunFailed(f"job {job_id} did not end within {timeout_s:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _POLL_MAX_S)


async def run_and_wait(
    context: TriggerContext,
    *,
    workspace: str,
    is_flow: bool,
    path: str,
    args: dict[str, Any],
    requested_by: str,
    kind: TriggerKind,
    source: str,
    timeout_s: float = 60.0,
) -> Any:
    """Run a script or flow and return its result; ``RunFailed`` says why there is none."""
    made = request(
        workspace=workspace,
        is_flow=is_flow,
        path=path,
        args=args,
        requested_by=requested_by,
        kind=kind,
        source=source,
    )
    await publish(context, [made])
    ok, value = await wait_outcome(context, workspace, made.job_id, timeout_s)
    if not ok:
        message = value.get("message") if isinstance(value, dict) else value
        raise RunFailed(
            f"{'flow' if is_flow else 'script'} {path} failed (job {made.job_id}): {message}"
        )
    return value


def as_text(value: Any) -> str:
    """A result as a WebSocket text frame: a string as is, anything else as JSON."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()
