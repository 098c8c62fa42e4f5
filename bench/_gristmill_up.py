"""A ``gristmill up`` on a given database, in its own process group, for one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from bench.sync_latency import _free_port, _wait_http

__all__ = ["ROOT", "gristmill_up"]

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def gristmill_up(
    dsn: str, token: str, *, workers: int, extra_env: Mapping[str, str] = {}
) -> Iterator[str]:
    """Start ``gristmill up`` on ``dsn``; yield its base URL once it answers."""
    data = Path(tempfile.mkdtemp(prefix="gristmill-bench-up-"))
    data.chmod(0o755)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    env.update(
        GRISTMILL_DATABASE_URL=dsn,
        GRISTMILL_HTTP_PORT=str(port),
        GRISTMILL_ADMIN_TOKEN=token,
        GRISTMILL_DATA_DIR=str(data / "data"),
        GRISTMILL_WORKERS=str(workers),
        GRISTMILL_LOG_LEVEL="warning",
    )
    env.update(extra_env)
    up = subprocess.Popen(
        [sys.executable, "-m", "gristmill.cli.main", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/api/version")
        yield base
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        shutil.rmtree(data, ignore_errors=True)
