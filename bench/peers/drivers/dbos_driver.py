"""DBOS Transact: the published flow benchmark as a DBOS workflow on PostgreSQL.

A workflow of ``--steps`` sequential ``@DBOS.step`` calls of ``fibo(--n)``; every step's
output is checkpointed in the system database (PostgreSQL, the server under test).
The workflow runs in this process (DBOS executes workflows in the application's own
process; there is no separate worker). Total = workflow call to its result; pure
compute = the same calls of ``fibo`` in a fresh process of the same interpreter, right after.
"""

from __future__ import annotations

import time

from _driver import emit, parse_args, pure_compute_s
from dbos import DBOS, DBOSConfig


def fibo(n: int) -> int:
    return n if n <= 1 else fibo(n - 1) + fibo(n - 2)


@DBOS.step()
def fibo_step(n: int) -> int:
    return fibo(n)


@DBOS.workflow()
def chain(steps: int, n: int) -> int:
    result = 0
    for _ in range(steps):
        result = fibo_step(n)
    return result


def main() -> None:
    args = parse_args()
    if args.scenario == "probe":
        from importlib.metadata import version

        emit({"version": version("dbos")})
        return
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": args.dsn,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        if args.warmup:
            chain(2, 10)
        started = time.perf_counter()
        result = chain(args.steps, args.n)
        total = time.perf_counter() - started
        if result != fibo(args.n):
            raise RuntimeError(f"bad result {result}")
        compute = pure_compute_s(args.steps, args.n)
    finally:
        DBOS.destroy()
    emit(
        {
            "total_s": total,
            "compute_s": compute,
            "overhead_per_step_ms": (total - compute) / args.steps * 1000,
            "settings": {"steps": "@DBOS.step, checkpointed", "runs": "in process"},
        }
    )


if __name__ == "__main__":
    main()
