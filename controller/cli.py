"""`infra-controller`: run, plan, validate, schema, status, wake, sandbox (contract section 2)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp
from pydantic import ValidationError

from controller import __version__
from controller.aws import AwsClients
from controller.clock import SystemClock
from controller.desired_state import DesiredState
from controller.desired_state_loader import InvalidDesiredState, Problem
from controller.http_api import start_http_server
from controller.logging_setup import configure_logging
from controller.loop import Controller, PassReport
from controller.metrics import ControllerMetrics
from controller.settings import Settings
from controller.sources import open_source, read_desired_state_file
from controller.state_store import StateStoreError, open_state_store

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--desired-state", help="file path or git URL (CONTROLLER_DESIRED_STATE)")
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

    validate = commands.add_parser("validate", help="check a desired-state file offline")
    validate.add_argument("file", nargs="?", help="default: CONTROLLER_DESIRED_STATE")

    commands.add_parser("schema", help="print the JSON Schema of the desired-state file")

    for name, help_text in (
        ("status", "print every environment's state from a running controller"),
        ("wake", "scale an environment's service up now, through a running controller"),
    ):
        sub = commands.add_parser(name, help=help_text)
        if name == "wake":
            sub.add_argument("environment")
            sub.add_argument("--token", help="API token (CONTROLLER_API_TOKEN)")
        sub.add_argument("--url", help="controller base URL (default from CONTROLLER_HTTP_ADDR)")
        sub.add_argument("--output", choices=["text", "json"], default="text")

    sandbox = commands.add_parser(
        "sandbox", help="local AWS emulator + demo environment + simulated traffic + the controller"
    )
    sandbox.add_argument("--http-addr", help="HOST:PORT of the controller's HTTP server")
    sandbox.add_argument("--log-format", choices=["json", "console"])
    sandbox.add_argument(
        "--workdir", help="where the sandbox keeps its files (default: a temp dir)"
    )
    sandbox.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {
        key: getattr(args, key)
        for key in (
            "desired_state",
            "interval",
            "dry_run",
            "log_format",
            "http_addr",
            "state_store",
        )
        if getattr(args, key, None) is not None
    }
    return Settings(**flags)


def print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _settings_or_exit(args: argparse.Namespace) -> Settings | int:
    try:
        return settings_from(args)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"])
            print(f"infra-controller: invalid setting {where}: {error['msg']}", file=sys.stderr)
        return EXIT_INVALID


async def _controller(settings: Settings) -> Controller:
    metrics = ControllerMetrics()
    aws = AwsClients(metrics, settings.aws_region)
    return Controller(
        settings=settings,
        source=open_source(settings.desired_state, settings),
        aws=aws,
        store=open_state_store(settings.state_store, aws),
        clock=SystemClock(),
        metrics=metrics,
    )


def _report_json(report: PassReport) -> str:
    environments: dict[str, dict[str, Any]] = {}
    for name, result in sorted(report.results.items()):
        action, reason = report.summary(name) if result != "skipped" else (None, None)
        power = report.power_decisions.get(name)
        environments[name] = {
            "result": result,
            "action": action,
            "reason": reason,
            "power": power.state if power else None,
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


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        controller = await _controller(settings)
    except (ValueError, StateStoreError) as exc:
        print(f"infra-controller: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        # a bad file at start is refused outright; later bad revisions keep the last good one
        await controller.load_desired_state()
        if controller.desired is None and controller.problems:
            print_problems(controller.problems)
            return EXIT_INVALID
        if controller.desired is None and (args.command == "plan" or args.once):
            print(f"infra-controller: {controller.source_error}", file=sys.stderr)
            return EXIT_INVALID
        # the daemon keeps retrying an unreachable source (with backoff), not ready until then
        if args.command == "plan":
            report = await controller.reconcile_once(act=False, persist=False)
            return _print_plan(report, args.output)
        if args.once:
            report = await controller.reconcile_once()
            if args.output == "json":
                print(_report_json(report))
            return EXIT_FAILED if report.failed else EXIT_OK
        return await _daemon(controller, settings)
    finally:
        await controller.aws.close()
        controller.source.close()


async def _daemon(controller: Controller, settings: Settings) -> int:
    try:
        runner = await start_http_server(controller, settings.http_host, settings.http_port)
    except OSError as exc:
        print(f"infra-controller: cannot listen on {settings.http_addr}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.run(stop)
    finally:
        await runner.cleanup()
    return EXIT_OK


def _print_plan(report: PassReport, output: str) -> int:
    if output == "json":
        print(_report_json(report))
    else:
        for name, result in sorted(report.results.items()):
            action, reason = report.summary(name)
            marker = "!" if result == "error" else ("~" if action != "none" else " ")
            print(f"{marker} {name}: {action} ({reason})")
    if report.failed:
        return EXIT_INVALID
    return EXIT_FAILED if report.pending else EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    path = args.file or Settings().desired_state
    try:
        loaded = read_desired_state_file(path)
    except InvalidDesiredState as exc:
        print_problems(exc.problems)
        return EXIT_INVALID
    count = len(loaded.state.environments)
    print(f"{path}: valid ({count} environment{'s' if count != 1 else ''})")
    return EXIT_OK


def _base_url(args: argparse.Namespace) -> str:
    return (args.url or f"http://{Settings().http_addr}").rstrip("/")


async def _status(args: argparse.Namespace) -> int:
    url = _base_url(args) + "/status"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
        ):
            body: dict[str, Any] = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(f"infra-controller: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.output == "json":
        print(json.dumps(body, indent=2))
        return EXIT_OK
    print(
        f"revision {body.get('revision')}  desired state valid: {body.get('desired_state_valid')}"
    )
    for name, env in sorted(body.get("environments", {}).items()):
        service = env.get("service") or {}
        decision = env.get("last_decision") or {}
        counts = (
            f"desired {service.get('desired')} running {service.get('running')}"
            if service
            else "no service"
        )
        print(f"{name:20} {env.get('power')!s:9} {counts:24} {decision.get('reason', '')}")
    return EXIT_OK


async def _wake(args: argparse.Namespace) -> int:
    url = f"{_base_url(args)}/environments/{args.environment}/wake"
    token = args.token
    if token is None and (configured := Settings().api_token) is not None:
        token = configured.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"infra-controller: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if status == 202:
        print(f"{args.environment}: wake accepted")
        return EXIT_OK
    try:
        message = json.loads(text).get("error", text)
    except ValueError:
        message = text
    print(f"infra-controller: wake refused ({status}): {message}", file=sys.stderr)
    return EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(DesiredState.model_json_schema(), indent=2))
        return EXIT_OK
    if args.command == "validate":
        return _validate(args)
    if args.command == "status":
        return asyncio.run(_status(args))
    if args.command == "wake":
        return asyncio.run(_wake(args))
    if args.command == "sandbox":
        from controller.sandbox import run_sandbox

        return asyncio.run(run_sandbox(args))
    settings = _settings_or_exit(args)
    if isinstance(settings, int):
        return settings
    configure_logging(settings.effective_log_format)
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
