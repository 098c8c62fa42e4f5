"""Regression guard: a smoke run of the queue and flow benchmarks, judged by ratios only.

Fails only on a gross regression: a figure whose time per job (or per flow step),
divided by the bare asyncpg loop's time per row measured in the same run, is more
than ``bench.guard.FACTOR`` (3) times the committed baseline's. Never on absolute
times: a loaded machine slows both sides. Needs no peer. Takes 10-45 s.
"""

from __future__ import annotations

import json

from bench.guard import BASELINE, FACTOR, compare, measure


def test_no_gross_regression_against_the_bare_postgres_loop() -> None:
    baseline = json.loads(BASELINE.read_text())
    measured = measure()
    failures = compare(measured, baseline)
    assert not failures, (
        f"more than {FACTOR:g}x slower, relative to the bare loop, than the baseline "
        f"(bench/guard_baseline.json): {failures}; measured {measured}"
    )


def test_compare_flags_only_gross_slowdowns() -> None:
    baseline = {"slowdowns": {"queue": 2.0, "flow": 50.0}}
    ok = {"slowdowns": {"queue": 5.9, "flow": 10.0}}
    bad = {"slowdowns": {"queue": 6.1, "flow": 50.0}}
    assert compare(ok, baseline) == []
    assert [f.split(":")[0] for f in compare(bad, baseline)] == ["queue"]
    assert compare({"slowdowns": {"queue": 1.0}}, baseline) == ["flow: not measured"]
