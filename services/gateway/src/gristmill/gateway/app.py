"""The Litestar application."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.exceptions import HTTPException, NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from gristmill.common.job_done import DoneListener
from gristmill.gateway.auth import PUBLIC_PATHS, TokenAuthMiddleware
from gristmill.gateway.context import GatewayContext
from gristmill.gateway.errors import exception_handlers
from gristmill.gateway.routes import (
    email_triggers,
    flows,
    http_routes,
    http_triggers,
    introspect,
    jobs,
    kafka_triggers,
    resources,
    run,
    run_flows,
    schedules,
    scripts,
    system,
    users,
    variables,
    websocket_triggers,
    workers,
)
from gristmill.gateway.webui import spa_fallback, ui_routes

__all__ = ["GatewayContext", "create_app"]


def create_app(context: GatewayContext) -> Litestar:
    """The app; ``context`` (pool, bus, ...) is owned by the caller."""

    @contextlib.asynccontextmanager
    async def job_done_listener(_app: Litestar) -> AsyncIterator[None]:
        # One listening connection for the app's run-and-wait callers (``job_done``).
        listener = DoneListener(context.pool)
        await listener.start()
        context.done = listener
        try:
            yield
        finally:
            context.done = None
            await listener.close()

    app = Litestar(
        lifespan=[job_done_listener],
        route_handlers=[
            *system.ROUTES,
            *run.ROUTES,
            *jobs.ROUTES,
            *users.ROUTES,
            *variables.ROUTES,
            *resources.ROUTES,
            *scripts.ROUTES,
            *schedules.ROUTES,
            *flows.ROUTES,
            *run_flows.ROUTES,
            *workers.ROUTES,
            *http_triggers.ROUTES,
            *http_routes.ROUTES,
            *websocket_triggers.ROUTES,
            *email_triggers.ROUTES,
            *kafka_triggers.ROUTES,
            *introspect.ROUTES,
            *ui_routes(),
        ],
        middleware=[DefineMiddleware(TokenAuthMiddleware, exclude=PUBLIC_PATHS)],
        exception_handlers={
            **exception_handlers,
            # Client routes of the web UI answer its index.html.
            NotFoundException: spa_fallback(exception_handlers[HTTPException]),
        },
        openapi_config=OpenAPIConfig(
            title="Gristmill",
            version=context.version,
            path="/api/openapi",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        request_max_body_size=context.max_body_bytes,
        debug=False,
    )
    app.state.gristmill = context
    return app
