"""Weekly schedules: validation, evaluation across clock changes, the power schedule's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.core.schedule import DAY_NAMES, MAX_PERIODS, Period, Schedule, parse_days
from controller.core.schedule_rules import power_schedule_problems
from controller.core.wall_clock import instant_of

ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # a 30-minute shift
    "UTC",
    "Pacific/Chatham",  # +12:45/+13:45, shifts at 02:45
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def schedule(zone: str, *periods: tuple[str, str, str]) -> Schedule:
    return Schedule.model_validate(
        {
            "timezone": zone,
            "periods": [{"days": d, "from": f, "to": t} for d, f, t in periods],
        }
    )


def errors(data: dict[str, Any], model: type[Period | Schedule] = Period) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return "\n".join(e["msg"] for e in caught.value.errors())


# --- random schedules and instants ------------------------------------------------------------


@cache
def transitions(zone_name: str) -> list[datetime]:
    """The instants of the clock changes of 2026 (to the hour: enough to land near them)."""
    zone = ZoneInfo(zone_name)
    found = []
    at = utc(2026, 1, 1)
    offset = at.astimezone(zone).utcoffset()
    while at < utc(2027, 1, 1):
        at += timedelta(hours=1)
        if at.astimezone(zone).utcoffset() != offset:
            offset = at.astimezone(zone).utcoffset()
            found.append(at)
    return found


@st.composite
def days_texts(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(1, 3))):
        first = draw(st.sampled_from(DAY_NAMES))
        if draw(st.booleans()):
            last = draw(st.sampled_from([d for d in DAY_NAMES if d != first]))
            items.append(f"{first}-{last}")
        else:
            items.append(first)
    text = ",".join(items)
    return draw(st.sampled_from([text, text.upper(), text.title()]))


# whole and half hours meet each other and the clock changes; any minute finds the rest
minutes_of_day = st.one_of(st.sampled_from(range(0, 1440, 30)), st.integers(0, 1439))


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def periods(draw: st.DrawFn) -> dict[str, str]:
    start = draw(minutes_of_day)
    end = draw(st.one_of(minutes_of_day, st.just(1440)).filter(lambda m: m != start))
    return {"days": draw(days_texts()), "from": hhmm(start), "to": hhmm(end)}


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    return Schedule.model_validate(
        {
            "timezone": draw(st.sampled_from(ZONES)),
            "periods": draw(st.lists(periods(), min_size=1, max_size=4)),
        }
    )


@st.composite
def instants_for(draw: st.DrawFn, zone: str) -> datetime:
    near = transitions(zone)
    if draw(st.booleans()) and near:
        # within three days of a clock change: on a whole minute, where periods start and end,
        # or anywhere in that minute
        at = draw(st.sampled_from(near)) + timedelta(minutes=draw(st.integers(-4320, 4320)))
        if draw(st.booleans()):
            at += timedelta(microseconds=draw(st.integers(0, 59_999_999)))
        return at
    return draw(
        st.datetimes(
            min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
        )
    )


@st.composite
def schedule_and_instant(draw: st.DrawFn) -> tuple[Schedule, datetime]:
    chosen = draw(schedules())
    return chosen, draw(instants_for(chosen.timezone))


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(schedule_and_instant())
def test_next_change_is_the_first_flip_after_the_instant(case: tuple[Schedule, datetime]) -> None:
    sched, at = case
    active = sched.is_active(at)
    change = sched.next_change(at)
    if change is None:
        assert active
        assert all(sched.is_active(at + timedelta(hours=h)) for h in range(0, 24 * 15, 7))
        return
    assert change > at
    assert change.utcoffset() == timedelta(0)
    assert sched.is_active(change) != active
    span = change - at
    samples = [at + span * k / 16 for k in range(1, 16)] + [change - timedelta(microseconds=1)]
    assert [sched.is_active(p) for p in samples] == [active] * len(samples)


@PROPERTY
@given(schedule_and_instant())
def test_intervals_agree_with_is_active(case: tuple[Schedule, datetime]) -> None:
    sched, at = case
    start, end = at - timedelta(days=2), at + timedelta(days=2)
    found = sched.intervals(start, end)
    assert sched.is_active(at) == any(opens <= at < closes for opens, closes in found)
    for opens, closes in found:
        assert start <= opens < closes <= end
        assert opens.utcoffset() == closes.utcoffset() == timedelta(0)
    for (_, closes), (opens, _) in pairwise(found):
        assert closes < opens  # sorted, disjoint, and touching stretches merged
    # cutting the window in two changes nothing but the cut
    halves = sched.intervals(start, at) + sched.intervals(at, end)
    glued: list[tuple[datetime, datetime]] = []
    for opens, closes in halves:
        if glued and glued[-1][1] == opens:
            glued[-1] = (glued[-1][0], closes)
        else:
            glued.append((opens, closes))
    assert glued == found


@PROPERTY
@given(schedule_and_instant())
def test_away_from_clock_changes_the_wall_clock_decides(case: tuple[Schedule, datetime]) -> None:
    sched, at = case
    zone = sched.zone
    offsets = {(at + timedelta(hours=h)).astimezone(zone).utcoffset() for h in range(-72, 73)}
    assume(len(offsets) == 1)
    local = at.astimezone(zone)
    minute = local.hour * 60 + local.minute
    expected = False
    for period in sched.periods:
        start = int(period.from_[:2]) * 60 + int(period.from_[3:])
        end = int(period.to[:2]) * 60 + int(period.to[3:])
        end = end if end > start else end + 1440
        # a run started today, or yesterday and still going past midnight
        for days_ago, offset in ((0, minute), (1, minute + 1440)):
            if (local.weekday() - days_ago) % 7 in parse_days(period.days):
                expected = expected or start <= offset < end
    assert sched.is_active(at) == expected


# --- clock changes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "window_start", "expected"),
    [
        # Paris: CET (+1) until 2026-03-29 02:00, CEST (+2) until 2026-10-25 03:00
        ("Europe/Paris", (2026, 3, 28), 0, (utc(2026, 3, 28, 7), utc(2026, 3, 28, 19))),
        ("Europe/Paris", (2026, 3, 29), 0, (utc(2026, 3, 29, 6), utc(2026, 3, 29, 18))),
        ("Europe/Paris", (2026, 10, 24), 0, (utc(2026, 10, 24, 6), utc(2026, 10, 24, 18))),
        ("Europe/Paris", (2026, 10, 25), 0, (utc(2026, 10, 25, 7), utc(2026, 10, 25, 19))),
        # New York: EST (-5) until 2026-03-08 02:00, EDT (-4) until 2026-11-01 02:00
        ("America/New_York", (2026, 3, 7), 6, (utc(2026, 3, 7, 13), utc(2026, 3, 8, 1))),
        ("America/New_York", (2026, 3, 8), 6, (utc(2026, 3, 8, 12), utc(2026, 3, 9, 0))),
        ("America/New_York", (2026, 10, 31), 6, (utc(2026, 10, 31, 12), utc(2026, 11, 1, 0))),
        ("America/New_York", (2026, 11, 1), 6, (utc(2026, 11, 1, 13), utc(2026, 11, 2, 1))),
    ],
)
def test_a_day_period_follows_the_clock_change(
    zone: str, day: tuple[int, int, int], window_start: int, expected: tuple[datetime, datetime]
) -> None:
    sched = schedule(zone, ("mon-sun", "08:00", "20:00"))
    start = utc(*day, window_start)
    assert sched.intervals(start, start + timedelta(days=1)) == [expected]


def test_a_wall_time_in_the_spring_gap_means_the_end_of_the_gap() -> None:
    paris, lord_howe = ZoneInfo("Europe/Paris"), ZoneInfo("Australia/Lord_Howe")
    # 2026-03-29: Paris jumps from 02:00 to 03:00 (01:00 UTC)
    assert instant_of(datetime(2026, 3, 29, 2, 30), paris) == utc(2026, 3, 29, 1)
    assert instant_of(datetime(2026, 3, 29, 2, 0), paris) == utc(2026, 3, 29, 1)
    assert instant_of(datetime(2026, 3, 29, 3, 0), paris) == utc(2026, 3, 29, 1)
    assert instant_of(datetime(2026, 3, 29, 1, 59), paris) == utc(2026, 3, 29, 0, 59)
    # 2026-10-04: Lord Howe jumps from 02:00 (+10:30) to 02:30 (+11), 15:30 UTC the day before
    assert instant_of(datetime(2026, 10, 4, 2, 15), lord_howe) == utc(2026, 10, 3, 15, 30)
    assert instant_of(datetime(2026, 10, 4, 2, 30), lord_howe) == utc(2026, 10, 3, 15, 30)


def test_a_wall_time_that_happens_twice_means_the_first_time() -> None:
    paris, new_york = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")
    # 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET)
    assert instant_of(datetime(2026, 10, 25, 2, 30), paris) == utc(2026, 10, 25, 0, 30)
    # 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST)
    assert instant_of(datetime(2026, 11, 1, 1, 30), new_york) == utc(2026, 11, 1, 5, 30)


def test_periods_inside_the_paris_spring_night() -> None:
    day = utc(2026, 3, 29)

    def on_that_day(period: tuple[str, str, str]) -> list[tuple[datetime, datetime]]:
        return schedule("Europe/Paris", period).intervals(day, day + timedelta(days=1))

    # 01:30 CET to 03:30 CEST: one real hour
    assert on_that_day(("sun", "01:30", "03:30")) == [
        (utc(2026, 3, 29, 0, 30), day.replace(hour=1, minute=30))
    ]
    # 02:30 does not exist: the period starts when the clocks show 03:00
    assert on_that_day(("sun", "02:30", "04:00")) == [(utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))]
    # entirely inside the gap: that night it does not happen
    assert on_that_day(("sun", "02:00", "02:30")) == []


def test_a_period_through_the_autumn_fold_keeps_the_first_occurrences() -> None:
    sched = schedule("Europe/Paris", ("sun", "01:30", "03:30"))
    # 01:30 CEST (23:30 UTC) to 03:30 CET (02:30 UTC): three real hours
    assert sched.intervals(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12)) == [
        (utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30))
    ]


@pytest.mark.parametrize(
    ("zone", "saturday", "expected"),
    [
        ("Europe/Paris", (2026, 3, 28), (utc(2026, 3, 28, 21), utc(2026, 3, 29, 1))),  # 3h
        ("Europe/Paris", (2026, 10, 24), (utc(2026, 10, 24, 20), utc(2026, 10, 25, 0))),  # 4h
        ("America/New_York", (2026, 3, 7), (utc(2026, 3, 8, 3), utc(2026, 3, 8, 7))),  # 3h
        ("America/New_York", (2026, 10, 31), (utc(2026, 11, 1, 2), utc(2026, 11, 1, 7))),  # 5h
    ],
)
def test_a_period_over_midnight_on_a_clock_change_night(
    zone: str, saturday: tuple[int, int, int], expected: tuple[datetime, datetime]
) -> None:
    sched = schedule(zone, ("sat", "22:00", "02:00"))
    start = utc(*saturday, 12)
    assert sched.intervals(start, start + timedelta(days=1)) == [expected]
    assert sched.is_active(expected[0])
    assert not sched.is_active(expected[1])
    assert sched.next_change(expected[0]) == expected[1]


def test_next_change_looks_past_a_week_whose_only_gap_the_clock_change_swallowed() -> None:
    # off only on sunday 02:00-02:30; on 2026-10-04 Lord Howe jumps from 02:00 to 02:30
    sched = schedule(
        "Australia/Lord_Howe",
        ("mon-sat", "00:00", "24:00"),
        ("sun", "00:00", "02:00"),
        ("sun", "02:30", "24:00"),
    )
    monday = utc(2026, 9, 27, 14)  # 2026-09-28 00:30 local
    assert sched.is_active(monday)
    # the next sunday 02:00, +11: 2026-10-11 02:00 local
    assert sched.next_change(monday) == utc(2026, 10, 10, 15)


# --- days, midnight, overlaps -----------------------------------------------------------------


def test_overlapping_and_touching_periods_merge() -> None:
    sched = schedule(
        "UTC",
        ("mon", "08:00", "12:00"),
        ("mon", "11:00", "14:00"),
        ("mon", "14:00", "15:00"),
        ("mon", "17:00", "18:00"),
    )
    monday = utc(2026, 6, 1)
    assert sched.intervals(monday, monday + timedelta(days=1)) == [
        (utc(2026, 6, 1, 8), utc(2026, 6, 1, 15)),
        (utc(2026, 6, 1, 17), utc(2026, 6, 1, 18)),
    ]
    assert sched.next_change(utc(2026, 6, 1, 9)) == utc(2026, 6, 1, 15)
    assert sched.next_change(utc(2026, 6, 1, 15)) == utc(2026, 6, 1, 17)


def test_intervals_are_cut_to_the_window() -> None:
    sched = schedule("UTC", ("mon", "08:00", "20:00"))
    assert sched.intervals(utc(2026, 6, 1, 10), utc(2026, 6, 1, 11)) == [
        (utc(2026, 6, 1, 10), utc(2026, 6, 1, 11))
    ]
    assert sched.intervals(utc(2026, 6, 1, 11), utc(2026, 6, 1, 10)) == []


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat-sun", {5, 6}),
        ("mon,wed,fri", {0, 2, 4}),
        ("fri-mon", {4, 5, 6, 0}),
        ("sun-tue", {6, 0, 1}),
        ("mon-wed,sat", {0, 1, 2, 5}),
        ("MON - Fri , sun", {0, 1, 2, 3, 4, 6}),
        ("thu", {3}),
    ],
)
def test_days(text: str, days: set[int]) -> None:
    assert parse_days(text) == days


def test_a_wrapping_range_runs_over_the_weekend() -> None:
    sched = schedule("Europe/Paris", ("fri-mon", "10:00", "12:00"))
    active = [sched.is_active(utc(2026, 6, day, 9)) for day in range(1, 8)]  # mon 1st .. sun 7th
    assert active == [True, False, False, False, True, True, True]
    assert sched.next_change(utc(2026, 6, 1, 11)) == utc(2026, 6, 5, 8)  # mon -> fri 10:00
    assert sched.periods[0].days == "fri-mon"


def test_24_00_ends_the_day_and_a_whole_week_never_changes() -> None:
    evening = schedule("UTC", ("sat", "20:00", "24:00"), ("sun", "00:00", "06:00"))
    assert evening.intervals(utc(2026, 6, 6), utc(2026, 6, 8)) == [
        (utc(2026, 6, 6, 20), utc(2026, 6, 7, 6))
    ]
    always = schedule("Pacific/Chatham", ("mon-sun", "00:00", "24:00"))
    assert always.next_change(utc(2026, 4, 5)) is None
    assert always.intervals(utc(2026, 4, 1), utc(2026, 4, 10)) == [
        (utc(2026, 4, 1), utc(2026, 4, 10))
    ]
    # night and day periods that together cover the week are always on too
    split = schedule("Europe/Paris", ("mon-sun", "20:00", "08:00"), ("mon-sun", "08:00", "20:00"))
    assert split.next_change(utc(2026, 3, 28, 12)) is None
    assert split.intervals(utc(2026, 3, 28), utc(2026, 3, 30)) == [
        (utc(2026, 3, 28), utc(2026, 3, 30))
    ]


# --- descriptions -----------------------------------------------------------------------------


def test_descriptions_for_reasons() -> None:
    sched = schedule("Europe/Paris", ("mon-fri", "08:00", "20:00"), ("sat", "10:00", "12:00"))
    friday_noon = utc(2026, 6, 5, 10)
    assert sched.describe() == "mon-fri 08:00-20:00, sat 10:00-12:00 Europe/Paris"
    assert sched.describe_period_at(friday_noon) == "mon-fri 08:00-20:00 Europe/Paris"
    change = sched.next_change(friday_noon)
    assert change is not None
    assert sched.format_instant(change, since=friday_noon) == "20:00 Europe/Paris"
    # off on friday evening: the next period is saturday's
    friday_night = utc(2026, 6, 5, 20)
    assert sched.describe_period_at(friday_night) == "sat 10:00-12:00 Europe/Paris"
    change = sched.next_change(friday_night)
    assert change is not None
    assert sched.format_instant(change, since=friday_night) == "sat 10:00 Europe/Paris"
    assert sched.format_instant(utc(2026, 6, 8, 6)) == "mon 08:00 Europe/Paris"


def test_naive_instants_are_refused() -> None:
    sched = schedule("UTC", ("mon", "08:00", "20:00"))
    with pytest.raises(ValueError, match="aware"):
        sched.is_active(datetime(2026, 6, 1, 9))
    with pytest.raises(ValueError, match="aware"):
        sched.intervals(datetime(2026, 6, 1), utc(2026, 6, 2))


# --- the model --------------------------------------------------------------------------------


def test_from_is_the_key_in_data_schema_and_dump() -> None:
    period = Period.model_validate({"days": "Mon-Fri", "from": "08:00", "to": "20:00"})
    assert (period.days, period.from_, period.to) == ("mon-fri", "08:00", "20:00")
    assert period == Period(days="mon-fri", from_="08:00", to="20:00")
    assert period.model_dump() == {"days": "mon-fri", "from": "08:00", "to": "20:00"}
    assert "from" in Period.model_json_schema()["properties"]
    assert "from_" not in Period.model_json_schema()["properties"]
    with pytest.raises(ValidationError):
        period.model_copy().__setattr__("to", "21:00")  # frozen


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"days": "mnn"}, "unknown day 'mnn' (use mon..sun, ranges like mon-fri, lists like "),
        ({"days": "mon-"}, "'mon-' is neither a day nor a range"),
        ({"days": "mon-tue-wed"}, "neither a day nor a range"),
        ({"days": "mon,,fri"}, "an empty item"),
        ({"days": ""}, "no day given"),
        ({"days": "mon-mon"}, "write mon for one day, mon-sun for the whole week"),
        ({"days": ["mon", "fri"]}, "expected days as text such as mon-fri"),
        ({"days": "monday"}, "unknown day 'monday'"),
        ({"from": "8:00"}, "invalid time '8:00': expected HH:MM, 00:00 to 23:59"),
        ({"from": "24:00"}, "24:00 can only end a period"),
        ({"to": "24:01"}, "invalid time '24:01': expected HH:MM, 00:00 to 23:59, or 24:00"),
        ({"to": "12:60"}, "invalid time '12:60'"),
        ({"to": "\uff11\uff12:\uff10\uff10"}, "invalid time"),  # full-width digits
        ({"to": 1200}, 'write the time in quotes, "20:00": YAML reads an unquoted 20:00 as'),
        ({"to": True}, 'expected a time as text such as "08:00"'),
        ({"from": "08:00", "to": "08:00"}, "from and to are both 08:00: a period needs a length"),
        ({"from": "00:00", "to": "00:00"}, "from and to are both 00:00"),
        ({"start": "08:00"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_periods(data: dict[str, Any], message: str) -> None:
    assert message in errors({"days": "mon", "from": "08:00", "to": "20:00"} | data)


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ("Europe/Pari", "unknown timezone 'Europe/Pari' (use an IANA name such as Europe/Paris"),
        ("America", "unknown timezone 'America'"),
        ("../etc/passwd", "invalid timezone '../etc/passwd'"),
        ("/etc/localtime", "invalid timezone"),
        ("Europe/../UTC", "invalid timezone"),
        ("localtime", "invalid timezone"),
        ("right/UTC", "invalid timezone"),
        ("", "invalid timezone"),
        ("A/" * 40 + "B", "timezone too long (81 characters"),
    ],
)
def test_invalid_timezones(zone: str, message: str) -> None:
    data = {"timezone": zone, "periods": [{"days": "mon", "from": "08:00", "to": "20:00"}]}
    assert message in errors(data, Schedule)


def test_period_count_is_bounded() -> None:
    one = {"days": "mon", "from": "08:00", "to": "20:00"}
    assert "at least one period" in errors({"timezone": "UTC", "periods": []}, Schedule)
    assert f"51 periods: at most {MAX_PERIODS}" in errors(
        {"timezone": "UTC", "periods": [one] * 51}, Schedule
    )
    assert len(Schedule.model_validate({"timezone": "UTC", "periods": [one] * 50}).periods) == 50


# --- the power schedule's limits --------------------------------------------------------------

WHY = "less than 1h (an apply and a destroy take 10-15 minutes each)"


def test_a_working_week_is_a_fine_power_schedule() -> None:
    assert power_schedule_problems(schedule("Europe/Paris", ("mon-fri", "08:00", "20:00"))) == []
    assert power_schedule_problems(schedule("UTC", ("mon-sun", "00:00", "24:00"))) == []
    # exactly an hour on and an hour off is enough
    assert (
        power_schedule_problems(
            schedule("UTC", ("mon", "08:00", "09:00"), ("mon", "10:00", "11:00"))
        )
        == []
    )


def test_a_30_minute_period_is_too_short_to_power() -> None:
    assert power_schedule_problems(schedule("Europe/Paris", ("sat", "10:00", "10:30"))) == [
        f"schedule: sat 10:00-10:30 is active for 30m at a time, {WHY}"
    ]
    # overlapping periods count as one stretch
    assert power_schedule_problems(
        schedule("UTC", ("mon", "10:00", "10:20"), ("mon", "10:10", "10:40"))
    ) == [
        "schedule: mon 10:00-10:20 and mon 10:10-10:40 together are active for 40m at a time, "
        + WHY
    ]


def test_a_30_minute_gap_is_too_short_to_power_off() -> None:
    sched = schedule("Europe/Paris", ("mon-fri", "08:00", "12:00"), ("mon-fri", "12:30", "20:00"))
    # one message, not one per day
    assert power_schedule_problems(sched) == [
        f"schedule: the gap between mon-fri 08:00-12:00 and mon-fri 12:30-20:00 is 30m, {WHY}"
    ]


def test_gaps_over_midnight_and_the_week_end_count() -> None:
    nightly = schedule("UTC", ("mon-sun", "00:00", "23:30"))
    assert power_schedule_problems(nightly) == [
        f"schedule: the gap between two runs of mon-sun 00:00-23:30 is 30m, {WHY}"
    ]
    weekly = schedule("UTC", ("mon", "00:15", "12:00"), ("sun", "12:00", "24:00"))
    assert power_schedule_problems(weekly) == [
        f"schedule: the gap between sun 12:00-24:00 and mon 00:15-12:00 is 15m, {WHY}"
    ]
