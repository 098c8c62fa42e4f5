"""Shared wiring: data folder, signals, the database, the queue, the bus.

Service-specific wiring lives beside this module (``serve_gateway``,
``serve_worker``, ``serve_dispatcher``) and is imported only by the command that
needs it, so that an image built for one service needs only that service's packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import platformdirs
import structlog

from gristmill.common.bus.base import Bus
from gristmill.common.contracts.topics import Topic
from gristmill.common.db import create_pool, migrate
from gristmill.common.db.pool import connect
from gristmill.common.flows.engine import on_child_finished
from gristmill.common.keystore import SecretsRotation, load_master_keyring, rotate_secrets
from gristmill.common.queue import Queue, QueueLimits
from gristmill.common.settings import Settings

__all__ = [
    "VERSION",
    "data_dir",
    "database",
    "kafka_bus",
    "make_queue",
    "migrate_dsn",
    "run_migrate",
    "run_secrets_rotate",
    "stop_on_signals",
]

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


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[str]:
    """The database DSN: ``GRISTMILL_DATABASE_URL`` or an embedded server we own."""
    if settings.database_url:
        yield settings.database_url
        return
    try:
        from gristmill.cli.postgres import EmbeddedPostgres
    except ImportError as exc:  # installed without the embedded server
        raise SystemExit(
            "GRISTMILL_DATABASE_URL is not set and the embedded Postgres is not installed "
            "(install gristmill[embedded])"
        ) from exc
    server = EmbeddedPostgres(data_dir(settings) / "postgres")
    await asyncio.to_thread(server.start)
    try:
        yield server.dsn
    finally:
        await asyncio.to_thread(server.stop)


async def migrate_dsn(dsn: str) -> None:
    conn = await connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def make_queue(pool: asyncpg.Pool, settings: Settings) -> Queue:
    """The queue every service uses: a flow step that ends, however it ends (completed
    by a worker, recovered, timed out, canceled through the gateway), advances its flow
    in the same transaction."""
    return Queue(
        pool,
        on_child_finished=on_child_finished,
        notify=settings.wake_mode == "notify",
        limits=QueueLimits(max_args_bytes=settings.max_args_bytes),
        zombie_restart_limit=settings.zombie_restart_limit,
    )


@contextlib.asynccontextmanager
async def kafka_bus(settings: Settings, client_id: str) -> AsyncIterator[Bus]:
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


async def run_migrate(settings: Settings) -> None:
    async with database(settings) as dsn:
        await migrate_dsn(dsn)


async def run_secrets_rotate(
    settings: Settings, *, workspace: str | None = None, retire_old: bool = True
) -> SecretsRotation:
    """``gristmill secrets rotate``: new data keys, secrets re-encrypted, keys rewrapped."""
    keyring = load_master_keyring(os.environ, data_dir(settings), create=False)
    async with database(settings) as dsn:
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            return await rotate_secrets(pool, keyring, workspace=workspace, retire_old=retire_old)
        finally:
            await pool.close()
