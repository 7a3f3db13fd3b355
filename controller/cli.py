"""`infra-controller`: run, plan, validate, schema, sandbox, completion, and the commands that
talk to a running controller (status, wake, reconcile, suspend, resume: `controller.cli_remote`).
Contract section 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from controller import __version__

if TYPE_CHECKING:
    from controller.core.settings import Settings
    from controller.desired.loader import Problem

# `--help` loads this module alone: every command imports what it needs when it runs (the AWS
# SDK, the HTTP server and the engine only for `run` and `plan`), so that `--help`, `validate`
# and the commands that call a running controller start in a fraction of the time

EXIT_OK, EXIT_INVALID = 0, 2
# the settings `run` and `plan` take as flags (each also reads its CONTROLLER_* variable)
SETTING_FLAGS = ("desired_state", "interval", "dry_run", "log_format", "http_addr", "state_store")
# shtab's completion actions, as `shtab.FILE` and `shtab.DIRECTORY` spell them (importing shtab
# takes longer than the rest of `--help`: it is imported by `completion` only)
COMPLETE_FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
COMPLETE_DIRECTORY = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}


def _common(parser: argparse.ArgumentParser) -> None:
    desired_state = parser.add_argument(
        "--desired-state", help="file path or git URL (CONTROLLER_DESIRED_STATE)"
    )
    desired_state.complete = COMPLETE_FILE  # type: ignore[attr-defined]
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
    ).complete = COMPLETE_FILE  # type: ignore[attr-defined]

    commands.add_parser("schema", help="print the JSON Schema of the desired-state file")

    from controller.cli_events import add_events_command  # neither imports aiohttp at once
    from controller.cli_remote import add_remote_commands

    add_remote_commands(commands)
    add_events_command(commands)

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
    ).complete = COMPLETE_DIRECTORY  # type: ignore[attr-defined]
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
    from controller.core.settings import Settings

    flags = {
        key: getattr(args, key) for key in SETTING_FLAGS if getattr(args, key, None) is not None
    }
    return Settings(**flags)


def print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def _settings_or_exit(args: argparse.Namespace) -> Settings | int:
    from pydantic import ValidationError

    from controller.core.settings import setting_problems

    try:
        return settings_from(args)
    except ValidationError as exc:
        flags = [key for key in SETTING_FLAGS if hasattr(args, key)]
        for line in setting_problems(exc, flags):
            print(f"infra-controller: {line}", file=sys.stderr)
        return EXIT_INVALID


def _validate(args: argparse.Namespace) -> int:
    """Every file is checked; exit 2 if any is invalid."""
    from controller.desired.file_source import parse_desired_state_bytes, read_desired_state_file
    from controller.desired.loader import InvalidDesiredState

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
        import json

        from controller.core.desired_state import DesiredState

        print(json.dumps(DesiredState.model_json_schema(), indent=2))
        return EXIT_OK
    if args.command == "validate":
        return _validate(args)
    if args.command == "completion":
        import shtab

        print(shtab.complete(build_parser(), shell=args.shell))
        return EXIT_OK
    if args.command in REMOTE_COMMANDS:
        return _remote(args)
    if args.command == "sandbox":
        import asyncio

        from controller.sandbox.app import run_sandbox

        return asyncio.run(run_sandbox(args))
    settings = _settings_or_exit(args)
    if isinstance(settings, int):
        return settings
    from controller.cli_run import run_command

    return run_command(args, settings)


REMOTE_COMMANDS = ("status", "wake", "reconcile", "suspend", "resume", "power", "events")


def _remote(args: argparse.Namespace) -> int:
    """The commands that call a running controller over HTTP."""
    import asyncio

    from controller import cli_events, cli_remote

    commands = {
        "status": cli_remote.status,
        "wake": cli_remote.wake,
        "reconcile": cli_remote.reconcile,
        "suspend": cli_remote.suspend,
        "resume": cli_remote.resume,
        "power": cli_remote.power,
        "events": cli_events.events,
    }
    return asyncio.run(commands[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
