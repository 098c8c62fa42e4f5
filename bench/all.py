"""``python -m bench all``: every side-by-side benchmark, one after the other, one report.

Runs ``peer_queue``, ``peer_flows``, ``sync_latency`` and ``cost_growth`` (each in its
own process, each starting what it needs), then the slots of benchmarks that other
parts of Gristmill bring: ``bench.triggers`` (Kafka ingestion) and ``bench.dedicated``
(dedicated workers), run when their module exists and reported "not yet measured"
otherwise. Writes ``bench/results/latest.md`` (the report, committed) and
``latest.json`` (every benchmark's document); each benchmark's own files stay beside
them (ignored by git).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._side_by_side import RESULTS, machine_line
from bench._stats import load_average

__all__ = ["main", "targets"]

ROOT = Path(__file__).resolve().parents[1]
#: (name, how to run it, what it writes); run in this order.
CORE = ("peer_queue", "peer_flows", "sync_latency", "cost_growth")
#: Benchmarks other work brings; a slot runs ``<module>.main(argv)`` when it exists.
#: name -> (module, what it measures, extra arguments of a quick run)
SLOTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "triggers": (
        "bench.triggers",
        "Kafka ingestion (messages → completed jobs per second)",
        ("--duration", "10", "--warmup", "3"),
    ),
    "dedicated": (
        "bench.dedicated",
        "dedicated (warm) workers: flows and sync calls",
        ("--quick",),
    ),
}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run(argv: list[str], log: Path) -> tuple[int, float]:
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    return proc.returncode, time.perf_counter() - started


def _demote(markdown: str) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.MULTILINE)


def _get(doc: dict[str, Any], *path: Any) -> float:
    node: Any = doc
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return math.nan
    return float(node) if isinstance(node, int | float) else math.nan


def _check(
    rows: list[str], target: str, value: float, ok: Callable[[float], bool], shown: str
) -> None:
    if math.isnan(value):
        rows.append(f"| {target} | not measured | — |")
    else:
        rows.append(f"| {target} | {shown} | {'met' if ok(value) else 'missed'} |")


def targets(docs: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, against this run's medians (ratios measured side by side)."""
    rows = ["| target | measured (median) | |", "|---|---|---|"]
    q = docs.get("peer_queue", {}).get("results", {})
    for key, label in (
        ("drain_p1", "backlog drain, 1 process"),
        ("drain_p2", "backlog drain, 2 processes"),
        ("sustained_p1", "sustained, 1 process"),
        ("sustained_p2", "sustained, 2 processes"),
    ):
        gm = _get(q, key, "gristmill", "metrics", "jobs_per_s", "median")
        pq = _get(q, key, "pgqueuer", "metrics", "jobs_per_s", "median")
        ratio = gm / pq if pq else math.nan
        _check(
            rows,
            f"queue throughput ≥ 1.5x pgqueuer ({label})",
            ratio,
            lambda v: v >= 1.5,
            f"{ratio:.2f}x",
        )
    p50 = _get(q, "latency", "gristmill", "metrics", "p50_ms", "median")
    _check(rows, "enqueue-to-start p50 ≤ 2 ms, idle", p50, lambda v: v <= 2, f"{p50:.2f} ms")
    f = docs.get("peer_flows", {}).get("results", {})
    total = _get(f, "40 x fibo(10)", "gristmill", "metrics", "total_s", "median")
    _check(rows, "40-step flow < 1 s sandboxed", total, lambda v: v < 1, f"{total:.2f} s")
    d = docs.get("dedicated", {}).get("results", {})
    dflow = _get(d, "flow", "dedicated", "total_s", "median")
    _check(rows, "40-step flow < 0.25 s dedicated", dflow, lambda v: v < 0.25, f"{dflow:.2f} s")
    long_total = _get(f, "10 x fibo(33)", "gristmill", "metrics", "total_s", "median")
    long_compute = _get(f, "10 x fibo(33)", "gristmill", "metrics", "compute_s", "median")
    excess = long_total / long_compute - 1 if long_compute else math.nan
    _check(
        rows,
        "10-step long flow within 3 % of pure compute",
        excess,
        lambda v: v <= 0.03,
        f"+{excess:.1%}",
    )
    s = docs.get("sync_latency", {}).get("results", {})
    sync = _get(s, "c1", "gristmill", "p50_ms", "median")
    _check(
        rows,
        "sync run_wait_result p50 ≤ 25 ms sandboxed",
        sync,
        lambda v: v <= 25,
        f"{sync:.1f} ms",
    )
    dsync = _get(d, "sync", "dedicated", "p50_ms", "median")
    _check(
        rows,
        "sync run_wait_result p50 ≤ 5 ms dedicated",
        dsync,
        lambda v: v <= 5,
        f"{dsync:.1f} ms",
    )
    if "triggers" in docs:
        rows.append("| Kafka ingestion ≥ 5,000 jobs/s | see the Kafka ingestion section | — |")
    else:
        rows.append("| Kafka ingestion ≥ 5,000 jobs/s | not yet measured | — |")
    lat = docs.get("cost_growth", {}).get("results", {}).get("claim_latency", [])
    if len(lat) >= 2:
        first = lat[0]["metrics"]["p50_ms"]["median"]
        last = lat[-1]["metrics"]["p50_ms"]["median"]
        change = last / first - 1
        rows.append(
            f"| claim latency within ±20 % from {lat[0]['params']['backlog']:,} to "
            f"{lat[-1]['params']['backlog']:,} queued rows | {change:+.0%} (p50 {first:.2f} → "
            f"{last:.2f} ms) | {'met' if abs(change) <= 0.2 else 'missed'} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench all", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every benchmark's quick mode")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (A B A B ...), ≥ 3")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {', '.join(CORE + tuple(SLOTS))}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild latest.{md,json} from the benchmarks' files in --out",
    )
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "raw"
    raw.mkdir(exist_ok=True)
    started_at = datetime.now(UTC)
    load_before = load_average()
    docs: dict[str, dict[str, Any]] = {}
    sections: list[str] = []
    status: dict[str, str] = {}
    for name in CORE:
        if only and name not in only:
            continue
        argv_ = [sys.executable, "-m", "bench", name, "--out", str(args.out)]
        argv_ += ["--rounds", str(args.rounds)]
        if args.quick:
            argv_.append("--quick")
        if args.report_only:
            code, seconds = 0, 0.0
        else:
            _say(f"== {name} (log: {raw / (name + '.log')})")
            code, seconds = _run(argv_, raw / f"{name}.log")
        status[name] = f"exit {code} after {seconds:.0f} s"
        _say(f"== {name}: {status[name]}")
        md, js = args.out / f"{name}.md", args.out / f"{name}.json"
        if code == 0 and md.exists() and js.exists():
            docs[name] = json.loads(js.read_text())
            sections.append(_demote(md.read_text()))
        else:
            sections.append(f"## {name}\n\nFailed ({status[name]}); see {raw / name}.log.\n")
    for name, (module, what, quick_args) in SLOTS.items():
        if only and name not in only:
            continue
        if importlib.util.find_spec(module) is None:
            status[name] = "not yet measured"
            sections.append(f"## {what}\n\nNot yet measured: `{module}` does not exist yet.\n")
            continue
        code_ = f"import sys, {module} as m; sys.exit(m.main(sys.argv[1:]))"
        argv_ = [sys.executable, "-c", code_, "--out", str(args.out)]
        if args.quick:
            argv_ += quick_args
        if args.report_only:
            code, seconds = 0, 0.0
        else:
            _say(f"== {name} ({module})")
            code, seconds = _run(argv_, raw / f"{name}.log")
        status[name] = f"exit {code} after {seconds:.0f} s"
        md = args.out / f"{name}.md"
        if code == 0 and md.exists():
            sections.append(_demote(md.read_text()))
            js = args.out / f"{name}.json"
            if js.exists():
                docs[name] = json.loads(js.read_text())
        else:
            sections.append(f"## {what}\n\nFailed ({status[name]}); see {raw / name}.log.\n")
    previous = args.out / "latest.json"
    if args.report_only and previous.exists():
        # Keep what the run that produced these files said about each benchmark.
        status |= {
            name: state
            for name, state in json.loads(previous.read_text()).get("status", {}).items()
            if name in status
        }
    load_after = load_average()
    any_doc = next((d for d in docs.values() if "machine" in d), None)
    head = ["# Gristmill benchmarks, side by side with peers", ""]
    kept: list[str] = []
    if args.report_only and previous.exists():
        kept = json.loads(previous.read_text()).get("run", [])
    if kept:
        head += kept
    elif args.report_only:
        head.append(
            "- rebuilt with `--report-only` from the benchmarks' own files; each section "
            "gives its date and load averages"
        )
    else:
        head += [
            f"- command: `python -m bench all{' --quick' if args.quick else ''}` "
            f"({args.rounds} rounds), started {started_at.isoformat(timespec='seconds')}",
            f"- 1-minute load average {load_before:.2f} before the first benchmark, "
            f"{load_after:.2f} after the last",
        ]
    run_lines = head[2:]
    if any_doc is not None:
        head.append(f"- machine: {machine_line({'python': sys.version.split()[0], **any_doc})}")
    head += [f"- {name}: {state}" for name, state in status.items()]
    report = "\n".join(
        [*head, "", "## Targets (from the issue), this run", "", *targets(docs), "", *sections]
    )
    (args.out / "latest.md").write_text(report + "\n")
    (args.out / "latest.json").write_text(
        json.dumps({"status": status, "run": run_lines, "benchmarks": docs}, indent=2, default=str)
        + "\n"
    )
    print(report)
    _say(f"written to {args.out}/latest.{{md,json}}")
    return (
        0 if all(s.startswith("exit 0") or s == "not yet measured" for s in status.values()) else 1
    )
