"""Flow jobs in the worker: they are advanced, never executed.

A worker claims a flow job (tag ``flow``) when it starts and whenever one of its timers
fires (a ``sleep``, an approval's timeout). The engine starts or wakes the flow in one
transaction and parks it again: the worker is free at once, and the flow's steps run
as jobs of their own. When a step ends, the queue's child-finished hook advances the
flow in the step's completion transaction (``flows.engine.on_child_finished``), so the
worker that ran the step moves the flow on without knowing it.
"""

from __future__ import annotations

import structlog

from gristmill.common.flows.engine import FLOW_KINDS, run_claimed_flow
from gristmill.common.queue import ClaimedJob, Queue

__all__ = ["is_flow_job", "run_flow_job"]

_log = structlog.get_logger(__name__)


def is_flow_job(job: ClaimedJob) -> bool:
    return job.kind in FLOW_KINDS


async def run_flow_job(queue: Queue, job: ClaimedJob) -> None:
    """Start or wake the flow ``job``; a lost lease means someone else did."""
    if not await run_claimed_flow(queue, job):
        _log.warning("flow claim lost before it was advanced", job_id=str(job.id))
