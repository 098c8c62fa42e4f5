"""``python -m bench peer_flows``: the published flow benchmark, Gristmill beside DBOS and Prefect.

Two flows (Windmill's published benchmark): 40 sequential steps of ``fibo(10)`` and 10
sequential steps of ``fibo(33)``. Gristmill runs them as OpenFlow flows of rawscript
Python steps on a ``gristmill up`` with one worker loop (each step a job in a fresh
sandboxed interpreter: "normal" mode); DBOS as a workflow of checkpointed steps;
Prefect as a flow of tasks reporting to a local Prefect server on the same
PostgreSQL. Total wall time and per-step overhead = (total - pure compute measured
in the same sample) / steps. Systems alternate within every round. Windmill's own
published figures, measured on other hardware, are quoted beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench._cluster import Cluster, cluster
from bench._gristmill_up import gristmill_up
from bench._procs import quiet_logging
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
from bench.flow_overhead import FLOWS, PUBLISHED, PYTHON, _pure_compute_s, _run_flow
from bench.peers.services import NotAvailable, prefect_server
from bench.peers.venv import ensure_venv, run_driver

__all__ = ["main", "render"]

PEERS = ("dbos", "prefect")
_TOKEN = "bench-peer-flows-token-0123456789"
_METRICS = ("total_s", "compute_s", "overhead_per_step_ms")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _gristmill_sampler(client: httpx.Client, base: str, steps: int, n: int) -> Sampler:
    def sample() -> dict[str, Any]:
        total = _run_flow(client, base, steps, n)
        compute = _pure_compute_s(steps, n)
        return {
            "total_s": total,
            "compute_s": compute,
            "overhead_per_step_ms": (total - compute) / steps * 1000,
        }

    async def run() -> dict[str, Any]:
        return await asyncio.to_thread(sample)

    return run


def _peer_sampler(peer: str, common: list[str], steps: int, n: int, env: dict[str, str]) -> Sampler:
    args = ["flow", *common, "--steps", str(steps), "--n", str(n), "--warmup"]

    async def run() -> dict[str, Any]:
        return await asyncio.to_thread(run_driver, f"{peer}_driver", args, env=env)

    return run


async def _run(pg: Cluster, args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    doc = await run_header(pg.admin_dsn, pg.origin)
    not_run: dict[str, str] = {}
    peers = [p for p in args.peers.split(",") if p]
    peer_args: dict[str, tuple[list[str], dict[str, str]]] = {}
    if peers:
        try:
            ensure_venv(_say)
        except Exception as exc:
            not_run |= {p: f"the peers' environment could not be installed: {exc}" for p in peers}
            peers = []
    if "dbos" in peers:
        dsn = await pg.fresh_database("bench_dbos")
        peer_args["dbos"] = (["--dsn", dsn], {})
    if "prefect" in peers:
        dsn = await pg.fresh_database("bench_prefect")
        url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
        try:
            _say("starting a Prefect server (its migrations take a while)")
            api, env = stack.enter_context(prefect_server(url))
            peer_args["prefect"] = (["--api", api], env)
        except NotAvailable as exc:
            not_run["prefect"] = str(exc)
    gm_dsn = await pg.fresh_database("bench_flows_gristmill")
    extra = {"GRISTMILL_PYTHON_BIN": PYTHON} | dict(e.split("=", 1) for e in args.env)
    base = stack.enter_context(gristmill_up(gm_dsn, _TOKEN, workers=1, extra_env=extra))
    client = stack.enter_context(
        httpx.Client(timeout=300, headers={"Authorization": f"Bearer {_TOKEN}"})
    )
    await asyncio.to_thread(_run_flow, client, base, 2, 10)  # warm-up, untimed
    results: dict[str, Any] = {}
    for name, (steps, n) in FLOWS.items():
        systems: dict[str, Sampler] = {"gristmill": _gristmill_sampler(client, base, steps, n)}
        for peer, (common, env) in peer_args.items():
            systems[peer] = _peer_sampler(peer, common, steps, n, env)
        runs = await alternate(args.rounds, systems, _say, name)
        results[name] = {k: v.to_dict(_METRICS) for k, v in runs.items()}
    doc |= {
        "results": results,
        "not_run": not_run,
        "sandbox": "none (insecure)"
        if extra.get("GRISTMILL_INSECURE_NO_SANDBOX", "").lower() in ("1", "true", "yes")
        else "bubblewrap (default)",
        "published_elsewhere": PUBLISHED,
        "dedicated": "measured by bench.dedicated"
        if importlib.util.find_spec("bench.dedicated")
        else "not yet measured (Gristmill has no dedicated workers yet)",
    }
    return doc


_NAMES = {
    "gristmill": "Gristmill, normal (fresh sandboxed process per step)",
    "dbos": "DBOS Transact (workflow of checkpointed steps, in process)",
    "prefect": "Prefect (flow of tasks, local server on PostgreSQL, in process)",
}


def render(doc: dict[str, Any]) -> str:
    lines = ["# Flow overhead, side by side", "", *header(doc)]
    lines += [f"- Gristmill sandbox: {doc['sandbox']}; one worker loop", ""]
    lines += [
        "| flow | system | total s | pure compute s (same sample) | overhead per step ms |",
        "|---|---|---|---|---|",
    ]
    for name, block in doc["results"].items():
        for system, r in block.items():
            m = r["metrics"]
            lines.append(
                f"| {name} | {_NAMES.get(system, system)} | {fmt(m['total_s'], 2)} "
                f"| {fmt(m['compute_s'], 2)} | {fmt(m['overhead_per_step_ms'], 1)} |"
            )
        lines.append(f"| {name} | Gristmill, dedicated | {doc['dedicated']} | | |")
    lines += [
        "",
        "Published by Windmill for the same two flows, **on other hardware, not measured "
        "here** (their machine and settings; not comparable as is):",
        "",
        "| flow | system | total s (published) |",
        "|---|---|---|",
    ]
    for name, systems in doc["published_elsewhere"].items():
        for system, seconds in systems.items():
            lines.append(f"| {name} | {system} | {seconds:g} |")
    failures = [
        f"- {_NAMES.get(s, s)} ({flow}): {err}"
        for flow, block in doc["results"].items()
        for s, r in block.items()
        for err in r["errors"]
    ]
    failures += [f"- {peer}: not run: {why}" for peer, why in doc.get("not_run", {}).items()]
    if failures:
        lines += ["", "## Not measured", "", *failures]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logging()
    started = time.perf_counter()
    load_before = load_average()
    with ExitStack() as stack:
        pg = stack.enter_context(cluster())
        doc = asyncio.run(_run(pg, args, stack))
    doc |= {
        "benchmark": "peer_flows",
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "duration_s": elapsed_since(started),
        "load_average": {"before": load_before, "after": load_average()},
    }
    note = busy_note(load_before, doc["cores"] or 1)
    doc["notes"] = [note] if note else []
    markdown = render(doc)
    write_results(args.out, "peer_flows", doc, markdown)
    return doc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench peer_flows", description=__doc__)
    p.add_argument("--quick", action="store_true", help="one round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peers", default=",".join(PEERS), help="comma-separated; empty: none")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for gristmill up")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.rounds = 1
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    doc = run(args)
    print(render(doc))
    return 0
