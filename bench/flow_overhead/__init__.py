"""``python -m bench flow_overhead``: per-step overhead of sequential flows.

Windmill's published flow benchmark, reproduced on this machine: a flow of 40
sequential rawscript Python steps each computing ``fibo(10)``, and a flow of 10
sequential ``fibo(33)`` steps, submitted with ``POST /api/w/main/jobs/run/preview_flow``
to a ``gristmill up`` (embedded Postgres, production durability, one worker loop) and
polled with ``get_result_maybe`` until it completes. Per-step overhead =
(wall time - pure compute) / steps, where the pure compute is ``fibo(n)`` timed in a
plain process of the same interpreter in the same round. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench._gristmill_up import gristmill_up
from bench._pg import describe_machine, fresh_database, server
from bench._stats import load_average, summarize

TOKEN = "bench-flow-overhead-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
FIBO = "def fibo(n):\n    return n if n <= 1 else fibo(n - 1) + fibo(n - 2)\n"
#: name -> (steps, n); the flows of the published benchmark.
FLOWS = {"40 x fibo(10)": (40, 10), "10 x fibo(33)": (10, 33)}
FIBO_VALUES = {10: 55, 33: 3524578}

#: Windmill's published figures (their hardware, not this machine), seconds.
PUBLISHED: dict[str, dict[str, float]] = {
    "40 x fibo(10)": {
        "Windmill (normal)": 4.38,
        "Windmill (dedicated)": 2.09,
        "Hatchet": 1.22,
        "Temporal": 2.97,
        "Prefect": 4.87,
        "Airflow": 116.0,
    },
    "10 x fibo(33)": {"Windmill (normal)": 8.35, "Windmill (dedicated)": 7.70, "Temporal": 7.25},
}


def _flow(steps: int, n: int) -> dict[str, Any]:
    code = FIBO + f"\ndef main():\n    return fibo({n})\n"
    return {
        "modules": [
            {
                "id": f"s{i}",
                "value": {
                    "type": "rawscript",
                    "language": "python3",
                    "content": code,
                    "input_transforms": {},
                },
            }
            for i in range(steps)
        ]
    }


def _pure_compute_s(steps: int, n: int) -> float:
    """Seconds of ``steps`` calls of ``fibo(n)`` in one plain ``/usr/bin/python3`` process
    (the flow's whole work, without interpreter start-up)."""
    program = FIBO + (
        "import time\nt = time.perf_counter()\n"
        f"for _ in range({steps}):\n    fibo({n})\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([PYTHON, "-c", program], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def _run_flow(client: httpx.Client, base: str, steps: int, n: int) -> float:
    started = time.perf_counter()
    response = client.post(
        f"{base}/api/w/main/jobs/run/preview_flow", json={"value": _flow(steps, n), "args": {}}
    )
    response.raise_for_status()
    job_id = response.text.strip().strip('"')
    while True:
        maybe = client.get(f"{base}/api/w/main/jobs_u/completed/get_result_maybe/{job_id}")
        maybe.raise_for_status()
        body = maybe.json()
        if body["completed"]:
            elapsed = time.perf_counter() - started
            if not body["success"] or body["result"] != FIBO_VALUES[n]:
                raise RuntimeError(f"bad flow result: {body}")
            return elapsed
        time.sleep(0.01)


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in FLOWS}
    with server() as pg:
        dsn = await fresh_database(pg, "bench_flow")
        machine = await describe_machine(dsn)
        extra = {"GRISTMILL_PYTHON_BIN": PYTHON}
        extra.update(dict(item.split("=", 1) for item in args.env))
        with gristmill_up(dsn, TOKEN, workers=1, extra_env=extra) as base:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(timeout=120, headers=headers) as client:
                _run_flow(client, base, 2, 10)  # warm-up, untimed
                for r in range(args.rounds):
                    for name, (steps, n) in FLOWS.items():
                        total = _run_flow(client, base, steps, n)
                        compute = _pure_compute_s(steps, n)
                        sample = {
                            "total_s": total,
                            "compute_s": compute,
                            "overhead_per_step_ms": (total - compute) / steps * 1000,
                        }
                        rounds[name].append(sample)
                        print(f"round {r + 1} {name}: {sample}", file=sys.stderr)
    sandboxed = extra.get("GRISTMILL_INSECURE_NO_SANDBOX", "").lower() not in ("1", "true", "yes")
    results = {
        name: {
            key: summarize([s[key] for s in samples]).to_dict()
            for key in ("total_s", "compute_s", "overhead_per_step_ms")
        }
        | {"steps": FLOWS[name][0], "samples": samples}
        for name, samples in rounds.items()
    }
    return {
        "benchmark": "flow_overhead",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine.to_dict(),
        "python_for_jobs": PYTHON,
        "python_for_jobs_version": subprocess.run(
            [PYTHON, "-V"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "sandbox": "bubblewrap sandbox (default)" if sandboxed else "no sandbox (insecure)",
        "worker_loops": 1,
        "env": args.env,
        "rounds": args.rounds,
        "quick": args.quick,
        "results": results,
        "published_elsewhere": PUBLISHED,
        "load_average": {"before": load_before, "after": load_average()},
    }


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# flow_overhead ({report['date']}, {report['rounds']} rounds, medians (min..max); "
        f"1 worker loop; {report['sandbox']}; jobs run by {report['python_for_jobs_version']})",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}; "
        f"PostgreSQL {m['postgres']} embedded, fsync={m['settings']['fsync']}, "
        f"synchronous_commit={m['settings']['synchronous_commit']}; 1-min load average "
        f"{report['load_average']['before']:.2f} before, "
        f"{report['load_average']['after']:.2f} after.",
        "",
        "## Measured here",
        "",
        "| flow | total s | pure compute s (same run) | overhead per step ms |",
        "|---|---|---|---|",
    ]

    def fmt(s: dict[str, float], digits: int) -> str:
        return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"

    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {fmt(r['total_s'], 2)} | {fmt(r['compute_s'], 2)} "
            f"| {fmt(r['overhead_per_step_ms'], 1)} |"
        )
    lines += [
        "",
        "## Published by Windmill, on other hardware (not measured here; not comparable as is)",
        "",
        "| flow | system | total s |",
        "|---|---|---|",
    ]
    for name, systems in report["published_elsewhere"].items():
        for system, seconds in systems.items():
            lines.append(f"| {name} | {system} | {seconds:g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flow_overhead")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--env", action="append", default=[], help="extra NAME=VALUE for gristmill up"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    report = asyncio.run(_measure(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flow_overhead.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "flow_overhead.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0
