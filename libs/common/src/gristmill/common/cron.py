"""Cron expressions in a time zone: parsing, validation, and the instants they fire at.

Syntax (Windmill's, which follows the croner library):

* 6 fields ``second minute hour day-of-month month day-of-week``, or the classic 5
  fields without the seconds (then the second is 0);
* each field: ``*``, a number, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``
  (from ``a`` to the field's maximum), or a comma-separated list of those;
* months ``1-12`` or ``jan``-``dec``; days of the week ``0-7`` (0 and 7 are Sunday) or
  ``sun``-``sat``; ``?`` means ``*`` in both day fields;
* day of month ``L`` is the last day of the month; day of week ``5L`` is the last Friday
  of the month and ``1#2`` its second Monday;
* ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``.

When both day fields are restricted (neither starts with ``*`` or ``?``), a day
matches if *either* matches, as in Vixie cron (``0 0 0 1 * mon``: the first of the
month, and every Monday). ``cron_version="v1"`` reads the day of the week as
Windmill's first cron library did: ``1-7`` for Sunday to Saturday.

Time zones (IANA names, through :mod:`zoneinfo`). An expression matches *wall-clock*
times of its zone; around daylight-saving changes:

* a wall time that does not exist (the hour skipped in spring) fires at the instant
  it would have had with the offset in force before the change, i.e. shifted by the
  gap: ``30 2 * * *`` in Europe/Paris fires at 03:30 CEST on the last Sunday of
  March. Ticks landing on an instant that also fires normally fire once;
* a wall time that occurs twice (the hour repeated in autumn) fires at its first
  occurrence; it fires again at its second only when the hour field is ``*`` (every
  hour), so that ``*/15 * * * *`` keeps firing every 15 minutes of real time while a
  daily ``30 2 * * *`` fires once.

Everything returned is an aware UTC :class:`~datetime.datetime` on a whole second.
"""

from __future__ import annotations

import calendar
import functools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from gristmill.common.errors import InvalidRequest

__all__ = [
    "CRON_VERSIONS",
    "CronExpression",
    "CronSchedule",
    "load_timezone",
    "parse_cron",
    "parse_schedule",
]

#: ``v2`` (the default): day of week 0-7, Sunday 0 or 7. ``v1``: 1-7, Sunday 1.
CRON_VERSIONS: Final = frozenset({"v1", "v2"})
_SECOND: Final = timedelta(seconds=1)
#: Searches give up this many years after (or before) their starting point.
_SEARCH_YEARS: Final = 400
#: The daylight-saving effects of a transition last at most this long after it.
_TRANSITION_REACH: Final = timedelta(days=2)
_PROBE_STEP: Final = timedelta(hours=6)
_MONTHS: Final = (
    *("jan", "feb", "mar", "apr", "may", "jun"),
    *("jul", "aug", "sep", "oct", "nov", "dec"),
)
_WEEKDAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NICKNAMES: Final = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_FIELD_NAMES: Final = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS: Final = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NUMBER: Final = re.compile(r"^[0-9]+$")


# -- parsing -----------------------------------------------------------------------------------


class _FieldError(Exception):
    """A problem in one field; turned into an ``InvalidRequest`` naming the field."""


@dataclass(frozen=True, slots=True)
class _DaySpec:
    """What the two day fields select, resolved per month by :func:`_days_of_month`."""

    #: Explicit days of the month (1-31).
    month_days: frozenset[int]
    #: ``L`` in the day-of-month field.
    last_day: bool
    #: Plain days of the week, 0 = Sunday.
    weekdays: frozenset[int]
    #: ``d#n``: the n-th weekday ``d`` of the month.
    nth_weekdays: frozenset[tuple[int, int]]
    #: ``dL``: the last weekday ``d`` of the month.
    last_weekdays: frozenset[int]
    #: The field starts with ``*`` or ``?`` (it does not restrict the day on its own).
    month_day_star: bool
    weekday_star: bool


