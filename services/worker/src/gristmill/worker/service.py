"""Worker loops: claim a job, run it, stream its logs, record its outcome.

A worker process runs ``concurrency`` loops over one pool, one wake-up listener and
one heartbeat task. Each loop holds at most one job at a time. Stopping (SIGTERM)
lets running jobs finish within ``drain_timeout_s``, then kills them; they are
requeued by zombie recovery only if their outcome could not be recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import structlog

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.common.contracts.sandbox import META_KEY as SANDBOX_META_KEY
from gristmill.common.contracts.sandbox import decode_sandbox_request
from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import InvalidRequest, NotFound
from gristmill.common.flows import same_worker
from gristmill.common.queue import ClaimedJob, Completion, Queue, worker_tag
from gristmill.common.scripts import runnable_by_path
from gristmill.common.wakeup import Wakeup
from gristmill.worker.completions import CompletionBatcher
from gristmill.worker.dedicated import DedicatedSettings, WarmPool
from gristmill.worker.dependencies import Prepared, PythonDependencies, write_modules
from gristmill.worker.execution import (
    ExecutionOutcome,
    ExecutionRequest,
    ExecutorSettings,
    execute,
)
from gristmill.worker.execution.launch import close_launchers
from gristmill.worker.flow_steps import is_flow_job, run_flow_job
from gristmill.worker.job_context import JobContext
from gristmill.worker.sdk import SDK_DIR

__all__ = ["Worker", "WorkerSettings"]

_log = structlog.get_logger(__name__)
_WORKERS_Q = load_queries("workers.sql")
#: What a database outage looks like from asyncpg: refused or dropped connections,
#: server shutdown, and a connection left mid-operation by a drop.
_DB_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    tags: tuple[str, ...] = ("python3", "bash")
    group: str = "default"
    concurrency: int = 1
    heartbeat_interval_s: float = 2.0
    default_timeout_s: float = 900.0
    drain_timeout_s: float = 30.0
    jobs_dir: Path = Path("/tmp/gristmill-jobs")  # noqa: S108  # overridden by data_dir
    base_url: str | None = None
    executor: ExecutorSettings = msgspec.field(default_factory=ExecutorSettings)
    #: Scripts and flows this worker is dedicated to (their jobs' tags belong in ``tags``).
    dedicated: DedicatedSettings | None = None


class _Running:
    __slots__ = ("cancel", "job", "lost", "stop_reason")

    def __init__(self, job: ClaimedJob) -> None:
        self.job = job
        self.cancel = asyncio.Event()
        self.lost = False
        self.stop_reason: str | None = None


def new_worker_id(group: str) -> str:
    return f"wk-{group}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        queue: Queue,
        wakeup: Wakeup,
        settings: WorkerSettings,
        *,
        worker_id: str | None = None,
        job_env: JobContext | Callable[[ClaimedJob], Awaitable[dict[str, str]]] | None = None,
        dependencies: PythonDependencies | None = None,
    ) -> None:
        self._pool = pool
        self._queue = queue
        self._wakeup = wakeup
        self._settings = settings
        self.id = worker_id or new_worker_id(settings.group)
        #: What it claims: its tags, and the jobs pinned to it (same_worker flows).
        self._tags = (*settings.tags, worker_tag(self.id))
        #: The folders of same_worker flows whose steps run here (see _sweep_shared).
        self._shared_root = settings.jobs_dir / "flow-shared"
        self._running: dict[uuid.UUID, _Running] = {}
        self._completions = CompletionBatcher(queue)
        self._job_env = job_env
        # Beside the jobs' directories: <data dir>/cache/python in a deployment.
        self._dependencies = dependencies or PythonDependencies(
            python=settings.executor.python_bin,
            cache_dir=settings.jobs_dir.parent / "cache" / "python",
            scripts=self._script_code,
            sandbox=settings.executor.sandbox,
        )
        self.jobs_done = 0
        #: The warm interpreters of a dedicated worker (``gristmill.worker.dedicated``).
        self.dedicated: WarmPool | None = None
        if settings.dedicated is not None and settings.dedicated.tags:
            base = settings.jobs_dir / "dedicated"
            self.dedicated = WarmPool(settings.dedicated, settings.executor, base)

    # -- lifecycle -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Serve jobs until ``stop`` (or, in burst mode, until no job is claimable)."""
        await self._register()
        if self.dedicated is not None:  # checks what it serves, pre-warms flows' steps
            await self.dedicated.start(self._pool, self._dependencies)
        self._wakeup.listen_for(worker_tag(self.id))
        await self._sweep_shared()
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())
        try:
            loops = [
                self._loop(stop, burst=burst, index=i) for i in range(self._settings.concurrency)
            ]
            await asyncio.gather(*loops)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if self.dedicated is not None:
                await self.dedicated.close()
            close_launchers()  # the waiting pre-started ones; a later job starts new ones
            with contextlib.suppress(*_DB_ERRORS):
                await self._pool.execute("DELETE FROM workers WHERE id = $1", self.id)

    async def _loop(self, stop: asyncio.Event, *, burst: bool, index: int) -> None:
        backoff = 0.05
        while not stop.is_set():
            try:
                jobs = await self._queue.claim(
                    self.id, self._tags, 1, on_claimed=self._prepare_claimed
                )
                backoff = 0.05
            except _DB_ERRORS as exc:
                _log.warning("claim failed; retrying", error=str(exc), backoff_s=backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not jobs:
                if burst:
                    return
                await self._wakeup.wait(stop)
                continue
            job_task = asyncio.ensure_future(self._run_job(jobs[0]))
            stop_task = asyncio.ensure_future(stop.wait())
            await asyncio.wait([job_task, stop_task], return_when="FIRST_COMPLETED")
            stop_task.cancel()
            if not job_task.done():
                # Draining: give the job time to finish, then kill it.
                done, _ = await asyncio.wait([job_task], timeout=self._settings.drain_timeout_s)
                if not done:
                    running = self._running.get(jobs[0].id)
                    if running is not None:
                        running.stop_reason = "worker shutting down"
                        running.cancel.set()
                    await job_task
            else:
                job_task.result()

    async def _prepare_claimed(self, conn: Conn, jobs: list[ClaimedJob]) -> None:
        """In the claim's transaction: the tokens of the claimed jobs that run code."""
        if isinstance(self._job_env, JobContext):
            await self._job_env.prepare(conn, [job for job in jobs if not is_flow_job(job)])

    async def _register(self) -> None:
        await self._pool.execute(
            _WORKERS_Q["register"],
            self.id,
            self._settings.group,
            list(self._settings.tags),
            socket.gethostname(),
            "0.1.0",
            self._settings.executor.sandbox_mode,
            _rss_kb(),
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            try:
                await self.heartbeat_once()
                await self._sweep_shared()
            except _DB_ERRORS as exc:
                _log.warning("heartbeat failed", error=str(exc))

    async def heartbeat_once(self) -> None:
        running = dict(self._running)
        to_stop = await self._queue.heartbeat(self.id, list(running))
        for job_id, cancel_requested in to_stop.items():
            state = running.get(job_id)
            if state is None:
                continue
            if cancel_requested:
                state.stop_reason = "canceled"
            else:
                state.lost = True
                state.stop_reason = "job no longer held by this worker"
            state.cancel.set()
        current = next(iter(running), None)
        await self._pool.execute(
            _WORKERS_Q["heartbeat"],
            self.id,
            self._settings.group,
            list(self._settings.tags),
            socket.gethostname(),
            current,
            self.jobs_done,
            _rss_kb(),
        )

    # -- one job -----------------------------------------------------------------------

    async def _run_job(self, job: ClaimedJob) -> None:
        if is_flow_job(job):
            # Flows are advanced, not executed (flow_steps.py): one short transaction.
            await self._run_flow(job)
            return
        state = _Running(job)
        self._running[job.id] = state
        log = _log.bind(
            job_id=str(job.id), script_path=job.runnable_path, attempt=job.attempt, tag=job.tag
        )
        workdir = self._settings.jobs_dir / str(job.id)
        started = time.monotonic()
        owner = same_worker.owner_of(job.meta)
        try:
            if owner is not None and not await _retrying(
                lambda: same_worker.claim_step(self._queue, job)
            ):
                log.info("step handed over to the worker its same_worker flow is pinned to")
                return
            shared = None if owner is None else self._shared_root / str(owner)
            if shared is not None:
                shared.mkdir(parents=True, exist_ok=True)
            workdir.mkdir(parents=True, exist_ok=True)
            env = await self._environment(job)
            sink = _LogSink(self._queue, job.id)
            if job.kind == "dependencies":
                prepared = Prepared()
                outcome = await self._dependencies.run_dependency_job(
                    job, self._pool, on_log=sink.write, cancel=state.cancel
                )
            else:
                prepared = await self._dependencies.prepare(
                    job, on_log=sink.write, cancel=state.cancel
                )
                outcome = await self._execute(job, env, workdir, prepared, sink, state, shared)
            await sink.flush()
            if state.lost:
                log.warning("job outcome dropped: the job was recovered or ended elsewhere")
                return
            if outcome.exit_reason == ExitReason.CANCELED:
                error = outcome.error or JobError(
                    name="Canceled",
                    message=state.stop_reason or "canceled",
                    exit_reason=ExitReason.CANCELED,
                )
                if state.stop_reason == "worker shutting down":
                    # Not the user's cancel: leave the job to be run again elsewhere.
                    await _retrying(
                        lambda: self._queue.release(
                            job, note=f"worker {self.id} shut down; job put back in the queue"
                        )
                    )
                else:
                    await _retrying(
                        lambda: self._queue.complete_canceled(
                            job, error, duration_ms=outcome.duration_ms
                        )
                    )
            elif outcome.success:
                done = Completion(
                    job,
                    outcome.result,
                    duration_ms=outcome.duration_ms,
                    memory_peak_kb=_kb(outcome.memory_peak_bytes),
                )
                await _retrying(lambda: self._completions.record(done))
            else:
                error = outcome.error or JobError(name="Error", message="job failed")
                retryable = prepared.error is None or prepared.retryable
                await _retrying(
                    lambda: self._queue.fail(
                        job,
                        error,
                        retryable=retryable,
                        duration_ms=outcome.duration_ms,
                        memory_peak_kb=_kb(outcome.memory_peak_bytes),
                    )
                )
            self.jobs_done += 1
            log.info(
                "job finished",
                success=outcome.success,
                exit_reason=str(outcome.exit_reason),
                duration_ms=outcome.duration_ms,
                prepare_ms=prepared.elapsed_ms,
                wall_ms=int((time.monotonic() - started) * 1000),
            )
        except Exception as exc:  # a bug here must not kill the loop: record it on the job
            log.exception("job crashed in the worker")
            error = JobError(name="WorkerError", message=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(*_DB_ERRORS):
                await self._queue.fail(job, error, retryable=False)
        finally:
            self._running.pop(job.id, None)
            if isinstance(self._job_env, JobContext):
                self._job_env.discard(job.id)
            shutil.rmtree(workdir, ignore_errors=True)
            if owner is not None:
                with contextlib.suppress(*_DB_ERRORS):
                    await self._sweep_shared()
            self._wakeup.poke()

    async def _sweep_shared(self) -> None:
        """Remove the folders of same_worker flows that ended (also those left by a
        previous run of this worker)."""
        try:
            paths = list(self._shared_root.iterdir())
        except OSError:
            return  # none yet
        entries: dict[uuid.UUID, Path] = {}
        for path in paths:
            with contextlib.suppress(ValueError):  # a stray name: left alone
                entries[uuid.UUID(path.name)] = path
        if not entries:
            return
        async with self._pool.acquire() as conn:
            live = await same_worker.live_flows(conn, entries)
        for flow_id, path in entries.items():
            if flow_id not in live:
                await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)

    async def _execute(
        self,
        job: ClaimedJob,
        env: dict[str, str],
        workdir: Path,
        prepared: Prepared,
        sink: _LogSink,
        state: _Running,
        shared: Path | None = None,
    ) -> ExecutionOutcome:
        if prepared.error is not None:
            return prepared.failed_outcome()
        python_path = list(prepared.python_path)
        modules_dir = workdir / "_workspace"
        if prepared.modules:
            python_path.append(str(modules_dir))
        try:
            sandbox = decode_sandbox_request(job.meta.get(SANDBOX_META_KEY))
        except InvalidRequest as exc:
            error = JobError(name="InvalidSandboxSetting", message=str(exc))
            return Prepared(error=error).failed_outcome()
        request = ExecutionRequest(
            job_id=job.id,
            language=job.language or "",
            code=job.code or "",
            args=job.args,
            env=env,
            timeout_s=job.timeout_s or self._settings.default_timeout_s,
            workdir=workdir,
            # The in-job client library comes after the job's own packages.
            python_path=(*python_path, str(SDK_DIR)),
            sandbox=sandbox,
            shared_dir=shared,
        )
        if self.dedicated is not None and self.dedicated.handles(job) and shared is None:
            # A warm interpreter lays out the packages and modules once, itself.
            return await self.dedicated.execute(
                job, request, prepared, on_log=sink.write, cancel=state.cancel
            )
        if prepared.modules:
            write_modules(modules_dir, prepared.modules)
        return await execute(
            request, on_log=sink.write, cancel=state.cancel, settings=self._settings.executor
        )

    async def _script_code(self, workspace: str, path: str) -> str | None:
        """The code a job gets when it imports the workspace script at ``path``."""
        try:
            script = await runnable_by_path(self._pool, workspace, path)
        except NotFound:
            return None
        return script.content

    async def _run_flow(self, job: ClaimedJob) -> None:
        try:
            await _retrying(lambda: run_flow_job(self._queue, job))
            self.jobs_done += 1
        except Exception:  # a bug here must not kill the loop; the flow is recovered later
            _log.exception("flow job crashed in the worker", job_id=str(job.id))
        finally:
            self._wakeup.poke()

    async def _environment(self, job: ClaimedJob) -> dict[str, str]:
        env = {
            "GRISTMILL_JOB_ID": str(job.id),
            "GRISTMILL_WORKSPACE": job.workspace,
            "GRISTMILL_JOB_PATH": job.runnable_path or "",
            "GRISTMILL_ROOT_JOB_ID": str(job.root_job or job.id),
            "WM_JOB_ID": str(job.id),
            "WM_WORKSPACE": job.workspace,
            "WM_JOB_PATH": job.runnable_path or "",
            "WM_ROOT_FLOW_JOB_ID": str(job.root_job or ""),
            "WM_FLOW_JOB_ID": str(job.parent_job or ""),
            "WM_FLOW_STEP_ID": job.flow_step or "",
            "WM_PERMISSIONED_AS": job.created_by,
            "WM_EMAIL": job.created_by,
            "WM_USERNAME": job.created_by,
        }
        if self._settings.base_url:
            env["BASE_INTERNAL_URL"] = self._settings.base_url
            env["BASE_URL"] = self._settings.base_url
            env["WM_BASE_URL"] = self._settings.base_url
            env["GRISTMILL_BASE_URL"] = self._settings.base_url
        if self._job_env is not None:
            env.update(await self._job_env(job))
        return env


class _LogSink:
    """Appends chunks to the job's log; keeps them in memory while Postgres is away."""

    def __init__(self, queue: Queue, job_id: uuid.UUID) -> None:
        self._queue = queue
        self._job_id = job_id
        self._pending: list[str] = []

    async def write(self, chunk: str) -> None:
        self._pending.append(chunk)
        await self.flush(raise_errors=False)

    async def flush(self, *, raise_errors: bool = False) -> None:
        while self._pending:
            chunk = "".join(self._pending)
            try:
                await self._queue.append_log(self._job_id, chunk)
            except _DB_ERRORS:
                if raise_errors:
                    raise
                return
            self._pending.clear()


async def _retrying(action: Callable[[], Awaitable[Any]], *, limit_s: float = 120.0) -> Any:
    """Retry a queue write through a database outage (bounded; then zombie recovery)."""
    deadline = time.monotonic() + limit_s
    delay = 0.05
    while True:
        try:
            return await action()
        except _DB_ERRORS as exc:
            if time.monotonic() > deadline:
                raise
            _log.warning("recording job outcome failed; retrying", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)


def tags_of(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _rss_kb() -> int | None:
    """The worker process's resident memory (``VmRSS``) in KiB; ``None`` where unknown."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return None


def _kb(value: int | None) -> int | None:
    """Bytes to KiB (rounded up), keeping ``None``."""
    return None if value is None else -(-value // 1024)
