"""Which ticks a pass fires: pure planning, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gristmill.common.cron import parse_schedule
from gristmill.scheduler.ticks import plan_ticks

T0 = datetime(2024, 1, 8, 12, 0, tzinfo=UTC)
EVERY_MINUTE = parse_schedule("* * * * *", "UTC")
GRACE = timedelta(seconds=10)


def minutes(*offsets: int) -> tuple[datetime, ...]:
    return tuple(T0 + timedelta(minutes=m) for m in offsets)


def test_nothing_is_due_before_the_next_tick() -> None:
    plan = plan_ticks(
        EVERY_MINUTE, T0, T0 - timedelta(seconds=1), grace=GRACE, policy="skip", cap=5
    )
    assert plan.fire == ()
    assert plan.next_fire_at == T0


def test_a_due_tick_fires_and_the_next_follows_now() -> None:
    now = T0 + timedelta(milliseconds=300)
    plan = plan_ticks(EVERY_MINUTE, T0, now, grace=GRACE, policy="skip", cap=5)
    assert plan.fire == minutes(0)
    assert plan.next_fire_at == T0 + timedelta(minutes=1)
    assert not plan.dropped_missed


@pytest.mark.parametrize(
    ("policy", "cap", "fire", "dropped"),
    [
        ("skip", 100, minutes(9), True),
        ("all", 100, minutes(*range(10)), False),
        ("all", 3, minutes(7, 8, 9), True),
    ],
)
def test_missed_ticks_follow_the_policy(
    policy: str, cap: int, fire: tuple[datetime, ...], dropped: bool
) -> None:
    now = T0 + timedelta(minutes=9, seconds=30)  # minutes 0..9 missed; none on time
    plan = plan_ticks(EVERY_MINUTE, T0, now, grace=GRACE, policy=policy, cap=cap)
    assert plan.fire == fire
    assert plan.dropped_missed is dropped
    assert plan.next_fire_at == T0 + timedelta(minutes=10)
    if dropped:
        assert plan.dropped_from == T0


def test_skip_drops_every_missed_tick_when_one_is_on_time() -> None:
    now = T0 + timedelta(minutes=9, seconds=4)
    plan = plan_ticks(EVERY_MINUTE, T0, now, grace=GRACE, policy="skip", cap=100)
    assert plan.fire == minutes(9)
    assert (plan.dropped_from, plan.dropped_until) == (T0, T0 + timedelta(minutes=8))


def test_all_keeps_missed_and_on_time_ticks_in_order() -> None:
    now = T0 + timedelta(minutes=3, seconds=4)
    plan = plan_ticks(EVERY_MINUTE, T0, now, grace=GRACE, policy="all", cap=100)
    assert plan.fire == minutes(0, 1, 2, 3)


def test_every_tick_within_the_grace_fires() -> None:
    every_second = parse_schedule("* * * * * *", "UTC")
    now = T0 + timedelta(seconds=9, milliseconds=500)
    plan = plan_ticks(every_second, T0, now, grace=GRACE, policy="skip", cap=1)
    assert plan.fire == tuple(T0 + timedelta(seconds=s) for s in range(10))
    assert plan.next_fire_at == T0 + timedelta(seconds=10)
