"""Benchmark worker processes: each has its own interpreter, event loop and pools.

The parent sends a command (a picklable object with ``async run(ctx)``) over a pipe;
the child runs it and answers with its result. A command may first report that it is
ready (e.g. listening) with ``ctx.ready()``, so that the parent starts the clock
only when every child is set up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Protocol, Self

import asyncpg
import structlog

__all__ = ["Command", "Context", "Processes", "quiet_logging"]

_READY = "ready"
_OK = "ok"
_ERROR = "error"
_JOIN_SECONDS = 10.0


def quiet_logging() -> None:
    """Keep Gristmill's warnings, drop its info lines (migrations applied, ...)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class Command(Protocol):
    async def run(self, ctx: Context) -> Any: ...


class Context:
    """What a command gets in the child: the pipe, and pools kept across commands."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._pools: dict[tuple[str, int], asyncpg.Pool] = {}
        self._conns: dict[tuple[str, int], list[asyncpg.Connection]] = {}

    def ready(self) -> None:
        self._pipe.send((_READY, None))

    async def pool(self, dsn: str, size: int) -> asyncpg.Pool:
        """A pool of exactly ``size`` open connections, created on first use."""
        key = (dsn, size)
        pool = self._pools.get(key)
        if pool is None:
            from gristmill.common.db import create_pool

            pool = await create_pool(dsn, min_size=size, max_size=size)
            self._pools[key] = pool
        return pool

    async def connections(self, dsn: str, count: int) -> list[asyncpg.Connection]:
        """``count`` plain connections (no pool, no codecs), opened on first use."""
        key = (dsn, count)
        conns = self._conns.get(key)
        if conns is None:
            conns = [await asyncpg.connect(dsn) for _ in range(count)]
            self._conns[key] = conns
        return conns

    async def close(self) -> None:
        conns, self._conns = self._conns, {}
        for group in conns.values():
            for conn in group:
                try:
                    await asyncio.wait_for(conn.close(), timeout=5)
                except TimeoutError:
                    conn.terminate()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                pool.terminate()


async def _serve(pipe: Connection) -> None:
    ctx = Context(pipe)
    try:
        while True:
            command: Command | None = await asyncio.to_thread(pipe.recv)
            if command is None:
                return
            try:
                result = await command.run(ctx)
            except Exception:
                pipe.send((_ERROR, traceback.format_exc()))
            else:
                pipe.send((_OK, result))
    finally:
        await ctx.close()


def _child_main(pipe: Connection) -> None:
    quiet_logging()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(pipe))


class ChildFailed(RuntimeError):
    pass


class Processes:
    """``count`` worker processes, started on enter and stopped on exit."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._mp = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._pipes: list[Connection] = []

    def __enter__(self) -> Self:
        try:
            for index in range(self.count):
                parent, child = self._mp.Pipe()
                proc = self._mp.Process(
                    target=_child_main, args=(child,), name=f"bench-worker-{index}", daemon=True
                )
                proc.start()
                child.close()
                self._procs.append(proc)
                self._pipes.append(parent)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self._procs:
            proc.join(_JOIN_SECONDS)
            if proc.is_alive():
                proc.terminate()
                proc.join(_JOIN_SECONDS)
        for pipe in self._pipes:
            pipe.close()
        self._procs.clear()
        self._pipes.clear()

    def send(self, index: int, command: Command) -> None:
        self._pipes[index].send(command)

    async def _receive(self, index: int, timeout: float) -> tuple[str, Any]:
        pipe = self._pipes[index]

        def receive() -> tuple[str, Any]:
            if not pipe.poll(timeout):
                raise TimeoutError(f"bench worker {index} did not answer within {timeout:g}s")
            message: tuple[str, Any] = pipe.recv()
            return message

        kind, value = await asyncio.to_thread(receive)
        if kind == _ERROR:
            raise ChildFailed(f"bench worker {index} failed:\n{value}")
        return kind, value

    async def wait_ready(self, index: int, timeout: float) -> None:
        kind, _ = await self._receive(index, timeout)
        if kind != _READY:
            raise ChildFailed(f"bench worker {index} answered before it was ready")

    async def result(self, index: int, timeout: float) -> Any:
        kind, value = await self._receive(index, timeout)
        if kind != _OK:
            raise ChildFailed(f"bench worker {index} sent {kind!r}, expected a result")
        return value

    async def run_all(self, commands: list[Command], timeout: float) -> list[Any]:
        """Run one command per process (the first ``len(commands)``), all at once."""
        if len(commands) > self.count:
            raise ValueError(f"{len(commands)} commands for {self.count} processes")
        for index, command in enumerate(commands):
            self.send(index, command)
        return list(await asyncio.gather(*(self.result(i, timeout) for i in range(len(commands)))))
