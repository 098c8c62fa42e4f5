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
  polled every 10 ms with ``get_result_maybe``; total seconds;
* **dedicated flow**: a saved flow of 40 sequential inline (``rawscript``) ``fibo(10)``
  steps saved with ``dedicated_worker``, the dedicated worker also bound to it
  (``main:flow/<path>``: its steps' interpreters pre-warmed), run with ``run/f/<path>``
  and polled the same way;
* **TypeScript**: sync and flow again for the same two scripts written for Bun
  (``bun``: a warm Bun interpreter, ``bun_template.mjs``), saved with and without
  ``dedicated_worker``; in ``results.typescript``;
* **executor level** (before the server starts, no queue, no HTTP): the wall time of
  one trivial Bun job (``main(x)`` returns ``x``) through ``execute`` in the default
  sandbox (cold: a new Bun process per job) and through ``WarmInterpreter.run`` (warm,
  same sandbox), alternating job by job; each round is the median of its jobs; in
  ``results.executor``.

Figures are medians (min..max) of the rounds. Writes ``bench/results/dedicated.{json,md}``;
``results.sync.dedicated.p50_ms.median`` and ``results.flow.dedicated.total_s.median``
are the figures of the issue's targets (≤ 5 ms and < 0.25 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench._gristmill_up import gristmill_up
from bench._pg import describe_machine, fresh_database, server
from bench._procs import quiet_logging
from bench._stats import load_average, percentile, summarize
from gristmill.worker.dedicated import Spec, WarmInterpreter
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.sandbox import SandboxPolicy, detect

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
#: The saved flow of 40 inline steps run by the worker dedicated to it.
DEDICATED_FLOW = "f/bench/fibo40"
#: The same two scripts for Bun.
ECHO_TS = "export async function main(x: number) {\n  return x;\n}\n"
FIBO_TS = (
    "function fibo(n: number): number {\n  return n <= 1 ? n : fibo(n - 1) + fibo(n - 2);\n}\n\n"
    "export function main(n = 10) {\n  return fibo(n);\n}\n"
)
TS_PATHS = {
    "dedicated": ("u/admin/echo_warm_ts", "u/admin/fibo_warm_ts"),
    "ordinary": ("u/admin/echo_cold_ts", "u/admin/fibo_cold_ts"),
}
#: Executor-level jobs per configuration and round (``--quick``: 30).
EXECUTOR_JOBS = 100


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


def _inline_flow() -> dict[str, Any]:
    step = {"type": "rawscript", "language": "python3", "content": FIBO, "input_transforms": {}}
    return {"modules": [{"id": f"s{i}", "value": step} for i in range(STEPS)]}


def _run_flow(client: httpx.Client, base: str, path: str) -> float:
    started = time.perf_counter()
    response = client.post(
        f"{base}/api/w/main/jobs/run/preview_flow", json={"value": _flow(path), "args": {}}
    )
    return _wait_flow(client, base, response, started)


def _run_saved_flow(client: httpx.Client, base: str, path: str) -> float:
    started = time.perf_counter()
    response = client.post(f"{base}/api/w/main/jobs/run/f/{path}", json={})
    return _wait_flow(client, base, response, started)


def _wait_flow(client: httpx.Client, base: str, response: httpx.Response, started: float) -> float:
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


def _save_typescript(client: httpx.Client, base: str) -> None:
    """Save the Bun scripts, and run each once (starting the warm interpreters)."""
    for mode, (echo, fibo) in TS_PATHS.items():
        for path, code in ((echo, ECHO_TS), (fibo, FIBO_TS)):
            client.post(
                f"{base}/api/w/main/scripts/create",
                json={
                    "path": path,
                    "content": code,
                    "language": "bun",
                    "dedicated_worker": mode == "dedicated",
                },
            ).raise_for_status()
        _sync(client, base, echo, 5)
        _run_flow(client, base, fibo)


async def _executor_bun(rounds: int, jobs: int) -> dict[str, list[float]]:
    """Per round, the median ms of a trivial Bun job cold (``execute``) and warm
    (``WarmInterpreter.run``), both in the default sandbox, alternating job by job."""
    settings = ExecutorSettings(sandbox=detect(SandboxPolicy()))
    medians: dict[str, list[float]] = {"cold": [], "warm": []}

    async def ignore(text: str) -> None:
        del text

    with tempfile.TemporaryDirectory(prefix="bench-dedicated-") as tmp:
        jobs_dir = Path(tmp) / "jobs"  # a worker's layout: its caches beside, in cache/
        jobs_dir.mkdir()
        interpreter = await WarmInterpreter.start(
            Spec(workspace="main", path="u/admin/echo", code=ECHO_TS, language="bun"),
            settings=settings,
            base_dir=jobs_dir / "dedicated",
        )
        try:

            async def one(mode: str, x: int) -> float:
                workdir = jobs_dir / str(uuid.uuid4())
                workdir.mkdir()
                request = ExecutionRequest(
                    job_id=uuid.uuid4(),
                    language="bun",
                    code=ECHO_TS,
                    args={"x": x},
                    env={},
                    timeout_s=30,
                    workdir=workdir,
                )
                cancel = asyncio.Event()
                started = time.perf_counter()
                if mode == "cold":
                    outcome = await execute(
                        request, on_log=ignore, cancel=cancel, settings=settings
                    )
                else:
                    outcome = await interpreter.run(request, on_log=ignore, cancel=cancel)
                elapsed = (time.perf_counter() - started) * 1000
                shutil.rmtree(workdir, ignore_errors=True)
                if outcome.result != x:
                    raise RuntimeError(f"bad {mode} Bun job: {outcome.error}")
                return elapsed

            await one("cold", 0)  # fills the caches (the stored script, the transpiler's)
            await one("warm", 0)
            for r in range(rounds):
                times: dict[str, list[float]] = {"cold": [], "warm": []}
                for x in range(jobs):
                    for mode in ("cold", "warm"):
                        times[mode].append(await one(mode, x))
                for mode, values in times.items():
                    medians[mode].append(statistics.median(values))
                print(
                    f"round {r + 1} executor, bun: cold {medians['cold'][-1]:.2f} ms, "
                    f"warm {medians['warm'][-1]:.2f} ms",
                    file=sys.stderr,
                )
        finally:
            await interpreter.close()
    return medians


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    executor = asyncio.run(_executor_bun(args.rounds, args.executor_jobs))
    sync: dict[str, list[dict[str, float]]] = {mode: [] for mode in PATHS}
    flow: dict[str, list[float]] = {mode: [] for mode in (*PATHS, "dedicated_flow")}
    ts_sync: dict[str, list[dict[str, float]]] = {mode: [] for mode in TS_PATHS}
    ts_flow: dict[str, list[float]] = {mode: [] for mode in TS_PATHS}
    with server() as pg:
        dsn = asyncio.run(fresh_database(pg, "bench_dedicated"))
        machine = asyncio.run(describe_machine(dsn))
        dedicated = ",".join(
            [*(f"main:{p}" for p in PATHS["dedicated"]), f"main:flow/{DEDICATED_FLOW}"]
            + [f"main:{p}" for p in TS_PATHS["dedicated"]]
        )
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
                client.post(
                    f"{base}/api/w/main/flows/create",
                    json={
                        "path": DEDICATED_FLOW,
                        "summary": "",
                        "value": _inline_flow(),
                        "dedicated_worker": True,
                    },
                ).raise_for_status()
                time.sleep(3)  # the dedicated worker sees it (it looks every 2 s) and warms
                _run_saved_flow(client, base, DEDICATED_FLOW)  # warm-up
                _save_typescript(client, base)
                for r in range(args.rounds):
                    for mode, (echo, fibo) in PATHS.items():
                        sync[mode].append(_sync(client, base, echo, args.requests))
                        flow[mode].append(_run_flow(client, base, fibo))
                        print(
                            f"round {r + 1} {mode}: sync p50 {sync[mode][-1]['p50_ms']:.2f} ms, "
                            f"flow {flow[mode][-1]:.3f} s",
                            file=sys.stderr,
                        )
                    flow["dedicated_flow"].append(_run_saved_flow(client, base, DEDICATED_FLOW))
                    print(
                        f"round {r + 1} dedicated flow: {flow['dedicated_flow'][-1]:.3f} s",
                        file=sys.stderr,
                    )
                    for mode, (echo, fibo) in TS_PATHS.items():
                        ts_sync[mode].append(_sync(client, base, echo, args.requests))
                        ts_flow[mode].append(_run_flow(client, base, fibo))
                        print(
                            f"round {r + 1} bun {mode}: sync p50 "
                            f"{ts_sync[mode][-1]['p50_ms']:.2f} ms, flow {ts_flow[mode][-1]:.3f} s",
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
            "typescript": {
                "sync": {
                    mode: {
                        key: summarize([s[key] for s in samples]).to_dict()
                        for key in ("p50_ms", "p99_ms")
                    }
                    for mode, samples in ts_sync.items()
                },
                "flow": {
                    mode: {
                        "total_s": summarize(values).to_dict(),
                        "per_step_ms": statistics.median(values) / STEPS * 1000,
                    }
                    for mode, values in ts_flow.items()
                },
            },
            "executor": {
                "bun": {mode: summarize(values).to_dict() for mode, values in executor.items()},
                "jobs_per_round": args.executor_jobs,
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
    flow = results["flow"]["dedicated_flow"]
    lines.append(
        f"| (inline steps) flow saved with `dedicated_worker`, worker bound to it "
        f"(`main:flow/{DEDICATED_FLOW}`) | — | — | {cell(flow['total_s'], 3)} "
        f"| {flow['per_step_ms']:.1f} |"
    )
    typescript = results["typescript"]
    for mode in TS_PATHS:
        sync, flow = typescript["sync"][mode], typescript["flow"][mode]
        label = "with `dedicated_worker`" if mode == "dedicated" else "without (ordinary job)"
        lines.append(
            f"| TypeScript (`bun`), {label} | {cell(sync['p50_ms'], 2)} "
            f"| {cell(sync['p99_ms'], 2)} | {cell(flow['total_s'], 3)} "
            f"| {flow['per_step_ms']:.1f} |"
        )
    bun = results["executor"]["bun"]
    lines += [
        "",
        f"Executor level (no queue, no HTTP; {results['executor']['jobs_per_round']} jobs per "
        "configuration and round, alternating; the default sandbox), ms per trivial job:",
        "",
        "| language | cold (`execute`) | warm (`WarmInterpreter.run`) | cold / warm |",
        "|---|---|---|---|",
        f"| bun | {cell(bun['cold'], 2)} | {cell(bun['warm'], 2)} "
        f"| {bun['cold']['median'] / bun['warm']['median']:.1f}x |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dedicated")
    parser.add_argument("--quick", action="store_true", help="1 round, 30 requests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--executor-jobs", type=int, default=EXECUTOR_JOBS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.executor_jobs = 1, 30, 30
    quiet_logging()
    report = _measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dedicated.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = _markdown(report)
    (args.out / "dedicated.md").write_text(markdown)
    print(markdown)
    return 0
