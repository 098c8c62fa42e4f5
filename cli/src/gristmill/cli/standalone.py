"""``gristmill up``: every service in one process over the in-process bus."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

from gristmill.cli.runtime import data_dir, database, make_queue, migrate_dsn, stop_on_signals
from gristmill.cli.serve_dispatcher import make_dispatcher
from gristmill.cli.serve_gateway import gateway_context, serve_http
from gristmill.cli.serve_scheduler import run_scheduler
from gristmill.cli.serve_triggers import run_triggers
from gristmill.cli.serve_worker import run_worker
from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.contracts.topics import Topic
from gristmill.common.db import create_pool
from gristmill.common.keystore import load_master_keyring
from gristmill.common.settings import Settings
from gristmill.common.tokens import ensure_bootstrap

__all__ = ["run_standalone"]


async def run_standalone(settings: Settings, *, announce: Callable[[str], None] = print) -> None:
    """Run until SIGINT/SIGTERM; nothing is acknowledged before Postgres committed it."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    keyring = load_master_keyring(os.environ, data_dir(settings))
    async with database(settings) as dsn:
        await migrate_dsn(dsn)
        pool = await create_pool(dsn, min_size=2, max_size=max(10, settings.workers + 6))
        try:
            token = await ensure_bootstrap(pool, admin_token=settings.admin_token)
            token_file = data_dir(settings) / "admin-token"
            if token is not None and settings.admin_token is None:
                token_file.parent.mkdir(parents=True, exist_ok=True)
                token_file.write_text(token + "\n")
                token_file.chmod(0o600)
            # Every ending of a flow step (worker, recovery, cancel) advances its flow.
            queue = make_queue(pool, settings)
            bus = InProcessBus()
            dispatcher = make_dispatcher(pool, queue, settings)
            url = f"http://{settings.http_host}:{settings.http_port}"
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
                )
                tasks.create_task(dispatcher.maintain(stop))
                tasks.create_task(run_worker(dsn, pool, queue, settings, stop))
                tasks.create_task(run_scheduler(pool, bus, settings, stop))
                tasks.create_task(run_triggers(pool, bus, settings, stop, keyring=keyring))
                tasks.create_task(
                    serve_http(
                        gateway_context(pool, queue, bus, settings, keyring=keyring), settings, stop
                    )
                )
                tasks.create_task(_announce_when_ready(url, settings, token, token_file, announce))
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
