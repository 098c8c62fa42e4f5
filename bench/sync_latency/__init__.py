"""``python -m bench sync_latency``: synchronous HTTP execution of a trivial script.

``POST /api/w/main/jobs/run_wait_result/p/<path>`` and a synchronous HTTP route
(``POST /api/r/bench/echo``, no authentication) running the same script, on a
``gristmill up`` (embedded Postgres, production durability, sandbox as configured) at
concurrency 1 and 32, p50/p99 and requests/s, next to a bare Litestar endpoint
returning the same JSON in the same run (the ceiling: HTTP parsing and a handler,
nothing else). The three are measured alternately, A B C A B C, for ``--rounds``
rounds; figures are medians of the rounds. The load generator (httpx) runs on the
same cores: its cost is in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench._pg import describe_machine, fresh_database, server
from bench._stats import load_average, percentile, summarize

TOKEN = "bench-sync-latency-token-0123456789"
SCRIPT = "def main(x: int):\n    return x\n"
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


async def _load(
    call: Callable[[httpx.AsyncClient, int], Awaitable[None]],
    client: httpx.AsyncClient,
    concurrency: int,
    requests: int,
) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def lane() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(client, i)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "req_per_s": requests / elapsed,
    }


async def _measure(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    load_before = load_average()
    with server() as pg:
        dsn = await fresh_database(pg, "bench_sync")
        machine = await describe_machine(dsn)
        data = Path(tempfile.mkdtemp(prefix="gristmill-bench-sync-"))
        data.chmod(0o755)
        gm_port, ceiling_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
        env.update(
            GRISTMILL_DATABASE_URL=dsn,
            GRISTMILL_HTTP_PORT=str(gm_port),
            GRISTMILL_ADMIN_TOKEN=TOKEN,
            GRISTMILL_DATA_DIR=str(data / "data"),
            GRISTMILL_WORKERS=str(args.workers),
            GRISTMILL_LOG_LEVEL="warning",
        )
        env.update(dict(item.split("=", 1) for item in args.env))
        up = subprocess.Popen(
            [sys.executable, "-m", "gristmill.cli.main", "up"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        ceiling = subprocess.Popen(
            [sys.executable, "-m", "bench.sync_latency.ceiling_app", str(ceiling_port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_http(f"http://127.0.0.1:{gm_port}/api/version")
            _wait_http(f"http://127.0.0.1:{ceiling_port}/run")
            headers = {"Authorization": f"Bearer {TOKEN}"}
            base = f"http://127.0.0.1:{gm_port}"
            saved = httpx.post(
                f"{base}/api/w/main/scripts/create",
                headers=headers,
                json={"path": "u/admin/echo", "content": SCRIPT, "language": "python3"},
            )
            saved.raise_for_status()
            route = httpx.post(
                f"{base}/api/w/main/http_triggers/create",
                headers=headers,
                json={
                    "path": "u/admin/bench_echo",
                    "route_path": "bench/echo",
                    "script_path": "u/admin/echo",
                    "is_flow": False,
                    "http_method": "post",
                    "authentication_method": "none",
                },
            )
            route.raise_for_status()

            async def gristmill(client: httpx.AsyncClient, i: int) -> None:
                response = await client.post(
                    f"{base}/api/w/main/jobs/run_wait_result/p/u/admin/echo",
                    json={"x": i},
                    headers=headers,
                )
                if response.status_code != 200 or response.json() != i:
                    raise RuntimeError(f"bad answer {response.status_code}: {response.text}")

            async def http_route(client: httpx.AsyncClient, i: int) -> None:
                response = await client.post(f"{base}/api/r/bench/echo", json={"x": i})
                if response.status_code != 200 or response.json() != i:
                    raise RuntimeError(f"bad route answer {response.status_code}: {response.text}")

            async def bare(client: httpx.AsyncClient, i: int) -> None:
                response = await client.post(f"http://127.0.0.1:{ceiling_port}/run", json={"x": i})
                if response.status_code != 200 or response.json() != i:
                    raise RuntimeError(f"bad ceiling answer {response.status_code}")

            # Idle connections are dropped before the servers' keep-alive timeout (5 s)
            # closes them: a target waits idle while the others are measured, and reusing
            # a connection the server is closing fails the request.
            limits = httpx.Limits(
                max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0
            )
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                for target in (gristmill, http_route, bare):  # warm up all three
                    await _load(target, client, 4, 40)
                for concurrency in (1, 32):
                    requests = args.requests if concurrency == 1 else args.requests * 3
                    rounds: dict[str, list[dict[str, float]]] = {
                        "gristmill": [],
                        "http_route": [],
                        "litestar": [],
                    }
                    for _ in range(args.rounds):
                        rounds["gristmill"].append(
                            await _load(gristmill, client, concurrency, requests)
                        )
                        rounds["http_route"].append(
                            await _load(http_route, client, concurrency, requests)
                        )
                        rounds["litestar"].append(await _load(bare, client, concurrency, requests))
                        print(f"c={concurrency}: {rounds['gristmill'][-1]}", file=sys.stderr)
                    results[f"c{concurrency}"] = {
                        name: {
                            key: summarize([r[key] for r in samples]).to_dict()
                            for key in ("p50_ms", "p99_ms", "req_per_s")
                        }
                        for name, samples in rounds.items()
                    } | {"requests_per_round": requests}
        finally:
            for proc in (up, ceiling):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
            shutil.rmtree(data, ignore_errors=True)
    report = {
        "benchmark": "sync_latency",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine.to_dict() if hasattr(machine, "to_dict") else str(machine),
        "python": platform.python_version(),
        "workers": args.workers,
        "env": args.env,
        "rounds": args.rounds,
        "results": results,
        "load_average": {"before": load_before, "after": load_average()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "sync_latency.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "sync_latency.md").write_text(_markdown(report))
    return report


_TARGETS = {
    "gristmill": "run_wait_result",
    "http_route": "HTTP route /api/r/bench/echo",
    "litestar": "bare Litestar",
}


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# sync_latency ({report['date']}, {report['rounds']} rounds, medians; "
        f"{report['workers']} worker loops; 1-min load average "
        f"{report['load_average']['before']:.2f} before, "
        f"{report['load_average']['after']:.2f} after)",
        "",
        "| concurrency | target | p50 ms | p99 ms | req/s | p50 ratio to ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for key, figures in report["results"].items():
        ceiling = figures["litestar"]["p50_ms"]["median"]
        for name in ("gristmill", "http_route", "litestar"):
            if name not in figures:
                continue
            f = figures[name]
            lines.append(
                f"| {key[1:]} | {_TARGETS[name]} "
                f"| {f['p50_ms']['median']:.2f} | {f['p99_ms']['median']:.2f} "
                f"| {f['req_per_s']['median']:.0f} | {f['p50_ms']['median'] / ceiling:.1f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sync_latency")
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="per round at concurrency 1")
    parser.add_argument("--workers", type=int, default=2, help="worker loops in gristmill up")
    parser.add_argument(
        "--env", action="append", default=[], help="extra NAME=VALUE for gristmill up"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 2, 40
    report = asyncio.run(_measure(args, args.out))
    print(_markdown(report))
    return 0
