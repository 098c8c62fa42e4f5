"""The job queue on Postgres.

Lifecycle of a job (see docs/adr/0003-queue-tables.md):

``enqueue`` writes the immutable definition (``jobs``) and a claimable row
(``job_queue``). ``claim`` takes rows with ``FOR UPDATE SKIP LOCKED`` in claim order
(priority, then ``scheduled_for``), honouring per-key concurrency limits (running
jobs, and with ``meta.concurrency_time_window_s`` the starts within that window); a
job whose result is in the cache (``meta.cache``, see ``result_cache``) ends at once
with it instead of being handed to the worker. The worker
``heartbeat``s its jobs (``job_runtime``), and ends each with ``complete``/``fail``
— guarded by worker and attempt so that a job is completed exactly once even if it
was recovered meanwhile. ``fail`` with a retry policy puts the row back with a later
``scheduled_for``. ``recover_zombies`` requeues (or fails) jobs whose worker stopped
pinging; ``enforce_timeouts`` fails jobs past their deadline; ``purge`` keeps history
bounded.

Jobs with a parent (flow steps): whenever one ends, ``on_child_finished`` (given by
the composition root) runs in the transaction that ended it, so whatever the parent
does next commits with the child's completion or not at all. The queue knows nothing
of flows; it only offers *parked* jobs (``park_claimed``, ``enqueue_parked``,
``unpark_at``, ``repark``, ``finish_parked``): running jobs that no worker holds (no
heartbeat, never zombies), ended by whoever drives them.

A job can be *pinned* to one worker: its claimable row carries the tag
``worker:<id>`` (``worker_tag``, ``retag``), which only that worker claims, while its
definition keeps its own tag; ``unpin`` gives it back when that worker is gone, and
``hand_over`` passes a claim on to the worker it belongs to.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import msgspec
import structlog

from gristmill.common import result_cache
from gristmill.common.contracts.jobs import ExitReason, JobError, JobStatus
from gristmill.common.contracts.runs import RetryPolicy
from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest, NotFound, PayloadTooLarge

__all__ = [
    "CONCURRENCY_WINDOW",
    "PARKED",
    "CancelOutcome",
    "ChildHook",
    "ClaimHook",
    "ClaimedJob",
    "Completion",
    "FailOutcome",
    "FinishedJob",
    "NewJob",
    "Queue",
    "QueueLimits",
    "concurrency_key",
    "concurrency_window",
    "validate_tag",
    "worker_tag",
]

_log = structlog.get_logger(__name__)
_Q = load_queries("queue.sql")
#: A tag: a language (``python3``), a worker group's name, or ``<workspace>:<script path>``
#: (the tag of a script run by dedicated workers, hence ``/`` and the length).
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,319}$")
_json = msgspec.json.Encoder()
#: Channel on which enqueues announce the tags that got new jobs.
WAKE_CHANNEL = "gristmill_jobs"
#: The ``worker`` of a parked job: running, held by no worker, never a zombie.
PARKED = "@parked"
#: The ``meta`` entry of a job whose concurrency limit counts starts over a time window.
CONCURRENCY_WINDOW = "concurrency_time_window_s"
_NO_LIMIT = 2**31 - 1
#: The tag of jobs pinned to one worker: ``worker:<worker id>`` (every worker claims its own).
_WORKER_TAG = "worker:"
_ARG_REF = re.compile(r"\$args\[([^\]]+)\]")


class QueueLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_args_bytes: int = 5 * 1024 * 1024
    max_priority: int = 100
    max_code_bytes: int = 2 * 1024 * 1024


class NewJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job ready to be inserted: the runnable is already resolved."""

    id: uuid.UUID
    workspace: str
    kind: str
    tag: str
    created_by: str
    trigger_kind: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    runnable_path: str | None = None
    runnable_hash: str | None = None
    language: str | None = None
    code: str | None = None
    lock: str | None = None
    flow_value: dict[str, Any] | None = None
    priority: int = 0
    trigger_source: str | None = None
    idempotency_key: str | None = None
    parent_job: uuid.UUID | None = None
    root_job: uuid.UUID | None = None
    flow_step: str | None = None
    timeout_s: float | None = None
    retry: RetryPolicy | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    scheduled_for: datetime | None = None


class ClaimedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job a worker holds. ``(id, worker, attempt)`` is the lease."""

    id: uuid.UUID
    worker: str
    attempt: int
    restarts: int
    started_at: datetime
    workspace: str
    kind: str
    tag: str
    priority: int
    created_by: str
    trigger_kind: str
    args: dict[str, Any]
    created_at: datetime
    runnable_path: str | None = None
    runnable_hash: str | None = None
    language: str | None = None
    code: str | None = None
    lock: str | None = None
    flow_value: dict[str, Any] | None = None
    trigger_source: str | None = None
    parent_job: uuid.UUID | None = None
    root_job: uuid.UUID | None = None
    flow_step: str | None = None
    timeout_s: float | None = None
    retry: RetryPolicy | None = None
    concurrency_key: str | None = None
    meta: dict[str, Any] = msgspec.field(default_factory=dict)


class FinishedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job with a parent that just ended (what the child-finished hook is told)."""

    id: uuid.UUID
    workspace: str
    parent_job: uuid.UUID
    flow_step: str | None
    status: JobStatus
    result: Any = None
    #: ``JobError`` as JSON when the job did not succeed.
    error: dict[str, Any] | None = None


class Completion(msgspec.Struct, frozen=True):
    """A job that succeeded, for ``Queue.complete_many``."""

    job: ClaimedJob
    result: Any = None
    duration_ms: int | None = None
    memory_peak_kb: int | None = None


#: Called in the transaction that ended a job with a parent: ``(queue, conn, job)``.
ChildHook = Callable[["Queue", Conn, FinishedJob], Awaitable[None]]


class FailOutcome(StrEnum):
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"


class CancelOutcome(StrEnum):
    CANCELED = "canceled"  # was queued; now completed as canceled
    REQUESTED = "requested"  # running; its worker will stop it
    ALREADY_COMPLETED = "already_completed"


#: Called in the claim's transaction with the jobs it claimed: ``(conn, jobs)``.
ClaimHook = Callable[[Conn, list[ClaimedJob]], Awaitable[None]]


def validate_tag(tag: str, *, location: str = "tag") -> str:
    if not _TAG.match(tag):
        raise InvalidRequest(
            f"invalid tag {tag!r}: use 1-320 letters, digits, '_', '.', ':', '/' or '-', "
            "starting with a letter or digit",
            location=location,
        )
    return tag


def _validate(job: NewJob, limits: QueueLimits, index: int) -> None:
    where = f"jobs[{index}]"
    validate_tag(job.tag, location=f"{where}.tag")
    if not 0 <= job.priority <= limits.max_priority:
        raise InvalidRequest(
            f"priority must be between 0 and {limits.max_priority}, got {job.priority}",
            location=f"{where}.priority",
        )
    size = len(_json.encode(job.args))
    if size > limits.max_args_bytes:
        raise PayloadTooLarge(
            f"args are {size} bytes encoded, over the limit of {limits.max_args_bytes}",
            location=f"{where}.args",
        )
    if job.code is not None and len(job.code.encode()) > limits.max_code_bytes:
        raise PayloadTooLarge(
            f"code is over the limit of {limits.max_code_bytes} bytes",
            location=f"{where}.code",
        )
    if job.concurrency_key is not None and (job.concurrency_limit or 0) < 1:
        raise InvalidRequest(
            "concurrency_limit must be at least 1 when concurrency_key is set",
            location=f"{where}.concurrency_limit",
        )
    if job.timeout_s is not None and job.timeout_s <= 0:
        raise InvalidRequest("timeout must be positive", location=f"{where}.timeout_s")


def worker_tag(worker_id: str) -> str:
    """The claim tag of jobs pinned to worker ``worker_id`` (claimed by it alone)."""
    return _WORKER_TAG + worker_id


