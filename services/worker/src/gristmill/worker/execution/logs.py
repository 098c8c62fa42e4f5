"""Reading a job's output and handing it to ``on_log`` in ordered, capped chunks.

Output is read as it arrives (no thread, no per-line work) and delivered in chunks:
once ``log_flush_bytes`` are waiting, once the output has been quiet for
``log_flush_quiet_s``, or at the latest ``log_flush_max_delay_s`` after the chunk's
first byte. A slow ``on_log`` pauses reading (the job then blocks on its writes)
rather than buffering without bound. After ``log_max_bytes`` the output is still
read, so the job never stalls, but dropped after one notice line. Bytes that are not
UTF-8 are replaced, never fatal.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import IO

import structlog

from gristmill.worker.execution.launch import OutputPipe
from gristmill.worker.execution.settings import ExecutorSettings

__all__ = ["LogPump", "OnLog"]

OnLog = Callable[[str], Awaitable[None]]

_log = structlog.get_logger(__name__)

#: Raw bytes of the latest output kept for error messages.
_OUTPUT_TAIL_BYTES = 8 * 1024
#: Raw bytes of the latest stdout kept for runners that read it (Bash's last line).
STDOUT_TAIL_BYTES = 1024 * 1024
#: Reading pauses when this many times ``log_flush_bytes`` wait for ``on_log``.
_HIGH_WATER_CHUNKS = 4


class _Tail:
    """The last ``limit`` bytes of a stream, in amortised constant time per write."""

    __slots__ = ("_buf", "_cut", "_limit")

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._cut = False

    def add(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 2 * self._limit:
            del self._buf[: -self._limit]
            self._cut = True

    def get(self) -> tuple[bytes, bool]:
        """The kept bytes and whether earlier bytes were dropped."""
        cut = self._cut or len(self._buf) > self._limit
        return bytes(self._buf[-self._limit :]), cut


class _PipeReader(asyncio.Protocol):
    def __init__(self, pump: LogPump, stream: str) -> None:
        self._pump = pump
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        self._pump._feed(self.stream, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pump._pipe_closed(self)


def _factory(reader: _PipeReader) -> Callable[[], _PipeReader]:
    return lambda: reader


class LogPump:
    """Reads one job's output pipes; delivers ordered text chunks to ``on_log``."""

    def __init__(self, on_log: OnLog, *, settings: ExecutorSettings, job_id: uuid.UUID) -> None:
        self._on_log = on_log
        self._job_id = job_id
        self._max_bytes = settings.log_max_bytes
        self._flush_bytes = max(1, settings.log_flush_bytes)
        self._quiet_s = settings.log_flush_quiet_s
        self._max_delay_s = settings.log_flush_max_delay_s
        self._high_water = self._flush_bytes * _HIGH_WATER_CHUNKS

        self.total_bytes = 0
        self.truncated = False
        self._kept_bytes = 0
        self._ends_with_newline = True
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}
        self._output_tail = _Tail(_OUTPUT_TAIL_BYTES)
        self._stdout_tail = _Tail(STDOUT_TAIL_BYTES)

        self._pending: list[str] = []
        self._pending_bytes = 0
        self._first_at = 0.0
        self._last_at = 0.0
        self._wake = asyncio.Event()
        self._finishing = False
        self._delivery: asyncio.Task[None] | None = None
        self._delivery_failed = False

        self._files: list[IO[bytes]] = []
        self._transports: list[asyncio.ReadTransport] = []
        self._open: set[_PipeReader] = set()
        self._all_closed = asyncio.Event()
        self._paused = False

    # -- lifecycle -------------------------------------------------------------------

    async def attach(self, outputs: Sequence[OutputPipe]) -> None:
        """Take ownership of the pipes' read ends and start reading and delivering."""
        for out in outputs:
            self._files.append(os.fdopen(out.fd, "rb", buffering=0))
            self._decoders[out.stream] = codecs.getincrementaldecoder("utf-8")("replace")
        loop = asyncio.get_running_loop()
        for out, file in zip(outputs, self._files, strict=True):
            reader = _PipeReader(self, out.stream)
            self._open.add(reader)
            transport, _ = await loop.connect_read_pipe(_factory(reader), file)
            self._transports.append(transport)
        if not self._open:
            self._all_closed.set()
        self._delivery = asyncio.create_task(self._deliver_loop(), name=f"logs-{self._job_id}")

    async def wait_closed(self, timeout_s: float) -> bool:
        """Wait until every writer has closed the pipes; False if some still hold them."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._all_closed.wait()
        except TimeoutError:
            return False
        return True

    async def finish(self) -> None:
        """Stop reading, deliver everything still waiting, and return once delivered."""
        self._close_pipes()
        if not self.truncated:
            for decoder in self._decoders.values():
                self._append(decoder.decode(b"", final=True), 0)
        self._finishing = True
        self._wake.set()
        if self._delivery is not None:
            await self._delivery

    def abort(self) -> None:
        """Stop at once without delivering (the job is being abandoned)."""
        self._close_pipes()
        if self._delivery is not None:
            self._delivery.cancel()

    # -- what the runner and the error messages read -----------------------------------

    def stdout_tail(self) -> tuple[str, bool]:
        """The last ~1 MiB of stdout (separate-stdout commands only) and whether it was cut."""
        data, cut = self._stdout_tail.get()
        return data.decode("utf-8", "replace"), cut

    def output_tail(self, max_lines: int = 20) -> str:
        """The last lines of the output (stdout and stderr), for error messages."""
        data, cut = self._output_tail.get()
        lines = data.decode("utf-8", "replace").splitlines()
        if cut and lines:
            lines = lines[1:]  # most likely a partial line
        return "\n".join(lines[-max_lines:])

    # -- reading ---------------------------------------------------------------------

    def _feed(self, stream: str, data: bytes) -> None:
        size = len(data)
        self.total_bytes += size
        self._output_tail.add(data)
        if stream == "stdout":
            self._stdout_tail.add(data)
        if self.truncated:
            return
        room = self._max_bytes - self._kept_bytes
        decoder = self._decoders[stream]
        if size <= room:
            self._kept_bytes += size
            self._append(decoder.decode(data), size)
            return
        self._kept_bytes = self._max_bytes
        self._append(decoder.decode(data[:room], final=True), room)
        self.truncated = True
        notice = f"... log truncated after {self._max_bytes} bytes ...\n"
        if not self._ends_with_newline:
            notice = "\n" + notice
        self._append(notice, len(notice))

    def _append(self, text: str, size: int) -> None:
        if not text:
            return
        now = asyncio.get_running_loop().time()
        if not self._pending:
            self._first_at = now
        self._pending.append(text)
        self._pending_bytes += size
        self._last_at = now
        self._ends_with_newline = text.endswith("\n")
        self._wake.set()
        if self._pending_bytes >= self._high_water and not self._paused:
            self._paused = True
            for transport in self._transports:
                if not transport.is_closing():
                    transport.pause_reading()

    def _pipe_closed(self, reader: _PipeReader) -> None:
        self._open.discard(reader)
        if not self._open:
            self._all_closed.set()

    def _close_pipes(self) -> None:
        for transport in self._transports:
            transport.close()
        for file in self._files:
            file.close()  # idempotent; covers pipes never attached
        self._open.clear()
        self._all_closed.set()

    # -- delivering ------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._finishing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            while not self._finishing and self._pending_bytes < self._flush_bytes:
                due = min(self._last_at + self._quiet_s, self._first_at + self._max_delay_s)
                wait_s = due - loop.time()
                if wait_s <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
            await self._deliver()

    async def _deliver(self) -> None:
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if self._paused:
            self._paused = False
            for transport in self._transports:
                if not transport.is_closing():
                    transport.resume_reading()
        try:
            await self._on_log(text)
        except Exception:  # a failing sink must not take the job (or its kill) down
            if not self._delivery_failed:
                self._delivery_failed = True
                _log.exception("delivering job output failed", job_id=str(self._job_id))
