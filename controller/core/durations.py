"""Durations written as `90s`, `5m`, `1h30m` (the form used in the YAML, flags and variables)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# ASCII digits only: `\d` would also take Arabic-Indic and other Unicode digits
_DURATION = re.compile(r"(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?")
# more digits than any sensible duration, and fewer than int()'s 4,300-digit limit
_MAX_DIGITS = 12


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`, `5m`, `90s`; a bare number or another unit is refused, never guessed."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"invalid duration {text!r}: expected a number of hours, minutes and/or seconds "
            "such as 90s, 5m or 1h30m"
        )
    parts = {unit: value for unit, value in match.groupdict().items() if value}
    if any(len(value) > _MAX_DIGITS for value in parts.values()):
        raise ValueError(f"invalid duration {text!r}: too long")
    try:
        return timedelta(
            hours=int(parts.get("h", 0)),
            minutes=int(parts.get("m", 0)),
            seconds=int(parts.get("s", 0)),
        )
    except OverflowError:
        # timedelta stops at 999,999,999 days; a ValueError is what validators report
        raise ValueError(f"invalid duration {text!r}: too long") from None


def format_duration(value: timedelta | float) -> str:
    """Render seconds as `5m12s` for humans (log reasons, status)."""
    total = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if total < 0:
        return "-" + format_duration(-total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds or not out:
        out += f"{seconds}s"
    return out


def _coerce_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration such as 90s, 5m or 1h30m, got {value!r}")
    return parse_duration(value)


# A duration field in the YAML or the settings: validated from text, written back as text.
Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$",
            "examples": ["90s", "5m", "1h30m"],
        }
    ),
]
