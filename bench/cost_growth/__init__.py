"""``python -m bench cost_growth``: what a bigger queue, more workers and a long history cost.

* Claim latency with 1k, 100k and 1M queued rows (``queue_throughput``'s claim-latency
  scenario, one ``Queue.claim(limit=1)`` at a time on an idle server).
* Claim + complete throughput from the top of the same backlogs (1 worker process,
  claim batch 100), next to the bare asyncpg loop draining the same number of rows
  from a trivial table holding as many.
* Throughput with 1, 2 and 4 worker processes (a backlog drained, claim batch 100),
  next to the bare loop (batch 50, one DELETE) with as many processes.
* Table sizes while 1M jobs go through claim + complete with retention on: the
  backlog is loaded in chunks, drained by 2 worker processes, and after every chunk
  the dispatcher's purge (``Queue.purge``) runs with a short retention window, as its
  maintenance loop would; sizes of every queue table (with indexes and TOAST) after
  each chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._cluster import Cluster, cluster
from bench._procs import Context, Processes, quiet_logging
from bench._side_by_side import (
    RESULTS,
    busy_note,
    elapsed_since,
    fmt,
    header,
    run_header,
    write_results,
)
from bench._stats import Measurements, load_average
from bench.peer_queue.gristmill_side import reset_workers
from bench.queue_throughput._jobs import TAG, bulk_load
from bench.queue_throughput.claim_latency import LatencyPlan, measure_claim_latency
from bench.queue_throughput.drain import DrainPlan, DrainQueue, measure_drains
from gristmill.common.db import create_pool
from gristmill.common.queue import Queue

__all__ = ["Plan", "main", "render"]

_TABLES = ("jobs", "job_queue", "jobs_completed", "job_runtime", "job_logs")
_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class Plan:
    rounds: int = 3
    backlogs: tuple[int, ...] = (1000, 100_000, 1_000_000)
    latency_samples: int = 1000
    latency_budget_s: float = 15.0
    #: Jobs claimed + completed from the top of each backlog, per round.
    top_jobs: int = 5000
    processes: tuple[int, ...] = (1, 2, 4)
    drain_jobs: int = 20_000
    history_jobs: int = 1_000_000
    history_chunk: int = 50_000
    retention_s: float = 10.0


FULL = Plan()
QUICK = Plan(
    backlogs=(1000, 100_000),
    latency_samples=200,
    latency_budget_s=2.0,
    top_jobs=1000,
    drain_jobs=2000,
    history_jobs=60_000,
    history_chunk=10_000,
    retention_s=2.0,
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class _DrainSome:
    """Claim ``batch`` at a time and complete each, until ``count`` jobs are done."""

    dsn: str
    batch: int
    count: int

    async def run(self, ctx: Context) -> float:
        pool = await ctx.pool(self.dsn, 10)
        queue = Queue(pool, notify=False)
        worker = f"bench-{os.getpid()}"
        done = 0
        started = time.perf_counter()
        while done < self.count:
            jobs = await queue.claim(worker, [TAG], min(self.batch, self.count - done))
            if not jobs:
                raise RuntimeError("the backlog ran dry")
            await asyncio.gather(*(queue.complete(job, None) for job in jobs))
            done += len(jobs)
        return done / (time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class _CeilingSome:
    """The bare loop on a trivial table: claim 50 (SKIP LOCKED), one DELETE, ``count`` rows."""

    dsn: str
    count: int

    async def run(self, ctx: Context) -> float:
        (conn,) = await ctx.connections(self.dsn, 1)
        done = 0
        started = time.perf_counter()
        while done < self.count:
            ids = [
                r[0]
                for r in await conn.fetch(
                    "UPDATE bench_backlog SET running = true WHERE id IN (SELECT id FROM "
                    "bench_backlog WHERE NOT running ORDER BY id LIMIT $1 FOR UPDATE SKIP "
                    "LOCKED) RETURNING id",
                    min(50, self.count - done),
                )
            ]
            await conn.execute("DELETE FROM bench_backlog WHERE id = ANY($1::bigint[])", ids)
            done += len(ids)
        return done / (time.perf_counter() - started)


_CEILING_BACKLOG = """
DROP TABLE IF EXISTS bench_backlog;
CREATE TABLE bench_backlog (
    id      bigint PRIMARY KEY,
    running boolean NOT NULL DEFAULT false,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX bench_backlog_claim_idx ON bench_backlog (id) WHERE NOT running;
"""


async def _top_of_backlog(pg: Cluster, procs: Processes, plan: Plan) -> list[Measurements]:
    points = []
    for backlog in plan.backlogs:
        dsn = pg.dsn_for(f"bench_latency_{backlog}")
        point = Measurements({"backlog": backlog, "jobs": min(backlog, plan.top_jobs)})
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            await pool.execute(_CEILING_BACKLOG)
            await pool.execute(
                "INSERT INTO bench_backlog (id) SELECT g FROM generate_series(1, $1::int) g",
                backlog,
            )
            await pool.execute("VACUUM ANALYZE bench_backlog")
            for round_no in range(1, plan.rounds + 1):
                count = min(backlog, plan.top_jobs)
                (rate,) = await procs.run_all([_DrainSome(dsn, 100, count)], _TIMEOUT_S)
                (ceiling,) = await procs.run_all([_CeilingSome(dsn, count)], _TIMEOUT_S)
                point.add(jobs_per_s=rate, ceiling_jobs_per_s=ceiling)
                _say(
                    f"round {round_no} top of backlog {backlog:>9,}: gristmill {rate:8.0f} "
                    f"jobs/s, bare loop {ceiling:8.0f} rows/s"
                )
                # Refill both to their size, vacuum, as between claim-latency rounds.
                await bulk_load(pool, count)
                await pool.execute(
                    "INSERT INTO bench_backlog (id) SELECT g FROM generate_series("
                    "(SELECT coalesce(max(id), 0) + 1 FROM bench_backlog), "
                    "(SELECT coalesce(max(id), 0) FROM bench_backlog) + $1::int) g",
                    count,
                )
                await pool.execute("VACUUM ANALYZE bench_backlog")
                await pool.execute("VACUUM ANALYZE job_queue")
        finally:
            await pool.close()
        points.append(point)
    return points


async def _sizes(pool: Any) -> dict[str, dict[str, float]]:
    out = {}
    for table in _TABLES:
        row = await pool.fetchrow(
            "SELECT pg_total_relation_size($1::regclass) AS total, "
            "pg_relation_size($1::regclass) AS heap, n_live_tup, n_dead_tup "
            "FROM pg_stat_user_tables WHERE relid = $1::regclass",
            table,
        )
        out[table] = {
            "total_mb": row["total"] / 2**20,
            "heap_mb": row["heap"] / 2**20,
            "live_rows": float(row["n_live_tup"]),
            "dead_rows": float(row["n_dead_tup"]),
        }
    return out


async def _history(pg: Cluster, procs: Processes, plan: Plan) -> dict[str, Any]:
    await reset_workers(procs)
    dsn = await pg.fresh_database("bench_history", migrated=True)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    trajectory: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        queue = Queue(pool, notify=False)
        completed = purged = 0
        while completed < plan.history_jobs:
            chunk = min(plan.history_chunk, plan.history_jobs - completed)
            await bulk_load(pool, chunk)
            results = await procs.run_all([DrainQueue(dsn, 100) for _ in range(2)], _TIMEOUT_S)
            completed += sum(r.jobs for r in results)
            purged += await queue.purge(plan.retention_s)
            sizes = await _sizes(pool)
            trajectory.append(
                {
                    "completed": completed,
                    "purged": purged,
                    "elapsed_s": elapsed_since(started),
                    "sizes": sizes,
                }
            )
            total = sum(s["total_mb"] for s in sizes.values())
            _say(f"history: {completed:>9,} completed, {purged:>9,} purged, tables {total:.1f} MB")
        await asyncio.sleep(plan.retention_s)
        purged += await queue.purge(plan.retention_s)
        await pool.execute("ANALYZE")
        final = await _sizes(pool)
        await pool.execute("VACUUM")
        after_vacuum = await _sizes(pool)
    finally:
        await pool.close()
    await reset_workers(procs)
    await pg.drop_database("bench_history")
    return {
        "completed": completed,
        "purged": purged,
        "retention_s": plan.retention_s,
        "duration_s": elapsed_since(started),
        "trajectory": trajectory,
        "final": final,
        "after_vacuum": after_vacuum,
    }


async def _run(pg: Cluster, procs: Processes, plan: Plan) -> dict[str, Any]:
    doc = await run_header(pg.admin_dsn, pg.origin)

    async def database(name: str) -> str:
        return await pg.fresh_database(name, migrated=True)

    latency = await measure_claim_latency(
        database,
        LatencyPlan(plan.rounds, plan.backlogs, plan.latency_samples, plan.latency_budget_s),
        _say,
    )
    top = await _top_of_backlog(pg, procs, plan)
    await reset_workers(procs)
    for backlog in plan.backlogs:
        await pg.drop_database(f"bench_latency_{backlog}")
    dsn = await pg.fresh_database("bench_scaling", migrated=True)
    drains = await measure_drains(
        dsn,
        procs,
        DrainPlan(
            rounds=plan.rounds,
            jobs=plan.drain_jobs,
            ceiling_jobs=plan.drain_jobs,
            processes=plan.processes,
            claim_batches=(100,),
            ceiling_modes=((50, True),),
        ),
        _say,
    )
    await reset_workers(procs)
    await pg.drop_database("bench_scaling")
    history = await _history(pg, procs, plan)
    doc["results"] = {
        "claim_latency": [p.to_dict() for p in latency],
        "top_of_backlog": [p.to_dict() for p in top],
        "scaling": {
            "queue": [p.to_dict() for p in drains.queue],
            "ceiling": [p.to_dict() for p in drains.ceiling],
        },
        "history": history,
    }
    return doc


def render(doc: dict[str, Any]) -> str:
    res = doc["results"]
    lines = ["# Cost growth", "", *header(doc), ""]
    lines += [
        "## Claim latency and throughput by backlog (idle server, one worker process)",
        "",
        "| queued rows | claim p50 ms | claim p99 ms | claim plan uses the claim index "
        "| claim+complete jobs/s (batch 100) | bare loop rows/s (batch 50, same backlog) |",
        "|---|---|---|---|---|---|",
    ]
    for lat, top in zip(res["claim_latency"], res["top_of_backlog"], strict=True):
        m, t = lat["metrics"], top["metrics"]
        lines.append(
            f"| {lat['params']['backlog']:,} | {fmt(m['p50_ms'], 2)} | {fmt(m['p99_ms'], 2)} "
            f"| {'yes' if lat['claim_uses_claim_index'] else 'no'} | {fmt(t['jobs_per_s'])} "
            f"| {fmt(t['ceiling_jobs_per_s'])} |"
        )
    lines += [
        "",
        f"## Throughput by worker processes ({doc['plan']['drain_jobs']:,} jobs drained)",
        "",
        "| worker processes | Gristmill jobs/s (batch 100) | bare loop jobs/s (batch 50, one "
        "DELETE) | Gristmill ÷ bare loop | machine CPU busy (Gristmill) |",
        "|---|---|---|---|---|",
    ]
    for q, c in zip(res["scaling"]["queue"], res["scaling"]["ceiling"], strict=True):
        qm, cm = q["metrics"], c["metrics"]
        ratio = qm["jobs_per_s"]["median"] / cm["jobs_per_s"]["median"]
        lines.append(
            f"| {q['params']['processes']} | {fmt(qm['jobs_per_s'])} | {fmt(cm['jobs_per_s'])} "
            f"| {ratio:.2f} | {qm['machine_cpu_busy']['median']:.0%} |"
        )
    h = res["history"]
    lines += [
        "",
        f"## Table sizes with retention on ({h['completed']:,} jobs claimed and completed, "
        f"retention {h['retention_s']:g} s, purge after every chunk; {h['duration_s']:.0f} s)",
        "",
        "| table | after the last purge: total MB (heap MB) | live rows | dead rows "
        "| after a plain VACUUM: total MB |",
        "|---|---|---|---|---|",
    ]
    for table, s in h["final"].items():
        v = h["after_vacuum"][table]
        lines.append(
            f"| {table} | {s['total_mb']:.1f} ({s['heap_mb']:.1f}) | {s['live_rows']:,.0f} "
            f"| {s['dead_rows']:,.0f} | {v['total_mb']:.1f} |"
        )
    lines += ["", "Total size of the queue tables as jobs went through:", ""]
    lines += ["| jobs completed | purged | total MB |", "|---|---|---|"]
    step = max(1, len(h["trajectory"]) // 10)
    for point in h["trajectory"][step - 1 :: step]:
        total = sum(s["total_mb"] for s in point["sizes"].values())
        lines.append(f"| {point['completed']:,} | {point['purged']:,} | {total:.1f} |")
    return "\n".join(lines) + "\n"


def run(plan: Plan, out: Path, mode: str) -> dict[str, Any]:
    quiet_logging()
    started = time.perf_counter()
    load_before = load_average()
    with cluster() as pg, Processes(max(plan.processes)) as procs:
        doc = asyncio.run(_run(pg, procs, plan))
    doc |= {
        "benchmark": "cost_growth",
        "mode": mode,
        "rounds": plan.rounds,
        "plan": dataclasses.asdict(plan),
        "duration_s": elapsed_since(started),
        "load_average": {"before": load_before, "after": load_average()},
    }
    note = busy_note(load_before, doc["cores"] or 1)
    doc["notes"] = ([note] if note else []) + (
        ["quick run: the largest backlog is 100,000 rows and 60,000 jobs go through the history"]
        if mode == "quick"
        else []
    )
    markdown = render(doc)
    write_results(out, "cost_growth", doc, markdown)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cost_growth", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    base = QUICK if args.quick else FULL
    plan = dataclasses.replace(base, rounds=max(args.rounds, 1))
    doc = run(plan, args.out, "quick" if args.quick else "full")
    print(render(doc))
    return 0
