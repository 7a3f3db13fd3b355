"""structlog configuration: one JSON object per line (or readable console lines), on stderr.

Pass context (`reconcile_id`, `revision`, `environment`) travels in contextvars, so every line
logged inside a pass carries it without being passed around.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog


def configure_logging(fmt: Literal["json", "console"], stream: TextIO | None = None) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=(stream or sys.stderr).isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # quiet the libraries' own loggers: the controller reports what matters itself
    logging.basicConfig(level=logging.WARNING, stream=stream or sys.stderr)
    for noisy in ("botocore", "aiobotocore", "aiohttp.access", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
