"""`infra-controller`: run, plan, validate, schema, sandbox, completion, and the commands that
talk to a running controller (status, wake, reconcile, suspend, resume: `controller.cli_remote`).
Contract section 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import shtab
import structlog
from pydantic import ValidationError

from controller import __version__, cli_events, cli_remote
from controller.activator_server import activator_running
from controller.core.desired_state import DesiredState
from controller.core.settings import Settings, setting_problems
from controller.core.state_store import StateStoreError
from controller.desired.file_source import parse_desired_state_bytes, read_desired_state_file
from controller.desired.loader import InvalidDesiredState, Problem
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
# the settings `run` and `plan` take as flags (each also reads its CONTROLLER_* variable)
SETTING_FLAGS = ("desired_state", "interval", "dry_run", "log_format", "http_addr", "state_store")
# A one-shot command (`plan`, `run --once`) has a person or a CI job waiting on it: an
# unreachable AWS endpoint should fail it in seconds, not after the daemon's patient retries.
ONE_SHOT_AWS_ATTEMPTS = 2
ONE_SHOT_CONNECT_TIMEOUT = 3.0
# what the CLI prints itself (FILE:LINE:COLUMN, or one line): not also as a log line
PRINTED_AT_START = ("desired state invalid",)
PRINTED_BY_ONE_SHOT = (*PRINTED_AT_START, "desired state source unavailable")


def _common(parser: argparse.ArgumentParser) -> None:
    desired_state = parser.add_argument(
        "--desired-state", help="file path or git URL (CONTROLLER_DESIRED_STATE)"
    )
    desired_state.complete = shtab.FILE  # type: ignore[attr-defined]
    parser.add_argument("--interval", help="reconcile interval, e.g. 60s (CONTROLLER_INTERVAL)")
    parser.add_argument(
        "--dry-run",
        action="store_const",
        const=True,
        default=None,
        help="decide and log, never change AWS (CONTROLLER_DRY_RUN)",
    )
    parser.add_argument("--log-format", choices=["json", "console"], help="(CONTROLLER_LOG_FORMAT)")
    parser.add_argument("--http-addr", help="HOST:PORT of the HTTP server (CONTROLLER_HTTP_ADDR)")
    parser.add_argument("--state-store", help="file://PATH (CONTROLLER_STATE_STORE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infra-controller",
        description="Keeps ECS Fargate environments at the state written in desired_state.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: reconcile loop and HTTP server")
    _common(run)
    run.add_argument(
        "--once", action="store_true", help="one pass over every environment, then exit"
    )
    run.add_argument("--output", choices=["text", "json"], default="text")

    plan = commands.add_parser("plan", help="print the actions a pass would take; change nothing")
    _common(plan)
    plan.add_argument("--output", choices=["text", "json"], default="text")

    validate = commands.add_parser("validate", help="check desired-state files offline")
    validate.add_argument(
        "files", nargs="*", metavar="FILE", help="default: CONTROLLER_DESIRED_STATE; - for stdin"
    ).complete = shtab.FILE  # type: ignore[attr-defined]

    commands.add_parser("schema", help="print the JSON Schema of the desired-state file")

    cli_remote.add_remote_commands(commands)
    cli_events.add_events_command(commands)

    completion = commands.add_parser(
        "completion", help="print a shell completion script (bash or zsh)"
    )
    completion.add_argument("shell", choices=["bash", "zsh"])

    sandbox = commands.add_parser(
        "sandbox", help="local AWS emulator + demo environment + simulated traffic + the controller"
    )
    sandbox.add_argument("--http-addr", help="HOST:PORT of the controller's HTTP server")
    sandbox.add_argument("--log-format", choices=["json", "console"])
    sandbox.add_argument(
        "--workdir", help="where the sandbox keeps its files (default: a temp dir)"
    ).complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    sandbox.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    sandbox.add_argument(
        "--alb-addr",
        help="HOST:PORT of the local load balancer stand-in to browse (default 127.0.0.1:8000; "
        "a free port instead, said at start, when it is taken)",
    )
    sandbox.add_argument(
        "--idle-after", help="the demo service's idle.after, e.g. 30s (default 30s)"
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {
        key: getattr(args, key) for key in SETTING_FLAGS if getattr(args, key, None) is not None
    }
    return Settings(**flags)


def print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _settings_or_exit(args: argparse.Namespace) -> Settings | int:
    try:
        return settings_from(args)
    except ValidationError as exc:
        flags = [key for key in SETTING_FLAGS if hasattr(args, key)]
        for line in setting_problems(exc, flags):
            print(f"infra-controller: {line}", file=sys.stderr)
        return EXIT_INVALID


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


def _one_shot(args: argparse.Namespace) -> bool:
    return args.command == "plan" or (args.command == "run" and bool(args.once))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    one_shot = _one_shot(args)
    stop = asyncio.Event()
    if not one_shot:  # from the very start: a SIGTERM during the first git fetch still exits 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        if one_shot:
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
        with quiet_events(*(PRINTED_BY_ONE_SHOT if one_shot else PRINTED_AT_START)):
            snapshot = await _unless_stopped(controller.refresh_desired_state(), stop)
        if snapshot is None:
            return EXIT_OK
        desired = snapshot.desired
        if desired.revision is None and desired.problems:
            print_problems(desired.problems)
            return EXIT_INVALID
        if desired.revision is None and one_shot:
            print(f"infra-controller: {desired.source_error}", file=sys.stderr)
            return EXIT_INVALID
        # the daemon keeps retrying an unreachable source (with backoff), not ready until then
        if one_shot:
            _log_observing(snapshot, settings)
        if args.command == "plan":
            report = await controller.reconcile_once(act=False, persist=False)
            return _print_plan(report, args.output)
        if args.once:
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


def _validate(args: argparse.Namespace) -> int:
    """Every file is checked; exit 2 if any is invalid."""
    settings = _settings_or_exit(args)
    if isinstance(settings, int):
        return settings
    limit = settings.max_desired_state_bytes
    status = EXIT_OK
    for path in args.files or [settings.desired_state]:
        try:
            if path == "-":  # read as bytes, at most one past the limit
                data = sys.stdin.buffer.read(limit + 1)
                loaded = parse_desired_state_bytes(data, "<stdin>", limit)
            else:
                loaded = read_desired_state_file(path, limit)
        except InvalidDesiredState as exc:
            print_problems(exc.problems)
            status = EXIT_INVALID
            continue
        count = len(loaded.state.environments)
        name = "<stdin>" if path == "-" else path
        print(f"{name}: valid ({count} environment{'s' if count != 1 else ''})")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(DesiredState.model_json_schema(), indent=2))
        return EXIT_OK
    if args.command == "validate":
        return _validate(args)
    if args.command == "completion":
        print(shtab.complete(build_parser(), shell=args.shell))
        return EXIT_OK
    remote = {
        "status": cli_remote.status,
        "wake": cli_remote.wake,
        "reconcile": cli_remote.reconcile,
        "suspend": cli_remote.suspend,
        "resume": cli_remote.resume,
        "power": cli_remote.power,
        "events": cli_events.events,
    }
    if args.command in remote:
        return asyncio.run(remote[args.command](args))
    if args.command == "sandbox":
        from controller.sandbox.app import run_sandbox

        return asyncio.run(run_sandbox(args))
    settings = _settings_or_exit(args)
    if isinstance(settings, int):
        return settings
    configure_logging(settings.effective_log_format, one_shot=_one_shot(args))
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
