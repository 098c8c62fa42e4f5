"""Kafka trigger throughput: messages on a topic → jobs, and completed no-op jobs, per second.

``python -m bench triggers [--duration 60]``: see bench/README.md. A producer keeps
the trigger's topic a bounded backlog ahead of the jobs inserted, so the trigger is
never starved; two figures are counted over the measured window (after a warm-up):
*ingest*, messages that became durable jobs per second, and *completed*, jobs
completed per second by no-op completers (claim, complete, one transaction per job),
each with the rate of every 5-second slice beside it to show whether it holds.
Results go to ``bench/results/triggers.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench._pg import describe_machine, fresh_database, server
from bench._procs import quiet_logging
from bench._stats import load_average, summarize
from gristmill.cli.broker import LocalBroker
from gristmill.cli.postgres import EmbeddedPostgres
from gristmill.common import kafka_triggers, scripts
from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.bus.kafka import ensure_topics
from gristmill.common.contracts.topics import Topic
from gristmill.common.db.pool import create_pool
from gristmill.common.queue import Queue
from gristmill.common.resources import ResourceStore
from gristmill.common.settings import load_settings
from gristmill.common.tokens import ensure_bootstrap
from gristmill.common.variables import VariableStore
from gristmill.dispatcher.service import Dispatcher
from gristmill.triggers.kafka import ConsumerSettings, KafkaTriggerSource, SourceSettings
from gristmill.triggers.service import TriggerContext

__all__ = ["main"]

_RESULTS = Path(__file__).resolve().parent.parent / "results"
_SLICE_S = 5.0
#: Messages the producer keeps ahead of the jobs inserted.
_BACKLOG = 5000
_PRODUCE_BATCH = 500
_BUSY_LOAD = 0.25
_TOPIC = "bench-triggers"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Counts:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self.produced = 0
        self.completed = 0

    @property
    def inserted(self) -> int:
        return self._dispatcher.inserted


async def _produce(bootstrap: str, counts: _Counts, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        while not stop.is_set():
            if counts.produced - counts.inserted >= _BACKLOG:
                await asyncio.sleep(0.01)
                continue
            acks = []
            for _ in range(_PRODUCE_BATCH):
                n = counts.produced
                acks.append(
                    await producer.send(_TOPIC, json.dumps({"n": n}).encode(), key=str(n).encode())
                )
                counts.produced += 1
            await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def _complete(queue: Queue, counts: _Counts, stop: asyncio.Event, name: str) -> None:
    """A no-op worker: claim up to 100 jobs, complete each (one transaction per job)."""
    while not stop.is_set():
        claimed = await queue.claim(name, ["python3"], limit=100)
        for job in claimed:
            await queue.complete(job, None)
            counts.completed += 1
        if not claimed:
            await asyncio.sleep(0.005)


async def _setup(pool: asyncpg.Pool, bootstrap: str, partitions: int) -> None:
    await ensure_bootstrap(pool, admin_token=None)
    async with pool.acquire() as conn:
        await scripts.create_script(
            conn,
            "main",
            scripts.NewScript(
                path="u/admin/noop", content="def main(n: int):\n    pass\n", language="python3"
            ),
            created_by="admin",
        )
    await ResourceStore(pool, VariableStore(pool)).create(
        "main",
        "u/admin/bench_kafka",
        value={"brokers": [bootstrap]},
        resource_type="any",
        description="",
        created_by="admin",
    )
    await ensure_topics(bootstrap, {_TOPIC: partitions})
    await kafka_triggers.create(
        pool,
        "main",
        "u/admin/bench_trigger",
        kafka_triggers.TriggerSettings(
            kafka_resource_path="u/admin/bench_kafka",
            topics=[_TOPIC],
            script_path="u/admin/noop",
            auto_offset_reset="earliest",
        ),
        editor="admin",
    )


async def _measure(counts: _Counts, duration: float) -> dict[str, Any]:
    start = last = time.perf_counter()
    start_in = last_in = counts.inserted
    start_done = last_done = counts.completed
    ingest: list[float] = []
    done: list[float] = []
    while last - start < duration:
        await asyncio.sleep(min(_SLICE_S, duration - (last - start)))
        now, inserted, completed = time.perf_counter(), counts.inserted, counts.completed
        ingest.append((inserted - last_in) / (now - last))
        done.append((completed - last_done) / (now - last))
        _say(f"  {now - start:5.0f}s  ingest {ingest[-1]:6.0f}/s  completed {done[-1]:6.0f}/s")
        last, last_in, last_done = now, inserted, completed
    elapsed = last - start
    return {
        "measured_s": round(elapsed, 2),
        "ingest_per_s": (last_in - start_in) / elapsed,
        "completed_per_s": (last_done - start_done) / elapsed,
        "ingest_slices": summarize(ingest).to_dict(),
        "completed_slices": summarize(done).to_dict(),
    }


async def _run(dsn: str, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    machine = await describe_machine(dsn)
    pool = await create_pool(dsn, min_size=2, max_size=12)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await _setup(pool, bootstrap, args.partitions)
        bus = InProcessBus()
        queue = Queue(pool, notify=False)
        dispatcher = Dispatcher(pool, queue)
        counts = _Counts(dispatcher)
        settings = load_settings({}, database_url=dsn, kafka_bootstrap=bootstrap)
        source = KafkaTriggerSource(
            TriggerContext(pool=pool, bus=bus, settings=settings),
            SourceSettings(consumer=ConsumerSettings(server_id="bench", session_timeout_ms=3000)),
        )
        tasks.append(
            asyncio.create_task(
                bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
            )
        )
        tasks.append(asyncio.create_task(source.run(stop)))
        tasks.append(asyncio.create_task(_produce(bootstrap, counts, stop)))
        tasks.extend(
            asyncio.create_task(_complete(queue, counts, stop, f"bench-{i}"))
            for i in range(args.completers)
        )
        _say(f"warming up for {args.warmup:.0f}s (the trigger joins its group)...")
        await asyncio.sleep(args.warmup)
        _say(f"measuring for {args.duration:.0f}s...")
        figures = await _measure(counts, args.duration)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
        jobs = await pool.fetchval("SELECT count(*) FROM jobs WHERE trigger_kind = 'kafka'")
        parked = await pool.fetchval("SELECT count(*) FROM kafka_trigger_parked")
        return {
            "machine": machine.to_dict(),
            **figures,
            "totals": {
                "produced": counts.produced,
                "jobs": jobs,
                "completed": counts.completed,
                "parked": parked,
            },
        }
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()


def _markdown(doc: dict[str, Any]) -> str:
    ingest, done = doc["ingest_slices"], doc["completed_slices"]
    totals = doc["totals"]
    lines = [
        f"## triggers ({doc['date']})",
        "",
        f"Kafka messages → jobs, {doc['measured_s']:.0f} s measured after "
        f"{doc['warmup_s']:.0f} s of warm-up; {doc['partitions']} partitions, "
        f"{doc['completers']} no-op completers; load average before "
        f"{doc['load_average']['before']:.2f}, after {doc['load_average']['after']:.2f} "
        f"on {doc['machine']['cores']} cores.",
        "",
        f"| figure | over the window | {_SLICE_S:.0f}-second slices: median (min..max) |",
        "|---|---|---|",
        f"| ingest: messages → durable jobs per second | {doc['ingest_per_s']:.0f} | "
        f"{ingest['median']:.0f} ({ingest['min']:.0f}..{ingest['max']:.0f}) |",
        f"| completed no-op jobs per second | {doc['completed_per_s']:.0f} | "
        f"{done['median']:.0f} ({done['min']:.0f}..{done['max']:.0f}) |",
        "",
        f"Whole run: {totals['produced']} messages produced, {totals['jobs']} jobs, "
        f"{totals['completed']} completed, {totals['parked']} parked.",
    ]
    lines.extend(f"\n> {note}" for note in doc["notes"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench triggers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    parser.add_argument("--completers", type=int, default=4, help="no-op completer loops")
    parser.add_argument(
        "--out", type=Path, default=_RESULTS, help=f"results directory (default {_RESULTS})"
    )
    args = parser.parse_args(argv)
    quiet_logging()
    # A plain `kill` must still stop the server and the broker.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    date = datetime.now(UTC)
    load_before = load_average()

    async def run(pg: EmbeddedPostgres, bootstrap: str) -> dict[str, Any]:
        dsn = await fresh_database(pg, "bench_triggers")
        return await _run(dsn, bootstrap, args)

    with server() as pg, LocalBroker() as broker:
        results = asyncio.run(run(pg, broker.bootstrap))
    load_after = load_average()
    notes: list[str] = []
    cores = results["machine"]["cores"]
    if load_before > _BUSY_LOAD * cores:
        notes.append(
            f"the machine was busy before the run (1-minute load average {load_before:.1f} "
            f"on {cores} cores): other processes competed for the CPU"
        )
    doc: dict[str, Any] = {
        "benchmark": "triggers",
        "date": date.isoformat(timespec="seconds"),
        "warmup_s": args.warmup,
        "partitions": args.partitions,
        "completers": args.completers,
        "load_average": {"before": load_before, "after": load_after},
        "notes": notes,
        **results,
    }
    markdown = _markdown(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "triggers.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "triggers.md").write_text(markdown)
    print(markdown)
    _say(f"written to {args.out}/triggers.{{json,md}}")
    return 0
