"""Wall-clock time in a named zone: the zone of an IANA name (checked), and the instant of a
wall time, on the nights the clocks change too (the rules are in controller.core.schedule)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

# the longest IANA name has 32 characters: anything much longer is not a zone
MAX_TIMEZONE_LENGTH = 64
# letters, digits, `_+-` and `/` between parts: no `.`, so no `..` and no path outside the zones
_TIMEZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
# files in the zone directory that are not zones one can name: `localtime` is the host's own
# zone, `posixrules` a template, and `right/` zones count leap seconds, which would shift every
# period by ~27 seconds
_NOT_ZONES = frozenset({"localtime", "posixrules"})


def zone_named(name: str) -> ZoneInfo:
    """The zone of an IANA name, or a ValueError that says what is wrong with the name."""
    help_text = "use an IANA name such as Europe/Paris, America/New_York or UTC"
    if len(name) > MAX_TIMEZONE_LENGTH:
        raise ValueError(f"timezone too long ({len(name)} characters; {help_text})")
    if _TIMEZONE.fullmatch(name) is None or name in _NOT_ZONES or name.split("/", 1)[0] == "right":
        raise ValueError(f"invalid timezone {name!r} ({help_text})")
    try:
        return ZoneInfo(name)
    # not found is a KeyError; a directory (America) an OSError; a file that is not a zone a
    # ValueError
    except (KeyError, OSError, ValueError):
        raise ValueError(f"unknown timezone {name!r} ({help_text})") from None


def instant_of(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time in `zone` (the rules of the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # it exists; when it happens twice, fold=0 is the first time
    # In a gap, fold=0 reads the wall time with the offset before the jump, which lands after
    # the jump, and fold=1 with the offset after it, which lands before: the jump lies between.
    # Transitions fall on whole seconds.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = math.floor(before.timestamp()), math.ceil(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
