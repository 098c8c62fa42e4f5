"""``python -m bench peer_queue``: queue throughput and latency, Gristmill beside its peers.

Scenarios (see bench/README.md): a backlog of no-op jobs enqueued then drained by 1
and 2 worker processes; a sustained mix of single-job enqueues and draining for a
fixed window; enqueue-to-start latency of single jobs on an idle system. Systems:
Gristmill's queue, the bare asyncpg loop (the physical ceiling; drain only),
pgqueuer, procrastinate and Celery (Redis). Systems alternate within every round.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._cluster import Cluster, cluster
from bench._procs import Processes, quiet_logging
from bench._side_by_side import (
    RESULTS,
    Sampler,
    alternate,
    busy_note,
    elapsed_since,
    fmt,
    header,
    run_header,
    write_results,
)
from bench._stats import load_average
from bench.peer_queue.gristmill_side import (
    ceiling_drain,
    gristmill_drain,
    gristmill_latency,
    gristmill_sustained,
    reset_workers,
)
from bench.peers.services import NotAvailable, redis_server
from bench.peers.venv import ensure_venv, run_driver

__all__ = ["Plan", "main", "render"]

PEERS = ("pgqueuer", "procrastinate", "celery")
_DRAIN_METRICS = ("jobs_per_s", "elapsed_s", "enqueue_jobs_per_s")
_SUSTAINED_METRICS = ("jobs_per_s", "enqueued_per_s", "backlog_growth")
_LATENCY_METRICS = ("p50_ms", "p99_ms", "max_ms")


@dataclass(frozen=True, slots=True)
class Plan:
    rounds: int = 3
    jobs: int = 20_000
    seconds: float = 30.0
    latency_jobs: int = 1000
    producers: int = 4
    gap_ms: tuple[float, float] = (5.0, 15.0)
    processes: tuple[int, ...] = (1, 2)
    #: The one-at-a-time ceiling drains fewer rows: two commits per row make it slow,
    #: and a rate needs no more.
    ceiling1_jobs: int = 5000


FULL = Plan()
QUICK = Plan(jobs=2000, seconds=3.0, latency_jobs=100)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Peers:
    """Which peers can run here, and why not for the others."""

    def __init__(self, wanted: tuple[str, ...], stack: ExitStack) -> None:
        self.not_run: dict[str, str] = {}
        self.redis = ""
        self.available: list[str] = []
        if not wanted:
            return
        try:
            ensure_venv(_say)
        except Exception as exc:
            for peer in wanted:
                self.not_run[peer] = f"the peers' environment could not be installed: {exc}"
            return
        for peer in wanted:
            if peer == "celery":
                try:
                    self.redis = stack.enter_context(redis_server())
                except NotAvailable as exc:
                    self.not_run[peer] = str(exc)
                    continue
            self.available.append(peer)


def _peer_sampler(pg: Cluster, peer: str, redis: str, scenario: str, extra: list[str]) -> Sampler:
    async def sample() -> dict[str, Any]:
        args = [scenario, *extra]
        if peer == "celery":
            args += ["--redis", redis]
        else:
            dsn = await pg.fresh_database(f"bench_{peer}")
            args += ["--dsn", dsn]
        return await asyncio.to_thread(run_driver, f"{peer}_driver", args)

    return sample


async def _run(pg: Cluster, procs: Processes, plan: Plan, peers: _Peers) -> dict[str, Any]:
    doc = await run_header(pg.admin_dsn, pg.origin)
    results: dict[str, Any] = {}

    async def gm_db() -> str:
        await reset_workers(procs)
        return await pg.fresh_database("bench_gristmill", migrated=True)

    for n in plan.processes:
        systems: dict[str, Sampler] = {}

        async def gm(n: int = n) -> dict[str, Any]:
            return await gristmill_drain(await gm_db(), procs, plan.jobs, n)

        async def ceil1(n: int = n) -> dict[str, Any]:
            await reset_workers(procs)
            dsn = await pg.fresh_database("bench_ceiling")
            return await ceiling_drain(dsn, procs, min(plan.jobs, plan.ceiling1_jobs), n, 1)

        async def ceil50(n: int = n) -> dict[str, Any]:
            await reset_workers(procs)
            dsn = await pg.fresh_database("bench_ceiling")
            return await ceiling_drain(dsn, procs, plan.jobs, n, 50)

        systems = {"gristmill": gm, "ceiling_batch1": ceil1, "ceiling_batch50": ceil50}
        for peer in peers.available:
            systems[peer] = _peer_sampler(
                pg, peer, peers.redis, "drain", ["--jobs", str(plan.jobs), "--processes", str(n)]
            )
        runs = await alternate(plan.rounds, systems, _say, f"drain procs={n}")
        results[f"drain_p{n}"] = {k: v.to_dict(_DRAIN_METRICS) for k, v in runs.items()}

    for n in plan.processes:

        async def gms(n: int = n) -> dict[str, Any]:
            return await gristmill_sustained(await gm_db(), procs, plan.seconds, n, plan.producers)

        systems = {"gristmill": gms}
        for peer in peers.available:
            systems[peer] = _peer_sampler(
                pg,
                peer,
                peers.redis,
                "sustained",
                [
                    "--seconds",
                    str(plan.seconds),
                    "--processes",
                    str(n),
                    "--producers",
                    str(plan.producers),
                ],
            )
        runs = await alternate(plan.rounds, systems, _say, f"sustained procs={n}")
        results[f"sustained_p{n}"] = {k: v.to_dict(_SUSTAINED_METRICS) for k, v in runs.items()}

    async def gml() -> dict[str, Any]:
        return await gristmill_latency(await gm_db(), procs, plan.latency_jobs, plan.gap_ms)

    systems = {"gristmill": gml}
    for peer in peers.available:
        systems[peer] = _peer_sampler(
            pg,
            peer,
            peers.redis,
            "latency",
            ["--jobs", str(plan.latency_jobs), "--gap-ms", *(str(g) for g in plan.gap_ms)],
        )
    runs = await alternate(plan.rounds, systems, _say, "latency")
    results["latency"] = {k: v.to_dict(_LATENCY_METRICS) for k, v in runs.items()}
    for name in ("bench_gristmill", "bench_ceiling", *(f"bench_{p}" for p in PEERS)):
        await pg.drop_database(name)
    doc["results"] = results
    return doc


_NAMES = {
    "gristmill": "Gristmill (claim batch 100)",
    "ceiling_batch1": "bare asyncpg loop, 1 at a time (ceiling)",
    "ceiling_batch50": "bare asyncpg loop, batch 50 + one DELETE (ceiling)",
    "pgqueuer": "pgqueuer (batch 100)",
    "procrastinate": "procrastinate (psycopg3, concurrency 10)",
    "celery": "Celery + Redis (solo pool, prefetch 100)",
}


_LATENCY_NAMES = {
    "gristmill": "Gristmill (worker loop: claim 1, LISTEN/NOTIFY wake-up)",
    "pgqueuer": "pgqueuer (LISTEN/NOTIFY)",
    "procrastinate": "procrastinate (LISTEN/NOTIFY)",
    "celery": "Celery + Redis (solo pool)",
}


def _ratio(value: float, base: float) -> str:
    if not value or not base or value != value or base != base:
        return "—"
    return f"{value / base:.2f}"


def render(doc: dict[str, Any]) -> str:
    plan = doc["plan"]
    res = doc["results"]
    lines = ["# Queue throughput and latency, side by side", "", *header(doc), ""]
    lines += [
        f"## Backlog of {plan['jobs']:,} no-op jobs enqueued, then drained",
        "",
        "jobs/s = jobs / (first job started → last job completed); ratio = Gristmill's "
        "median / the system's median. The one-at-a-time ceiling drains "
        f"{min(plan['jobs'], plan['ceiling1_jobs']):,} rows.",
        "",
        "| worker processes | system | jobs/s | Gristmill ÷ system | enqueue jobs/s |",
        "|---|---|---|---|---|",
    ]
    for n in plan["processes"]:
        block = res.get(f"drain_p{n}", {})
        gm = block.get("gristmill", {}).get("metrics", {}).get("jobs_per_s", {}).get("median")
        for system, r in block.items():
            m = r["metrics"]
            lines.append(
                f"| {n} | {_NAMES.get(system, system)} | {fmt(m['jobs_per_s'])} "
                f"| {_ratio(gm or 0, m['jobs_per_s']['median'])} "
                f"| {fmt(m['enqueue_jobs_per_s'])} |"
            )
    lines += [
        "",
        f"## Sustained: {plan['producers']} producers enqueue single jobs while workers drain, "
        f"{plan['seconds']:g} s",
        "",
        "| worker processes | system | completed jobs/s | Gristmill ÷ system | enqueued jobs/s "
        "| backlog growth (jobs) |",
        "|---|---|---|---|---|---|",
    ]
    for n in plan["processes"]:
        block = res.get(f"sustained_p{n}", {})
        gm = block.get("gristmill", {}).get("metrics", {}).get("jobs_per_s", {}).get("median")
        for system, r in block.items():
            m = r["metrics"]
            lines.append(
                f"| {n} | {_NAMES.get(system, system)} | {fmt(m['jobs_per_s'])} "
                f"| {_ratio(gm or 0, m['jobs_per_s']['median'])} | {fmt(m['enqueued_per_s'])} "
                f"| {fmt(m['backlog_growth'])} |"
            )
    lines += [
        "",
        f"## Enqueue → job start on an idle system ({plan['latency_jobs']:,} single jobs, "
        f"{plan['gap_ms'][0]:g}-{plan['gap_ms'][1]:g} ms apart, one worker process)",
        "",
        "| system | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
    ]
    for system, r in res.get("latency", {}).items():
        m = r["metrics"]
        lines.append(
            f"| {_LATENCY_NAMES.get(system, _NAMES.get(system, system))} "
            f"| {fmt(m['p50_ms'], 2)} | {fmt(m['p99_ms'], 2)} | {fmt(m['max_ms'], 2)} |"
        )
    failures = [
        f"- {_NAMES.get(s, s)} ({key}): {err}"
        for key, block in res.items()
        for s, r in block.items()
        for err in r["errors"]
    ]
    failures += [f"- {peer}: not run: {why}" for peer, why in doc.get("not_run", {}).items()]
    if failures:
        lines += ["", "## Not measured", "", *failures]
    return "\n".join(lines) + "\n"


def run(plan: Plan, peers: tuple[str, ...], out: Path, mode: str) -> dict[str, Any]:
    quiet_logging()
    started = time.perf_counter()
    load_before = load_average()
    with ExitStack() as stack:
        available = _Peers(peers, stack)
        pg = stack.enter_context(cluster())
        procs = stack.enter_context(Processes(max(plan.processes)))
        doc = asyncio.run(_run(pg, procs, plan, available))
    doc |= {
        "benchmark": "peer_queue",
        "mode": mode,
        "rounds": plan.rounds,
        "plan": asdict(plan),
        "not_run": available.not_run,
        "duration_s": elapsed_since(started),
        "load_average": {"before": load_before, "after": load_average()},
    }
    note = busy_note(load_before, doc["cores"] or 1)
    doc["notes"] = ([note] if note else []) + (
        ["quick run: small sizes, use the full run for figures"] if mode == "quick" else []
    )
    markdown = render(doc)
    write_results(out, "peer_queue", doc, markdown)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peer_queue", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--peers", default=",".join(PEERS), help="comma-separated, empty for Gristmill only"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    base = QUICK if args.quick else FULL
    plan = Plan(**{**asdict(base), "rounds": max(args.rounds, 1)})
    peers = tuple(p for p in args.peers.split(",") if p)
    doc = run(plan, peers, args.out, "quick" if args.quick else "full")
    print(render(doc))
    return 0
