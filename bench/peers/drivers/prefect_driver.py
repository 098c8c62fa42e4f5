"""Prefect: the published flow benchmark as a Prefect flow against a local Prefect server.

The server (``prefect server start``, database on the PostgreSQL under test) is
started once by the harness; this driver runs a ``@flow`` of ``--steps`` sequential
``@task`` calls of ``fibo(--n)`` in this process (a flow called directly runs where it
is called; no deployment or work pool in between), with every flow and task run
state reported to the server. Total = flow call to its result; pure compute = the
same ``fibo`` calls in a fresh process of the same interpreter, right after.
"""

from __future__ import annotations

import os
import time

from _driver import emit, parse_args, pure_compute_s


def fibo(n: int) -> int:
    return n if n <= 1 else fibo(n - 1) + fibo(n - 2)


def main() -> None:
    args = parse_args()
    os.environ["PREFECT_API_URL"] = args.api
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect import flow, task

    if args.scenario == "probe":
        import prefect

        emit({"version": prefect.__version__})
        return

    @task
    def fibo_task(n: int) -> int:
        return fibo(n)

    @flow
    def chain(steps: int, n: int) -> int:
        result = 0
        for _ in range(steps):
            result = fibo_task(n)
        return result

    if args.warmup:
        chain(2, 10)
    started = time.perf_counter()
    result = chain(args.steps, args.n)
    total = time.perf_counter() - started
    if result != fibo(args.n):
        raise RuntimeError(f"bad result {result}")
    compute = pure_compute_s(args.steps, args.n)
    emit(
        {
            "total_s": total,
            "compute_s": compute,
            "overhead_per_step_ms": (total - compute) / args.steps * 1000,
            "settings": {"tasks": "@task called in sequence", "runs": "in process"},
        }
    )


if __name__ == "__main__":
    main()
