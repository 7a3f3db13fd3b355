"""structlog configuration: one JSON object per line (or readable console lines), on stderr.

Pass context (`reconcile_id`, `revision`, `environment`) travels in contextvars, so every line
logged inside a pass carries it without being passed around.

Every line goes through one stdlib handler, whose structlog `ProcessorFormatter` renders the
controller's own events and the libraries' records (aiohttp, asyncio, botocore, warnings) alike:
an exception is one `exception` field, never extra lines. Repeated library lines are rate-limited
(`RepeatFilter`): a flood such as asyncio's "socket.accept() out of system resources" is one line
a window, the next one carrying how many were dropped (`suppressed`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import structlog
from structlog.stdlib import ProcessorFormatter

REPEAT_WINDOW_SECONDS = 60.0
REMEMBERED_MESSAGES = 1024


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


def configure_logging(
    fmt: Literal["json", "console"],
    stream: TextIO | None = None,
    *,
    repeat_window: float = REPEAT_WINDOW_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    out = stream or sys.stderr
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
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
