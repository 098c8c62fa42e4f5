"""``same_worker`` flows: every step on one worker, sharing a ``./shared`` folder.

The flow that asks for it (the outermost ``same_worker`` flow: the *owner*) marks each
step job and each child flow below it with ``meta.same_worker = <owner id>``. Its first
step is tagged as usual; the worker that claims it pins the owner to itself
(``flow_status.worker``, see :func:`claim_step`) and later steps are enqueued with the
claim tag ``worker:<id>`` (``Queue.retag``), which only that worker claims. A step of
the owner claimed elsewhere meanwhile (one launched before the pin) is handed over to
the pinned worker unstarted. The worker keeps the folder, ``<jobs dir>/flow-shared/
<owner id>``, and shows it to each step as ``./shared``.

A lost worker (no heartbeat within the zombie timeout, or stopped) must not strand its
flows: :func:`release_lost_workers` (queue upkeep) forgets its pins and gives the
steps queued for it their own tags back, saying so in their logs and the flow's. The
next step claimed pins the flow again, on a new, empty folder: what the lost worker
kept in ``./shared`` is gone, and a step that needs it fails with its own error.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Final

import structlog

from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.queue import PARKED, ClaimedJob, Queue, worker_tag

__all__ = [
    "META_KEY",
    "claim_step",
    "live_flows",
    "owner_of",
    "pinned_worker",
    "release_lost_workers",
]

_log = structlog.get_logger(__name__)
_Q = load_queries("flows.sql")
#: The ``meta`` entry naming the same_worker flow a job belongs to.
META_KEY: Final = "same_worker"


def owner_of(meta: dict[str, Any] | None) -> uuid.UUID | None:
    """The same_worker flow a job (step or child flow) belongs to, if any."""
    value = (meta or {}).get(META_KEY)
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def pinned_worker(conn: Conn, owner: uuid.UUID) -> str | None:
    """The worker the flow ``owner`` is pinned to (locked against a change until commit)."""
    worker: str | None = await conn.fetchval(_Q["pin_read"], owner)
    return worker


async def claim_step(queue: Queue, job: ClaimedJob) -> bool:
    """A worker claimed a step of a same_worker flow: may it run it?

    True: the flow is pinned to this worker (now, if it was not pinned yet: its other
    unclaimed steps then move here too), or the flow is gone. False: the flow is pinned
    to another worker, to which the step was handed over unstarted (a step launched
    before the pin, claimed meanwhile by another worker).
    """
    owner = owner_of(job.meta)
    if owner is None:
        return True
    mine = worker_tag(job.worker)
    async with queue.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_Q["pin_lock"], owner)
        if row is None:
            return True  # ended and purged: the step is canceled with it anyway
        pinned = row["worker"]
        if pinned is None:
            await conn.execute(_Q["pin_set"], owner, job.worker)
            rows = await conn.fetch(_Q["pin_queued_steps"], owner, job.root_job or owner, mine)
            await queue.retag(conn, [r["id"] for r in rows], mine)
            _log.info("same_worker flow pinned", flow_id=str(owner), worker=job.worker)
            return True
        if pinned == job.worker:
            return True
    note = f"step of a same_worker flow pinned to worker {pinned}: handed over to it"
    # Not handed over (a cancel was requested, or the claim is lost): nothing to move;
    # the step goes its way here (stopped by its cancel, or its outcome ignored).
    return not await queue.hand_over(job, worker_tag(pinned), note=note)


async def release_lost_workers(queue: Queue, heartbeat_timeout_s: float) -> int:
    """Unpin the flows of workers that stopped pinging; returns how many were lost."""
    lost = 0
    async with queue.pool.acquire() as conn, conn.transaction():
        # Pins of flows, and steps pinned meanwhile (a zombie requeued for its lost
        # worker after its flow's pin was released, a late hand-over...).
        flows_pins = [row["worker"] for row in await conn.fetch(_Q["pinned_workers"], PARKED)]
        pinned = dict.fromkeys([*flows_pins, *await queue.pinned_workers(conn)])
        for worker in pinned:
            if await queue.worker_alive(conn, worker, heartbeat_timeout_s):
                continue
            lost += 1
            note = (
                f"worker {worker} of this same_worker flow is lost: what its steps kept "
                "in ./shared is gone; the flow goes on on another worker"
            )
            flows = await conn.fetch(_Q["pins_lost"], worker)
            steps = await queue.unpin(conn, worker, note=note)
            for flow in flows:
                await queue.append_log(flow["id"], f"[gristmill] {note}\n", conn=conn)
            _log.warning(
                "same_worker flows unpinned from a lost worker",
                worker=worker,
                flows=len(flows),
                steps=len(steps),
            )
    return lost


async def live_flows(conn: Conn, flow_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``flow_ids`` have not ended."""
    rows = await conn.fetch(_Q["live_flows"], list(flow_ids))
    return {row["id"] for row in rows}
