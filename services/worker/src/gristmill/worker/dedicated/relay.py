"""An interpreter's output, relayed to the log of the job it runs.

A Bun interpreter runs its jobs in its own process, so a job cannot be handed an
output pipe of its own (a forked Python job takes one as its stdout and stderr).
Everything the interpreter and its children print goes to the one pipe it was
started with; ``OutputRelay`` reads it and writes it on to a pipe of the running
job's (read by that job's ``LogPump``), or between jobs to a pipe of the
interpreter's own log. The switch is exact: whatever is already in the interpreter's
pipe is moved on before it, and the interpreter flushes its output before it reports
a job's end. A slow reader pauses the relay, and so the interpreter's writes, rather
than buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from gristmill.worker.execution.launch import OutputPipe

__all__ = ["OutputRelay"]

_CHUNK = 65536


class _Sink(asyncio.Protocol):
    """The write end of one pipe the relay writes to; tells the relay to pause reading
    while that pipe's reader lags."""

    def __init__(self, relay: OutputRelay) -> None:
        self._relay = relay

    def pause_writing(self) -> None:
        self._relay._pause(self)

    def resume_writing(self) -> None:
        self._relay._resume(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay._resume(self)


class OutputRelay(asyncio.Protocol):
    """Reads an interpreter's output pipe; see the module docstring."""

    def __init__(self) -> None:
        self._fd = -1
        self._source: asyncio.ReadTransport | None = None
        self._own: asyncio.WriteTransport | None = None
        self._job: asyncio.WriteTransport | None = None
        self._paused_by: set[_Sink] = set()
        self._eof = asyncio.Event()

    async def start(self, output: OutputPipe) -> OutputPipe:
        """Take ownership of the interpreter's output pipe; the read end of the pipe of
        its own log (for a ``LogPump``)."""
        loop = asyncio.get_running_loop()
        self._fd = output.fd
        self._own, own_read = await self._pipe()
        try:
            self._source, _ = await loop.connect_read_pipe(
                lambda: self, os.fdopen(output.fd, "rb", buffering=0)
            )
        except BaseException:
            os.close(own_read.fd)
            self._own.close()
            raise
        return own_read

    async def begin_job(self) -> OutputPipe:
        """From now on, output goes to a new pipe of the job's (returned: its read end)."""
        self._move_waiting()
        self._job, read = await self._pipe()
        if self._eof.is_set():  # the interpreter is gone: so is the job's output
            self._job.close()
        return read

    def end_job(self) -> None:
        """What the interpreter printed so far is the job's; the rest is its own again.
        The job's pipe is closed once written out."""
        self._move_waiting()
        job, self._job = self._job, None
        if job is not None:
            job.close()

    def close(self) -> None:
        """Stop relaying (the interpreter is gone): close every pipe."""
        for transport in (self._source, self._job, self._own):
            if transport is not None:
                transport.close()
        self._job = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._write(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Every writer closed the interpreter's pipe: nothing more is coming."""
        self._eof.set()
        for transport in (self._job, self._own):
            if transport is not None:
                transport.close()

    # -- internals -------------------------------------------------------------------

    async def _pipe(self) -> tuple[asyncio.WriteTransport, OutputPipe]:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            transport, _ = await asyncio.get_running_loop().connect_write_pipe(
                lambda: _Sink(self), os.fdopen(write_fd, "wb", buffering=0)
            )
        except BaseException:
            os.close(read_fd)
            with contextlib.suppress(OSError):
                os.close(write_fd)
            raise
        return transport, OutputPipe(fd=read_fd, stream="merged", inode=os.fstat(read_fd).st_ino)

    def _write(self, data: bytes) -> None:
        target = self._job if self._job is not None else self._own
        if target is not None and not target.is_closing():
            target.write(data)  # dropped if its reader is gone (an abandoned log)

    def _move_waiting(self) -> None:
        """Relay what already waits in the interpreter's pipe to the current target."""
        if self._eof.is_set() or self._source is None or self._source.is_closing():
            return
        while True:
            try:
                data = os.read(self._fd, _CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                return  # the end: the transport reports it
            self._write(data)

    def _pause(self, sink: _Sink) -> None:
        if not self._paused_by and self._source is not None and not self._source.is_closing():
            self._source.pause_reading()
        self._paused_by.add(sink)

    def _resume(self, sink: _Sink) -> None:
        if sink not in self._paused_by:
            return
        self._paused_by.discard(sink)
        if not self._paused_by and self._source is not None and not self._source.is_closing():
            self._source.resume_reading()
