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

When both day fields are restricted (neither is ``*`` or ``?``), a day matches if
*either* matches (``0 0 0 1 * mon``: the first of the month, and every Monday;
``0 0 0 */2 * mon``: the odd days, and every Monday, as croner and croniter read it,
where Vixie cron would take only the Mondays with an odd date).
``cron_version="v1"`` reads the day of the week as Windmill's first cron library did:
``1-7`` for Sunday to Saturday.

The croniter library parses and matches expressions on wall-clock times. This module
checks the syntax above first (so that an error names the field at fault) and spells it
the way croniter reads it: croniter numbers the days of the week ``0-6`` and writes the
last Friday ``L5``, reads ``a-a`` as the whole field and ``b-a`` as a range that wraps
around, and cannot mix ``L``, ``d#n`` or ``dL`` with plain days (such an expression
becomes several croniter expressions, whose matches are merged). Time zones are
handled here, not by croniter.

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

import copy
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

# croniter ships no type information (typeshed's stubs follow its 6.x releases): it is
# used only here, behind typed functions.
from croniter import (  # type: ignore[import-untyped]
    HOUR_FIELD,
    MINUTE_FIELD,
    MONTH_FIELD,
    SECOND_FIELD,
    CroniterError,
    croniter,
)

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


# -- parsing: our syntax, checked and spelled the way croniter reads it ------------------------


class _FieldError(Exception):
    """A problem in one field; turned into an ``InvalidRequest`` naming the field."""


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
    part: str, lo: int, hi: int, names: tuple[str, ...], base: int
) -> tuple[int, int, int] | None:
    """One list item as ``(first, last, step)``; ``None`` for a plain ``*`` (or ``?``)."""
    body, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not _NUMBER.match(step_text) or int(step_text) == 0:
            raise _FieldError(f"step {step_text!r} must be a positive number")
        step = int(step_text)
    if body in ("*", "?"):  # callers let '?' through only in the day fields
        return None if not slash else (lo, hi, step)
    if "-" in body:
        first_text, _, last_text = body.partition("-")
        first = _number(first_text, lo, hi, names, base)
        last = _number(last_text, lo, hi, names, base)
        if first > last:  # croniter would wrap around; Windmill rejects it
            raise _FieldError(f"range {body!r} goes backwards")
        return first, last, step
    first = _number(body, lo, hi, names, base)
    return first, hi if slash else first, step


def _span(first: int, last: int, step: int) -> str:
    """croniter's spelling of ``first`` to ``last`` by ``step`` (a single value alone:
    croniter reads ``a-a`` as the whole field)."""
    if first == last:
        return str(first)
    return f"{first}-{last}" if step == 1 else f"{first}-{last}/{step}"


def _simple_field(text: str, index: int) -> list[str]:
    lo, hi = _BOUNDS[index]
    names = _MONTHS if index == 4 else ()
    items: list[str] = []
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list item")
        if "?" in part:
            raise _FieldError("'?' is only allowed in the day fields")
        span = _range_part(part, lo, hi, names, 1)
        items.append("*" if span is None else _span(*span))
    # '*' alone: croniter would keep the other items, and report them as the values.
    return ["*"] if "*" in items else items


def _month_day_field(text: str) -> tuple[list[str], list[str]]:
    """croniter's items for plain days of the month, and for ``L`` (apart: croniter takes
    30 plain days and ``L`` for the whole month)."""
    plain: list[str] = []
    last: list[str] = []
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list item")
        if part.upper() == "L":
            last = ["l"]
            continue
        span = _range_part(part, 1, 31, (), 0)
        plain.append("*" if span is None else _span(*span))
    return (["*"], []) if "*" in plain else (plain, last)


def _weekday(text: str, version: str) -> int:
    """A day of the week, 0 = Sunday, in the numbering of ``version``."""
    if version == "v1":
        if text.lower() in _WEEKDAYS:
            return _WEEKDAYS.index(text.lower())
        return _number(text, 1, 7) - 1
    return _number(text, 0, 7, _WEEKDAYS) % 7


def _weekday_spans(first: int, last: int, step: int, version: str) -> list[str]:
    """croniter's spelling (days 0-6, Sunday 0) of days ``first`` to ``last`` by ``step``
    counted in the numbering of ``version``."""
    if version == "v1":  # 1-7: one less each, still in order
        return [_span(first - 1, last - 1, step)]
    spans = [_span(first, min(last, 6), step)] if first <= 6 else []
    if last == 7 and (7 - first) % step == 0:  # the sequence reaches 7, Sunday again
        spans.append("0")
    return spans


def _weekday_field(text: str, version: str) -> tuple[list[str], list[str]]:
    """croniter's items for plain days of the week, and for ``d#n`` and ``dL`` (which
    croniter cannot mix with plain days in one expression)."""
    plain: list[str] = []
    special: list[str] = []
    lo, hi = (1, 7) if version == "v1" else (0, 7)
    for part in text.split(","):
        if not part:
            raise _FieldError("empty list item")
        if "#" in part:
            day_text, _, nth_text = part.partition("#")
            if not _NUMBER.match(nth_text) or not 1 <= int(nth_text) <= 5:
                raise _FieldError(f"{part!r}: the occurrence after '#' must be 1-5")
            special.append(f"{_weekday(day_text, version)}#{int(nth_text)}")
        elif len(part) > 1 and part[-1] in "lL":
            special.append(f"l{_weekday(part[:-1], version)}")
        else:
            span = _range_part(part, lo, hi, _WEEKDAYS, lo)
            plain.extend(["*"] if span is None else _weekday_spans(*span, version))
    return (["*"], []) if "*" in plain else (plain, special)


