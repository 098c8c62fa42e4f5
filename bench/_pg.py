"""A throwaway PostgreSQL server for one benchmark run, and the machine it runs on.

The server is the embedded one Gristmill ships, started with its production
defaults (``durable=True``: ``fsync``, ``synchronous_commit`` and
``full_page_writes`` on), in a temporary directory removed afterwards.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from gristmill.cli.postgres import EmbeddedPostgres
from gristmill.common.db import migrate

__all__ = ["Machine", "describe_machine", "fresh_database", "server"]

#: Server settings recorded with every result: they bound what commits cost.
_RECORDED_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "max_connections",
)
_PROBES = 200


@contextmanager
def server() -> Iterator[EmbeddedPostgres]:
    """Start a durable embedded server in a temporary data directory; remove it after."""
    # Directly under the system temporary directory: when run as root, PostgreSQL runs
    # as an unprivileged system user that must be able to reach the data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="gristmill-bench-pg-"))
    pg = EmbeddedPostgres(data_dir, durable=True)
    try:
        pg.start()
        yield pg
    finally:
        try:
            pg.stop("fast")
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


async def fresh_database(pg: EmbeddedPostgres, name: str) -> str:
    """Create database ``name`` with every migration applied; return its URL."""
    admin = await asyncpg.connect(pg.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = pg.dsn_for(name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


@dataclass(frozen=True, slots=True)
class Machine:
    cpu: str
    cores: int
    memory_gib: float
    os: str
    python: str
    postgres: str
    settings: dict[str, str]
    #: Client-observed p50 of ``SELECT 1`` (a round trip) and of a one-row INSERT
    #: committed on its own (a round trip plus a WAL flush): what single-job paths pay.
    round_trip_p50_ms: float
    commit_p50_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


async def _timed_ms(conn: asyncpg.Connection, sql: str, args: list[tuple[object, ...]]) -> float:
    """p50 wall time of ``sql`` run once per argument tuple, in milliseconds."""
    samples: list[float] = []
    for values in args:
        started = time.perf_counter()
        await conn.execute(sql, *values)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def describe_machine(dsn: str) -> Machine:
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = {name: await conn.fetchval(f"SHOW {name}") for name in _RECORDED_SETTINGS}
        round_trip = await _timed_ms(conn, "SELECT 1", [()] * _PROBES)
        await conn.execute("CREATE TABLE bench_commit_probe (id int PRIMARY KEY)")
        try:
            commit = await _timed_ms(
                conn,
                "INSERT INTO bench_commit_probe VALUES ($1)",
                [(i,) for i in range(_PROBES)],
            )
        finally:
            await conn.execute("DROP TABLE bench_commit_probe")
    finally:
        await conn.close()
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=_memory_gib(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        postgres=str(version),
        settings=settings,
        round_trip_p50_ms=round_trip,
        commit_p50_ms=commit,
    )
