"""Summaries of repeated measurements, and how busy the machine was meanwhile."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CpuMeter",
    "CpuUse",
    "Measurements",
    "Summary",
    "load_average",
    "percentile",
    "summarize",
]


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was actually observed."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, min and max of one figure over the rounds."""

    median: float
    min: float
    max: float
    rounds: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "rounds": list(self.rounds),
        }


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(math.nan, math.nan, math.nan, ())
    return Summary(
        median=statistics.median(values),
        min=min(values),
        max=max(values),
        rounds=tuple(values),
    )


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Machine-wide CPU use over an interval, as fractions of all cores."""

    busy: float
    iowait: float


def _read_proc_stat() -> tuple[int, int, int] | None:
    """(total, idle, iowait) jiffies since boot, or None off Linux."""
    try:
        line = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = [int(v) for v in line.split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    total = sum(fields[:8])
    return total, fields[3], fields[4]


def load_average() -> float:
    """The 1-minute load average (runnable processes), NaN where unknown."""
    try:
        return float(Path("/proc/loadavg").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


class CpuMeter:
    """``start()`` then ``stop()``: how busy every core was in between."""

    def __init__(self) -> None:
        self._start: tuple[int, int, int] | None = None

    def start(self) -> None:
        self._start = _read_proc_stat()

    def stop(self) -> CpuUse:
        end = _read_proc_stat()
        if self._start is None or end is None:
            return CpuUse(math.nan, math.nan)
        total = end[0] - self._start[0]
        if total <= 0:
            return CpuUse(math.nan, math.nan)
        idle = end[1] - self._start[1]
        iowait = end[2] - self._start[2]
        return CpuUse(busy=(total - idle - iowait) / total, iowait=iowait / total)


@dataclass(slots=True)
class Measurements:
    """One configuration of a scenario, and its metrics over the rounds."""

    params: dict[str, Any]
    values: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, **metrics: float) -> None:
        for name, value in metrics.items():
            self.values.setdefault(name, []).append(value)

    def summary(self, metric: str) -> Summary:
        return summarize(self.values.get(metric, []))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "metrics": {name: self.summary(name).to_dict() for name in self.values},
            **self.extra,
        }
