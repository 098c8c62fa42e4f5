"""``python -m bench sandbox_overhead``: what the sandbox costs a trivial job, and what a
dedicated (warm) worker saves, per language, in one run.

Two parts:

* **executor level**, per language (python3, bash, bun, deno, go): the median wall
  time of one trivial job (``main(x)`` returns ``x``) through
  ``gristmill.worker.execution.execute`` with no sandbox (``bare``: the insecure mode)
  and with the default sandbox (bubblewrap + seccomp + rlimits + memory cgroup +
  per-job uid when root) started the ordinary way (``sandboxed``:
  ``prestarted_launchers=0``) and from pre-started launchers (``sandboxed,
  pre-started``: ``sandbox.launcher``), and for Python through a warm interpreter
  (``dedicated``: ``WarmInterpreter.run``). Next to them, the runtime's own start
  (``process``: ``subprocess.run`` of an empty program, no executor). Configurations
  alternate within each round; before each job (untimed) the launchers the one before
  may have used are replaced, then 0.1 s pass, so that no configuration's background
  work (or recent cgroup move, which makes the next one fast) runs into another's
  job: jobs far apart. Every figure is the median of the rounds' medians.
* **pre-started launchers, A/B** (python3): ``prestarted_launchers=0`` against ``2``,
  interleaved in one run, with jobs 0.2-0.5 s apart (alternating job by job; cgroup
  moves are rare then, and each waits for an RCU grace period) and back to back
  (alternating blocks of 10 jobs, the first 2 of each block not counted); medians and
  quartiles, how many jobs found a launcher ready, the load average around each.
* **end to end through the queue** (embedded PostgreSQL, production durability): a
  worker loop (in this process) drains N queued jobs of a saved trivial Python
  script, each with its job token (``JobContext``), claimed one at a time; the figure
  is drain time / N, for an ordinary sandboxed worker starting each job the ordinary
  way and from pre-started launchers, and for a worker dedicated to the script.
  Also the latency of single jobs (enqueue → completion row visible,
  polled every 0.5 ms) with a running worker woken by NOTIFY.

Writes ``bench/results/sandbox_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from bench._pg import describe_machine, fresh_database, server
from bench._procs import quiet_logging
from bench._stats import load_average, percentile, summarize
from gristmill.common import scripts
from gristmill.common.contracts.runs import RunRequest, ScriptPath, Trigger, TriggerKind
from gristmill.common.db import create_pool
from gristmill.common.queue import Queue
from gristmill.common.runs import resolve
from gristmill.common.tokens import ensure_bootstrap
from gristmill.common.wakeup import Wakeup
from gristmill.worker.dedicated import DedicatedSettings, Spec, WarmInterpreter
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.execution.launch import prestarted
from gristmill.worker.execution.runners.typescript import default_bun_bin, default_deno_bin
from gristmill.worker.execution.settings import default_bash_bin, default_python_bin
from gristmill.worker.job_context import JobContext
from gristmill.worker.sandbox import detect
from gristmill.worker.service import Worker, WorkerSettings

#: A trivial job per language: returns its argument.
JOBS: dict[str, str] = {
    "python3": "def main(x: int):\n    return x\n",
    "bash": 'x="$1"\necho "$x"\n',
    "bun": "export async function main(x: number) {\n  return x;\n}\n",
    "deno": "export async function main(x: number) {\n  return x;\n}\n",
    "go": "package inner\n\nfunc main(x int) (int, error) {\n\treturn x, nil\n}\n",
}
SCRIPT = "u/admin/noop"
#: Column labels of the executor-level configurations.
LABELS = {
    "process": "process start",
    "bare": "bare",
    "sandboxed": "sandboxed",
    "prestarted": "sandboxed, pre-started",
    "dedicated": "dedicated",
}
#: Pre-started launchers per worker process in the ``prestarted`` configurations.
LAUNCHERS = 2
#: Between two jobs of the executor-level table (see ``settled``).
PAUSE_S = 0.1
#: Back-to-back blocks of the A/B: jobs per block, and those not counted at its start.
BLOCK, BLOCK_WARMUP = 10, 2


def _process_argv(language: str) -> list[str] | None:
    """The runtime's start alone (no executor, no sandbox): an empty program."""

    if language == "python3":
        return [default_python_bin(), "-I", "-S", "-c", "pass"]
    if language == "bash":
        return [default_bash_bin(), "-c", ":"]
    if language == "bun":
        return [default_bun_bin(), "-e", "0"]
    if language == "deno":
        return [default_deno_bin(), "eval", "0"]
    return None