def _number(text: str, lo: int, hi: int, names: tuple[str, ...] = (), base: int = 0) -> int:
    lowered = text.lower()
    if names and lowered in names:
        return names.index(lowered) + base
    if not _NUMBER.match(text):
        raise _FieldError(f"{text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise _FieldError(f"{value} is out of range {lo}-{hi}")
    return value


def _range_part(
    part: str, lo: int, hi: int, names: tuple[str, ...], base: int, wildcard: bool
) -> list[int]:
    """The values of one list item: ``*``, ``n``, ``a-b``, each with an optional ``/step``."""
    body, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not _NUMBER.match(step_text) or int(step_text) == 0:
            raise _FieldError(f"step {step_text!r} must be a positive number")
        step = int(step_text)
    if body == "*" or (wildcard and body == "?"):
        start, end = lo, hi
    elif "-" in body:
        first, _, last = body.partition("-")
        start = _number(first, lo, hi, names, base)
        end = _number(last, lo, hi, names, base)
        if start > end:
            raise _FieldError(f"range {body!r} goes backwards")
    else:
        start = _number(body, lo, hi, names, base)
        end = hi if slash else start
    return list(range(start, end + 1, step))


def _simple_field(text: str, index: int) -> tuple[int, ...]:
    lo, hi = _BOUNDS[index]
    names = _MONTHS if index == 4 else ()
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list item")
        values.update(_range_part(part, lo, hi, names, 1, wildcard=False))
    return tuple(sorted(values))


def _month_day_field(text: str) -> tuple[frozenset[int], bool]:
    days: set[int] = set()
    last = False
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list item")
        if part.upper() == "L":
            last = True
            continue
        days.update(_range_part(part, 1, 31, (), 0, wildcard=True))
    return frozenset(days), last


def _weekday(text: str, version: str) -> int:
    """A day of the week, 0 = Sunday, in the numbering of ``version``."""
    if version == "v1":
        if text.lower() in _WEEKDAYS:
            return _WEEKDAYS.index(text.lower())
        return _number(text, 1, 7) - 1
    return _number(text, 0, 7, _WEEKDAYS) % 7


def _weekday_field(
    text: str, version: str
) -> tuple[frozenset[int], frozenset[tuple[int, int]], frozenset[int]]:
    plain: set[int] = set()
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    lo, hi = (1, 7) if version == "v1" else (0, 7)
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list item")
        if "#" in part:
            day_text, _, nth_text = part.partition("#")
            if not _NUMBER.match(nth_text) or not 1 <= int(nth_text) <= 5:
                raise _FieldError(f"{part!r}: the occurrence after '#' must be 1-5")
            nth.add((_weekday(day_text, version), int(nth_text)))
        elif len(part) > 1 and part[-1] in "lL":
            last.add(_weekday(part[:-1], version))
        else:
            values = _range_part(part, lo, hi, _WEEKDAYS, lo, wildcard=True)
            plain.update((value - 1) % 7 if version == "v1" else value % 7 for value in values)
    return frozenset(plain), frozenset(nth), frozenset(last)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed expression: the sorted values each field allows (days resolved per month)."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    days: _DaySpec = field(repr=False)

    @property
    def every_hour(self) -> bool:
        """Whether the hour field allows every hour (see the module's DST rules)."""
        return len(self.hours) == 24

    def first_at_or_after(self, wall: datetime) -> datetime | None:
        """The first matching wall time at or after ``wall`` (naive), if any soon enough."""
        year, month, day = wall.year, wall.month, wall.day
        hour, minute, second = wall.hour, wall.minute, wall.second + (wall.microsecond > 0)
        last_year = min(year + _SEARCH_YEARS, 9999)
        while year <= last_year:
            if month > 12:
                year, month, day, hour, minute, second = year + 1, 1, 1, 0, 0, 0
                continue
            i = bisect_left(self.months, month)
            if i == len(self.months):
                year, month, day, hour, minute, second = year + 1, 1, 1, 0, 0, 0
                continue
            if self.months[i] != month:
                month, day, hour, minute, second = self.months[i], 1, 0, 0, 0
            days = _days_of_month(self.days, year, month)
            i = bisect_left(days, day)
            if i == len(days):
                month, day, hour, minute, second = month + 1, 1, 0, 0, 0
                continue
            if days[i] != day:
                day, hour, minute, second = days[i], 0, 0, 0
            i = bisect_left(self.hours, hour)
            if i == len(self.hours):
                day, hour, minute, second = day + 1, 0, 0, 0
                continue
            if self.hours[i] != hour:
                hour, minute, second = self.hours[i], 0, 0
            i = bisect_left(self.minutes, minute)
            if i == len(self.minutes):
                hour, minute, second = hour + 1, 0, 0
                continue
            if self.minutes[i] != minute:
                minute, second = self.minutes[i], 0
            i = bisect_left(self.seconds, second)
            if i == len(self.seconds):
                minute, second = minute + 1, 0
                continue
            return datetime(year, month, day, hour, minute, self.seconds[i])
        return None

    def last_at_or_before(self, wall: datetime) -> datetime | None:
        """The last matching wall time at or before ``wall`` (naive), if any."""
        year, month, day = wall.year, wall.month, wall.day
        hour, minute, second = wall.hour, wall.minute, wall.second
        first_year = max(year - _SEARCH_YEARS, 1)
        while year >= first_year:
            if month < 1:
                year, month, day, hour, minute, second = year - 1, 12, 31, 23, 59, 59
                continue
            i = bisect_right(self.months, month) - 1
            if i < 0:
                year, month, day, hour, minute, second = year - 1, 12, 31, 23, 59, 59
                continue
            if self.months[i] != month:
                month, day, hour, minute, second = self.months[i], 31, 23, 59, 59
            days = _days_of_month(self.days, year, month)
            i = bisect_right(days, day) - 1
            if i < 0:
                month, day, hour, minute, second = month - 1, 31, 23, 59, 59
                continue
            if days[i] != day:
                day, hour, minute, second = days[i], 23, 59, 59
            i = bisect_right(self.hours, hour) - 1
            if i < 0:
                day, hour, minute, second = day - 1, 23, 59, 59
                continue
            if self.hours[i] != hour:
                hour, minute, second = self.hours[i], 59, 59
            i = bisect_right(self.minutes, minute) - 1
            if i < 0:
                hour, minute, second = hour - 1, 59, 59
                continue
            if self.minutes[i] != minute:
                minute, second = self.minutes[i], 59
            i = bisect_right(self.seconds, second) - 1
            if i < 0:
                minute, second = minute - 1, 59
                continue
            return datetime(year, month, day, hour, minute, self.seconds[i])
        return None


@functools.lru_cache(maxsize=8192)
def _days_of_month(spec: _DaySpec, year: int, month: int) -> tuple[int, ...]:
    """The days of ``year``-``month`` that the day fields select, in order."""
    first_weekday, length = calendar.monthrange(year, month)  # Monday = 0
    first_sunday_based = (first_weekday + 1) % 7

    def weekday(day: int) -> int:
        return (first_sunday_based + day - 1) % 7

    by_month_day = {d for d in spec.month_days if d <= length}
    if spec.last_day:
        by_month_day.add(length)
    by_weekday = {d for d in range(1, length + 1) if weekday(d) in spec.weekdays}
    for wanted, nth in spec.nth_weekdays:
        day = 1 + (wanted - first_sunday_based) % 7 + 7 * (nth - 1)
        if day <= length:
            by_weekday.add(day)
    for wanted in spec.last_weekdays:
        by_weekday.add(length - (weekday(length) - wanted) % 7)
    if spec.month_day_star and spec.weekday_star:
        return tuple(range(1, length + 1))
    if spec.month_day_star:
        return tuple(sorted(by_weekday))
    if spec.weekday_star:
        return tuple(sorted(by_month_day))
    return tuple(sorted(by_month_day | by_weekday))


def parse_cron(text: str, *, cron_version: str | None = None) -> CronExpression:
    """Parse ``text``; ``InvalidRequest`` (``location="schedule"``) says what is wrong."""
    version = cron_version or "v2"
    if version not in CRON_VERSIONS:
        raise InvalidRequest(
            f"unknown cron_version {version!r}; expected one of {', '.join(sorted(CRON_VERSIONS))}",
            location="cron_version",
        )
    source = text.strip()
    expanded = _NICKNAMES.get(source.lower(), source)
    if expanded.startswith("@"):
        raise InvalidRequest(
            f"unknown cron nickname {source!r}; expected one of {', '.join(sorted(_NICKNAMES))}",
            location="schedule",
        )
    fields = expanded.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise InvalidRequest(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 "
            f"(with the second first); {source!r} has {len(fields)}",
            location="schedule",
        )
    index = 0
    try:
        seconds = _simple_field(fields[0], 0)
        index = 1
        minutes = _simple_field(fields[1], 1)
        index = 2
        hours = _simple_field(fields[2], 2)
        index = 3
        month_days, last_day = _month_day_field(fields[3])
        index = 4
        months = _simple_field(fields[4], 4)
        index = 5
        weekdays, nth, last_weekdays = _weekday_field(fields[5], version)
    except _FieldError as exc:
        raise InvalidRequest(
            f"{_FIELD_NAMES[index]} field {fields[index]!r}: {exc}", location="schedule"
        ) from None
    expression = CronExpression(
        text=source,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        months=months,
        days=_DaySpec(
            month_days=month_days,
            last_day=last_day,
            weekdays=weekdays,
            nth_weekdays=nth,
            last_weekdays=last_weekdays,
            month_day_star=fields[3][0] in "*?",
            weekday_star=fields[5][0] in "*?",
        ),
    )
    if expression.first_at_or_after(datetime(2000, 1, 1)) is None:
        raise InvalidRequest(f"{source!r} never matches a date", location="schedule")
    return expression


# -- time zones --------------------------------------------------------------------------------


@functools.cache
def _zone_names() -> frozenset[str]:
    """IANA names, without the host's own ``localtime`` and the leap-second ``right/``
    variants (whose instants are not POSIX time)."""
    return frozenset(
        name
        for name in available_timezones()
        if name not in ("localtime", "posixrules") and not name.startswith("right/")
    )


def load_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``InvalidRequest`` (``location="timezone"``) if unknown."""
    if name not in _zone_names() and name != "UTC":
        raise InvalidRequest(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'",
            location="timezone",
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequest(f"time zone {name!r}: {exc}", location="timezone") from None


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offsets
    return offset


@functools.lru_cache(maxsize=1024)
def _transitions(zone: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """Instants of ``year`` (UTC) from which the zone's UTC offset changes, in order."""
    found: list[datetime] = []
    probe = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else datetime.max.replace(tzinfo=UTC)
    offset = _offset(zone, probe)
    while probe < end:
        following = min(probe + _PROBE_STEP, end)
        following_offset = _offset(zone, following)
        if following_offset != offset:
            lo, hi = probe, following  # offset(lo) is old, offset(hi) new: bisect to the second
            while hi - lo > _SECOND:
                mid = lo + (hi - lo) // 2
                mid = mid.replace(microsecond=0)
                if _offset(zone, mid) == offset:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
            offset = following_offset
        probe = following
    return tuple(found)


def _next_transition(zone: ZoneInfo, after: datetime, until: datetime) -> datetime | None:
    for year in range(after.year, until.year + 1):
        for instant in _transitions(zone, year):
            if after < instant <= until:
                return instant
    return None


def _last_transition(zone: ZoneInfo, at: datetime, since: datetime) -> datetime | None:
    for year in range(at.year, since.year - 1, -1):
        for instant in reversed(_transitions(zone, year)):
            if since <= instant <= at:
                return instant
    return None


def _whole_second(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(microsecond=0)


def _wall(instant: datetime, offset: timedelta) -> datetime:
    return (instant + offset).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return wall.replace(tzinfo=UTC) - offset


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """An expression in a time zone: the instants it fires at."""

    expression: CronExpression
    timezone: ZoneInfo

    def next_after(self, instant: datetime) -> datetime | None:
        """The first firing instant strictly after ``instant`` (aware), if any."""
        zone = self.timezone
        lower = _whole_second(instant) + _SECOND
        horizon = lower + timedelta(days=366 * _SEARCH_YEARS)
        start = _last_transition(zone, lower, lower - _TRANSITION_REACH)
        offset = _offset(zone, lower)
        before = offset if start is None else _offset(zone, start - _SECOND)
        while lower <= horizon:
            end = _next_transition(zone, lower, lower + timedelta(days=366))
            found = self._first_in(lower, start, end, offset, before)
            if found is not None:
                return found
            if end is None:  # no change of offset within a year: go on from there
                lower = lower + timedelta(days=366)
                start, before = None, offset
                continue
            lower, start, before = end, end, offset
            offset = _offset(zone, end)
        return None

    def _first_in(
        self,
        lower: datetime,
        start: datetime | None,
        end: datetime | None,
        offset: timedelta,
        before: timedelta,
    ) -> datetime | None:
        """The first firing instant in ``[lower, end)``, where the offset is ``offset`` and
        was ``before`` until the transition at ``start`` (``None``: long ago)."""
        expr = self.expression
        best: datetime | None = None
        wall = expr.first_at_or_after(_wall(lower, offset))
        if (
            wall is not None
            and start is not None
            and before > offset
            and not expr.every_hour
            and wall < _wall(start, before)
        ):
            # A repeated wall time, seen at its first occurrence before the change.
            wall = expr.first_at_or_after(_wall(start, before))
        if wall is not None:
            candidate = _instant(wall, offset)
            if end is None or candidate < end:
                best = candidate
        if start is not None and before < offset:
            # Wall times skipped by the change fire shifted by the gap.
            gap_end = _wall(start, offset)
            skipped = expr.first_at_or_after(max(_wall(start, before), _wall(lower, before)))
            if skipped is not None and skipped < gap_end:
                candidate = _instant(skipped, before)
                if best is None or candidate < best:
                    best = candidate
        return best

    def last_at_or_before(
        self, instant: datetime, *, not_before: datetime | None = None
    ) -> datetime | None:
        """The last firing instant at or before ``instant``, if any (and not before
        ``not_before``)."""
        zone = self.timezone
        upper = _whole_second(instant)
        floor = (
            upper - timedelta(days=366 * _SEARCH_YEARS)
            if not_before is None
            else _whole_second(not_before)
        )
        offset = _offset(zone, upper)
        while upper >= floor:
            start = _last_transition(zone, upper, upper - timedelta(days=366))
            if start is None:
                begin, before = upper - timedelta(days=366), offset
            else:
                begin, before = start, _offset(zone, start - _SECOND)
            found = self._last_in(upper, begin, start is not None, offset, before)
            if found is not None:
                return found if found >= floor else None
            upper = begin - _SECOND
            offset = before
        return None

    def _last_in(
        self,
        upper: datetime,
        begin: datetime,
        real_start: bool,
        offset: timedelta,
        before: timedelta,
    ) -> datetime | None:
        """The last firing instant in ``[begin, upper]`` (offset ``offset``; ``before``
        until ``begin`` when it is a real transition)."""
        expr = self.expression
        best: datetime | None = None
        wall = expr.last_at_or_before(_wall(upper, offset))
        if wall is not None and wall >= _wall(begin, offset):
            repeated = real_start and before > offset and not expr.every_hour
            if not (repeated and wall < _wall(begin, before)):
                best = _instant(wall, offset)
        if real_start and before < offset:
            gap_start = _wall(begin, before)
            skipped = expr.last_at_or_before(
                min(_wall(begin, offset) - _SECOND, _wall(upper, before))
            )
            if skipped is not None and skipped >= gap_start:
                candidate = _instant(skipped, before)
                if best is None or candidate > best:
                    best = candidate
        return best

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` firing instants after ``after``."""
        found: list[datetime] = []
        current = after
        while len(found) < count:
            following = self.next_after(current)
            if following is None:
                break
            found.append(following)
            current = following
        return found

    def between(self, after: datetime, until: datetime) -> Iterable[datetime]:
        """Firing instants in ``(after, until]``, in order (lazily)."""
        current = after
        while True:
            following = self.next_after(current)
            if following is None or following > until:
                return
            yield following
            current = following


def parse_schedule(
    expression: str, timezone: str, *, cron_version: str | None = None
) -> CronSchedule:
    """``expression`` in ``timezone``; ``InvalidRequest`` names the field at fault."""
    zone = load_timezone(timezone)
    return CronSchedule(parse_cron(expression, cron_version=cron_version), zone)
