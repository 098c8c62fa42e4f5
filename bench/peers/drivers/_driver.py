"""What every peer driver shares: arguments, worker processes, percentiles, the JSON answer.

Drivers run in the peers' virtual environment (``bench/.peers-venv``), never in
Gristmill's, and import nothing from Gristmill or from ``bench``: each is a script,
``python <driver>.py <scenario> [options]``, that prints one JSON object as its last
line of standard output. One invocation is one sample (one round of one system), so
that the harness can alternate systems round by round.

Clocks: every timestamp is ``time.monotonic_ns()``, which is ``CLOCK_MONOTONIC`` and
so comparable between processes on Linux.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

__all__ = [
    "WorkerGroup",
    "emit",
    "parse_args",
    "percentile",
    "pure_compute_s",
    "summary_latency",
]

_START = "go"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=("drain", "sustained", "latency", "flow", "probe"))
    parser.add_argument("--dsn", default="", help="PostgreSQL URL of a fresh database")
    parser.add_argument("--redis", default="", help="Redis URL (Celery)")
    parser.add_argument("--api", default="", help="Prefect API URL")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--gap-ms", type=float, nargs=2, default=(5.0, 15.0))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--warmup", action="store_true", help="flow: run a 2-step flow first")
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    """The driver's answer: one JSON line, last on standard output."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100), as the Gristmill side computes it."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_latency(samples_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples_ms, 50),
        "p99_ms": percentile(samples_ms, 99),
        "max_ms": max(samples_ms) if samples_ms else math.nan,
        "samples": float(len(samples_ms)),
    }


def _child(target: Callable[[Connection, Any], Any], pipe: Connection, arg: Any) -> None:
    try:
        result = target(pipe, arg)
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        raise
    pipe.send(("ok", result))


class WorkerGroup:
    """``count`` worker processes running ``target(pipe, arg)``.

    A target sets itself up, calls ``ready(pipe)`` (which blocks until the parent says
    go), works, and returns a picklable result. The parent starts the clock only
    when every worker is ready, so no start-up is ever timed.
    """

    def __init__(self, target: Callable[[Connection, Any], Any], args: Sequence[Any]) -> None:
        mp = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for arg in args:
            parent, child = mp.Pipe()
            proc = mp.Process(target=_child, args=(target, child, arg), daemon=True)
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)

    def wait_ready(self, timeout: float = 120.0) -> None:
        for index, pipe in enumerate(self._pipes):
            if not pipe.poll(timeout):
                raise TimeoutError(f"worker {index} not ready within {timeout:g}s")
            kind, value = pipe.recv()
            if kind != "ready":
                raise RuntimeError(f"worker {index}: {kind} {value}")

    def go(self) -> int:
        now = time.monotonic_ns()
        for pipe in self._pipes:
            pipe.send(_START)
        return now

    def send(self, message: Any) -> None:
        for pipe in self._pipes:
            pipe.send(message)

    def results(self, timeout: float = 900.0) -> list[Any]:
        out: list[Any] = []
        for index, pipe in enumerate(self._pipes):
            if not pipe.poll(timeout):
                raise TimeoutError(f"worker {index} gave no result within {timeout:g}s")
            kind, value = pipe.recv()
            if kind != "ok":
                raise RuntimeError(f"worker {index} failed: {value}")
            out.append(value)
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
        return out

    def terminate(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)


def ready(pipe: Connection) -> None:
    """In a worker: report ready, then block until the parent says go."""
    pipe.send(("ready", None))
    message = pipe.recv()
    if message != _START:
        raise RuntimeError(f"expected {_START!r}, got {message!r}")


_FIBO_PROGRAM = """
import time
def fibo(n):
    return n if n <= 1 else fibo(n - 1) + fibo(n - 2)
t = time.perf_counter()
for _ in range({steps}):
    fibo({n})
print(time.perf_counter() - t)
"""


def pure_compute_s(steps: int, n: int) -> float:
    """``steps`` calls of ``fibo(n)`` timed in a fresh process of this interpreter.

    Not in the driver's own process: a workflow library's background threads (event
    flushing, notification listeners) would still be competing for the CPU there.
    """
    program = _FIBO_PROGRAM.format(steps=steps, n=n)
    out = subprocess.run(
        [sys.executable, "-c", program], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def drain_result(jobs: int, first_start_ns: int, ends_ns: Sequence[int]) -> dict[str, float]:
    elapsed = (max(ends_ns) - first_start_ns) / 1e9
    return {"jobs": float(jobs), "elapsed_s": elapsed, "jobs_per_s": jobs / elapsed}
