"""Logs (contract section 8): one JSON object per line, the libraries' records included, and no
flood from a library repeating itself."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from controller.logging_setup import configure_logging
from tests.conftest import logging_restored

Configure = Callable[..., io.StringIO]  # configure(**configure_logging keywords) -> the stream


@pytest.fixture
def configure() -> Iterator[Configure]:
    def make(**options: Any) -> io.StringIO:
        stream = io.StringIO()
        configure_logging("json", stream=stream, **options)
        return stream

    with logging_restored():
        yield make


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]
    for record in parsed:
        assert {"event", "level", "timestamp"} <= record.keys(), record
    return parsed


def accept_out_of_resources(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
    """What asyncio reports when accept() fails with EMFILE (and retries a second later)."""
    loop.call_exception_handler(
        {
            "message": "socket.accept() out of system resources",
            "exception": OSError(24, "Too many open files"),
            "socket": listener,
        }
    )


async def test_library_records_and_their_exceptions_are_one_json_object_per_line(
    configure: Configure,
) -> None:
    stream = configure()
    structlog.contextvars.bind_contextvars(reconcile_id="r-1")
    try:
        raise ValueError("bad\nrequest")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "peer")
        structlog.get_logger("infra_controller").exception("pass failed", environment="a")
    with socket.socket() as listener:
        accept_out_of_resources(asyncio.get_running_loop(), listener)
    logging.getLogger("botocore.credentials").warning("a %s warning", "botocore")
    logging.getLogger("botocore.credentials").info("below WARNING: not shown")
    structlog.get_logger("infra_controller.http").info("listening", port=8080)
    structlog.get_logger("infra_controller.http").debug("below INFO: not shown")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)

    aiohttp_line, own_error, asyncio_line, botocore_line, own_info, warning_line = records(stream)
    assert aiohttp_line["logger"] == "aiohttp.server"
    assert aiohttp_line["event"] == "Error handling request from peer"
    assert aiohttp_line["level"] == "error"
    assert aiohttp_line["exception"].startswith("Traceback")
    assert "ValueError: bad\nrequest" in aiohttp_line["exception"]
    assert aiohttp_line["reconcile_id"] == "r-1"  # the pass context reaches library lines too
    assert own_error["event"] == "pass failed"
    assert own_error["environment"] == "a"
    assert "ValueError" in own_error["exception"]
    assert asyncio_line["logger"] == "asyncio"
    assert asyncio_line["event"].startswith("socket.accept() out of system resources")
    assert "Too many open files" in asyncio_line["exception"]
    assert (botocore_line["event"], botocore_line["level"]) == ("a botocore warning", "warning")
    assert (own_info["event"], own_info["port"]) == ("listening", 8080)
    assert warning_line["logger"] == "py.warnings"
    assert "a deprecated call" in warning_line["event"]


async def test_a_flood_of_one_library_message_is_one_line_a_window_with_the_count_dropped(
    configure: Configure,
) -> None:
    now = [1000.0]
    stream = configure(repeat_window=60.0, clock=lambda: now[0])
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        for _ in range(10_000):
            accept_out_of_resources(loop, listener)
        logging.getLogger("asyncio").error("another message")  # not the same one: shown
        for _ in range(3):
            structlog.get_logger("infra_controller").error("pass failed")  # ours: never limited
        now[0] += 59.0
        accept_out_of_resources(loop, listener)  # still inside the window
        now[0] += 1.0
        accept_out_of_resources(loop, listener)  # the next window
    lines = records(stream)
    assert [line["event"].partition("\n")[0] for line in lines] == [
        "socket.accept() out of system resources",
        "another message",
        "pass failed",
        "pass failed",
        "pass failed",
        "socket.accept() out of system resources",
    ]
    assert "suppressed" not in lines[0]
    assert lines[-1]["suppressed"] == 10_000


def test_configuring_again_replaces_the_previous_output(configure: Configure) -> None:
    first = configure()
    second = configure()
    logging.getLogger("aiohttp.server").error("once")
    structlog.get_logger("infra_controller").info("once too")
    assert first.getvalue() == ""
    assert [line["event"] for line in records(second)] == ["once", "once too"]
