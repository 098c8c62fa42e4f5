"""What the peers need besides PostgreSQL, started on loopback for one run.

* Redis for Celery: a private ``redis-server`` on a free port, without persistence,
  when the binary exists (Debian package ``redis-server``); or the server named by
  ``GRISTMILL_BENCH_REDIS_URL``. Neither: Celery is reported as not run.
* A Prefect server (``prefect server start`` from the peers' environment) whose
  database is a fresh database on the PostgreSQL under test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.peers.venv import VENV

__all__ = ["NotAvailable", "prefect_server", "redis_server"]

REDIS_URL_ENV = "GRISTMILL_BENCH_REDIS_URL"
_START_TIMEOUT_S = 180.0


class NotAvailable(RuntimeError):
    """A peer's service cannot run here; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: the one given in the environment, or a private server's."""
    given = os.environ.get(REDIS_URL_ENV)
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise NotAvailable(
            f"no redis-server binary (apt package redis-server) and no {REDIS_URL_ENV}"
        )
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="gristmill-bench-redis-"))
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise NotAvailable(f"redis-server did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def prefect_server(database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(API URL, environment for clients) of a Prefect server on ``database_url``."""
    prefect = VENV / "bin" / "prefect"
    if not prefect.exists():
        raise NotAvailable("prefect is not installed in the peers' environment")
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="gristmill-bench-prefect-"))
    client_env = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRISTMILL_", "PREFECT_"))}
    env.update(
        client_env,
        PREFECT_API_DATABASE_CONNECTION_URL=database_url,
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (home / "server.log").read_text(errors="replace")[-800:]
                raise NotAvailable(f"the Prefect server did not start: {tail}")
            time.sleep(0.5)
        yield api, client_env
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)