async def _executor_level(args: argparse.Namespace) -> dict[str, Any]:

    sandbox = await asyncio.to_thread(detect)
    root = Path(tempfile.mkdtemp(prefix="gristmill-bench-sandbox-"))
    root.chmod(0o755)
    configs = {
        "bare": ExecutorSettings(),
        "sandboxed": ExecutorSettings(sandbox=sandbox, prestarted_launchers=0),
        "prestarted": ExecutorSettings(sandbox=sandbox, prestarted_launchers=LAUNCHERS),
    }
    launchers = prestarted(configs["prestarted"])
    interpreter = await WarmInterpreter.start(
        Spec(workspace="main", path=SCRIPT, code=JOBS["python3"]),
        settings=configs["sandboxed"],
        base_dir=root / "dedicated",
    )

    async def ignore(text: str) -> None:
        del text

    def request(language: str, n: int) -> ExecutionRequest:
        workdir = root / uuid.uuid4().hex
        workdir.mkdir()
        return ExecutionRequest(
            job_id=uuid.uuid4(),
            language=language,
            code=JOBS[language],
            args={"x": n},
            env={},
            timeout_s=60,
            workdir=workdir,
        )

    async def through_executor(language: str, config: str, n: int) -> float:
        job = request(language, n)
        started = time.perf_counter()
        outcome = await execute(
            job, on_log=ignore, cancel=asyncio.Event(), settings=configs[config]
        )
        elapsed = time.perf_counter() - started
        shutil.rmtree(job.workdir, ignore_errors=True)
        if outcome.result != n:
            raise RuntimeError(f"{language}/{config}: {outcome.error or outcome.result!r}")
        return elapsed * 1000

    async def settled() -> None:
        """Untimed: until the launchers a job took are replaced and ready, then a
        pause, so that every job starts alike: nothing of another in flight, no
        cgroup move just before (a move right after another one is fast)."""
        if launchers is not None:
            launchers.fill()
            deadline = time.monotonic() + 5
            while launchers.ready_count() < LAUNCHERS and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        await asyncio.sleep(PAUSE_S)

    async def dedicated(language: str, n: int) -> float:
        job = request(language, n)
        started = time.perf_counter()
        outcome = await interpreter.run(job, on_log=ignore, cancel=asyncio.Event())
        elapsed = time.perf_counter() - started
        shutil.rmtree(job.workdir, ignore_errors=True)
        if outcome.result != n:
            raise RuntimeError(f"dedicated: {outcome.error or outcome.result!r}")
        return elapsed * 1000

    async def process(argv: list[str], n: int) -> float:
        del n
        started = time.perf_counter()
        await asyncio.to_thread(
            subprocess.run, argv, stdin=subprocess.DEVNULL, capture_output=True, check=True
        )
        return (time.perf_counter() - started) * 1000

    async def ab(spacing: str) -> dict[str, Any]:
        """``sandboxed`` against ``prestarted``, python3, jobs ``spacing`` (see the
        module docstring)."""
        assert launchers is not None
        samples: dict[str, list[float]] = {"sandboxed": [], "prestarted": []}
        taken, missed = launchers.taken, launchers.missed
        load_before = load_average()
        if spacing == "apart":
            for i in range(args.ab_samples):
                for config in random.sample(list(samples), len(samples)):
                    await asyncio.sleep(random.uniform(0.2, 0.5))
                    samples[config].append(await through_executor("python3", config, i))
        else:
            for _ in range(max(1, args.ab_samples // (BLOCK - BLOCK_WARMUP))):
                for config in random.sample(list(samples), len(samples)):
                    await asyncio.sleep(0.3)
                    for i in range(BLOCK):
                        elapsed = await through_executor("python3", config, i)
                        if i >= BLOCK_WARMUP:
                            samples[config].append(elapsed)
        return {
            "median_ms": {c: statistics.median(v) for c, v in samples.items()},
            "p25_ms": {c: percentile(v, 25) for c, v in samples.items()},
            "p75_ms": {c: percentile(v, 75) for c, v in samples.items()},
            "jobs": {c: len(v) for c, v in samples.items()},
            "launcher_ready": launchers.taken - taken,
            "launcher_missed": launchers.missed - missed,
            "load_average": {"before": load_before, "after": load_average()},
        }

    results: dict[str, Any] = {}
    comparison: dict[str, Any] = {}
    try:
        for language in args.languages:
            measures: dict[str, Callable[[int], Awaitable[float]]] = {}
            argv = _process_argv(language)
            if argv is not None:
                measures["process"] = functools.partial(process, argv)
            for config in configs:
                measures[config] = functools.partial(through_executor, language, config)
            if language == "python3":
                measures["dedicated"] = functools.partial(dedicated, "python3")
            skipped: dict[str, str] = {}
            for name, measure in list(measures.items()):
                try:
                    await measure(0)  # warm caches (builds, transpiles); untimed
                except Exception as exc:  # reported in the table as not measured
                    skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
                    del measures[name]
            rounds: dict[str, list[float]] = {name: [] for name in measures}
            for round_no in range(args.rounds):
                samples: dict[str, list[float]] = {name: [] for name in measures}
                for i in range(args.samples):
                    for name, measure in measures.items():  # alternate configurations
                        await settled()
                        samples[name].append(await measure(i + 1))
                for name, values in samples.items():
                    rounds[name].append(statistics.median(values))
                print(
                    f"{language} round {round_no + 1}: "
                    + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in rounds.items()),
                    file=sys.stderr,
                )
            results[language] = {
                "median_ms": {name: summarize(values).to_dict() for name, values in rounds.items()},
                "not_measured": skipped,
            }
        if "python3" in args.languages and launchers is not None:
            for spacing in ("apart", "back to back"):
                comparison[spacing] = await ab(spacing)
                figures = comparison[spacing]["median_ms"]
                print(
                    f"pre-started A/B, jobs {spacing}: ordinary {figures['sandboxed']:.2f} ms, "
                    f"pre-started {figures['prestarted']:.2f} ms",
                    file=sys.stderr,
                )
    finally:
        await interpreter.close()
        if launchers is not None:
            launchers.close()
        shutil.rmtree(root, ignore_errors=True)
    return {"sandbox": sandbox.describe(), "languages": results, "launchers_ab": comparison}


async def _end_to_end(args: argparse.Namespace) -> dict[str, Any]:

    sandbox = await asyncio.to_thread(detect)
    executors = {
        "sandboxed": ExecutorSettings(sandbox=sandbox, prestarted_launchers=0),
        "prestarted": ExecutorSettings(sandbox=sandbox, prestarted_launchers=LAUNCHERS),
        "dedicated": ExecutorSettings(sandbox=sandbox, prestarted_launchers=0),
    }
    data = Path(tempfile.mkdtemp(prefix="gristmill-bench-e2e-"))
    data.chmod(0o755)
    results: dict[str, Any] = {}
    with server() as pg:
        dsn = await fresh_database(pg, "bench_sandbox_overhead")
        results["machine"] = (await describe_machine(dsn)).to_dict()
        pool = await create_pool(dsn, min_size=2, max_size=8)
        try:
            await ensure_bootstrap(pool, admin_token="bench-sandbox-overhead-token-0123456789")
            paths = {
                "sandboxed": "u/admin/noop_ordinary",
                "prestarted": "u/admin/noop_ordinary",
                "dedicated": SCRIPT,
            }
            for config, path in paths.items():
                if config == "prestarted":
                    continue  # the same script as sandboxed
                async with pool.acquire() as conn:
                    await scripts.create_script(
                        conn,
                        "main",
                        scripts.NewScript(
                            path=path,
                            content=JOBS["python3"],
                            language="python3",
                            extra={"dedicated_worker": True} if config == "dedicated" else {},
                        ),
                        created_by="admin",
                    )
            templates = {}
            for config, path in paths.items():
                request = RunRequest(
                    job_id=uuid.uuid4(),
                    workspace="main",
                    runnable=ScriptPath(path=path),
                    requested_by="admin",
                    trigger=Trigger(kind=TriggerKind.API),
                    args={"x": 0},
                )
                async with pool.acquire() as conn:
                    templates[config] = await resolve(conn, request)
            queue = Queue(pool)
            job_env = JobContext(pool, default_timeout_s=60)

            def settings(config: str) -> WorkerSettings:
                tag = templates[config].tag
                return WorkerSettings(
                    tags=(tag,),
                    jobs_dir=data / "jobs",
                    executor=executors[config],
                    dedicated=DedicatedSettings(scripts=(tag,)) if config == "dedicated" else None,
                )

            async def drain(config: str, count: int) -> float:
                jobs = [
                    msgspec.structs.replace(templates[config], id=uuid.uuid4(), args={"x": n})
                    for n in range(count)
                ]
                for start in range(0, count, 200):
                    await queue.enqueue(jobs[start : start + 200])
                one = settings(config)
                async with Wakeup(dsn, one.tags, mode="poll", poll_interval_s=0.05) as wakeup:
                    worker = Worker(pool, queue, wakeup, one, job_env=job_env)
                    started = time.perf_counter()
                    await worker.run(asyncio.Event(), burst=True)
                    elapsed = time.perf_counter() - started
                done = await pool.fetchval(
                    "SELECT count(*) FROM jobs_completed WHERE id = ANY($1::uuid[]) "
                    "AND status = 'success'",
                    [job.id for job in jobs],
                )
                if done != count:
                    raise RuntimeError(f"{config}: {done} of {count} jobs succeeded")
                return elapsed * 1000 / count

            async def latency(config: str, count: int) -> list[float]:
                one = settings(config)
                stop = asyncio.Event()
                samples: list[float] = []
                async with Wakeup(dsn, one.tags, mode="notify") as wakeup:
                    worker = Worker(pool, queue, wakeup, one, job_env=job_env)
                    running = asyncio.create_task(worker.run(stop))
                    try:
                        async with pool.acquire() as conn:
                            for n in range(count + 1):
                                job = msgspec.structs.replace(
                                    templates[config], id=uuid.uuid4(), args={"x": n}
                                )
                                started = time.perf_counter()
                                await queue.enqueue([job])
                                while not await conn.fetchval(
                                    "SELECT true FROM jobs_completed WHERE id = $1", job.id
                                ):
                                    await asyncio.sleep(0.0005)
                                if n:  # the first one starts the warm interpreter
                                    samples.append((time.perf_counter() - started) * 1000)
                    finally:
                        stop.set()
                        await running
                return samples

            drains: dict[str, list[float]] = {config: [] for config in paths}
            latencies: dict[str, list[list[float]]] = {config: [] for config in paths}
            for config in paths:
                await drain(config, 5)  # warm-up, untimed
            for round_no in range(args.rounds):
                for config in paths:
                    drains[config].append(await drain(config, args.jobs))
                    latencies[config].append(await latency(config, args.latency_jobs))
                print(
                    f"end to end round {round_no + 1}: "
                    + ", ".join(
                        f"{c} {drains[c][-1]:.2f} ms/job, p50 "
                        f"{percentile(latencies[c][-1], 50):.2f} ms"
                        for c in paths
                    ),
                    file=sys.stderr,
                )
            results["drain_ms_per_job"] = {c: summarize(v).to_dict() for c, v in drains.items()}
            results["latency_ms"] = {
                c: {
                    "p50": summarize([percentile(r, 50) for r in rounds]).to_dict(),
                    "p99": summarize([percentile(r, 99) for r in rounds]).to_dict(),
                }
                for c, rounds in latencies.items()
            }
            results["jobs_per_round"] = args.jobs
            results["latency_jobs_per_round"] = args.latency_jobs
        finally:
            await pool.close()
            shutil.rmtree(data, ignore_errors=True)
    return results


def _markdown(report: dict[str, Any]) -> str:
    executor = report["executor"]
    lines = [
        f"# sandbox_overhead ({report['date']}, {report['rounds']} rounds of "
        f"{report['samples']} jobs per configuration, medians; 1-min load average "
        f"{report['load_average']['before']:.2f} before, "
        f"{report['load_average']['after']:.2f} after)",
        "",
        f"Sandbox: {executor['sandbox']}",
        "",
        "## Executor level: one trivial job, median ms",
        "",
        "| language | process start | bare | sandboxed | sandboxed, pre-started | dedicated "
        "| sandbox adds ms | pre-started adds ms | sandboxed / bare | dedicated / bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(figures: dict[str, Any], name: str) -> str:
        value = figures.get(name)
        if value is None:
            return "—"
        return f"{value['median']:.2f} ({value['min']:.2f}..{value['max']:.2f})"

    notes: list[str] = []
    for language, data in executor["languages"].items():
        figures = data["median_ms"]
        bare = figures.get("bare", {}).get("median")
        sandboxed = figures.get("sandboxed", {}).get("median")
        pre = figures.get("prestarted", {}).get("median")
        warm = figures.get("dedicated", {}).get("median")
        adds = f"{sandboxed - bare:.2f}" if bare and sandboxed else "—"
        pre_adds = f"{pre - bare:.2f}" if bare and pre else "—"
        ratio = f"{sandboxed / bare:.2f}x" if bare and sandboxed else "—"
        warm_ratio = f"{warm / bare:.2f}x" if bare and warm else "—"
        lines.append(
            f"| {language} | {cell(figures, 'process')} | {cell(figures, 'bare')} "
            f"| {cell(figures, 'sandboxed')} | {cell(figures, 'prestarted')} "
            f"| {cell(figures, 'dedicated')} | {adds} | {pre_adds} | {ratio} | {warm_ratio} |"
        )
        for name, why in data["not_measured"].items():
            notes.append(f"- {language} {name}: not measured ({why})")
    lines += ["", *notes] if notes else []
    comparison = executor.get("launchers_ab") or {}
    if comparison:
        lines += [
            "",
            f"## Pre-started launchers A/B (python3, prestarted_launchers=0 vs {LAUNCHERS}, "
            "interleaved; median ms, p25..p75)",
            "",
            "| jobs | sandboxed | sandboxed, pre-started | saved ms "
            "| pre-started jobs that found a launcher ready (all run) "
            "| jobs counted each | load average before, after |",
            "|---|---|---|---|---|---|---|",
        ]
        for spacing, data in comparison.items():
            median, p25, p75 = data["median_ms"], data["p25_ms"], data["p75_ms"]
            served = data["launcher_ready"] + data["launcher_missed"]
            lines.append(
                f"| {'0.2-0.5 s apart' if spacing == 'apart' else spacing} "
                f"| {median['sandboxed']:.2f} ({p25['sandboxed']:.2f}..{p75['sandboxed']:.2f}) "
                f"| {median['prestarted']:.2f} "
                f"({p25['prestarted']:.2f}..{p75['prestarted']:.2f}) "
                f"| {median['sandboxed'] - median['prestarted']:.2f} "
                f"| {data['launcher_ready']} of {served} | {data['jobs']['prestarted']} "
                f"| {data['load_average']['before']:.2f}, {data['load_average']['after']:.2f} |"
            )
    e2e = report.get("end_to_end")
    if e2e:
        lines += [
            "",
            f"## End to end through the queue (python3; {e2e['jobs_per_round']} jobs drained "
            f"per round, {e2e['latency_jobs_per_round']} single-job latencies per round)",
            "",
            "| worker | drain ms per job | single job p50 ms | single job p99 ms |",
            "|---|---|---|---|",
        ]
        for config in e2e["drain_ms_per_job"]:
            drain = e2e["drain_ms_per_job"][config]
            latency = e2e["latency_ms"][config]
            lines.append(
                f"| {LABELS.get(config, config)} "
                f"| {drain['median']:.2f} ({drain['min']:.2f}..{drain['max']:.2f}) "
                f"| {latency['p50']['median']:.2f} | {latency['p99']['median']:.2f} |"
            )
        machine = e2e["machine"]
        lines += [
            "",
            f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['os']}; PostgreSQL "
            f"{machine['postgres']} (round trip p50 {machine['round_trip_p50_ms']:.3f} ms, "
            f"one-row commit p50 {machine['commit_p50_ms']:.3f} ms)",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sandbox_overhead")
    parser.add_argument("--quick", action="store_true", help="1 round, fewer jobs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=30, help="jobs per config per round")
    parser.add_argument("--jobs", type=int, default=500, help="jobs drained per round")
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument(
        "--ab-samples", type=int, default=64, help="jobs per config and spacing, launcher A/B"
    )
    parser.add_argument("--languages", default="python3,bash,bun,deno,go")
    parser.add_argument("--no-queue", action="store_true", help="executor level only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "results")
    args = parser.parse_args(argv)
    args.languages = [name.strip() for name in args.languages.split(",") if name.strip()]
    if args.quick:
        args.rounds, args.samples, args.jobs, args.latency_jobs = 1, 10, 100, 30
        args.ab_samples = 24
    quiet_logging()
    load_before = load_average()
    started = time.monotonic()
    executor = asyncio.run(_executor_level(args))
    end_to_end = None if args.no_queue else asyncio.run(_end_to_end(args))
    report = {
        "benchmark": "sandbox_overhead",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "rounds": args.rounds,
        "samples": args.samples,
        "seconds": round(time.monotonic() - started, 1),
        "executor": executor,
        "end_to_end": end_to_end,
        "load_average": {"before": load_before, "after": load_average()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sandbox_overhead.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = _markdown(report)
    (args.out / "sandbox_overhead.md").write_text(markdown)
    print(markdown)
    return 0
