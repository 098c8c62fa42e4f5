"""Run Gristmill's own processes for tests: the CLI as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

__all__ = ["GristmillProcess", "free_port", "spawn", "wait_http", "wait_until"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GristmillProcess:
    """One ``gristmill <command>`` child process with its output captured to a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
        full_env.update(env)
        full_env.setdefault("GRISTMILL_LOG_FORMAT", "json")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gristmill.cli.main", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (the service and any job it runs)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.returncode
        self._log.close()
        # Jobs it ran live in their own sessions: make sure nothing outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return code

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"gristmill {self.args} exited {self.proc.returncode}:\n{self.output()[-4000:]}"
            )


def wait_http(url: str, timeout: float = 60, process: GristmillProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            process.assert_alive()
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout}s")


async def wait_until(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 30,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., GristmillProcess]]:
    """Start ``gristmill`` subprocesses; all are stopped at the end of the test."""
    started: list[GristmillProcess] = []

    def _spawn(
        args: list[str], env: Mapping[str, str], name: str | None = None
    ) -> GristmillProcess:
        label = name or args[0]
        process = GristmillProcess(args, env, tmp_path / f"{label}-{len(started)}.log")
        started.append(process)
        return process

    yield _spawn
    for process in started:
        process.terminate()
