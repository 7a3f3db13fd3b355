"""What a power schedule must leave time for: an apply and a destroy take 10-15 minutes each,
so no stretch on, and no gap between two, may be shorter than an hour (contract section 10)."""

from __future__ import annotations

from datetime import timedelta

from controller.core.durations import format_duration
from controller.core.schedule import (
    MIN_POWER_STRETCH,
    MINUTES_PER_WEEK,
    Schedule,
    active_stretches,
)


def power_schedule_problems(schedule: Schedule) -> list[str]:
    """Why a schedule cannot drive the power: an active stretch (overlapping periods merged) or a
    gap between two stretches shorter than an hour, as an apply and a destroy take 10-15 minutes
    each. Not for `keep_awake`, where a short period costs nothing.

    The week checked is a week of wall-clock time, that is the UTC instants of a week without a
    clock change. The night of a change lengthens or shortens one stretch or gap by the shift,
    once or twice a year; that alone refuses nothing.
    """
    stretches = active_stretches(schedule)
    limit = int(MIN_POWER_STRETCH.total_seconds()) // 60
    why = (
        f"less than {format_duration(MIN_POWER_STRETCH)} "
        "(an apply and a destroy take 10-15 minutes each)"
    )
    problems: list[str] = []
    for position, (start, end, opener, closer) in enumerate(stretches):
        if end - start < limit:
            names = _names(schedule, opener, closer)
            verb = "is" if opener == closer else "together are"
            problems.append(
                f"schedule: {names} {verb} active for {_minutes(end - start)} at a time, {why}"
            )
        following = stretches[(position + 1) % len(stretches)]
        next_start = following[0] + (MINUTES_PER_WEEK if position + 1 == len(stretches) else 0)
        if next_start - end < limit:
            if closer == following[2]:
                between = f"two runs of {schedule.periods[closer].describe()}"
            else:
                between = _names(schedule, closer, following[2])
            problems.append(
                f"schedule: the gap between {between} is {_minutes(next_start - end)}, {why}"
            )
    return list(dict.fromkeys(problems))  # one message per pair, not one per day


def _names(schedule: Schedule, first: int, second: int) -> str:
    names = [schedule.periods[first].describe()]
    if second != first:
        names.append(schedule.periods[second].describe())
    return " and ".join(names)


def _minutes(count: int) -> str:
    return format_duration(timedelta(minutes=count))
