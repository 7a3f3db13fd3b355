"""`infra-controller run` and `plan`: the commands that build a controller and run passes.

Imported only by those commands: `--help`, `validate`, `schema` and the commands that talk to a
running controller never load the AWS SDK, the HTTP server or the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from controller.activator_server import activator_running
from controller.core.settings import Settings
from controller.core.state_store import StateStoreError
from controller.engine.controller import Controller
from controller.engine.passes import EnvironmentOutcome, PassReport
from controller.engine.snapshot import Snapshot
from controller.http_api import start_http_server
from controller.http_guard import raise_open_file_limit
from controller.logging_setup import configure_logging, quiet_events
from controller.wiring import build_controller

log = structlog.get_logger("infra_controller.cli")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
T = TypeVar("T")
# A one-shot command (`plan`, `run --once`) has a person or a CI job waiting on it: an
# unreachable AWS endpoint should fail it in seconds, not after the daemon's patient retries.
ONE_SHOT_AWS_ATTEMPTS = 2
ONE_SHOT_CONNECT_TIMEOUT = 3.0
# what the CLI prints itself (FILE:LINE:COLUMN, or one line): not also as a log line
PRINTED_AT_START = ("desired state invalid",)
PRINTED_BY_ONE_SHOT = (*PRINTED_AT_START, "desired state source unavailable")
GC_THRESHOLDS = (50_000, 20, 10)  # the default is (700, 10, 10)
M_ARENA_MAX = -8  # glibc's mallopt parameter


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """`run` (the daemon, or `--once`) and `plan`."""
    configure_logging(settings.effective_log_format, one_shot=one_shot(args))
    tune_garbage_collector()
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return EXIT_OK


def tune_garbage_collector() -> None:
    """Collect cycles less often: a pass over a thousand environments allocates a few hundred
    thousand objects, nearly all freed by their reference counts, and with the default
    thresholds the collector took a third of a pass's CPU. And one C heap for every thread
    (glibc gives each thread that allocates its own, which keeps what it freed): the worker
    threads parse the desired state and write the state file now and then."""
    gc.set_threshold(*GC_THRESHOLDS)
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)


async def freeze_after_first_pass(controller: Controller) -> None:
    """What the first pass built lives as long as the process (the modules, the AWS SDK's
    models and clients, the desired state): frozen, the collector no longer scans it; and
    what the first pass freed goes back to the system."""
    while controller.snapshot().passes_completed < 1:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(1)
    settle_after_first_pass()


def settle_after_first_pass() -> None:
    gc.freeze()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    """The GNU C library, when the process runs on it (not musl, not macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def _with_cause(outcome: EnvironmentOutcome) -> tuple[str, str]:
    """The environment's (action, reason), the reason completed with what failed when the
    summary alone does not say it ("not reconciled" says nothing of why)."""
    action, reason = outcome.summary()
    if outcome.error and outcome.error not in reason:
        reason = f"{reason}: {outcome.error}"
    return action, reason


def _report_json(report: PassReport) -> str:
    environments: dict[str, dict[str, Any]] = {}
    for name, outcome in sorted(report.environments.items()):
        skipped = outcome.result == "skipped"
        action, reason = outcome.summary() if not skipped else (None, None)
        environments[name] = {
            "result": outcome.result,
            "action": action,
            "reason": reason,
            "error": outcome.error,
            "power": outcome.facts.power_state,
        }
    return json.dumps(
        {
            "reconcile_id": report.reconcile_id,
            "revision": report.revision,
            "desired_state_valid": report.desired_state_valid,
            "environments": environments,
        },
        indent=2,
    )


def one_shot(args: argparse.Namespace) -> bool:
    return args.command == "plan" or (args.command == "run" and bool(args.once))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    once = one_shot(args)
    stop = asyncio.Event()
    if not once:  # from the very start: a SIGTERM during the first git fetch still exits 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        if once:
            controller = build_controller(
                settings,
                aws_max_attempts=ONE_SHOT_AWS_ATTEMPTS,
                aws_connect_timeout=ONE_SHOT_CONNECT_TIMEOUT,
            )
        else:
            controller = build_controller(settings)
    except (ValueError, StateStoreError) as exc:
        print(f"infra-controller: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        # a bad file at start is refused outright; later bad revisions keep the last good one
        # (and are logged: only this first read is printed instead)
        with quiet_events(*(PRINTED_BY_ONE_SHOT if once else PRINTED_AT_START)):
            snapshot = await _unless_stopped(controller.refresh_desired_state(), stop)
        if snapshot is None:
            return EXIT_OK
        desired = snapshot.desired
        if desired.revision is None and desired.problems:
            for problem in desired.problems:
                print(problem, file=sys.stderr)
            return EXIT_INVALID
        if desired.revision is None and once:
            print(f"infra-controller: {desired.source_error}", file=sys.stderr)
            return EXIT_INVALID
        # the daemon keeps retrying an unreachable source (with backoff), not ready until then
        if once:
            _log_observing(snapshot, settings)
        if args.command == "plan":
            report = await controller.reconcile_once(act=False, persist=False)
            return _print_plan(report, args.output)
        if args.once:
            if (refusal := await controller.lead_for_one_pass()) is not None:
                print(f"infra-controller: {refusal}", file=sys.stderr)
                return EXIT_FAILED
            report = await controller.reconcile_once()
            if args.output == "json":
                print(_report_json(report))
            return EXIT_FAILED if report.failed else EXIT_OK
        return await _daemon(controller, settings, stop)
    finally:
        await controller.close()


def _log_observing(snapshot: Snapshot, settings: Settings) -> None:
    """Where the pass is about to look, said before it looks: an endpoint that does not answer
    is then named before the command fails, rather than after a silent wait."""
    if not snapshot.environments:
        return
    default = settings.aws_region or _configured_region()
    regions = sorted(
        {env.spec.region or default or "none set" for env in snapshot.environments.values()}
    )
    log.info(
        "observing AWS",
        regions=regions,
        endpoint=os.environ.get("AWS_ENDPOINT_URL") or "AWS public endpoints",
    )


def _configured_region() -> str | None:
    """The region of the AWS config file (~/.aws/config, AWS_PROFILE), as the SDK reads it."""
    from aiobotocore.session import get_session

    region = get_session().get_config_variable("region")
    return str(region) if region else None


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when `stop` comes first (then `work` is cancelled)."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()


async def _daemon(controller: Controller, settings: Settings, stop: asyncio.Event) -> int:
    raise_open_file_limit()  # room for many HTTP clients besides AWS calls and git
    try:
        runner = await start_http_server(controller, settings.http_host, settings.http_port)
    except OSError as exc:
        print(f"infra-controller: cannot listen on {settings.http_addr}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    freezing = asyncio.create_task(freeze_after_first_pass(controller))
    try:
        # ECS sets the metadata endpoint: there the activator registers in its target group
        metadata = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
        async with activator_running(controller, metadata):
            await controller.run(stop)
    except OSError as exc:  # the activator's port
        print(
            f"infra-controller: cannot listen on {settings.activator_addr}: {exc}", file=sys.stderr
        )
        return EXIT_INVALID
    finally:
        freezing.cancel()
        await runner.cleanup()
    return EXIT_OK


def _print_plan(report: PassReport, output: str) -> int:
    if output == "json":
        print(_report_json(report))
    else:
        for name, outcome in sorted(report.environments.items()):
            action, reason = _with_cause(outcome)
            marker = "!" if outcome.result == "error" else ("~" if action != "none" else " ")
            print(f"{marker} {name}: {action} ({reason})")
    if report.failed:
        return EXIT_INVALID
    return EXIT_FAILED if report.pending else EXIT_OK
