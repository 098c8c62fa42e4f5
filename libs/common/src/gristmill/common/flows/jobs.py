"""Turning a run request for a flow into its job (used by ``runs.resolve``)."""

from __future__ import annotations

from typing import Any

from gristmill.common import result_cache
from gristmill.common.argschema import validate_args
from gristmill.common.contracts.runs import FlowPath, FlowPreview, RunRequest
from gristmill.common.db.pool import Conn
from gristmill.common.errors import InvalidRequest, NotFound
from gristmill.common.flows import store
from gristmill.common.flows.engine import DEDICATED_META_KEY, FLOW_TAG
from gristmill.common.flows.model import FlowValue, parse_value
from gristmill.common.flows.validate import validate_value
from gristmill.common.queue import (
    CONCURRENCY_WINDOW,
    NewJob,
    concurrency_key,
    concurrency_window,
)

__all__ = ["flow_job"]


def _limits(
    value: FlowValue,
    raw: dict[str, Any],
    path: str | None,
    workspace: str,
    args: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The flow-level concurrency limit and result cache, as ``NewJob`` fields.

    ``concurrent_limit`` runs of a ``concurrency_key`` (``$workspace`` and
    ``$args[name]`` filled in; the flow's path by default) at once, and with
    ``concurrency_time_window_s`` at most that many starting within the window;
    ``cache_ttl``: a run with the same value and arguments within the TTL is answered
    from the cache.
    """
    fields: dict[str, Any] = {}
    meta = dict(meta)
    if value.concurrent_limit and value.concurrent_limit >= 1:
        template = value.concurrency_key
        fields["concurrency_key"] = (
            concurrency_key(template, workspace, args)
            if template
            else f"{workspace}/flow/{path or 'preview'}"
        )
        fields["concurrency_limit"] = int(value.concurrent_limit)
        window = concurrency_window(value.concurrency_time_window_s)
        if window is not None:
            meta[CONCURRENCY_WINDOW] = window
    ttl = result_cache.ttl_of(value.cache_ttl)
    if ttl is not None:
        meta.update(result_cache.cache_meta(result_cache.flow_key(workspace, raw, args), ttl))
    fields["meta"] = meta
    return fields


async def flow_job(conn: Conn, request: RunRequest, common: dict[str, Any]) -> NewJob:
    """The job of a flow run: the saved flow at a path (its arguments checked against
    its schema), or a previewed value (checked as a save would check it). A saved flow
    with ``dedicated_worker`` names its dedicated tag in the job's ``meta``
    (``engine.DEDICATED_META_KEY``): its step jobs get that tag.

    ``common`` holds the fields every job of the request shares (id, workspace, ...).
    Flows have no job timeout: they are parked while their steps run.
    """
    runnable = request.runnable
    fields = {**common, "timeout_s": None, "retry": None}
    if isinstance(runnable, FlowPath):
        try:
            saved = await store.get_flow(conn, request.workspace, runnable.path)
        except NotFound as exc:
            raise NotFound(exc.message, location="runnable.path") from None
        if saved.archived:
            raise NotFound(f"flow {runnable.path!r} is archived", location="runnable.path")
        value = parse_value(saved.value)
        fields["args"] = validate_args(saved.schema, request.args)
        fields["priority"] = request.priority or int(value.priority or 0)
        fields.update(
            _limits(value, saved.value, saved.path, request.workspace, fields["args"], request.meta)
        )
        if saved.dedicated_tag is not None:
            # Its steps go to the workers dedicated to it; the flow job itself does not.
            fields["meta"][DEDICATED_META_KEY] = saved.dedicated_tag
        return NewJob(
            kind="flow",
            tag=request.tag or FLOW_TAG,
            runnable_path=saved.path,
            flow_value=saved.value,
            **fields,
        )
    if isinstance(runnable, FlowPreview):
        value = validate_value(runnable.value, location="runnable.value")
        fields["priority"] = request.priority or int(value.priority or 0)
        fields.update(
            _limits(
                value, runnable.value, runnable.path, request.workspace, request.args, request.meta
            )
        )
        return NewJob(
            kind="flowpreview",
            tag=request.tag or FLOW_TAG,
            runnable_path=runnable.path,
            flow_value=runnable.value,
            **fields,
        )
    raise InvalidRequest("not a flow", location="runnable")
