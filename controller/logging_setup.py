"""structlog configuration: one JSON object per line (or short console lines), on stderr.

Pass context (`reconcile_id`, `revision`, `environment`) travels in contextvars, so every line
logged inside a pass carries it without being passed around.

Every line goes through one stdlib handler, whose structlog `ProcessorFormatter` renders the
controller's own events and the libraries' records (aiohttp, asyncio, botocore, warnings) alike:
an exception is one `exception` field, never extra lines. Repeated library lines are rate-limited
(`RepeatFilter`): a flood such as asyncio's "socket.accept() out of system resources" is one line
a window, the next one carrying how many were dropped (`suppressed`).

JSON keeps every field, and every line but the `decision` lines that repeat the one before
(`DecisionDigest`: an environment's decision is logged when it changes; one `pass completed`
line per pass counts them all). The console is for a person watching: a decision is shown when
it changes, and otherwise at most once a minute as a "still" line; no line per pass; every line
is short (`ConsoleLines`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import structlog
from structlog.stdlib import ProcessorFormatter

from controller.engine.reporter import PASS_SUMMARY

REPEAT_WINDOW_SECONDS = 60.0
REMEMBERED_MESSAGES = 1024
STILL_EVERY_SECONDS = 60.0  # an unchanged decision shows again on the console this often
CONSOLE_VALUE_LIMIT = 160  # characters of one field's value on the console
CONSOLE_FOLD_WIDTH = 120  # a longer console line puts its fields one per line
EventDict = MutableMapping[str, Any]

# events a command prints itself in its own words (see `quiet_events`)
_quiet: ContextVar[frozenset[str]] = ContextVar("quiet_events", default=frozenset())


@contextmanager
def quiet_events(*events: str) -> Iterator[None]:
    """Drop these events (by name) from the logs in this context and the tasks it starts: the
    CLI prints each desired-state problem once, as FILE:LINE:COLUMN, not also as a log line."""
    token = _quiet.set(_quiet.get() | frozenset(events))
    try:
        yield
    finally:
        _quiet.reset(token)


def _drop_quiet(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    if event_dict.get("event") in _quiet.get():
        raise structlog.DropEvent
    return event_dict


def _drop_pass_summary(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """The console is for a person watching: a line for every pass is for machines."""
    if event_dict.get("event") == PASS_SUMMARY:
        raise structlog.DropEvent
    return event_dict


def _drop_retry_hints(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """A one-shot command never retries: a `retry_in` would promise what does not happen."""
    event_dict.pop("retry_in", None)
    return event_dict


class Timestamper:
    """`timestamp`: ISO 8601 in UTC, to the millisecond (finer is noise in a log line)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        moment = datetime.fromtimestamp(self._clock(), UTC)
        event_dict["timestamp"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return event_dict


@dataclass
class _Window:
    started: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """At most one line per library message (logger, level, first line of the message template)
    and window; the first line after a window says how many were dropped in it (`suppressed`).

    The controller's own structlog events are not limited: each carries its own context."""

    def __init__(
        self, window: float = REPEAT_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Window] = {}
        self._lock = threading.Lock()  # botocore and executors log from other threads

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # a structlog event
            return True
        key = (record.name, record.levelno, str(record.msg).partition("\n")[0][:200])
        now = self._clock()
        with self._lock:
            window = self._seen.get(key)
            if window is not None and now - window.started < self._window:
                window.suppressed += 1
                return False
            if len(self._seen) >= REMEMBERED_MESSAGES:
                self._seen = {k: w for k, w in self._seen.items() if now - w.started < self._window}
            if len(self._seen) >= REMEMBERED_MESSAGES:  # that many distinct floods: start over
                self._seen.clear()
            self._seen[key] = _Window(now)
        if window is not None and window.suppressed:
            record.suppressed = window.suppressed
        return True


class _Handler(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs (and replaces when called again)."""


# the figures in a reason ("last request 16s ago", "awake for 1m5s"): they change every pass
# while the decision stays the same. A duration is one figure however many units it has:
# "59s" and "1m0s" are the same decision.
_FIGURES = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[a-z]{0,2})+")


def decision_key(event_dict: EventDict) -> tuple[Any, ...]:
    """What makes two `decision` lines the same decision: the action and the reason's words."""
    reason = _FIGURES.sub("#", str(event_dict.get("reason", "")))
    return (event_dict.get("action"), reason, bool(event_dict.get("dry_run")))


def decision_detail_key(event_dict: EventDict) -> tuple[Any, ...]:
    """The same, for JSON, which carries more of the decision: each policy's own action and
    reason (their words), and the power state."""
    details = sorted(
        (key, _FIGURES.sub("#", str(value)))
        for key, value in event_dict.items()
        if key.endswith(("_action", "_reason"))
    )
    return (*decision_key(event_dict), event_dict.get("power_state"), *details)


@dataclass
class _Shown:
    key: tuple[Any, ...]
    at: float


class DecisionDigest:
    """An environment's `decision` passes when it differs from the last one shown for that
    environment. On the console, the same decision passes again once `every` seconds, marked
    `_still`; in JSON (`every` None) never: each pass has its `pass completed` line instead.
    Every other event passes unchanged."""

    def __init__(
        self,
        every: float | None = STILL_EVERY_SECONDS,
        clock: Callable[[], float] = time.time,
        key: Callable[[EventDict], tuple[Any, ...]] = decision_key,
    ) -> None:
        self._every = every
        self._clock = clock
        self._key = key
        self._shown: dict[str, _Shown] = {}
        self._lock = threading.Lock()  # events may come from executor threads

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> EventDict:
        if event_dict.get("event") != "decision":
            return event_dict
        name, key, now = str(event_dict.get("environment")), self._key(event_dict), self._clock()
        with self._lock:
            shown = self._shown.get(name)
            if shown is None or shown.key != key:
                self._shown[name] = _Shown(key, now)
                return event_dict
            if self._every is None or now - shown.at < self._every:
                raise structlog.DropEvent
            shown.at = now
        event_dict["_still"] = True
        return event_dict


_COLOURS = {"dim": "\x1b[2m", "bold": "\x1b[1m", "cyan": "\x1b[36m", "yellow": "\x1b[33m"}
_COLOURS |= {"red": "\x1b[31m", "reset": "\x1b[0m"}
_LEVEL_COLOURS = {"warning": "yellow", "error": "red", "critical": "red", "exception": "red"}


class ConsoleLines:
    """Renders one event as `HH:MM:SS ENVIRONMENT MESSAGE key=value...` (local time).

    A decision reads `HH:MM:SS demo      scale_to_zero  no requests for 31s`. The pass context
    (`reconcile_id`, `revision` outside desired-state events) and empty fields are left out,
    long values are cut, and a line still too long puts its fields one per line."""

    def __init__(self, colors: bool = False) -> None:
        self._colors = colors

    def _paint(self, text: str, colour: str) -> str:
        return f"{_COLOURS[colour]}{text}{_COLOURS['reset']}" if self._colors else text

    def __call__(self, logger: Any, method: str, event_dict: EventDict) -> str:
        fields = dict(event_dict)
        when = _clock_time(fields.pop("timestamp", None))
        level = str(fields.pop("level", "info"))
        environment = str(fields.pop("environment", None) or "")
        event = str(fields.pop("event", ""))
        exception = fields.pop("exception", None)
        library = fields.pop("logger", None)
        fields.pop("reconcile_id", None)
        if not event.startswith("desired state"):
            fields.pop("revision", None)
        if event == "decision":
            message = self._decision(fields)
        elif event == "aws change":
            message = self._aws_change(fields)
        else:
            message = self._event(f"{library}: {event}" if library else event, fields)
        if level in _LEVEL_COLOURS:
            message = self._paint(f"{level}: ", _LEVEL_COLOURS[level]) + message
        line = f"{self._paint(when, 'dim')} {self._paint(f'{environment:<9}', 'bold')} {message}"
        if exception:
            line += "\n" + "\n".join("    " + part for part in str(exception).splitlines())
        return line

    def _decision(self, fields: dict[str, Any]) -> str:
        action, reason = str(fields.get("action")), str(fields.get("reason", ""))
        shown = action
        if fields.get("_still"):
            shown = "still waiting" if action == "none" else f"still {action}"
        if fields.get("dry_run") and action != "none":
            reason += " (dry run: not done)"
        return f"{self._paint(f'{shown:<14}', 'cyan' if action != 'none' else 'dim')} {reason}"

    def _aws_change(self, fields: dict[str, Any]) -> str:
        # the decision line just before says why and names the environment: this one says
        # which call is made, and with what
        for known in ("action", "reason", "cluster", "service"):
            fields.pop(known, None)
        operation = fields.pop("operation", "?")
        return self._event(f"{'-> calls':<14} {operation}", fields)

    def _event(self, message: str, fields: dict[str, Any]) -> str:
        pairs = [
            (key, _console_value(value))
            for key, value in fields.items()
            if value is not None and not key.startswith("_")
        ]
        inline = "  ".join([message, " ".join(f"{key}={value}" for key, value in pairs)])
        if len(inline) <= CONSOLE_FOLD_WIDTH or len(pairs) < 2:
            return inline.rstrip()
        return message + "".join(f"\n{'':21}{key}: {value}" for key, value in pairs)


def _clock_time(timestamp: Any) -> str:
    """`HH:MM:SS` in local time: the console is read by a person next to a clock."""
    try:
        moment = datetime.fromisoformat(str(timestamp))
    except ValueError:
        return "--:--:--"
    return moment.astimezone().strftime("%H:%M:%S")


def _console_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as the JSON lines say it
    if isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(item) for item in value)
    else:
        text = str(value)
    text = " ".join(text.split())  # one line, whatever the value holds
    if len(text) > CONSOLE_VALUE_LIMIT:
        text = text[: CONSOLE_VALUE_LIMIT - 3] + "..."
    # quoted as JSON quotes: a quote inside stays readable as one
    return json.dumps(text) if " " in text or '"' in text or not text else text


def configure_logging(
    fmt: Literal["json", "console"],
    stream: TextIO | None = None,
    *,
    repeat_window: float = REPEAT_WINDOW_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    one_shot: bool = False,
    still_every: float = STILL_EVERY_SECONDS,
) -> None:
    """`one_shot`: a command that runs one pass and exits (`run --once`, `plan`)."""
    out = stream or sys.stderr
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else ConsoleLines(colors=out.isatty())
    )
    timestamper = Timestamper(wall_clock)
    own: list[Any] = [structlog.contextvars.merge_contextvars, _drop_quiet]
    # before the handler, where dropping an event is allowed, and before the time is written
    # (most decision lines of a pass are dropped: they repeat the one before)
    if fmt == "console":
        own += [DecisionDigest(still_every, wall_clock), _drop_pass_summary]
    else:
        own.append(DecisionDigest(None, wall_clock, decision_detail_key))
    own += [structlog.processors.add_log_level, timestamper]
    if one_shot:
        own.append(_drop_retry_hints)
    structlog.configure(
        processors=[
            *own,
            structlog.processors.format_exc_info,
            ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = _Handler(out)
    handler.setFormatter(
        ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                structlog.stdlib.ExtraAdder(allow=["suppressed"]),
            ],
            processors=[
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(RepeatFilter(repeat_window, clock))
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    # the libraries say what matters at WARNING; the controller's own events from INFO
    root.setLevel(logging.WARNING)
    logging.getLogger("infra_controller").setLevel(logging.INFO)
    for noisy in ("botocore", "aiobotocore", "aiohttp.access", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # `warnings.warn` as log lines, not multi-line stderr text; off first, so that a second call
    # captures the current `warnings.showwarning` rather than keeping an earlier one
    logging.captureWarnings(False)
    logging.captureWarnings(True)
