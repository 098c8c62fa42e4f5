"""Run systems side by side: A B C A B C ..., one sample per system per round.

A system is a name and an async sampler returning a dict of figures (plus optional
``settings``). A sampler that fails is recorded with its error and skipped in that
round; nothing is ever filled in for it. Summaries are medians with min..max, and
ratios are taken between medians.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._pg import describe_machine
from bench._stats import load_average, summarize

__all__ = [
    "RESULTS",
    "Sampler",
    "SystemRuns",
    "alternate",
    "fmt",
    "header",
    "machine_line",
    "run_header",
    "write_results",
]

RESULTS = Path(__file__).resolve().parent / "results"

Sampler = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class SystemRuns:
    samples: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> dict[str, Any]:
        values = [float(s[name]) for s in self.samples if name in s]
        return summarize(values).to_dict()

    def median(self, name: str) -> float:
        value: float = self.metric(name)["median"]
        return value

    def to_dict(self, metrics: Sequence[str]) -> dict[str, Any]:
        return {
            "metrics": {m: self.metric(m) for m in metrics},
            "settings": self.settings,
            "errors": self.errors,
            "rounds_measured": len(self.samples),
        }


async def alternate(
    rounds: int,
    systems: Mapping[str, Sampler],
    say: Callable[[str], None],
    label: str,
) -> dict[str, SystemRuns]:
    runs = {name: SystemRuns() for name in systems}
    for round_no in range(1, rounds + 1):
        for name, sampler in systems.items():
            try:
                sample = await sampler()
            except Exception as exc:
                detail = "".join(traceback.format_exception_only(exc)).strip()
                runs[name].errors.append(f"round {round_no}: {detail[-1500:]}")
                say(f"round {round_no} {label} {name}: FAILED {detail[-300:]}")
                continue
            runs[name].settings = sample.pop("settings", runs[name].settings)
            runs[name].samples.append(sample)
            shown = ", ".join(
                f"{k}={v:.4g}" for k, v in sample.items() if isinstance(v, int | float)
            )
            say(f"round {round_no} {label} {name}: {shown}")
    return runs


def fmt(summary: Mapping[str, Any], digits: int = 0) -> str:
    """``median (min..max)``, or an em dash when there is nothing."""
    median = summary.get("median", math.nan)
    if median is None or (isinstance(median, float) and math.isnan(median)):
        return "—"
    if digits == 0 and abs(median) >= 100:
        return f"{median:,.0f} ({summary['min']:,.0f}..{summary['max']:,.0f})"
    d = digits or (1 if abs(median) >= 10 else 2)
    return f"{median:.{d}f} ({summary['min']:.{d}f}..{summary['max']:.{d}f})"


async def run_header(dsn: str, origin: str) -> dict[str, Any]:
    machine = await describe_machine(dsn)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.to_dict(),
        "postgres_origin": origin,
        "python": platform.python_version(),
        "load_average_before": load_average(),
        "cores": os.cpu_count(),
    }


def machine_line(doc: Mapping[str, Any]) -> str:
    m = doc["machine"]
    s = m["settings"]
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}; "
        f"PostgreSQL {m['postgres']} ({doc.get('postgres_origin', 'embedded')}): "
        f"fsync={s['fsync']}, synchronous_commit={s['synchronous_commit']}, "
        f"full_page_writes={s['full_page_writes']}, wal_sync_method={s['wal_sync_method']}; "
        f"round trip p50 {m['round_trip_p50_ms']:.3f} ms, one-row commit p50 "
        f"{m['commit_p50_ms']:.3f} ms; Python {doc['python']}"
    )


def header(doc: Mapping[str, Any]) -> list[str]:
    load = doc.get("load_average", {})
    lines = [
        f"- date: {doc['date']} ({doc['mode']} run, {doc['rounds']} rounds, systems "
        "alternated within each round; figures are medians (min..max) of the rounds)",
        f"- machine: {machine_line(doc)}",
        f"- 1-minute load average: {load.get('before', math.nan):.2f} before, "
        f"{load.get('after', math.nan):.2f} after",
    ]
    lines += [f"- note: {note}" for note in doc.get("notes", [])]
    return lines


def write_results(out: Path, name: str, doc: dict[str, Any], markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(markdown)


def busy_note(load_before: float, cores: int) -> str | None:
    if load_before > 0.25 * cores:
        return (
            f"the machine was busy before the run (1-minute load average {load_before:.1f} on "
            f"{cores} cores): other processes competed for the CPU; treat the figures as "
            "upper bounds for latencies and lower bounds for rates"
        )
    return None


def elapsed_since(started: float) -> float:
    return round(time.perf_counter() - started, 1)
