"""Weekly schedules (contract section 10): when the power is on, when idle services stay awake.

A schedule is a set of wall-clock periods in an IANA zone. Wall times become instants through
zoneinfo, with two rules for the nights the clocks change:
- a wall time that does not exist (spring forward) means the first instant after the gap: in
  Europe/Paris on 2026-03-29 the clocks jump from 02:00 to 03:00, so 02:30 means 03:00 local;
- a wall time that happens twice (autumn) means its first occurrence (fold=0): 02:30 in
  Europe/Paris on 2026-10-25 is 02:30 summer time, 00:30 UTC.

Nothing here reads a clock or a file: the instant to evaluate is always an argument.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from controller.core.wall_clock import instant_of, zone_named

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
MAX_PERIODS = 50
MAX_DAYS_LENGTH = 100
# an apply and a destroy take 10-15 minutes each: shorter on or off stretches only churn
MIN_POWER_STRETCH = timedelta(hours=1)

MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY

# A weekly schedule changes at least once a week, plus a clock change: 8 days always find the
# next change, except when a clock change swallows the only inactive stretch of a week (off on
# sundays 02:00-02:30, the night the clocks jump over it). Further windows cover that; a year
# bounds the search.
_SEARCH_WINDOW = timedelta(days=8)
_SEARCH_WINDOWS = 46

_DAYS_HELP = "use mon..sun, ranges like mon-fri, lists like mon,wed,fri"
# [0-9], not \d: \d takes every Unicode digit
_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_END_TIME_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


@lru_cache(maxsize=256)
def parse_days(text: str) -> frozenset[int]:
    """`mon-fri`, `mon,wed,fri`, `fri-mon` (over the weekend), `mon-wed,sat` -> Monday=0..Sunday=6.

    Case and spaces around the separators are ignored.
    """
    if len(text) > MAX_DAYS_LENGTH:
        raise ValueError(f"too long ({len(text)} characters; {_DAYS_HELP})")
    if not text.strip():
        raise ValueError(f"no day given ({_DAYS_HELP})")
    days: set[int] = set()
    for item in text.lower().split(","):
        ends = [end.strip() for end in item.split("-")]
        if not item.strip():
            raise ValueError(f"an empty item in {text!r} ({_DAYS_HELP})")
        if len(ends) > 2 or "" in ends:
            raise ValueError(f"{item.strip()!r} is neither a day nor a range ({_DAYS_HELP})")
        for end in ends:
            if end not in DAY_NAMES:
                raise ValueError(f"unknown day {end!r} ({_DAYS_HELP})")
        first, last = DAY_NAMES.index(ends[0]), DAY_NAMES.index(ends[-1])
        if len(ends) == 2 and first == last:
            # a whole week or a single day: the reader cannot tell, so neither is guessed
            raise ValueError(
                f"{item.strip()!r} starts and ends on the same day: write {ends[0]} for one day, "
                "mon-sun for the whole week"
            )
        days.update((first + step) % 7 for step in range((last - first) % 7 + 1))
    return frozenset(days)


def _normalized_days(text: str) -> str:
    parse_days(text)
    return ",".join("-".join(end.strip() for end in item.split("-")) for item in text.split(","))


@lru_cache(maxsize=256)
def _minute_of_day(text: str, *, end: bool) -> int:
    if end and text == "24:00":
        return MINUTES_PER_DAY
    match = _TIME.fullmatch(text)
    if match is None:
        if text == "24:00":
            raise ValueError("24:00 can only end a period (in `to`): start at 00:00")
        allowed = "00:00 to 23:59" + (", or 24:00 for the end of the day" if end else "")
        raise ValueError(f"invalid time {text!r}: expected HH:MM, {allowed}")
    return int(match[1]) * 60 + int(match[2])


def _time_text(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 20:00 as 1200 (base 60), while 08:00 stays text: say so
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MINUTES_PER_DAY:
        hours, minutes = divmod(value, 60)
        raise ValueError(
            f'write the time in quotes, "{hours:02d}:{minutes:02d}": YAML reads an unquoted '
            f"{hours}:{minutes:02d} as the number {value}"
        )
    if not isinstance(value, str):
        raise ValueError(f'expected a time as text such as "08:00", got {value!r}')
    return value


def _days_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected days as text such as mon-fri or mon,wed,fri, got {value!r}")
    return value


def _period_count(value: Any) -> Any:
    # before the items are validated: 10,000 periods are refused without validating each one
    if isinstance(value, list):
        if not value:
            raise ValueError("at least one period is needed")
        if len(value) > MAX_PERIODS:
            raise ValueError(f"{len(value)} periods: at most {MAX_PERIODS} are allowed")
    return value


def _utc(at: datetime, name: str = "at") -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with a timezone), got {at!r}")
    return at.astimezone(UTC)


class _Strict(BaseModel):
    # as in controller.core.desired_state: no coercion, unknown keys refused, immutable
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Period(_Strict):
    """Active on `days` from `from` to `to`, wall-clock time; a `to` before `from` ends the day
    after (22:00 to 02:00), `to: "24:00"` at the end of the day."""

    # `from` is a Python keyword: the field is `from_`, the YAML and the JSON Schema say `from`.
    # populate_by_name, not 2.11's validate_by_name: the project allows pydantic 2.7.
    # serialize_by_alias (2.11+) makes a plain model_dump() write `from`; before 2.11 it is
    # ignored, and a dump needs by_alias=True.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    days: Annotated[str, BeforeValidator(_days_text)] = Field(
        description="mon..sun, ranges (mon-fri, fri-mon) and lists (mon,wed,fri), mixed",
        examples=["mon-fri", "sat-sun", "mon,wed,fri", "mon-wed,sat"],
    )
    from_: Annotated[str, BeforeValidator(_time_text)] = Field(
        alias="from",
        description="HH:MM, local time",
        json_schema_extra={"pattern": _TIME_PATTERN},
    )
    to: Annotated[str, BeforeValidator(_time_text)] = Field(
        description="HH:MM, local time; before `from`: the next day; 24:00: the end of the day",
        json_schema_extra={"pattern": _END_TIME_PATTERN},
    )

    @field_validator("days")
    @classmethod
    def _valid_days(cls, value: str) -> str:
        return _normalized_days(value.lower())

    @field_validator("from_")
    @classmethod
    def _valid_from(cls, value: str) -> str:
        _minute_of_day(value, end=False)
        return value

    @field_validator("to")
    @classmethod
    def _valid_to(cls, value: str) -> str:
        _minute_of_day(value, end=True)
        return value

    @model_validator(mode="after")
    def _has_a_length(self) -> Period:
        if self.from_ == self.to:
            raise ValueError(
                f"from and to are both {self.to}: a period needs a length "
                '(from "00:00" to "24:00" for a whole day)'
            )
        return self

    @property
    def weekdays(self) -> frozenset[int]:
        """The days a run of this period starts on, Monday=0."""
        return parse_days(self.days)

    @property
    def start_minute(self) -> int:
        return _minute_of_day(self.from_, end=False)

    @property
    def end_minute(self) -> int:
        """Minutes from the midnight of the start day: past 1440 when the period crosses it."""
        end = _minute_of_day(self.to, end=True)
        return end if end > self.start_minute else end + MINUTES_PER_DAY

    def describe(self) -> str:
        """`mon-fri 08:00-20:00`."""
        return f"{self.days} {self.from_}-{self.to}"


# (opens, closes, index of the period) of one run of a period, as UTC instants
_Run = tuple[datetime, datetime, int]


class Schedule(_Strict):
    """Periods in a zone; active when any period is (overlapping periods merge)."""

    timezone: str = Field(
        description="IANA zone name; daylight saving is handled", examples=["Europe/Paris"]
    )
    periods: Annotated[list[Period], BeforeValidator(_period_count)] = Field(
        json_schema_extra={"minItems": 1, "maxItems": MAX_PERIODS}
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone_named(value)
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches zones by name

    def intervals(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The stretches where the schedule is active, cut to [start, end): UTC, sorted, disjoint
        and not touching (periods that overlap or meet merge)."""
        start, end = _utc(start, "start"), _utc(end, "end")
        if start >= end:
            return []
        return [
            (max(opens, start), min(closes, end))
            for opens, closes in _merged(self._runs(start, end))
            if opens < end and closes > start
        ]

    def is_active(self, at: datetime) -> bool:
        at = _utc(at)
        return any(opens <= at < closes for opens, closes, _ in self._runs(at, at))

    def next_change(self, at: datetime) -> datetime | None:
        """The first instant after `at` where `is_active` flips (UTC); None if it never does."""
        at = _utc(at)
        if not active_stretches(self):
            return None  # every minute of the week is covered: always active
        cursor = at
        for _ in range(_SEARCH_WINDOWS):
            stop = cursor + _SEARCH_WINDOW
            # An edge in (cursor, stop] is a real change: the runs of the days around it are all
            # there. Earlier edges can be where the days looked at start, and were seen already.
            edges = [
                edge
                for opens, closes in _merged(self._runs(cursor, stop))
                for edge in (opens, closes)
                if cursor < edge <= stop
            ]
            if edges:
                return min(edges)
            cursor = stop
        return None

    def describe(self) -> str:
        """`mon-fri 08:00-20:00, sat 10:00-12:00 Europe/Paris`."""
        return f"{', '.join(period.describe() for period in self.periods)} {self.timezone}"

    def describe_period_at(self, at: datetime) -> str | None:
        """The period in force at `at` (the first listed, when several are), else the next one to
        start, as `mon-fri 08:00-20:00 Europe/Paris`."""
        at = _utc(at)
        current = [index for opens, closes, index in self._runs(at, at) if opens <= at < closes]
        if current:
            return f"{self.periods[min(current)].describe()} {self.timezone}"
        cursor = at
        for _ in range(_SEARCH_WINDOWS):
            stop = cursor + _SEARCH_WINDOW
            upcoming = [
                (opens, index)
                for opens, _, index in self._runs(cursor, stop)
                if cursor < opens <= stop
            ]
            if upcoming:
                return f"{self.periods[min(upcoming)[1]].describe()} {self.timezone}"
            cursor = stop
        return None

    def format_instant(self, at: datetime, *, since: datetime | None = None) -> str:
        """`mon 08:00 Europe/Paris`; `20:00 Europe/Paris` when `since` falls on the same local
        day (for `until 20:00` in a reason written at `since`)."""
        local = _utc(at).astimezone(self.zone)
        text = local.strftime("%H:%M")
        if since is None or _utc(since, "since").astimezone(self.zone).date() != local.date():
            text = f"{DAY_NAMES[local.weekday()]} {text}"
        return f"{text} {self.timezone}"

    def _runs(self, start: datetime, end: datetime) -> list[_Run]:
        # Every run that can touch [start, end]: a run ends at most a day after its start day,
        # so one day before would do; the extra days cover clock changes of up to a day (Samoa
        # skipped 2011-12-30)
        zone = self.zone
        first_day = start.astimezone(zone).date() - timedelta(days=3)
        last_day = end.astimezone(zone).date() + timedelta(days=2)
        instants: dict[datetime, datetime] = {}

        def instant(wall: datetime) -> datetime:
            if wall not in instants:
                instants[wall] = instant_of(wall, zone)
            return instants[wall]

        runs: list[_Run] = []
        for day in _days(first_day, last_day):
            midnight = datetime.combine(day, time())
            for index, period in enumerate(self.periods):
                if day.weekday() in period.weekdays:
                    opens = instant(midnight + timedelta(minutes=period.start_minute))
                    closes = instant(midnight + timedelta(minutes=period.end_minute))
                    # a run inside a spring-forward gap (02:00-02:30 on that night) never happens
                    if opens < closes:
                        runs.append((opens, closes, index))
        runs.sort()
        return runs


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _merged(runs: list[_Run]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes, _ in runs:  # sorted by opening
        if merged and opens <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


# (start, end, index of the period that opens it, index of the one that closes it), in minutes
# from Monday 00:00
Stretch = tuple[int, int, int, int]


def active_stretches(schedule: Schedule) -> list[Stretch]:
    """The active stretches that start in a week without a clock change, merged; the last one
    may end past Sunday midnight. Empty when the schedule is always active."""
    runs = sorted(
        (
            week * MINUTES_PER_WEEK + day * MINUTES_PER_DAY + period.start_minute,
            week * MINUTES_PER_WEEK + day * MINUTES_PER_DAY + period.end_minute,
            index,
        )
        # the weeks before and after: what runs over their edges merges with this week's runs
        for week in (-1, 0, 1)
        for day in range(7)
        for index, period in enumerate(schedule.periods)
        if day in period.weekdays
    )
    merged: list[list[int]] = []
    for start, end, index in runs:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1], merged[-1][3] = end, index
        else:
            merged.append([start, end, index, index])
    # a schedule always active is one stretch over the three weeks, starting before this one
    return [(s, e, o, c) for s, e, o, c in merged if 0 <= s < MINUTES_PER_WEEK]
