"""Container health checks for Gristmill services: ``healthcheck.py <service>``.

Exit status 0 means healthy, 1 unhealthy (Docker's HEALTHCHECK convention; Kubernetes
exec probes read it the same way). Each check answers within a few seconds.

gateway (and standalone)
    ``GET /api/health`` on the local port answers 200 with ``"status": "ok"`` (the
    gateway is serving and reaches Postgres).
worker
    A row in ``workers`` for this container's hostname was pinged recently: the worker
    process registered and its heartbeat loop is running. Needs Postgres, so a database
    outage makes workers unhealthy too; use it for visibility, not to restart workers.
dispatcher, scheduler, triggers
    They expose no signal of their own yet; the check only proves that the container
    reaches Postgres with ``GRISTMILL_DATABASE_URL``. (A per-service liveness signal is
    a proposed change: see deploy/README.md.)

Configuration comes from the same ``GRISTMILL_*`` variables as the service.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import urllib.request

TIMEOUT_S = 4.0


def _gateway() -> str:
    host = os.environ.get("GRISTMILL_HTTP_HOST", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104  # a wildcard bind: ask loopback
        host = "127.0.0.1"
    port = os.environ.get("GRISTMILL_HTTP_PORT", "8000")
    url = f"http://{host}:{port}/api/health"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        body = json.load(response)
    if body.get("status") != "ok":
        raise RuntimeError(f"{url} answered {body!r}")
    return f"{url} ok"


async def _database(query: str, *args: object) -> object:
    import asyncpg

    dsn = os.environ.get("GRISTMILL_DATABASE_URL")
    if not dsn:
        raise RuntimeError("GRISTMILL_DATABASE_URL is not set")
    conn = await asyncpg.connect(dsn, timeout=TIMEOUT_S)
    try:
        return await conn.fetchval(query, *args, timeout=TIMEOUT_S)
    finally:
        await conn.close(timeout=TIMEOUT_S)


def _worker() -> str:
    interval = float(os.environ.get("GRISTMILL_HEARTBEAT_INTERVAL_S") or 2.0)
    max_age = max(15.0, 5 * interval)
    hostname = socket.gethostname()
    age = asyncio.run(
        _database(
            "SELECT extract(epoch FROM now() - max(last_ping)) FROM workers WHERE hostname = $1",
            hostname,
        )
    )
    if age is None:
        raise RuntimeError(f"no worker registered for host {hostname!r}")
    seconds = float(str(age))
    if seconds > max_age:
        raise RuntimeError(f"last worker heartbeat from {hostname!r} is {seconds:.0f}s old")
    return f"worker on {hostname!r} pinged {seconds:.1f}s ago"


def _reaches_database() -> str:
    asyncio.run(_database("SELECT 1"))
    return "database reachable"


CHECKS = {
    "gateway": _gateway,
    "standalone": _gateway,
    "worker": _worker,
    "dispatcher": _reaches_database,
    "scheduler": _reaches_database,
    "triggers": _reaches_database,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in CHECKS:
        print(f"usage: {argv[0]} {{{','.join(CHECKS)}}}", file=sys.stderr)
        return 2
    try:
        print(CHECKS[argv[1]]())
    except Exception as exc:  # any failure is "unhealthy", with its reason
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
