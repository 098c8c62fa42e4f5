"""``python -m bench <name> [options]``: run one benchmark."""

from __future__ import annotations

import importlib
import sys

_BENCHMARKS = {
    "queue_throughput": "bench.queue_throughput",
    "sync_latency": "bench.sync_latency",
    "flow_overhead": "bench.flow_overhead",
    "sandbox_overhead": "bench.sandbox_overhead",
    "dedicated": "bench.dedicated",
    "triggers": "bench.triggers",
    "peer_queue": "bench.peer_queue",
    "peer_flows": "bench.peer_flows",
    "cost_growth": "bench.cost_growth",
    "guard": "bench.guard",
    "ui_tti": "bench.ui_tti",
    "all": "bench.all",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in _BENCHMARKS:
        names = ", ".join(sorted(_BENCHMARKS))
        print(f"usage: python -m bench <name> [options]   (names: {names})", file=sys.stderr)
        return 2
    module = importlib.import_module(_BENCHMARKS[argv[0]])
    status: int = module.main(argv[1:])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
