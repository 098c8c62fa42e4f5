"""Which ticks of a due schedule fire now: on-time ticks, and the catch-up policy.

A tick is *on time* when it is at most ``grace`` old; every on-time tick fires. Older
ticks were *missed* (the scheduler was down, or stopped for longer than ``grace``):

* ``skip`` fires the latest missed tick, and only when no on-time tick fires: after
  downtime a schedule runs once, not once per missed tick;
* ``all`` fires every missed tick, up to the latest ``cap`` of them (older ones are
  dropped, and counted).

Pure functions of the schedule's expression and the clock, so that they can be tested
without a database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from gristmill.common.cron import CronSchedule

__all__ = ["MAX_ON_TIME", "TickPlan", "plan_ticks"]

_SECOND: Final = timedelta(seconds=1)
#: At most this many on-time ticks fire in one pass (a guard against a huge grace).
MAX_ON_TIME: Final = 10_000


class TickPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a pass does with a due schedule."""

    #: Ticks to fire now, in order.
    fire: tuple[datetime, ...]
    #: The schedule's next tick after this pass (``None``: it fires no more).
    next_fire_at: datetime | None
    #: Whether missed ticks were dropped by the catch-up policy.
    dropped_missed: bool = False
    #: The earliest and latest missed tick that did not fire, when some were dropped.
    dropped_from: datetime | None = None
    dropped_until: datetime | None = None


def _ceil_second(instant: datetime) -> datetime:
    whole = instant.replace(microsecond=0)
    return whole if whole == instant else whole + _SECOND


def plan_ticks(
    cron: CronSchedule,
    next_fire_at: datetime,
    now: datetime,
    *,
    grace: timedelta,
    policy: str,
    cap: int,
) -> TickPlan:
    """The ticks in ``[next_fire_at, now]`` to fire, and the next tick after ``now``."""
    now = now.astimezone(UTC)
    following = cron.next_after(now)
    if next_fire_at > now:
        return TickPlan(fire=(), next_fire_at=next_fire_at)
    # On-time ticks are at or after ``boundary`` (a whole second); missed ones before it.
    boundary = max(next_fire_at, _ceil_second(now - grace))
    on_time: list[datetime] = []
    first = cron.next_after(boundary - _SECOND)
    if first is not None and first >= next_fire_at:
        on_time = [first]
        for later in cron.between(first, now):
            if len(on_time) >= MAX_ON_TIME:
                break
            on_time.append(later)
        on_time = [instant for instant in on_time if instant <= now]
    missed: list[datetime] = []
    dropped = False
    dropped_until: datetime | None = None
    if boundary > next_fire_at:
        latest_missed = cron.last_at_or_before(boundary - _SECOND, not_before=next_fire_at)
        if latest_missed is not None:
            limit = 0 if policy == "skip" and on_time else (1 if policy == "skip" else cap)
            candidate: datetime | None = latest_missed
            while candidate is not None and len(missed) < limit:
                missed.append(candidate)
                candidate = cron.last_at_or_before(candidate - _SECOND, not_before=next_fire_at)
            if candidate is not None:
                dropped = True
                dropped_until = candidate
            missed.reverse()
    dropped_from = next_fire_at if dropped else None
    return TickPlan(
        fire=tuple(missed + on_time),
        next_fire_at=following,
        dropped_missed=dropped,
        dropped_from=dropped_from,
        dropped_until=dropped_until,
    )
