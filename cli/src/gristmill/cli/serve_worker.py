"""Wiring of the worker: its settings, the wake-up listener, job tokens."""

from __future__ import annotations

import asyncio

import asyncpg

from gristmill.cli.runtime import data_dir
from gristmill.common.queue import Queue
from gristmill.common.settings import Settings
from gristmill.common.wakeup import Wakeup
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.job_context import JobContext
from gristmill.worker.service import Worker, WorkerSettings

__all__ = ["run_worker", "worker_settings"]


def _executor_settings(settings: Settings) -> ExecutorSettings:
    if settings.python_bin:
        return ExecutorSettings(
            python_bin=settings.python_bin, log_max_bytes=settings.max_log_bytes
        )
    return ExecutorSettings(log_max_bytes=settings.max_log_bytes)


def worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        tags=tuple(settings.worker_tags),
        group=settings.worker_group,
        concurrency=settings.workers,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        default_timeout_s=settings.job_timeout_s,
        jobs_dir=data_dir(settings) / "jobs",
        base_url=settings.base_url or f"http://{settings.http_host}:{settings.http_port}",
        executor=_executor_settings(settings),
    )


async def run_worker(
    dsn: str,
    pool: asyncpg.Pool,
    queue: Queue,
    settings: Settings,
    stop: asyncio.Event,
    *,
    burst: bool = False,
) -> None:
    async with Wakeup(
        dsn,
        settings.worker_tags,
        mode=settings.wake_mode,
        poll_interval_s=settings.poll_interval_s,
    ) as wakeup:
        job_env = JobContext(pool, default_timeout_s=settings.job_timeout_s)
        worker = Worker(pool, queue, wakeup, worker_settings(settings), job_env=job_env)
        await worker.run(stop, burst=burst)
