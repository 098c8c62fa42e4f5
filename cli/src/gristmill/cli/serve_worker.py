"""Wiring of the worker: its settings, its sandbox, the wake-up listener, job tokens."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import structlog

from gristmill.cli.runtime import data_dir
from gristmill.common.errors import InvalidRequest
from gristmill.common.queue import Queue, validate_tag
from gristmill.common.scripts import dedicated_flow_tag, dedicated_tag, validate_path
from gristmill.common.settings import Settings
from gristmill.common.wakeup import Wakeup
from gristmill.worker.dedicated import DedicatedSettings, parse_dedicated
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.job_context import JobContext
from gristmill.worker.sandbox import Limits, Sandbox, SandboxPolicy, SandboxUnavailable, detect
from gristmill.worker.service import Worker, WorkerSettings

__all__ = [
    "dedicated_settings",
    "job_sandbox",
    "run_worker",
    "sandbox_policy",
    "worker_settings",
]

_log = structlog.get_logger(__name__)
_INSECURE = (
    "INSECURE: jobs run WITHOUT a sandbox (--insecure-no-sandbox / "
    "GRISTMILL_INSECURE_NO_SANDBOX): they can read this worker's files, environment and "
    "database credentials. Never do this outside development."
)


def _executor_settings(settings: Settings, sandbox: Sandbox | None) -> ExecutorSettings:
    executor = ExecutorSettings(
        log_max_bytes=settings.max_log_bytes,
        sandbox=sandbox,
        prestarted_launchers=settings.job_prestarted_launchers,
    )
    if settings.python_bin:
        executor = msgspec.structs.replace(executor, python_bin=settings.python_bin)
    return executor


def sandbox_policy(settings: Settings) -> SandboxPolicy:
    """The sandbox asked for by ``GRISTMILL_JOB_*`` (0 leaves a resource unlimited)."""
    return SandboxPolicy(
        network=settings.job_network,
        limits=Limits(
            memory_mb=settings.job_memory_mb or None,
            address_space_mb=settings.job_address_space_mb or None,
            cpu_s=settings.job_cpu_s or None,
            processes=settings.job_max_processes or None,
            open_files=settings.job_max_open_files or None,
            file_size_mb=settings.job_max_file_mb or None,
            tmp_mb=settings.job_tmp_mb,
        ),
        job_uid_base=settings.job_uid_base or None,
        cgroups=tuple(part.strip() for part in settings.job_cgroups.split(",") if part.strip()),
    )


async def job_sandbox(settings: Settings) -> Sandbox | None:
    """The sandbox this worker's jobs run in; ``None`` only when explicitly insecure.

    Exits (``SystemExit``, with what to do) when jobs cannot be sandboxed here.
    """
    if settings.insecure_no_sandbox:
        _log.warning(_INSECURE)
        return None
    try:
        policy = sandbox_policy(settings)
        sandbox = await asyncio.to_thread(detect, policy)
    except (SandboxUnavailable, ValueError) as exc:
        raise SystemExit(
            f"gristmill: jobs cannot be sandboxed on this machine: {exc}\n"
            "To run them unsandboxed anyway (development only: they can then read this "
            "worker's files and environment), pass --insecure-no-sandbox or set "
            "GRISTMILL_INSECURE_NO_SANDBOX=1."
        ) from exc
    for note in sandbox.notes:
        _log.warning("sandbox: not enforced on this host", detail=note)
    _log.info("jobs run sandboxed", sandbox=sandbox.describe())
    return sandbox


def dedicated_settings(settings: Settings) -> DedicatedSettings | None:
    """The scripts (``<workspace>:<path>``) and flows (``<workspace>:flow/<path>``) of
    ``GRISTMILL_DEDICATED`` / ``--dedicated`` as their jobs' tags. Raises
    ``InvalidRequest`` naming the setting."""
    if not settings.dedicated:
        return None
    scripts: list[str] = []
    flows: list[str] = []
    for value in settings.dedicated:
        try:
            workspace, path = parse_dedicated(value)
            if path.startswith("flow/"):
                flow_path = validate_path(path.removeprefix("flow/"))
                flows.append(validate_tag(dedicated_flow_tag(workspace, flow_path)))
            else:
                scripts.append(validate_tag(dedicated_tag(workspace, validate_path(path))))
        except (ValueError, InvalidRequest) as exc:
            raise InvalidRequest(
                f"bad dedicated script or flow {value!r}: {exc}", location="GRISTMILL_DEDICATED"
            ) from exc
    return DedicatedSettings(
        scripts=tuple(dict.fromkeys(scripts)),
        flows=tuple(dict.fromkeys(flows)),
        max_jobs=settings.dedicated_max_jobs,
        max_rss_mb=settings.dedicated_max_rss_mb,
    )


def worker_settings(
    settings: Settings,
    *,
    sandbox: Sandbox | None = None,
    dedicated: DedicatedSettings | None = None,
) -> WorkerSettings:
    """An ordinary worker's settings, or with ``dedicated``, those of a worker that
    claims only the jobs of the scripts and flows it is dedicated to."""
    tags = dedicated.tags if dedicated is not None else tuple(settings.worker_tags)
    return WorkerSettings(
        tags=tags,
        dedicated=dedicated,
        group=settings.worker_group,
        concurrency=settings.workers,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        default_timeout_s=settings.job_timeout_s,
        jobs_dir=data_dir(settings) / "jobs",
        base_url=settings.base_url or f"http://{settings.http_host}:{settings.http_port}",
        executor=_executor_settings(settings, sandbox),
    )


async def run_worker(
    dsn: str,
    pool: asyncpg.Pool,
    queue: Queue,
    settings: Settings,
    stop: asyncio.Event,
    *,
    burst: bool = False,
    ordinary: bool = True,
) -> None:
    """Run this process's workers: an ordinary one (unless ``ordinary`` is False) and,
    when ``GRISTMILL_DEDICATED`` names scripts or flows, one dedicated to them."""
    dedicated = dedicated_settings(settings)
    sandbox = await job_sandbox(settings)
    wanted = [worker_settings(settings, sandbox=sandbox)] if ordinary or dedicated is None else []
    if dedicated is not None:
        wanted.append(worker_settings(settings, sandbox=sandbox, dedicated=dedicated))
        _log.info("dedicated worker", scripts=list(dedicated.scripts), flows=list(dedicated.flows))
    job_env = JobContext(pool, default_timeout_s=settings.job_timeout_s)

    async def serve(one: WorkerSettings) -> None:
        async with Wakeup(
            dsn, one.tags, mode=settings.wake_mode, poll_interval_s=settings.poll_interval_s
        ) as wakeup:
            worker = Worker(pool, queue, wakeup, one, job_env=job_env)
            if sandbox is None:
                _log.warning(_INSECURE, worker_id=worker.id)
            await worker.run(stop, burst=burst)

    await asyncio.gather(*(serve(one) for one in wanted))
