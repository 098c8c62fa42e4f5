"""``gristmill <service>``: one service per process over Kafka (the distributed shape).

Each service's wiring is imported only when that service runs.
"""

from __future__ import annotations

import asyncio
import os

import structlog

from gristmill.cli.runtime import kafka_bus, make_queue, migrate_dsn, stop_on_signals
from gristmill.common.db import create_pool
from gristmill.common.keystore import load_master_keyring, master_key_configured
from gristmill.common.settings import Settings
from gristmill.common.tokens import ensure_bootstrap

__all__ = ["SERVICES", "run_service"]

_log = structlog.get_logger(__name__)
SERVICES = ("gateway", "dispatcher", "worker", "scheduler", "triggers")


async def run_service(name: str, settings: Settings, *, burst: bool = False) -> None:
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    if not settings.database_url:
        raise SystemExit("GRISTMILL_DATABASE_URL is required to run a single service")
    stop = asyncio.Event()
    stop_on_signals(stop)
    dsn = settings.database_url
    if settings.migrate_on_start:
        await migrate_dsn(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=max(4, settings.workers + 4))
    try:
        queue = make_queue(pool, settings)
        _log.info("service starting", service=name)
        if name == "gateway":
            from gristmill.cli.serve_gateway import gateway_context, serve_http

            token = await ensure_bootstrap(pool, admin_token=settings.admin_token)
            if token is not None and settings.admin_token is None:
                print(f"Admin token (shown once): {token}", flush=True)
            keyring = load_master_keyring(os.environ) if master_key_configured() else None
            if keyring is None:
                _log.warning(
                    "no master key: secret variables are unavailable; set GRISTMILL_MASTER_KEY "
                    "or GRISTMILL_MASTER_KEY_FILE"
                )
            async with kafka_bus(settings, "gristmill-gateway") as bus:
                context = gateway_context(
                    pool, queue, bus, settings, remote_bus=True, keyring=keyring
                )
                await serve_http(context, settings, stop)
        elif name == "dispatcher":
            from gristmill.cli.serve_dispatcher import make_dispatcher

            async with kafka_bus(settings, "gristmill-dispatcher") as bus:
                await make_dispatcher(pool, queue, settings).run(bus, stop)
        elif name == "worker":
            from gristmill.cli.serve_worker import run_worker

            # A worker dedicated to scripts serves only them (as Windmill's does).
            ordinary = not settings.dedicated
            await run_worker(dsn, pool, queue, settings, stop, burst=burst, ordinary=ordinary)
        elif name == "scheduler":
            from gristmill.cli.serve_scheduler import run_scheduler

            async with kafka_bus(settings, "gristmill-scheduler") as bus:
                await run_scheduler(pool, bus, settings, stop)
        else:
            from gristmill.cli.serve_triggers import run_triggers

            keyring = load_master_keyring(os.environ) if master_key_configured() else None
            async with kafka_bus(settings, "gristmill-triggers") as bus:
                await run_triggers(pool, bus, settings, stop, keyring=keyring)
    finally:
        await pool.close()
