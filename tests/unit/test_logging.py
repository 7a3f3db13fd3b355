"""Logs (contract section 8): one JSON object per line, the libraries' records included, and no
flood from a library repeating itself; on the console, short lines and each environment's
decision when it changes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from controller.logging_setup import configure_logging, quiet_events
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


# ---- what the console shows, and what JSON keeps ----

Clock = list[float]  # a settable wall clock: clock[0] is "now", in seconds since the epoch


@pytest.fixture
def console() -> Iterator[Callable[..., tuple[io.StringIO, Clock]]]:
    def make(**options: Any) -> tuple[io.StringIO, Clock]:
        stream, now = io.StringIO(), [1_700_000_000.0]
        configure_logging("console", stream=stream, wall_clock=lambda: now[0], **options)
        return stream, now

    with logging_restored():
        yield make


def decide(environment: str, action: str, reason: str, **fields: Any) -> None:
    structlog.get_logger("infra_controller").info(
        "decision", environment=environment, action=action, reason=reason, **fields
    )


def shown(stream: io.StringIO) -> list[str]:
    """The console lines without their time of day."""
    lines = stream.getvalue().splitlines()
    for line in lines:
        assert re.match(r"\d\d:\d\d:\d\d ", line), line  # seconds: no fraction, no date
    return [" ".join(line.split()[1:]) for line in lines]


def test_the_console_shows_a_decision_when_it_changes_not_when_only_its_figures_do(
    console: Callable[..., tuple[io.StringIO, Clock]],
) -> None:
    stream, now = console(still_every=60.0)
    decide("demo", "none", "awake for 5s, less than idle.after 5m")
    now[0] += 10
    decide("demo", "none", "awake for 1m5s, less than idle.after 5m")  # one figure, two units
    now[0] += 10
    decide("demo", "scale_to_zero", "no requests for 5m2s")
    now[0] += 10
    decide("demo", "none", "last request 3s ago")
    now[0] += 10
    decide("demo", "none", "last request 13s ago")
    assert shown(stream) == [
        "demo none awake for 5s, less than idle.after 5m",
        "demo scale_to_zero no requests for 5m2s",
        "demo none last request 3s ago",
    ]


def test_an_unchanged_decision_shows_again_as_still_once_a_minute(
    console: Callable[..., tuple[io.StringIO, Clock]],
) -> None:
    stream, now = console(still_every=60.0)
    decide("demo", "none", "last request 1s ago")
    now[0] += 59
    decide("demo", "none", "last request 1m ago")  # within the minute: dropped
    now[0] += 1
    decide("demo", "none", "last request 1m1s ago")
    now[0] += 30
    decide("demo", "none", "last request 1m31s ago")  # a minute after the "still": dropped
    decide("staging", "scale_to_zero", "no requests for 6m", dry_run=True)
    now[0] += 60
    decide("staging", "scale_to_zero", "no requests for 7m", dry_run=True)
    assert shown(stream) == [
        "demo none last request 1s ago",
        "demo still waiting last request 1m1s ago",
        "staging scale_to_zero no requests for 6m (dry run: not done)",
        "staging still scale_to_zero no requests for 7m (dry run: not done)",
    ]


def test_each_environment_has_its_own_last_decision_on_the_console(
    console: Callable[..., tuple[io.StringIO, Clock]],
) -> None:
    stream, now = console(still_every=60.0)
    for second in range(3):
        now[0] += 1
        decide("a", "none", f"last request {second}s ago")
        decide("b", "none", "power is off: the idle policy does nothing")
    decide("b", "wake", "1 request(s) answered 503 by the load balancer while asleep")
    decide("a", "none", "last request 4s ago")
    assert shown(stream) == [
        "a none last request 0s ago",
        "b none power is off: the idle policy does nothing",
        "b wake 1 request(s) answered 503 by the load balancer while asleep",
    ]


def test_json_logs_a_decision_when_it_changes_never_again_while_it_does_not(
    configure: Configure,
) -> None:
    now = [1_700_000_000.0]
    stream = configure(wall_clock=lambda: now[0], still_every=60.0)
    for second in range(3):
        now[0] += 600  # however long it lasts: the pass lines say the controller is alive
        decide("demo", "none", f"last request {second}s ago")
        decide("staging", "none", "power is off: the idle policy does nothing")
    decide("demo", "scale_to_zero", "no requests for 5m2s")
    decide("demo", "none", "asleep; wakes on request through the API (wake: manual)")
    lines = records(stream)
    assert [(line["environment"], line["reason"]) for line in lines] == [
        ("demo", "last request 0s ago"),
        ("staging", "power is off: the idle policy does nothing"),
        ("demo", "no requests for 5m2s"),
        ("demo", "asleep; wakes on request through the API (wake: manual)"),
    ]
    assert not [line for line in lines if any(key.startswith("_") for key in line)]


def test_json_logs_a_decision_again_when_a_policy_s_own_reason_or_the_power_changes(
    configure: Configure,
) -> None:
    stream = configure()
    decide("demo", "none", "a run", power_state="STARTING", idle_reason="awake for 1s")
    decide("demo", "none", "a run", power_state="STARTING", idle_reason="awake for 9s")
    decide("demo", "none", "a run", power_state="STARTING", idle_reason="last request 1s ago")
    decide("demo", "none", "a run", power_state="RUNNING", idle_reason="last request 1s ago")
    assert [(line["power_state"], line["idle_reason"]) for line in records(stream)] == [
        ("STARTING", "awake for 1s"),
        ("STARTING", "last request 1s ago"),
        ("RUNNING", "last request 1s ago"),
    ]


def test_the_pass_line_is_json_only(
    configure: Configure, console: Callable[..., tuple[io.StringIO, Clock]]
) -> None:
    stream = configure()
    structlog.get_logger("infra_controller").info("pass completed", environments=3)
    assert [line["event"] for line in records(stream)] == ["pass completed"]
    shown_on, _ = console()
    structlog.get_logger("infra_controller").info("pass completed", environments=3)
    assert shown(shown_on) == []


def test_a_console_line_is_short_and_leaves_out_the_pass_context(
    console: Callable[..., tuple[io.StringIO, Clock]],
) -> None:
    stream, _ = console()
    structlog.contextvars.bind_contextvars(
        reconcile_id="b879065ce543", revision="sha256:f33200387be7", environment="demo"
    )
    log = structlog.get_logger("infra_controller")
    log.info("terraform run finished", operation="apply", detail="line one\nline two")
    log.error("terraform diagnostic", summary="x" * 1000)
    text = stream.getvalue()
    assert "b879065ce543" not in text
    assert "sha256:f33200387be7" not in text
    finished, diagnostic = shown(stream)
    assert finished == 'demo terraform run finished operation=apply detail="line one line two"'
    assert diagnostic == f"demo error: terraform diagnostic summary={'x' * 157}..."


def test_json_timestamps_are_utc_to_the_millisecond(configure: Configure) -> None:
    stream = configure(wall_clock=lambda: 1_700_000_000.123456)
    structlog.get_logger("infra_controller").info("listening")
    logging.getLogger("aiohttp.server").warning("a library line")
    assert [line["timestamp"] for line in records(stream)] == ["2023-11-14T22:13:20.123Z"] * 2


def test_a_one_shot_command_logs_no_retry_it_will_not_make(configure: Configure) -> None:
    log = structlog.get_logger("infra_controller")
    daemon = configure()
    log.warning("environment failed", error="no AWS region", failures=1, retry_in="5s")
    one_shot = configure(one_shot=True)
    log.warning("environment failed", error="no AWS region", failures=1, retry_in="5s")
    assert records(daemon)[0]["retry_in"] == "5s"
    (line,) = records(one_shot)
    assert "retry_in" not in line
    assert (line["error"], line["failures"]) == ("no AWS region", 1)


async def test_quiet_events_are_dropped_in_their_context_and_its_tasks_only(
    configure: Configure,
) -> None:
    stream = configure()
    log = structlog.get_logger("infra_controller")

    async def in_a_task() -> None:
        log.error("desired state invalid", problem="from a task")

    with quiet_events("desired state invalid"):
        log.error("desired state invalid", problem="printed by the command instead")
        log.info("desired state loaded")
        await asyncio.create_task(in_a_task())
    log.error("desired state invalid", problem="a later revision")
    assert [(line["event"], line.get("problem")) for line in records(stream)] == [
        ("desired state loaded", None),
        ("desired state invalid", "a later revision"),
    ]


def test_a_change_to_aws_says_which_call_and_values_read_as_in_json(
    console: Callable[..., tuple[io.StringIO, Clock]],
) -> None:
    stream, _ = console()
    log = structlog.get_logger("infra_controller")
    log.info(
        "aws change",
        environment="demo",
        action="scale_to_zero",
        reason="no requests for 5m",
        operation="ecs:UpdateService",
        cluster="demo-cluster",
        service="demo-service",
        desired_count=0,
    )
    log.info("controller started", dry_run=False, source='say "hi" there')
    change, started = shown(stream)
    assert change == "demo -> calls ecs:UpdateService desired_count=0"
    assert started == 'controller started dry_run=false source="say \\"hi\\" there"'
