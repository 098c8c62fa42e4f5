"""The Markdown report of a run, rendered from its JSON document."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["render_markdown"]

Row = dict[str, Any]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def _num(value: float, digits: int = 3) -> str:
    """A human figure: thousands separators for big values, ``digits`` significant ones."""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _metric(point: Row, name: str) -> dict[str, Any]:
    summary: dict[str, Any] = point["metrics"][name]
    return summary


def _median_range(point: Row, name: str) -> str:
    s = _metric(point, name)
    return f"{_num(s['median'])} ({_num(s['min'])}..{_num(s['max'])})"


def _median(point: Row, name: str) -> float:
    value: float = _metric(point, name)["median"]
    return value


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.0f}%"


def _machine(doc: Row) -> str:
    m = doc["machine"]
    s = m["settings"]
    return (
        f"- date: {doc['date']} ({doc['mode']} run, {doc['rounds']} rounds, "
        f"{doc['duration_s']:.0f} s)\n"
        f"- machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['os']}\n"
        f"- PostgreSQL {m['postgres']} (embedded, durable defaults): fsync={s['fsync']}, "
        f"synchronous_commit={s['synchronous_commit']}, "
        f"full_page_writes={s['full_page_writes']}, wal_sync_method={s['wal_sync_method']}, "
        f"shared_buffers={s['shared_buffers']}\n"
        f"- one round trip (`SELECT 1`) p50 {_num(m['round_trip_p50_ms'], 2)} ms; one-row "
        f"INSERT committed alone (round trip + WAL flush) p50 {_num(m['commit_p50_ms'], 2)} ms\n"
        f"- Python {m['python']}, asyncpg; server and clients share the machine's cores; "
        f"1-minute load average {doc['load_average']['before']:.2f} before the run, "
        f"{doc['load_average']['after']:.2f} after"
    )


def _throughput(doc: Row) -> str:
    ceilings = {
        (
            p["params"]["processes"],
            p["params"]["claim_batch"],
            p["params"]["complete_in_one_statement"],
        ): _median(p, "jobs_per_s")
        for p in doc["throughput"]["ceiling"]
    }
    big = max(b for _, b, _ in ceilings)
    rows = []
    for point in doc["throughput"]["queue"]:
        procs, batch = point["params"]["processes"], point["params"]["claim_batch"]
        rate = _median(point, "jobs_per_s")
        same = ceilings.get((procs, 1 if batch == 1 else big, False), math.nan)
        best = ceilings.get((procs, big, True), math.nan)
        rows.append(
            [
                str(procs),
                str(batch),
                _median_range(point, "jobs_per_s"),
                f"{rate / same:.2f}",
                f"{rate / best:.3f}",
                _num(_median(point, "enqueue_jobs_per_s")),
                _num(_median(point, "client_cpu_cores"), 2),
                _pct(_median(point, "machine_cpu_busy")),
            ]
        )
    queue_table = _table(
        [
            "worker processes",
            "claim batch",
            "claim+complete jobs/s, median (min..max)",
            "ratio to ceiling, one DELETE per row",
            f"ratio to ceiling, batch {big} + one DELETE",
            "enqueue jobs/s (100 per call)",
            "worker CPU (cores)",
            "machine CPU busy",
        ],
        rows,
    )
    ceiling_rows = [
        [
            str(p["params"]["processes"]),
            str(p["params"]["claim_batch"]),
            "one statement" if p["params"]["complete_in_one_statement"] else "one per row",
            _median_range(p, "jobs_per_s"),
            _pct(_median(p, "machine_cpu_busy")),
        ]
        for p in doc["throughput"]["ceiling"]
    ]
    ceiling_table = _table(
        [
            "worker processes",
            "claim batch",
            "complete (DELETE)",
            "jobs/s, median (min..max)",
            "machine CPU busy",
        ],
        ceiling_rows,
    )
    first = doc["throughput"]["queue"][0]["params"]["jobs"]
    ceiling_jobs = doc["throughput"]["ceiling"][0]["params"]["jobs"]
    return (
        f"### Claim + complete of no-op jobs ({first:,} queued, then drained)\n\n"
        f"{queue_table}\n\n"
        "A claimed batch is completed by one `Queue.complete_many` (one statement, one "
        'commit), as a worker records the successes that finish together. "One DELETE per '
        f'row": the ceiling with claim batch 1 (for batch 1) or {big} (otherwise).\n\n'
        f"### Physical ceiling: bare asyncpg claim (SKIP LOCKED) + DELETE on a trivial "
        f"table ({ceiling_jobs:,} rows)\n\n{ceiling_table}"
    )


def _latency(doc: Row) -> str:
    rows = [
        [
            f"{p['params']['backlog']:,}",
            _num(_median(p, "samples")),
            _median_range(p, "p50_ms"),
            _median_range(p, "p99_ms"),
            "yes" if p["claim_uses_claim_index"] else "no (sorts the backlog)",
        ]
        for p in doc["claim_latency"]
    ]
    return "### Claim latency, one job at a time, idle server\n\n" + _table(
        [
            "queued rows",
            "claims per round",
            "p50 ms, median (min..max)",
            "p99 ms, median (min..max)",
            "claim plan uses job_queue_claim_idx",
        ],
        rows,
    )


def _wakeup(doc: Row) -> str:
    rows = []
    for p in doc["wakeup"]:
        interval = p["params"]["poll_interval_ms"]
        mode = (
            f"LISTEN/NOTIFY (poll fallback {interval:g} ms)"
            if p["params"]["mode"] == "notify"
            else f"poll every {interval:g} ms"
        )
        rows.append(
            [
                mode,
                _median_range(p, "p50_ms"),
                _median_range(p, "p99_ms"),
                _num(_median(p, "idle_claims_per_s"), 2),
                _num(_median(p, "empty_claim_p50_ms"), 2),
            ]
        )
    jobs = doc["wakeup"][0]["params"]["jobs"]
    return (
        f"### Worker wake-up, enqueue → claim start ({jobs} single jobs per round, "
        "idle worker)\n\n"
        + _table(
            [
                "wake-up",
                "p50 ms, median (min..max)",
                "p99 ms, median (min..max)",
                "claims/s of an idle worker",
                "empty claim p50 ms",
            ],
            rows,
        )
    )


def _notify(doc: Row) -> str:
    by_key = {
        (p["params"]["enqueuers"], p["params"]["notify"], p["params"]["extra_round_trip"]): p
        for p in doc["notify_cost"]
    }
    rows = []
    for k in sorted({k for k, _, _ in by_key}):
        off = by_key[(k, False, False)]
        trip = by_key[(k, False, True)]
        on = by_key[(k, True, False)]
        base = _median(off, "jobs_per_s")
        rows.append(
            [
                str(k),
                _median_range(off, "jobs_per_s"),
                _median_range(trip, "jobs_per_s"),
                _median_range(on, "jobs_per_s"),
                f"{_median(trip, 'jobs_per_s') / base:.2f}",
                f"{_median(on, 'jobs_per_s') / base:.2f}",
                _pct(_median(on, "machine_cpu_busy")),
            ]
        )
    return "### Cost of NOTIFY on enqueue (one job per transaction, a listener connected)\n\n" + (
        _table(
            [
                "concurrent enqueuers",
                "notify=False jobs/s",
                "notify=False + 1 round trip",
                "notify=True jobs/s",
                "ratio: +1 round trip",
                "ratio: notify=True",
                "machine CPU busy (notify=True)",
            ],
            rows,
        )
    )


def render_markdown(doc: Row) -> str:
    sections = [
        "## Queue throughput benchmark",
        _machine(doc),
        _throughput(doc),
        _latency(doc),
        _wakeup(doc),
        _notify(doc),
    ]
    if doc.get("notes"):
        sections.append("\n".join(f"- {note}" for note in doc["notes"]))
    return "\n\n".join(sections) + "\n"
