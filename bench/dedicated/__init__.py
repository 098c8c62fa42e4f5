"""``python -m bench dedicated``: dedicated (warm) workers through the whole product.

A ``gristmill up`` (embedded PostgreSQL, production durability, one ordinary worker
loop, and a dedicated worker with ``GRISTMILL_DEDICATED`` naming two saved scripts)
serves each figure twice in the same run, alternating: once for a script saved with
``dedicated_worker`` (its jobs run warm) and once for the same code saved without it
(an ordinary sandboxed job):

* **sync**: ``POST /api/w/main/jobs/run_wait_result/p/<path>`` with ``{"x": i}`` at
  concurrency 1; p50 and p99 of the round's requests;
* **flow**: a flow of 40 sequential steps, each the saved script ``fibo(10)``
  (``{"type": "script", "path": ...}``), submitted with ``run/preview_flow`` and
  polled every 10 ms with ``get_result_maybe``; total seconds.

Figures are medians (min..max) of the rounds. Writes ``bench/results/dedicated.{json,md}``;
``results.sync.dedicated.p50_ms.median`` and ``results.flow.dedicated.total_s.median``
are the figures of the issue's targets (≤ 5 ms and < 0.25 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench._gristmill_up import gristmill_up
from bench._pg import describe_machine, fresh_database, server
from bench._procs import quiet_logging
from bench._stats import load_average, percentile, summarize

TOKEN = "bench-dedicated-token-0123456789abcdef"
ECHO = "def main(x: int):\n    return x\n"
FIBO = (
    "def fibo(n):\n    return n if n <= 1 else fibo(n - 1) + fibo(n - 2)\n\n"
    "def main(n: int = 10):\n    return fibo(n)\n"
)
#: mode -> (echo script, fibo script)
PATHS = {
    "dedicated": ("u/admin/echo_warm", "u/admin/fibo_warm"),
    "ordinary": ("u/admin/echo_cold", "u/admin/fibo_cold"),
}
STEPS = 40


def _flow(path: str) -> dict[str, Any]:
    return {
        "modules": [
            {"id": f"s{i}", "value": {"type": "script", "path": path, "input_transforms": {}}}
            for i in range(STEPS)
        ]
    }


def _sync(client: httpx.Client, base: str, path: str, requests: int) -> dict[str, float]:
    latencies = []
    for i in range(requests):
        started = time.perf_counter()
        response = client.post(f"{base}/api/w/main/jobs/run_wait_result/p/{path}", json={"x": i})
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or response.json() != i:
            raise RuntimeError(f"bad answer {response.status_code}: {response.text}")
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def _run_flow(client: httpx.Client, base: str, path: str) -> float:
    started = time.perf_counter()
    response = client.post(
        f"{base}/api/w/main/jobs/run/preview_flow", json={"value": _flow(path), "args": {}}
    )
    response.raise_for_status()
    job_id = response.text.strip().strip('"')
    while True:
        maybe = client.get(f"{base}/api/w/main/jobs_u/completed/get_result_maybe/{job_id}")
        maybe.raise_for_status()
        body = maybe.json()
        if body["completed"]:
            elapsed = time.perf_counter() - started
            if not body["success"] or body["result"] != 55:
                raise RuntimeError(f"bad flow result: {body}")
            return elapsed
        time.sleep(0.01)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    sync: dict[str, list[dict[str, float]]] = {mode: [] for mode in PATHS}
    flow: dict[str, list[float]] = {mode: [] for mode in PATHS}
    with server() as pg:
        dsn = asyncio.run(fresh_database(pg, "bench_dedicated"))
        machine = asyncio.run(describe_machine(dsn))
        dedicated = ",".join(f"main:{p}" for p in PATHS["dedicated"])
        with gristmill_up(
            dsn, TOKEN, workers=1, extra_env={"GRISTMILL_DEDICATED": dedicated}
        ) as base:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(timeout=120, headers=headers) as client:
                for mode, (echo, fibo) in PATHS.items():
                    for path, code in ((echo, ECHO), (fibo, FIBO)):
                        saved = client.post(
                            f"{base}/api/w/main/scripts/create",
                            json={
                                "path": path,
                                "content": code,
                                "language": "python3",
                                "dedicated_worker": mode == "dedicated",
                            },
                        )
                        saved.raise_for_status()
                    _sync(client, base, echo, 5)  # warm-up (starts the warm interpreter)
                    _run_flow(client, base, fibo)
                for r in range(args.rounds):
                    for mode, (echo, fibo) in PATHS.items():
                        sync[mode].append(_sync(client, base, echo, args.requests))
                        flow[mode].append(_run_flow(client, base, fibo))
                        print(
                            f"round {r + 1} {mode}: sync p50 {sync[mode][-1]['p50_ms']:.2f} ms, "
                            f"flow {flow[mode][-1]:.3f} s",
                            file=sys.stderr,
                        )
    return {
        "benchmark": "dedicated",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine.to_dict(),
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "quick": args.quick,
        "results": {
            "sync": {
                mode: {
                    key: summarize([s[key] for s in samples]).to_dict()
                    for key in ("p50_ms", "p99_ms")
                }
                for mode, samples in sync.items()
            },
            "flow": {
                mode: {
                    "total_s": summarize(values).to_dict(),
                    "per_step_ms": statistics.median(values) / STEPS * 1000,
                }
                for mode, values in flow.items()
            },
        },
        "load_average": {"before": load_before, "after": load_average()},
    }


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    results = report["results"]

    def cell(summary: dict[str, Any], digits: int) -> str:
        return (
            f"{summary['median']:.{digits}f} "
            f"({summary['min']:.{digits}f}..{summary['max']:.{digits}f})"
        )

    lines = [
        f"# dedicated ({report['date']}, {report['rounds']} rounds, medians (min..max); "
        f"1-min load average {report['load_average']['before']:.2f} before, "
        f"{report['load_average']['after']:.2f} after)",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['os']}; PostgreSQL {m['postgres']} "
        f"embedded, fsync={m['settings']['fsync']}; `gristmill up`, 1 ordinary worker loop "
        "and 1 dedicated; the sandbox on.",
        "",
        f"| script saved | sync p50 ms (c=1, {report['requests_per_round']} a round) "
        f"| sync p99 ms | {STEPS}-step flow s | per step ms |",
        "|---|---|---|---|---|",
    ]
    for mode in PATHS:
        sync, flow = results["sync"][mode], results["flow"][mode]
        label = "with `dedicated_worker`" if mode == "dedicated" else "without (ordinary job)"
        lines.append(
            f"| {label} | {cell(sync['p50_ms'], 2)} | {cell(sync['p99_ms'], 2)} "
            f"| {cell(flow['total_s'], 3)} | {flow['per_step_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dedicated")
    parser.add_argument("--quick", action="store_true", help="1 round, 30 requests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 1, 30
    quiet_logging()
    report = _measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dedicated.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = _markdown(report)
    (args.out / "dedicated.md").write_text(markdown)
    print(markdown)
    return 0
