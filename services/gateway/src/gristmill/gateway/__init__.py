"""The gateway: Gristmill's HTTP API (Windmill-compatible paths), auth and the web UI."""

from gristmill.gateway.app import GatewayContext, create_app

__all__ = ["GatewayContext", "create_app"]