@functools.lru_cache(maxsize=1024)
def _matcher(form: str) -> Any:  # a croniter (untyped): copy it before use, it keeps state
    return croniter(
        form,
        ret_type=datetime,
        day_or=False,  # the either-day rule is ours: see CronExpression.forms
        max_years_between_matches=_SEARCH_YEARS,
        second_at_beginning=True,
    )


def _search(form: str, start: datetime, *, forward: bool) -> datetime | None:
    """croniter's first match of ``form`` strictly after (or before) the naive ``start``."""
    matcher = copy.copy(_matcher(form))
    try:
        found = matcher.get_next(datetime, start) if forward else matcher.get_prev(datetime, start)
    except (ValueError, OverflowError):
        # Nothing within _SEARCH_YEARS (croniter's CroniterBadDateError is a ValueError),
        # or the search left the years datetime can hold (1-9999).
        return None
    if not isinstance(found, datetime):
        raise TypeError(f"croniter returned {found!r} for {form!r}")
    return found


def _values(expanded: list[object], lo: int, hi: int) -> tuple[int, ...]:
    """A field of croniter's expansion (``['*']`` for all) as sorted values."""
    if expanded == ["*"]:
        return tuple(range(lo, hi + 1))
    return tuple(sorted(value for value in expanded if isinstance(value, int)))


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed expression: the sorted values of its time fields, and its croniter forms."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    #: The expression in croniter's syntax (seconds first): a wall time matches when one
    #: of them does. There are several when the day fields are joined by "either", or
    #: when ``L`` or ``d#n``/``dL`` come with plain days.
    forms: tuple[str, ...] = field(repr=False)

    @property
    def every_hour(self) -> bool:
        """Whether the hour field allows every hour (see the module's DST rules)."""
        return len(self.hours) == 24

    def first_at_or_after(self, wall: datetime) -> datetime | None:
        """The first matching wall time at or after ``wall`` (naive), if any soon enough."""
        # croniter searches strictly after a whole second: the one before the first we allow.
        start = wall.replace(microsecond=0) - (timedelta() if wall.microsecond else _SECOND)
        return min(self._matches(start, forward=True), default=None)

    def last_at_or_before(self, wall: datetime) -> datetime | None:
        """The last matching wall time at or before ``wall`` (naive), if any."""
        return max(
            self._matches(wall.replace(microsecond=0) + _SECOND, forward=False), default=None
        )

    def _matches(self, start: datetime, *, forward: bool) -> list[datetime]:
        """Each form's first match strictly after (or before) ``start``."""
        found = (_search(form, start, forward=forward) for form in self.forms)
        return [wall for wall in found if wall is not None]


def _forms(fields: list[str], version: str) -> tuple[str, ...]:
    """croniter's forms of the 6 ``fields`` (see ``CronExpression.forms``)."""
    index = 0
    try:
        times = []
        for index in (0, 1, 2):
            times.append(",".join(_simple_field(fields[index], index)))
        index = 3
        month_days = [",".join(part) for part in _month_day_field(fields[3]) if part]
        index = 4
        month = ",".join(_simple_field(fields[4], 4))
        index = 5
        weekdays = [",".join(part) for part in _weekday_field(fields[5], version) if part]
    except _FieldError as exc:
        raise InvalidRequest(
            f"{_FIELD_NAMES[index]} field {fields[index]!r}: {exc}", location="schedule"
        ) from None
    if fields[3] in ("*", "?") or fields[5] in ("*", "?"):  # the other field decides
        days = [(dom, dow) for dom in month_days for dow in weekdays]
    else:  # both restrict the day: either matches
        days = [(dom, "*") for dom in month_days] + [("*", dow) for dow in weekdays]
    return tuple(" ".join((*times, dom, month, dow)) for dom, dow in days)


def _possible(form: str, source: str) -> bool:
    """Whether croniter reads ``form`` and finds a match (the calendar repeats every 400
    years, so none from 2000 on means none ever: ``30 2`` never happens)."""
    try:
        _matcher(form)
    except CroniterError as exc:  # not expected: the checks above let through only its syntax
        raise InvalidRequest(
            f"{source!r} is not a valid cron expression: {exc}", location="schedule"
        ) from None
    return _search(form, datetime(2000, 1, 1), forward=True) is not None


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
    forms = tuple(form for form in _forms(fields, version) if _possible(form, source))
    if not forms:
        raise InvalidRequest(f"{source!r} never matches a date", location="schedule")
    expansion = _matcher(forms[0]).expanded
    return CronExpression(
        text=source,
        seconds=_values(expansion[SECOND_FIELD], 0, 59),
        minutes=_values(expansion[MINUTE_FIELD], 0, 59),
        hours=_values(expansion[HOUR_FIELD], 0, 23),
        months=_values(expansion[MONTH_FIELD], 1, 12),
        forms=forms,
    )


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
