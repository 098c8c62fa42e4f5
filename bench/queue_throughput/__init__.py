"""Queue throughput, claim latency and worker wake-up, on an embedded durable Postgres.

``python -m bench queue_throughput [--quick]``: see bench/README.md for what each
scenario measures and what bounds it. Results go to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._pg import describe_machine, fresh_database, server
from bench._procs import Processes, quiet_logging
from bench._stats import load_average
from bench.queue_throughput.claim_latency import LatencyPlan, measure_claim_latency
from bench.queue_throughput.drain import DrainPlan, measure_drains
from bench.queue_throughput.report import render_markdown
from bench.queue_throughput.wakeup import (
    NotifyPlan,
    WakePlan,
    measure_notify_cost,
    measure_wakeup,
)
from gristmill.cli.postgres import EmbeddedPostgres

__all__ = ["main"]

_RESULTS = Path(__file__).resolve().parent.parent / "results"
_ROUNDS = 3
#: Load average per core above which the run is flagged as disturbed.
_BUSY_LOAD = 0.25


@dataclass(frozen=True, slots=True)
class Plan:
    drain: DrainPlan
    latency: LatencyPlan
    wake: WakePlan
    notify: NotifyPlan
    notes: tuple[str, ...] = ()


FULL = Plan(
    drain=DrainPlan(rounds=_ROUNDS, jobs=3000, ceiling_jobs=6000),
    latency=LatencyPlan(rounds=_ROUNDS, backlogs=(1000, 1_000_000), samples=1000, budget_s=15.0),
    wake=WakePlan(rounds=_ROUNDS, jobs=200, idle_s=2.0),
    notify=NotifyPlan(rounds=_ROUNDS, seconds=3.0),
)

QUICK = Plan(
    drain=DrainPlan(rounds=_ROUNDS, jobs=600, ceiling_jobs=1200),
    latency=LatencyPlan(rounds=_ROUNDS, backlogs=(1000, 100_000), samples=200, budget_s=2.0),
    wake=WakePlan(rounds=_ROUNDS, jobs=25, idle_s=0.6),
    notify=NotifyPlan(rounds=_ROUNDS, seconds=0.75),
    notes=(
        "quick run: the large claim-latency backlog is 100,000 rows instead of 1,000,000, "
        "and every scenario runs fewer jobs; use the full run for figures",
    ),
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _run(pg: EmbeddedPostgres, procs: Processes, plan: Plan) -> dict[str, Any]:
    dsn = await fresh_database(pg, "bench_queue")
    machine = await describe_machine(dsn)
    _say(
        f"PostgreSQL {machine.postgres}: fsync={machine.settings['fsync']} "
        f"synchronous_commit={machine.settings['synchronous_commit']}"
    )
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        _say(f"-- {name} done in {seconds[name]:.0f}s")
        clock = now

    drains = await measure_drains(dsn, procs, plan.drain, _say)
    lap("throughput")
    wake = await measure_wakeup(dsn, procs, plan.wake, _say)
    lap("wakeup")
    notify = await measure_notify_cost(dsn, plan.notify, _say)
    lap("notify_cost")
    # Last: loading the big backlog leaves autovacuum work behind.
    latency = await measure_claim_latency(lambda name: fresh_database(pg, name), plan.latency, _say)
    lap("claim_latency")
    return {
        "scenario_s": seconds,
        "machine": machine.to_dict(),
        "throughput": {
            "queue": [p.to_dict() for p in drains.queue],
            "ceiling": [p.to_dict() for p in drains.ceiling],
        },
        "claim_latency": [p.to_dict() for p in latency],
        "wakeup": [p.to_dict() for p in wake],
        "notify_cost": [p.to_dict() for p in notify],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench queue_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, under 2 minutes (CI smoke)"
    )
    parser.add_argument(
        "--out", type=Path, default=_RESULTS, help=f"results directory (default {_RESULTS})"
    )
    args = parser.parse_args(argv)
    quiet_logging()
    # A plain `kill` must still stop the server and the worker processes.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    plan = QUICK if args.quick else FULL
    date = datetime.now(UTC)
    started = time.perf_counter()
    load_before = load_average()
    with server() as pg, Processes(2) as procs:
        results = asyncio.run(_run(pg, procs, plan))
    load_after = load_average()
    notes = list(plan.notes)
    cores = results["machine"]["cores"]
    if load_before > _BUSY_LOAD * cores:
        notes.append(
            f"the machine was busy before the run (1-minute load average {load_before:.1f} "
            f"on {cores} cores): other processes competed for the CPU; rerun on a quiet "
            "machine before trusting these figures"
        )
    doc: dict[str, Any] = {
        "benchmark": "queue_throughput",
        "mode": "quick" if args.quick else "full",
        "date": date.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - started,
        "rounds": _ROUNDS,
        "load_average": {"before": load_before, "after": load_after},
        "plan": dataclasses.asdict(plan),
        "notes": notes,
        **results,
    }
    markdown = render_markdown(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "queue_throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "queue_throughput.md").write_text(markdown)
    print(markdown)
    _say(f"written to {args.out}/queue_throughput.{{json,md}}")
    return 0