def concurrency_window(value: Any) -> float | None:
    """A positive time window in seconds, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def concurrency_key(template: str, workspace: str, args: dict[str, Any]) -> str:
    """A custom concurrency key with ``$workspace`` and ``$args[name]`` filled in."""

    def argument(match: re.Match[str]) -> str:
        value = args.get(match.group(1))
        return value if isinstance(value, str) else _json.encode(value).decode()

    return _ARG_REF.sub(argument, template.replace("$workspace", workspace))


def _claimed(row: asyncpg.Record, worker: str) -> ClaimedJob:
    retry = row["retry"]
    return ClaimedJob(
        id=row["id"],
        worker=worker,
        attempt=row["attempt"],
        restarts=row["restarts"],
        started_at=row["started_at"],
        workspace=row["workspace_id"],
        kind=row["kind"],
        tag=row["tag"],
        priority=row["priority"],
        created_by=row["created_by"],
        trigger_kind=row["trigger_kind"],
        args=row["args"],
        created_at=row["created_at"],
        runnable_path=row["runnable_path"],
        runnable_hash=row["runnable_hash"],
        language=row["language"],
        code=row["code"],
        lock=row["lock"],
        flow_value=row["flow_value"],
        trigger_source=row["trigger_source"],
        parent_job=row["parent_job"],
        root_job=row["root_job"],
        flow_step=row["flow_step"],
        timeout_s=row["timeout_s"],
        retry=None if retry is None else msgspec.convert(retry, RetryPolicy),
        concurrency_key=row["concurrency_key"],
        meta=row["meta"],
    )


def _error_json(error: JobError) -> Any:
    return msgspec.to_builtins(error)


class Queue:
    """Queue operations over a pool the caller owns.

    ``notify`` makes enqueues ``pg_notify`` the tags they filled, so that idle
    workers waiting on LISTEN wake at once (see docs/adr/0004-worker-wakeup.md).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        notify: bool = True,
        limits: QueueLimits | None = None,
        zombie_restart_limit: int = 3,
        on_child_finished: ChildHook | None = None,
    ) -> None:
        self._pool = pool
        self._notify = notify
        self._limits = limits or QueueLimits()
        self._zombie_restart_limit = zombie_restart_limit
        self._on_child_finished = on_child_finished

    def with_child_hook(self, hook: ChildHook) -> Queue:
        """This queue (same pool and settings) calling ``hook`` when a child job ends."""
        return Queue(
            self._pool,
            notify=self._notify,
            limits=self._limits,
            zombie_restart_limit=self._zombie_restart_limit,
            on_child_finished=hook,
        )

    async def _child_finished(
        self,
        conn: Conn,
        row: asyncpg.Record | None,
        status: JobStatus,
        result: Any,
        error: JobError | dict[str, Any] | None,
    ) -> None:
        """Run the hook for a job a finishing statement just ended (if it has a parent)."""
        if row is None or row["parent_job"] is None or self._on_child_finished is None:
            return
        finished = FinishedJob(
            id=row["id"],
            workspace=row["workspace_id"],
            parent_job=row["parent_job"],
            flow_step=row["flow_step"],
            status=status,
            result=result,
            error=_error_json(error) if isinstance(error, JobError) else error,
        )
        await self._on_child_finished(self, conn, finished)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def limits(self) -> QueueLimits:
        return self._limits

    # -- enqueue -----------------------------------------------------------------

    def validate(self, jobs: Sequence[NewJob]) -> None:
        for index, job in enumerate(jobs):
            _validate(job, self._limits, index)

    async def enqueue(self, jobs: Sequence[NewJob], *, conn: Conn | None = None) -> list[uuid.UUID]:
        """Insert jobs; return the ids actually inserted (duplicates are skipped).

        With ``conn``, runs inside the caller's transaction (e.g. with dead letters).
        """
        if not jobs:
            return []
        self.validate(jobs)
        if conn is not None:
            return await self._enqueue(conn, jobs)
        async with self._pool.acquire() as acquired, acquired.transaction():
            return await self._enqueue(acquired, jobs)

    async def _enqueue(self, conn: Conn, jobs: Sequence[NewJob]) -> list[uuid.UUID]:
        columns: list[list[Any]] = [[] for _ in range(25)]
        for job in jobs:
            values = (
                job.id,
                job.workspace,
                job.kind,
                job.runnable_path,
                job.runnable_hash,
                job.language,
                job.code,
                job.lock,
                job.flow_value,
                job.args,
                job.tag,
                job.priority,
                job.created_by,
                job.trigger_kind,
                job.trigger_source,
                job.idempotency_key,
                job.parent_job,
                job.root_job,
                job.flow_step,
                job.timeout_s,
                None if job.retry is None else msgspec.to_builtins(job.retry),
                job.concurrency_key,
                job.concurrency_limit,
                job.meta,
                job.scheduled_for,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await conn.fetch(_Q["insert_jobs"], *columns)
        if self._notify and rows:
            tags = sorted({row["tag"] for row in rows})
            await conn.execute(_Q["notify_tags"], tags)
        return [row["id"] for row in rows]

    # -- claim / run ----------------------------------------------------------------

    async def claim(
        self,
        worker: str,
        tags: Sequence[str],
        limit: int = 1,
        *,
        on_claimed: ClaimHook | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` runnable jobs whose tag is in ``tags``.

        ``on_claimed`` runs in the claim's transaction with the jobs claimed (when there
        are any), so that what it writes (a job's token, say) commits with the claim.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_Q["claim"], list(tags), limit, worker)
            claimed: list[ClaimedJob] = []
            for row in rows:
                first = row["attempt"] == 1
                if first and await self._serve_from_cache(conn, row, worker):
                    continue
                key = row["concurrency_key"]
                if key is not None and not await self._take_slot(conn, row, first=first):
                    continue
                claimed.append(_claimed(row, worker))
            if claimed and on_claimed is not None:
                await on_claimed(conn, claimed)
            return claimed

    async def _take_slot(self, conn: Conn, row: asyncpg.Record, *, first: bool) -> bool:
        """Take the concurrency slot of a claimed row, or give the claim back.

        With a time window (``meta.concurrency_time_window_s``), a run also starts only
        if fewer than ``concurrency_limit`` runs of its key started within the window;
        otherwise it waits until the oldest of them leaves the window. The slot row,
        locked by its update, serializes the claims of one key.
        """
        key, limit = row["concurrency_key"], row["concurrency_limit"]
        if await conn.fetchval(_Q["acquire_slot"], key, limit) is None:
            await conn.execute(_Q["unclaim"], row["id"])
            return False
        window = concurrency_window((row["meta"] or {}).get(CONCURRENCY_WINDOW))
        if window is None or not first:
            return True
        starts = await conn.fetchrow(_Q["window_starts"], key, window)
        assert starts is not None  # an aggregate answers one row
        if starts["started"] >= limit:
            await conn.execute(_Q["release_slot"], key)
            await conn.execute(_Q["defer"], row["id"], starts["free_at"])
            return False
        await conn.execute(_Q["record_start"], key, row["id"])
        return True

    async def _serve_from_cache(self, conn: Conn, row: asyncpg.Record, worker: str) -> bool:
        """End a claimed job with its cached result, if it has one (see ``result_cache``).

        Runs in the claim's transaction, with the child-finished hook for a flow step.
        """
        cache = result_cache.cache_of(row["meta"])
        if cache is None:
            return False
        hit = await result_cache.lookup(conn, cache[0])
        if hit is None:
            return False
        if row["concurrency_key"] is not None:
            # The finishing statement gives a slot back: take one, whatever the limit.
            await conn.fetchval(_Q["acquire_slot"], row["concurrency_key"], _NO_LIMIT)
        args = (row["id"], worker, row["attempt"], str(JobStatus.SUCCESS), hit.result, None)
        done = await conn.fetchrow(_Q["finish_child"], *args, str(ExitReason.OK), 0, None)
        if done is None:
            return False
        await conn.execute(
            _Q["append_log"],
            row["id"],
            f"[gristmill] result served from the cache (computed by job {hit.job_id})\n",
        )
        await self._child_finished(conn, done, JobStatus.SUCCESS, hit.result, None)
        return True

    async def heartbeat(self, worker: str, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, bool]:
        """Ping running jobs. Returns the jobs to stop: ``{id: cancel_requested}``.

        A job is returned with ``False`` when the worker lost it (recovered elsewhere or
        ended by a timeout sweep), with ``True`` when a cancel was requested.
        """
        if not job_ids:
            return {}
        rows = await self._pool.fetch(_Q["heartbeat"], list(job_ids), worker)
        return {row["id"]: row["cancel_requested"] for row in rows}

    async def complete(
        self,
        job: ClaimedJob,
        result: Any,
        *,
        duration_ms: int | None = None,
        memory_peak_kb: int | None = None,
    ) -> bool:
        """Record success. False if the lease was lost (someone else ended the job)."""
        return await self._finish(
            job,
            JobStatus.SUCCESS,
            result,
            None,
            ExitReason.OK,
            duration_ms=duration_ms,
            memory_peak_kb=memory_peak_kb,
        )

    async def complete_many(self, done: Sequence[Completion]) -> list[bool]:
        """Record many successes with as few commits as possible; per job, whether it
        was recorded (``False``: its lease was lost).

        Jobs without a parent and without a result to cache end together in one
        statement and one commit; the others (flow steps, whose parent advances with
        them; results stored in the cache) each end as ``complete`` would end them.
        """
        alone = [
            (item.job.parent_job is None or self._on_child_finished is None)
            and result_cache.cache_of(item.job.meta) is None
            for item in done
        ]
        plain = [item for item, single in zip(done, alone, strict=True) if single]
        ended: set[uuid.UUID] = set()
        if plain:
            rows = await self._pool.fetch(
                _Q["finish_many"],
                [item.job.id for item in plain],
                [item.job.worker for item in plain],
                [item.job.attempt for item in plain],
                # JSON text: a list result must not read as an array dimension.
                [
                    None if item.result is None else _json.encode(item.result).decode()
                    for item in plain
                ],
                [item.duration_ms for item in plain],
                [item.memory_peak_kb for item in plain],
            )
            ended = {row["id"] for row in rows}
            for item in plain:
                if item.job.id not in ended:
                    _log.warning(
                        "lease lost; completion ignored",
                        job_id=str(item.job.id),
                        worker=item.job.worker,
                    )
        recorded: list[bool] = []
        for item, single in zip(done, alone, strict=True):
            if single:
                recorded.append(item.job.id in ended)
            else:
                recorded.append(
                    await self.complete(
                        item.job,
                        item.result,
                        duration_ms=item.duration_ms,
                        memory_peak_kb=item.memory_peak_kb,
                    )
                )
        return recorded

    async def complete_canceled(
        self, job: ClaimedJob, error: JobError, *, duration_ms: int | None = None
    ) -> bool:
        return await self._finish(
            job, JobStatus.CANCELED, None, error, ExitReason.CANCELED, duration_ms=duration_ms
        )

    async def fail(
        self,
        job: ClaimedJob,
        error: JobError,
        *,
        retryable: bool = True,
        duration_ms: int | None = None,
        memory_peak_kb: int | None = None,
    ) -> FailOutcome | None:
        """Record a failure, or schedule a retry if the job's policy allows one.

        Returns ``None`` if the lease was lost.
        """
        policy = job.retry
        if retryable and policy is not None and job.attempt < policy.max_attempts:
            delay = policy.delay_for(job.attempt)
            async with self._pool.acquire() as conn, conn.transaction():
                requeued = await conn.fetchval(
                    _Q["requeue"], job.id, job.worker, job.attempt, delay, 0
                )
                if requeued is not None:
                    await conn.execute(
                        _Q["append_log"],
                        job.id,
                        f"\n[gristmill] attempt {job.attempt} failed: {error.name}: "
                        f"{error.message}; retrying in {delay:g}s "
                        f"(attempt {job.attempt + 1} of {policy.max_attempts})\n",
                    )
                    return FailOutcome.RETRY_SCHEDULED
            # The lease may be lost, or a cancel was requested: fall through to finish.
        finished = await self._finish(
            job,
            JobStatus.FAILURE,
            None,
            error,
            error.exit_reason,
            duration_ms=duration_ms,
            memory_peak_kb=memory_peak_kb,
        )
        return FailOutcome.FAILED if finished else None

    async def _finish(
        self,
        job: ClaimedJob,
        status: JobStatus,
        result: Any,
        error: JobError | None,
        reason: ExitReason,
        *,
        duration_ms: int | None = None,
        memory_peak_kb: int | None = None,
    ) -> bool:
        args = (
            job.id,
            job.worker,
            job.attempt,
            str(status),
            result,
            None if error is None else _error_json(error),
            str(reason),
            duration_ms,
            memory_peak_kb,
        )
        cache = result_cache.cache_of(job.meta) if status is JobStatus.SUCCESS else None
        if cache is not None:
            # A result to cache: stored with the completion, or not at all.
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_Q["finish_child"], *args)
                if row is not None:
                    await result_cache.store(
                        conn,
                        key=cache[0],
                        workspace=job.workspace,
                        result=result,
                        job_id=job.id,
                        ttl_s=cache[1],
                    )
                await self._child_finished(conn, row, status, result, error)
        elif job.parent_job is None or self._on_child_finished is None:
            row = await self._pool.fetchrow(_Q["finish"], *args)
        else:
            # A flow step: its parent advances in the same transaction.
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_Q["finish_child"], *args)
                await self._child_finished(conn, row, status, result, error)
        if row is None:
            _log.warning("lease lost; completion ignored", job_id=str(job.id), worker=job.worker)
            return False
        return True

    async def release(self, job: ClaimedJob, *, note: str) -> bool:
        """Give a job back to the queue untouched (e.g. its worker is shutting down)."""
        async with self._pool.acquire() as conn, conn.transaction():
            released = await conn.fetchval(_Q["requeue"], job.id, job.worker, job.attempt, 0.0, 1)
            if released is not None:
                await conn.execute(_Q["append_log"], job.id, f"\n[gristmill] {note}\n")
            return released is not None

    # -- jobs pinned to a worker ---------------------------------------------------------

    async def retag(self, conn: Conn, job_ids: Sequence[uuid.UUID], tag: str) -> list[uuid.UUID]:
        """Give unclaimed jobs the claim tag ``tag`` (their definition keeps its own)."""
        rows = await conn.fetch(_Q["retag"], list(job_ids), tag)
        if self._notify and rows:
            await conn.execute(_Q["notify_tags"], [tag])
        return [row["id"] for row in rows]

    async def hand_over(self, job: ClaimedJob, tag: str, *, note: str) -> bool:
        """Give a claim back unstarted, claimable under ``tag`` (another worker's)."""
        async with self._pool.acquire() as conn, conn.transaction():
            handed = await conn.fetchval(_Q["hand_over"], job.id, job.worker, job.attempt, tag)
            if handed is not None:
                await conn.execute(_Q["append_log"], job.id, f"[gristmill] {note}\n")
                if self._notify:
                    await conn.execute(_Q["notify_tags"], [tag])
            return handed is not None

    @staticmethod
    async def pinned_workers(conn: Conn) -> list[str]:
        """The workers that unclaimed jobs are pinned to."""
        return [row["worker"] for row in await conn.fetch(_Q["pinned_workers"])]

    @staticmethod
    async def worker_alive(conn: Conn, worker_id: str, heartbeat_timeout_s: float) -> bool:
        alive: bool = await conn.fetchval(_Q["worker_alive"], worker_id, heartbeat_timeout_s)
        return alive

    async def unpin(self, conn: Conn, worker_id: str, *, note: str) -> list[uuid.UUID]:
        """Unclaimed jobs pinned to ``worker_id`` (gone) go back to their own tags."""
        rows = await conn.fetch(_Q["unpin"], worker_tag(worker_id))
        for row in rows:
            await conn.execute(_Q["append_log"], row["id"], f"\n[gristmill] {note}\n")
        if self._notify and rows:
            await conn.execute(_Q["notify_tags"], sorted({row["tag"] for row in rows}))
        return [row["id"] for row in rows]

    # -- cancel -------------------------------------------------------------------------

    async def cancel(
        self, job_id: uuid.UUID, *, by: str, reason: str | None = None
    ) -> CancelOutcome:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_Q["lock_queued"], job_id)
            if row is None:
                done = await conn.fetchval("SELECT 1 FROM jobs_completed WHERE id = $1", job_id)
                if done is not None:
                    return CancelOutcome.ALREADY_COMPLETED
                raise NotFound(f"job {job_id} not found", location="id")
            if row["running"] and row["worker"] != PARKED:
                await conn.execute(_Q["request_cancel"], job_id, by, reason)
                await self.cancel_descendants(conn, job_id, by=by, reason=reason)
                return CancelOutcome.REQUESTED
            error = JobError(
                name="Canceled",
                message=f"canceled by {by}" + (f": {reason}" if reason else ""),
                exit_reason=ExitReason.CANCELED,
            )
            # Queued, or parked (a flow waiting for its steps): ends now, and so does
            # everything it started.
            done = await conn.fetchrow(
                _Q["finish_forced"],
                job_id,
                row["attempt"],
                str(JobStatus.CANCELED),
                _error_json(error),
                str(ExitReason.CANCELED),
                by,
            )
            await self.cancel_descendants(conn, job_id, by=by, reason=reason)
            await self._child_finished(conn, done, JobStatus.CANCELED, None, error)
            return CancelOutcome.CANCELED

    async def cancel_descendants(
        self, conn: Conn, job_id: uuid.UUID, *, by: str, reason: str | None = None
    ) -> int:
        """Cancel every job still queued, running or parked below ``job_id``.

        Queued and parked ones end at once (as canceled, without running the hook:
        their parents are canceled too); running ones are asked to stop. Returns a count.
        """
        rows = await conn.fetch(_Q["lock_descendants"], job_id)
        error = JobError(
            name="Canceled",
            message=f"canceled by {by}" + (f": {reason}" if reason else ""),
            exit_reason=ExitReason.CANCELED,
        )
        for row in rows:
            if row["running"] and row["worker"] != PARKED:
                await conn.execute(_Q["request_cancel"], row["id"], by, reason)
            else:
                await conn.fetchrow(
                    _Q["finish_forced"],
                    row["id"],
                    row["attempt"],
                    str(JobStatus.CANCELED),
                    _error_json(error),
                    str(ExitReason.CANCELED),
                    by,
                )
        return len(rows)

    # -- parked jobs ----------------------------------------------------------------------

    async def park_claimed(self, conn: Conn, job: ClaimedJob) -> bool:
        """Turn a claim into a parked job; False if the lease was lost meanwhile."""
        parked = await conn.fetchval(_Q["park"], job.id, job.worker, job.attempt, PARKED)
        return parked is not None

    async def enqueue_parked(self, conn: Conn, jobs: Sequence[NewJob]) -> list[uuid.UUID]:
        """Insert jobs that start parked (no worker ever claims them)."""
        ids = await self.enqueue(jobs, conn=conn)
        if ids:
            await conn.execute(_Q["park_new"], ids, PARKED)
        return ids

    async def unpark_at(self, conn: Conn, job_id: uuid.UUID, delay_s: float) -> bool:
        """Make a parked job claimable in ``delay_s`` seconds (a timer)."""
        found = await conn.fetchval(_Q["unpark_at"], job_id, PARKED, max(delay_s, 0.0))
        return found is not None

    async def repark(self, conn: Conn, job_id: uuid.UUID) -> bool:
        """Park a job waiting for its timer (or just claimed for it); False if it ended."""
        found = await conn.fetchval(_Q["repark"], job_id, PARKED)
        return found is not None

    async def finish_parked(
        self,
        conn: Conn,
        job_id: uuid.UUID,
        status: JobStatus,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        reason: ExitReason = ExitReason.OK,
        duration_ms: int | None = None,
        canceled_by: str | None = None,
    ) -> FinishedJob | None:
        """End a parked job. Returns what ended if it has a parent (the caller tells it;
        the hook is not run), else ``None`` (also when the job was not parked)."""
        row = await conn.fetchrow(
            _Q["finish_parked"],
            job_id,
            PARKED,
            str(status),
            result,
            error,
            str(reason),
            duration_ms,
            canceled_by,
        )
        if row is None or row["parent_job"] is None:
            return None
        return FinishedJob(
            id=row["id"],
            workspace=row["workspace_id"],
            parent_job=row["parent_job"],
            flow_step=row["flow_step"],
            status=status,
            result=result,
            error=error,
        )

    # -- maintenance (dispatcher) -------------------------------------------------------

    async def recover_zombies(self, heartbeat_timeout_s: float, *, limit: int = 500) -> int:
        """Requeue or fail running jobs whose worker stopped pinging. Returns a count."""
        recovered = 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_Q["find_zombies"], heartbeat_timeout_s, limit, PARKED)
            for row in rows:
                job_id = row["id"]
                if row["cancel_requested"]:
                    error = JobError(
                        name="Canceled",
                        message=f"canceled by {row['canceled_by']} while its worker was lost",
                        exit_reason=ExitReason.CANCELED,
                    )
                    status, reason = JobStatus.CANCELED, ExitReason.CANCELED
                elif row["restarts"] < self._zombie_restart_limit:
                    await conn.fetchval(_Q["requeue_zombie"], job_id, row["attempt"])
                    await conn.execute(
                        _Q["append_log"],
                        job_id,
                        f"\n[gristmill] worker {row['worker']} stopped responding; job "
                        f"put back in the queue (restart {row['restarts'] + 1} of "
                        f"{self._zombie_restart_limit})\n",
                    )
                    _log.warning("zombie job requeued", job_id=str(job_id), worker=row["worker"])
                    recovered += 1
                    continue
                else:
                    error = JobError(
                        name="WorkerLost",
                        message=(
                            f"the worker running this job stopped responding "
                            f"{row['restarts'] + 1} times; giving up"
                        ),
                        exit_reason=ExitReason.LOST,
                    )
                    status, reason = JobStatus.FAILURE, ExitReason.LOST
                done = await conn.fetchrow(
                    _Q["finish_forced"],
                    job_id,
                    row["attempt"],
                    str(status),
                    _error_json(error),
                    str(reason),
                    None,
                )
                await self._child_finished(conn, done, status, None, error)
                recovered += 1
        return recovered

    async def enforce_timeouts(self, grace_s: float = 5.0, *, limit: int = 500) -> int:
        """Fail jobs running past ``timeout_s + grace_s`` (their worker did not stop them)."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_Q["find_timed_out"], grace_s, limit)
            for row in rows:
                error = JobError(
                    name="Timeout",
                    message=f"job exceeded its timeout of {row['timeout_s']:g}s",
                    exit_reason=ExitReason.TIMEOUT,
                )
                done = await conn.fetchrow(
                    _Q["finish_forced"],
                    row["id"],
                    row["attempt"],
                    str(JobStatus.FAILURE),
                    _error_json(error),
                    str(ExitReason.TIMEOUT),
                    None,
                )
                await self._child_finished(conn, done, JobStatus.FAILURE, None, error)
            return len(rows)

    async def purge(self, retention_s: float, *, batch: int = 1000) -> int:
        """Delete completed jobs (and their logs) older than ``retention_s``, and
        expired cached results."""
        async with self._pool.acquire() as conn:
            while await result_cache.purge_expired(conn, batch=batch) >= batch:
                pass
        total = 0
        while True:
            rows = await self._pool.fetch(_Q["purge_completed"], retention_s, batch)
            total += len(rows)
            if len(rows) < batch:
                return total

    # -- logs -------------------------------------------------------------------------------

    async def append_log(self, job_id: uuid.UUID, chunk: str, *, conn: Conn | None = None) -> None:
        await (conn or self._pool).execute(_Q["append_log"], job_id, chunk)

    async def read_logs(self, job_id: uuid.UUID, from_seq: int = 0) -> list[tuple[int, str]]:
        rows = await self._pool.fetch(_Q["read_logs"], job_id, from_seq)
        return [(row["seq"], row["chunk"]) for row in rows]

    async def record_failed(
        self,
        conn: Conn,
        *,
        job_id: uuid.UUID,
        workspace: str,
        kind: str,
        runnable_path: str | None,
        args: dict[str, Any],
        tag: str,
        created_by: str,
        trigger_kind: str,
        trigger_source: str | None,
        idempotency_key: str | None,
        parent_job: uuid.UUID | None,
        root_job: uuid.UUID | None,
        flow_step: str | None,
        error: JobError,
    ) -> None:
        """Record a job that failed before it could be queued (e.g. unknown script)."""
        await conn.execute(
            _Q["insert_failed_job"],
            job_id,
            workspace,
            kind,
            runnable_path,
            args,
            tag,
            created_by,
            trigger_kind,
            trigger_source,
            idempotency_key,
            parent_job,
            root_job,
            flow_step,
            _error_json(error),
        )

    # -- dead letters -------------------------------------------------------------------

    @staticmethod
    async def park(
        conn: Conn,
        *,
        source: str,
        partition: int,
        offset: int,
        key: bytes | None,
        payload: bytes,
        error: str,
    ) -> None:
        await conn.execute(_Q["insert_dead_letter"], source, partition, offset, key, payload, error)
