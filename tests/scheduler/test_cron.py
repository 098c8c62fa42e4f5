"""Cron expressions and time zones: the syntax, the errors, and the instants they fire at,
including across daylight-saving changes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gristmill.common.cron import load_timezone, parse_cron, parse_schedule
from gristmill.common.errors import InvalidRequest

PARIS = ZoneInfo("Europe/Paris")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]  # year, month, day, ...


def paris(*parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=PARIS, fold=fold).astimezone(UTC)  # type: ignore[misc]


# -- syntax ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("* * * * *", "seconds", (0,)),  # five fields: at second 0
        ("*/15 * * * * *", "seconds", (0, 15, 30, 45)),
        ("0 5,10-12 * * * *", "minutes", (5, 10, 11, 12)),
        ("0 0 1-10/3 * * *", "hours", (1, 4, 7, 10)),
        ("0 0 22/1 * * *", "hours", (22, 23)),
        ("0 0 0 1 jan,MAR-may *", "months", (1, 3, 4, 5)),
        ("@hourly", "minutes", (0,)),
        ("@daily", "hours", (0,)),
    ],
)
def test_fields(expression: str, field: str, values: tuple[int, ...]) -> None:
    assert getattr(parse_cron(expression), field) == values


@pytest.mark.parametrize(
    ("expression", "version", "first_after_sunday_noon"),
    [
        ("0 0 9 * * 1-5", "v2", utc(2024, 1, 8, 9)),  # Monday
        ("0 0 9 * * mon-fri", "v2", utc(2024, 1, 8, 9)),
        ("0 0 9 * * 0", "v2", utc(2024, 1, 14, 9)),  # Sunday is 0...
        ("0 0 9 * * 7", "v2", utc(2024, 1, 14, 9)),  # ...and 7
        ("0 0 9 * * 2-6", "v1", utc(2024, 1, 8, 9)),  # v1: Monday is 2
        ("0 0 9 * * 1", "v1", utc(2024, 1, 14, 9)),  # v1: Sunday is 1
        ("0 0 12 * * 5L", "v2", utc(2024, 1, 26, 12)),  # the last Friday
        ("0 0 12 * * 1#2", "v2", utc(2024, 1, 8, 12)),  # the second Monday
        ("0 0 12 L * *", "v2", utc(2024, 1, 31, 12)),  # the last day of the month
        ("0 0 0 20 * mon", "v2", utc(2024, 1, 8)),  # both day fields: either matches
        ("0 0 0 9 * *", "v2", utc(2024, 1, 9)),
    ],
)
def test_days(expression: str, version: str, first_after_sunday_noon: datetime) -> None:
    cron = parse_schedule(expression, "UTC", cron_version=version)
    assert cron.next_after(utc(2024, 1, 7, 12)) == first_after_sunday_noon


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # A one-value range is that value, not the whole field.
        ("0 0 5-5 * * *", [utc(2024, 1, 8, 5), utc(2024, 1, 9, 5), utc(2024, 1, 10, 5)]),
        # Every day from the 2nd plus the last: the 1st of a month is left out.
        ("0 0 0 2-31,L * *", [utc(2024, 1, 30), utc(2024, 1, 31), utc(2024, 2, 2)]),
        # Plain weekdays beside an nth weekday: Mondays and the second Friday.
        ("0 0 12 * * mon,fri#2", [utc(2024, 1, 8, 12), utc(2024, 1, 12, 12), utc(2024, 1, 15, 12)]),
        # A stepped day of month counts, and either day field may match.
        ("0 0 0 */2 * mon", [utc(2024, 1, 8), utc(2024, 1, 9), utc(2024, 1, 11)]),
    ],
)
def test_day_combinations(expression: str, expected: list[datetime]) -> None:
    start = utc(2024, 1, 7, 12) if "2-31" not in expression else utc(2024, 1, 29, 12)
    assert parse_schedule(expression, "UTC").upcoming(start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "has 4"),
        ("* * * * * * *", "has 7"),
        ("61 * * * * *", "second field '61': 61 is out of range 0-59"),
        ("0 60 * * * *", "minute field '60'"),
        ("0 0 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("0 0 0 0 * *", "day-of-month field '0'"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * * 8", "day-of-week field '8'"),
        ("0 0 0 * foo *", "'foo' is not a number"),
        ("*/0 * * * * *", "step '0' must be a positive number"),
        ("0 0 5-1 * * *", "range '5-1' goes backwards"),
        ("0 0 0 * * 1#6", "must be 1-5"),
        ("0 0 0 30 2 *", "never matches"),
        ("1,,2 * * * *", "empty list item"),
        ("@often", "unknown cron nickname"),
        ("", "has 0"),
    ],
)
def test_bad_expressions_say_which_field_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        parse_cron(expression)
    assert caught.value.location == "schedule"


def test_unknown_cron_version() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_cron("* * * * *", cron_version="v3")
    assert caught.value.location == "cron_version"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "localtime", "europe/paris"])
def test_unknown_time_zones(name: str) -> None:
    with pytest.raises(InvalidRequest, match="time zone") as caught:
        load_timezone(name)
    assert caught.value.location == "timezone"


# -- the search, against brute force -------------------------------------------------------------

_WEEKDAY = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 0}  # Python's Monday=0 -> cron's Monday=1


def _cron_weekday(t: datetime) -> int:
    return _WEEKDAY[t.weekday()]


def _last_day(t: datetime) -> bool:
    return (t + timedelta(days=1)).month != t.month


BRUTE: list[tuple[str, Callable[[datetime], bool], timedelta]] = [
    ("*/7 * * * * *", lambda t: t.second % 7 == 0, timedelta(seconds=1)),
    ("13 */2 * * * *", lambda t: t.second == 13 and t.minute % 2 == 0, timedelta(seconds=1)),
    (
        "0 */5 9-17 * * mon-fri",
        lambda t: t.minute % 5 == 0 and 9 <= t.hour <= 17 and 1 <= _cron_weekday(t) <= 5,
        timedelta(minutes=1),
    ),
    (
        "0 30 6 1,15 * *",
        lambda t: (t.hour, t.minute) == (6, 30) and t.day in (1, 15),
        timedelta(minutes=1),
    ),
    (
        "0 0 0 13 * fri",
        lambda t: (t.hour, t.minute) == (0, 0) and (t.day == 13 or _cron_weekday(t) == 5),
        timedelta(minutes=1),
    ),
    ("0 0 12 L * *", lambda t: (t.hour, t.minute) == (12, 0) and _last_day(t), timedelta(hours=1)),
    (
        "0 0 12 * * 5L",
        lambda t: (
            t.hour == 12 and _cron_weekday(t) == 5 and (t + timedelta(days=7)).month != t.month
        ),
        timedelta(hours=1),
    ),
    (
        "0 0 8 * * 1#3",
        lambda t: t.hour == 8 and _cron_weekday(t) == 1 and 15 <= t.day <= 21,
        timedelta(hours=1),
    ),
    ("0 0 0 29 2 *", lambda t: (t.month, t.day, t.hour) == (2, 29, 0), timedelta(hours=1)),
]


@pytest.mark.parametrize(("expression", "matches", "step"), BRUTE, ids=[b[0] for b in BRUTE])
def test_next_and_previous_agree_with_brute_force(
    expression: str, matches: Callable[[datetime], bool], step: timedelta
) -> None:
    cron = parse_schedule(expression, "UTC")
    # About 90,000 candidate instants, across month (and for some, year) ends.
    start = utc(2023, 12, 31, 22)
    window = 90_000 * step if step < timedelta(hours=1) else timedelta(days=365 * 9)
    expected = []
    instant = start + step
    while instant <= start + window:
        if matches(instant):
            expected.append(instant)
        instant += step
    assert expected, "the window holds no tick: widen it"
    assert list(cron.between(start, start + window)) == expected
    for earlier, later in itertools.pairwise(expected):
        assert cron.last_at_or_before(later - timedelta(seconds=1)) == earlier
        assert cron.last_at_or_before(later) == later


# -- daylight saving ---------------------------------------------------------------------------

DST: list[tuple[str, datetime, list[datetime]]] = [
    # Spring forward in Paris: 2024-03-31, 02:00 CET -> 03:00 CEST (01:00 UTC).
    # A daily 02:30 does not exist that day: it fires at 03:30 CEST, shifted by the gap.
    (
        "0 30 2 * * *",
        utc(2024, 3, 29, 12),
        [paris(2024, 3, 30, 2, 30), paris(2024, 3, 31, 3, 30), paris(2024, 4, 1, 2, 30)],
    ),
    # Every 30 minutes: the skipped half-hours land on 03:00 and 03:30, fired once each.
    (
        "0 */30 * * * *",
        paris(2024, 3, 31, 1, 0),
        [
            paris(2024, 3, 31, 1, 30),
            paris(2024, 3, 31, 3, 0),
            paris(2024, 3, 31, 3, 30),
            paris(2024, 3, 31, 4, 0),
        ],
    ),
    # Hourly at minute 0: 02:00 does not exist; 03:00 CEST comes one real hour after 01:00.
    (
        "0 * * * *",
        paris(2024, 3, 31, 0, 30),
        [paris(2024, 3, 31, 1), paris(2024, 3, 31, 3), paris(2024, 3, 31, 4)],
    ),
    # Fall back in Paris: 2024-10-27, 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-02:59
    # happens twice. A daily 02:30 fires once, at its first occurrence (CEST).
    (
        "30 2 * * *",
        utc(2024, 10, 25, 12),
        [paris(2024, 10, 26, 2, 30), paris(2024, 10, 27, 2, 30), paris(2024, 10, 28, 2, 30)],
    ),
    # Every 30 minutes (hour field '*'): both passes of the repeated hour fire.
    (
        "*/30 * * * *",
        paris(2024, 10, 27, 1, 30),
        [
            paris(2024, 10, 27, 2, 0),
            paris(2024, 10, 27, 2, 30),
            paris(2024, 10, 27, 2, 0, fold=1),
            paris(2024, 10, 27, 2, 30, fold=1),
            paris(2024, 10, 27, 3, 0),
        ],
    ),
    # A restricted hour field: the repeated 02:xx fire in the first pass only.
    (
        "0 0,30 2,3 * * *",
        paris(2024, 10, 27, 1, 30),
        [
            paris(2024, 10, 27, 2, 0),
            paris(2024, 10, 27, 2, 30),
            paris(2024, 10, 27, 3, 0),
            paris(2024, 10, 27, 3, 30),
        ],
    ),
    # New York, spring 2024-03-10 (02:00 EST -> 03:00 EDT), daily at 02:15 local.
    (
        "15 2 * * *",
        utc(2024, 3, 9, 12),
        [utc(2024, 3, 10, 7, 15), utc(2024, 3, 11, 6, 15)],  # 03:15 EDT, then 02:15 EDT
    ),
]


@pytest.mark.parametrize(("expression", "after", "expected"), DST, ids=[d[0] for d in DST])
def test_daylight_saving_changes(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    zone = "America/New_York" if expression == "15 2 * * *" else "Europe/Paris"
    cron = parse_schedule(expression, zone)
    assert cron.upcoming(after, len(expected)) == expected
    for earlier, later in itertools.pairwise(expected):
        assert cron.last_at_or_before(later - timedelta(seconds=1)) == earlier


def test_a_day_skipped_by_its_time_zone() -> None:
    # Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14): its midnight lands on the next.
    cron = parse_schedule("0 0 * * *", "Pacific/Apia")
    assert cron.upcoming(utc(2011, 12, 29, 12), 2) == [utc(2011, 12, 30, 10), utc(2011, 12, 31, 10)]


def test_half_hour_daylight_saving() -> None:
    # Lord Howe Island moves its clocks by 30 minutes (2024-04-07 02:00 +11 -> 01:30 +10:30).
    cron = parse_schedule("@hourly", "Australia/Lord_Howe")
    assert cron.upcoming(utc(2024, 4, 6, 13, 30), 3) == [
        utc(2024, 4, 6, 14),  # 01:00 +11
        utc(2024, 4, 6, 15, 30),  # 02:00 +10:30 (01:30-02:00 repeated, no :00 in it)
        utc(2024, 4, 6, 16, 30),
    ]


def test_previous_respects_not_before() -> None:
    cron = parse_schedule("0 0 * * * *", "UTC")
    assert cron.last_at_or_before(utc(2024, 1, 1, 5, 30), not_before=utc(2024, 1, 1, 5)) == utc(
        2024, 1, 1, 5
    )
    assert cron.last_at_or_before(utc(2024, 1, 1, 5, 30), not_before=utc(2024, 1, 1, 5, 1)) is None
