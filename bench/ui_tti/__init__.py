"""Time to interactive of the web UI in headless Chromium (report only).

Two pages, each loaded cold (a fresh browser context, so nothing cached) several times:

* the runs list (``/runs``, its first page of 50) with N completed jobs in the
  database (10,000 by default, inserted straight into the job tables);
* a flow of S sequential steps (200 by default) in the flow page's graph.

Per load: ``rendered`` is the time from navigation start until the rows (or every
step node) are in the page; ``interactive`` is when the browser next reports the main
thread idle (``requestIdleCallback``) after that. Both are read from the page's own
clock (``performance.now()``). Results: ``bench/results/ui_tti.{json,md}``.

Needs the UI built (``scripts/build-ui``, run here) and Chromium (``/usr/bin/chromium``
or ``GRISTMILL_TEST_CHROMIUM``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from playwright.sync_api import Browser, sync_playwright

from bench._gristmill_up import gristmill_up
from bench._pg import describe_machine, fresh_database, server
from bench._stats import load_average, summarize

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-ui-tti-admin-token-0123456789"
CHROMIUM = os.environ.get("GRISTMILL_TEST_CHROMIUM", "/usr/bin/chromium")
FLOW_PATH = "f/bench/long_flow"

#: Completed jobs of a few scripts, spread over the last days, 1 in 10 failed.
_SEED_JOBS = """
WITH made AS (
    INSERT INTO jobs (id, workspace_id, kind, runnable_path, language, args, tag,
                      created_by, trigger_kind, trigger_source, scheduled_for, created_at)
    SELECT gen_random_uuid(), 'main', 'script', 'u/admin/job_' || (i % 25), 'python3',
           jsonb_build_object('i', i), 'python3', 'admin', 'api', 'bench',
           now() - make_interval(secs => i * 7), now() - make_interval(secs => i * 7)
    FROM generate_series(1, $1::int) AS i
    RETURNING id, created_at
)
INSERT INTO jobs_completed (id, workspace_id, status, result, error, exit_reason,
                            started_at, completed_at, duration_ms, attempt, worker)
SELECT id, 'main',
       CASE WHEN random() < 0.1 THEN 'failure' ELSE 'success' END,
       '{"ok": true}'::jsonb, NULL, 'ok',
       created_at, created_at + interval '120 milliseconds', 120, 1, 'bench'
FROM made
"""


def _flow(steps: int) -> dict[str, Any]:
    step = "def main(x: int = 0):\n    return x + 1\n"
    modules = [
        {
            "id": f"s{i}",
            "value": {
                "type": "rawscript",
                "language": "python3",
                "content": step,
                "input_transforms": {
                    "x": {"type": "javascript", "expr": f"results.s{i - 1}" if i else "0"}
                },
            },
        }
        for i in range(steps)
    ]
    return {
        "path": FLOW_PATH,
        "summary": f"{steps} steps",
        "description": "",
        "schema": {"type": "object", "properties": {}},
        "value": {"modules": modules},
    }


def _load(browser: Browser, base: str, url: str, ready: str) -> dict[str, float]:
    """One cold load of ``url``; ``ready`` is a JavaScript condition on the page."""
    context = browser.new_context(base_url=base, viewport={"width": 1440, "height": 1000})
    context.add_init_script(
        f"localStorage.setItem('gristmill.token', {TOKEN!r});"
        "localStorage.setItem('gristmill.workspace', 'main');"
    )
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit")
        page.wait_for_function(ready, polling="raf", timeout=60_000)
        rendered: float = page.evaluate("performance.now()")
        interactive: float = page.evaluate(
            "new Promise(r => requestIdleCallback(() => r(performance.now())))"
        )
        return {"rendered_ms": rendered, "interactive_ms": interactive}
    finally:
        context.close()


def _measure_pages(base: str, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    pages = {
        f"runs list, {args.jobs} jobs": (
            "/runs",
            "document.querySelectorAll('table.runs-table tbody tr').length === 50",
        ),
        f"flow graph, {args.steps} steps": (
            f"/flows/get/{FLOW_PATH}",
            f"document.querySelectorAll('.flow-step').length === {args.steps}",
        ),
    }
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in pages}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            for url, ready in pages.values():  # warm-up: server caches, untimed
                _load(browser, base, url, ready)
            for r in range(args.rounds):
                for name, (url, ready) in pages.items():
                    sample = _load(browser, base, url, ready)
                    samples[name].append(sample)
                    print(f"round {r + 1} {name}: {sample}", file=sys.stderr)
        finally:
            browser.close()
    return samples


async def _seed(dsn: str, jobs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_SEED_JOBS, jobs)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _run(args: argparse.Namespace) -> dict[str, Any]:
    build = subprocess.run(["bash", str(ROOT / "scripts" / "build-ui")], check=False)
    if build.returncode != 0:
        raise SystemExit("the web UI could not be built (scripts/build-ui)")
    load_before = load_average()
    with server() as pg:
        dsn = asyncio.run(fresh_database(pg, "bench_ui_tti"))
        machine = asyncio.run(describe_machine(dsn))
        asyncio.run(_seed(dsn, args.jobs))
        with gristmill_up(dsn, TOKEN, workers=1) as base:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            created = httpx.post(
                f"{base}/api/w/main/flows/create", json=_flow(args.steps), headers=headers
            )
            created.raise_for_status()
            samples = _measure_pages(base, args)
    results = {
        name: {
            key: summarize([s[key] for s in runs]).to_dict()
            for key in ("rendered_ms", "interactive_ms")
        }
        | {"samples": runs}
        for name, runs in samples.items()
    }
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False)
    return {
        "benchmark": "ui_tti",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine.to_dict(),
        "browser": chromium.stdout.strip(),
        "rounds": args.rounds,
        "jobs": args.jobs,
        "steps": args.steps,
        "results": results,
        "load_average": {"before": load_before, "after": load_average()},
    }


def _markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# ui_tti ({report['date']}, {report['rounds']} cold loads each, medians (min..max))",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}; "
        f"{report['browser']} headless; PostgreSQL {m['postgres']} embedded; 1-min load "
        f"average {report['load_average']['before']:.2f} before, "
        f"{report['load_average']['after']:.2f} after.",
        "",
        "| page | rendered ms | interactive ms |",
        "|---|---|---|",
    ]

    def fmt(s: dict[str, float]) -> str:
        return f"{s['median']:.0f} ({s['min']:.0f}..{s['max']:.0f})"

    for name, r in report["results"].items():
        lines.append(f"| {name} | {fmt(r['rendered_ms'])} | {fmt(r['interactive_ms'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ui_tti")
    parser.add_argument("--quick", action="store_true", help="2 loads of each page")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 2
    report = _run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ui_tti.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "ui_tti.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0
