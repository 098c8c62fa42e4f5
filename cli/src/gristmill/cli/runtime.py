"""Wiring: build pools, buses and services from settings, run them, stop them cleanly.

Standalone (``gristmill up``): everything in one process over the in-process bus.
Distributed (``gristmill <service>``): one service per process over Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import platformdirs
import structlog
import uvicorn

from gristmill.cli.postgres import EmbeddedPostgres
from gristmill.common.bus.base import Bus
from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.contracts.topics import Topic
from gristmill.common.db import create_pool, migrate
from gristmill.common.db.pool import connect
from gristmill.common.queue import Queue, QueueLimits
from gristmill.common.settings import Settings
from gristmill.common.tokens import ensure_bootstrap
from gristmill.common.wakeup import Wakeup
from gristmill.dispatcher.service import Dispatcher, MaintenanceSettings
from gristmill.gateway.app import create_app
from gristmill.gateway.context import GatewayContext
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.job_context import JobContext
from gristmill.worker.service import Worker, WorkerSettings

__all__ = ["run_migrate", "run_service", "run_standalone"]

_log = structlog.get_logger(__name__)
VERSION = "0.1.0"


def data_dir(settings: Settings) -> Path:
    """``GRISTMILL_DATA_DIR``; else the user's data folder (``/var/lib/gristmill`` for root,
    whose home the embedded server's unprivileged account cannot enter)."""
    if settings.data_dir is not None:
        return settings.data_dir
    if os.geteuid() == 0:
        return Path("/var/lib/gristmill")
    return Path(platformdirs.user_data_dir("gristmill"))


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_http(app_context: GatewayContext, settings: Settings, stop: asyncio.Event) -> None:
    app = create_app(app_context)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    serving = asyncio.ensure_future(server.serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when="FIRST_COMPLETED")
    server.should_exit = True
    stopping.cancel()
    await serving
    if not stop.is_set():
        raise RuntimeError(f"HTTP server on port {settings.http_port} stopped unexpectedly")


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[str]:
    """The database DSN: ``GRISTMILL_DATABASE_URL`` or an embedded server we own."""
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(data_dir(settings) / "postgres")
    await asyncio.to_thread(server.start)
    try:
        yield server.dsn
    finally:
        await asyncio.to_thread(server.stop)


