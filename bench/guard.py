"""``python -m bench guard``: the regression guard's smoke run (seconds, not minutes).

Measures, in one run on one server, a few figures of Gristmill and the bare asyncpg
claim + DELETE loop (one row at a time: a round trip and a commit per claim and per
completion, the floor of any per-job path), and expresses each Gristmill figure as a
slowdown against that loop: Gristmill's time per job (or per flow step) divided by
the loop's time per row. Slowdowns are ratios, so they hold across machines and load
far better than absolute times. Each figure is the best of a few repetitions.

``tests/bench/test_regression_guard.py`` runs this and fails only when a slowdown is
more than ``FACTOR`` times the committed baseline (``bench/guard_baseline.json``);
``python -m bench guard --update`` measures and rewrites the baseline (do it on a
quiet machine, and commit it with the change that moved it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench._cluster import Cluster, cluster
from bench._gristmill_up import gristmill_up
from bench._procs import Processes, quiet_logging
from bench._stats import load_average
from bench.flow_overhead import PYTHON, _run_flow
from bench.peer_queue.gristmill_side import _enqueue_backlog, reset_workers
from bench.queue_throughput.drain import DrainCeiling, DrainQueue, DrainResult

__all__ = ["BASELINE", "FACTOR", "compare", "measure"]

BASELINE = Path(__file__).resolve().parent / "guard_baseline.json"
#: A figure fails the guard when its slowdown exceeds the baseline's by this factor.
FACTOR = 3.0
_JOBS = 600
_REPEATS = 3
_FLOW_STEPS = 8
_TOKEN = "bench-guard-token-0123456789abcdef"
_TIMEOUT_S = 300.0


def _per_job_s(results: list[DrainResult]) -> float:
    jobs = sum(r.jobs for r in results)
    elapsed = (max(r.ended_ns for r in results) - min(r.started_ns for r in results)) / 1e9
    return elapsed / jobs


async def _queue_figures(pg: Cluster, procs: Processes) -> dict[str, float]:
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = min(best.get(name, value), value)

    for _ in range(_REPEATS):
        for batch in (1, 100):
            await reset_workers(procs)
            dsn = await pg.fresh_database("bench_guard", migrated=True)
            await _enqueue_backlog(dsn, _JOBS)
            keep(
                f"queue_batch{batch}",
                _per_job_s(await procs.run_all([DrainQueue(dsn, batch)], _TIMEOUT_S)),
            )
        await reset_workers(procs)
        dsn = await pg.fresh_database("bench_guard")
        await _ceiling_table(dsn)
        keep("ceiling", _per_job_s(await procs.run_all([DrainCeiling(dsn, 1, False)], _TIMEOUT_S)))
    await reset_workers(procs)
    await pg.drop_database("bench_guard")
    return best


async def _ceiling_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_ceiling (id bigint PRIMARY KEY, running boolean NOT NULL "
            "DEFAULT false, payload jsonb NOT NULL DEFAULT '{}'::jsonb);"
            "CREATE INDEX bench_ceiling_claim_idx ON bench_ceiling (id) WHERE NOT running;"
        )
        await conn.execute(
            "INSERT INTO bench_ceiling (id) SELECT g FROM generate_series(1, $1::int) g", _JOBS
        )
        await conn.execute("VACUUM ANALYZE bench_ceiling")
    finally:
        await conn.close()


def _flow_per_step_s(dsn: str) -> float:
    with gristmill_up(dsn, _TOKEN, workers=1, extra_env={"GRISTMILL_PYTHON_BIN": PYTHON}) as base:
        headers = {"Authorization": f"Bearer {_TOKEN}"}
        with httpx.Client(timeout=120, headers=headers) as client:
            _run_flow(client, base, 2, 10)  # warm-up
            return min(_run_flow(client, base, _FLOW_STEPS, 10) for _ in range(_REPEATS)) / (
                _FLOW_STEPS
            )


async def _measure(pg: Cluster, procs: Processes) -> dict[str, Any]:
    queue = await _queue_figures(pg, procs)
    dsn = await pg.fresh_database("bench_guard_flow", migrated=True)
    flow_step = await asyncio.to_thread(_flow_per_step_s, dsn)
    await pg.drop_database("bench_guard_flow")
    ceiling = queue.pop("ceiling")
    slowdowns = {name: value / ceiling for name, value in queue.items()}
    slowdowns["flow_step"] = flow_step / ceiling
    return {
        "ceiling_per_row_ms": ceiling * 1000,
        "per_job_ms": {name: value * 1000 for name, value in queue.items()}
        | {"flow_step": flow_step * 1000},
        "slowdowns": slowdowns,
    }


def measure() -> dict[str, Any]:
    """One smoke run on its own server (or ``GRISTMILL_BENCH_DSN``)."""
    with cluster() as pg, Processes(1) as procs:
        return asyncio.run(_measure(pg, procs))


def compare(measured: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """The figures whose slowdown grew by more than ``FACTOR``; empty when all is well."""
    failures = []
    for name, base in baseline["slowdowns"].items():
        now = measured["slowdowns"].get(name)
        if now is None:
            failures.append(f"{name}: not measured")
        elif now > FACTOR * base:
            failures.append(
                f"{name}: {now:.1f}x the bare loop's time per row, baseline {base:.1f}x "
                f"(limit {FACTOR:g}x that)"
            )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench guard", description=__doc__)
    parser.add_argument("--update", action="store_true", help=f"rewrite {BASELINE.name}")
    args = parser.parse_args(argv)
    quiet_logging()
    started = time.perf_counter()
    measured = measure()
    measured["duration_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(measured, indent=2))
    if args.update:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        baseline = {
            "measured": f"{when}, 1-minute load average {load_average():.1f}",
            "slowdowns": measured["slowdowns"],
        }
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
        print(f"baseline written to {BASELINE}", file=sys.stderr)
        return 0
    failures = compare(measured, json.loads(BASELINE.read_text()))
    for failure in failures:
        print(f"REGRESSION {failure}", file=sys.stderr)
    return 1 if failures else 0
