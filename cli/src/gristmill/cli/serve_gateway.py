"""Wiring of the gateway: the Litestar app under uvicorn, stopped by the process's event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg
import uvicorn

from gristmill.cli.runtime import VERSION
from gristmill.common.bus.base import Bus
from gristmill.common.queue import Queue, QueueLimits
from gristmill.common.secrets import MasterKeyring
from gristmill.common.settings import Settings
from gristmill.gateway.app import create_app
from gristmill.gateway.context import GatewayContext

__all__ = ["gateway_context", "serve_http"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def gateway_context(
    pool: asyncpg.Pool,
    queue: Queue,
    bus: Bus,
    settings: Settings,
    *,
    remote_bus: bool = False,
    keyring: MasterKeyring | None = None,
) -> GatewayContext:
    return GatewayContext(
        keyring=keyring,
        pool=pool,
        queue=queue,
        bus=bus,
        limits=QueueLimits(max_args_bytes=settings.max_args_bytes),
        max_body_bytes=settings.max_body_bytes,
        version=VERSION,
        base_url=f"http://{settings.http_host}:{settings.http_port}",
        await_job_visible_s=10.0 if remote_bus else None,
    )


async def serve_http(context: GatewayContext, settings: Settings, stop: asyncio.Event) -> None:
    config = uvicorn.Config(
        create_app(context),
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