async def _migrate(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def _queue(pool: asyncpg.Pool, settings: Settings) -> Queue:
    return Queue(
        pool,
        notify=settings.wake_mode == "notify",
        limits=QueueLimits(max_args_bytes=settings.max_args_bytes),
        zombie_restart_limit=settings.zombie_restart_limit,
    )


def _worker_settings(settings: Settings, concurrency: int) -> WorkerSettings:
    return WorkerSettings(
        tags=tuple(settings.worker_tags),
        group=settings.worker_group,
        concurrency=concurrency,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        default_timeout_s=settings.job_timeout_s,
        jobs_dir=data_dir(settings) / "jobs",
        base_url=settings.base_url or f"http://{settings.http_host}:{settings.http_port}",
        executor=_executor_settings(settings),
    )


def _executor_settings(settings: Settings) -> ExecutorSettings:
    if settings.python_bin:
        return ExecutorSettings(
            python_bin=settings.python_bin, log_max_bytes=settings.max_log_bytes
        )
    return ExecutorSettings(log_max_bytes=settings.max_log_bytes)


def _maintenance(settings: Settings) -> MaintenanceSettings:
    return MaintenanceSettings(
        interval_s=settings.maintenance_interval_s,
        zombie_timeout_s=settings.zombie_timeout_s,
        retention_s=settings.retention_s,
    )


def _gateway_context(
    pool: asyncpg.Pool, queue: Queue, bus: Bus, settings: Settings, *, remote_bus: bool = False
) -> GatewayContext:
    return GatewayContext(
        await_job_visible_s=10.0 if remote_bus else None,
        pool=pool,
        queue=queue,
        bus=bus,
        limits=QueueLimits(max_args_bytes=settings.max_args_bytes),
        max_body_bytes=settings.max_body_bytes,
        version=VERSION,
        base_url=f"http://{settings.http_host}:{settings.http_port}",
    )


async def run_standalone(settings: Settings, *, announce: Callable[[str], None] = print) -> None:
    """Every service in this process, over the in-process bus, until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with _database(settings) as dsn:
        await _migrate(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=max(10, settings.workers + 6))
        try:
            token = await ensure_bootstrap(pool, admin_token=settings.admin_token)
            token_file = data_dir(settings) / "admin-token"
            if token is not None and settings.admin_token is None:
                token_file.parent.mkdir(parents=True, exist_ok=True)
                token_file.write_text(token + "\n")
                token_file.chmod(0o600)
            queue = _queue(pool, settings)
            bus = InProcessBus()
            dispatcher = Dispatcher(pool, queue, maintenance=_maintenance(settings))
            async with Wakeup(
                dsn,
                settings.worker_tags,
                mode=settings.wake_mode,
                poll_interval_s=settings.poll_interval_s,
            ) as wakeup:
                worker = Worker(
                    pool,
                    queue,
                    wakeup,
                    _worker_settings(settings, settings.workers),
                    job_env=JobContext(pool, default_timeout_s=settings.job_timeout_s),
                )
                url = f"http://{settings.http_host}:{settings.http_port}"
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(
                        bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
                    )
                    tasks.create_task(dispatcher.maintain(stop))
                    tasks.create_task(worker.run(stop))
                    tasks.create_task(
                        _serve_http(_gateway_context(pool, queue, bus, settings), settings, stop)
                    )
                    tasks.create_task(
                        _announce_when_ready(url, settings, token, token_file, announce)
                    )
        finally:
            await pool.close()


async def _announce_when_ready(
    url: str,
    settings: Settings,
    token: str | None,
    token_file: Path,
    announce: Callable[[str], None],
) -> None:
    for _ in range(200):
        try:
            _reader, writer = await asyncio.open_connection(settings.http_host, settings.http_port)
            writer.close()
            await writer.wait_closed()
            break
        except OSError:
            await asyncio.sleep(0.05)
    lines = [f"Gristmill is up: {url}  (workspace 'main')"]
    if settings.admin_token:
        lines.append("Authenticate with the token in GRISTMILL_ADMIN_TOKEN.")
    elif token is not None:
        lines.append(f"Admin token (shown once, also saved to {token_file}): {token}")
    else:
        lines.append(f"Admin token: see {token_file}")
    lines.append(f"Try: curl -H 'Authorization: Bearer <token>' {url}/api/users/whoami")
    announce("\n".join(lines))
    sys.stdout.flush()


@contextlib.asynccontextmanager
async def _kafka_bus(settings: Settings, client_id: str) -> AsyncIterator[Bus]:
    from gristmill.common.bus.kafka import KafkaBus, ensure_topics
    from gristmill.common.bus.prefixed import PrefixedBus

    prefix = settings.kafka_topic_prefix
    await ensure_topics(
        settings.kafka_bootstrap,
        {f"{prefix}{Topic.RUN_REQUESTS}": settings.kafka_partitions},
    )
    async with KafkaBus(
        settings.kafka_bootstrap,
        client_id=client_id,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 6),
    ) as bus:
        yield PrefixedBus(bus, prefix) if prefix else bus


async def run_service(name: str, settings: Settings, *, burst: bool = False) -> None:
    """One service alone, for the distributed shape (bus: Kafka)."""
    if not settings.database_url:
        raise SystemExit("GRISTMILL_DATABASE_URL is required for a single service")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    dsn = settings.database_url
    await _migrate(dsn)
    runners: dict[str, Callable[[asyncpg.Pool, Queue], Awaitable[None]]] = {}

    async def gateway(pool: asyncpg.Pool, queue: Queue) -> None:
        await ensure_bootstrap(pool, admin_token=settings.admin_token)
        async with _kafka_bus(settings, "gristmill-gateway") as bus:
            await _serve_http(
                _gateway_context(pool, queue, bus, settings, remote_bus=True), settings, stop
            )

    async def dispatcher(pool: asyncpg.Pool, queue: Queue) -> None:
        service = Dispatcher(pool, queue, maintenance=_maintenance(settings))
        async with _kafka_bus(settings, "gristmill-dispatcher") as bus:
            await service.run(bus, stop)

    async def worker(pool: asyncpg.Pool, queue: Queue) -> None:
        async with Wakeup(
            dsn,
            settings.worker_tags,
            mode=settings.wake_mode,
            poll_interval_s=settings.poll_interval_s,
        ) as wakeup:
            worker_settings = _worker_settings(settings, settings.workers)
            job_env = JobContext(pool, default_timeout_s=settings.job_timeout_s)
            await Worker(pool, queue, wakeup, worker_settings, job_env=job_env).run(
                stop, burst=burst
            )

    async def idle(_pool: asyncpg.Pool, _queue: Queue) -> None:
        _log.info(f"{name} has nothing to serve yet; waiting for SIGTERM")
        await stop.wait()

    runners.update(
        gateway=gateway, dispatcher=dispatcher, worker=worker, scheduler=idle, triggers=idle
    )
    pool = await create_pool(dsn, min_size=1, max_size=max(4, settings.workers + 4))
    try:
        _log.info("service starting", service=name)
        await runners[name](pool, _queue(pool, settings))
    finally:
        await pool.close()


async def run_migrate(settings: Settings) -> None:
    async with _database(settings) as dsn:
        await _migrate(dsn)
