"""The commands that talk to a running controller over its HTTP API: status, wake, reconcile."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

import aiohttp

from controller.core.settings import Settings
from controller.desired.git_source import redact_userinfo

EXIT_OK, EXIT_REFUSED = 0, 2
TIMEOUT = aiohttp.ClientTimeout(total=10)


def add_remote_commands(commands: Any) -> None:
    """`status`, `wake ENV` and `reconcile [ENV]` on the CLI's subparsers."""
    status = commands.add_parser(
        "status", help="print every environment's state from a running controller"
    )
    wake = commands.add_parser(
        "wake", help="scale an environment's service up now, through a running controller"
    )
    wake.add_argument("environment")
    reconcile = commands.add_parser(
        "reconcile",
        help="run a pass now through a running controller; failed Terraform runs of ENV "
        "(or of every environment) are retried at once",
    )
    reconcile.add_argument("environment", nargs="?")
    for sub in (status, wake, reconcile):
        sub.add_argument("--url", help="controller base URL (default from CONTROLLER_HTTP_ADDR)")
        sub.add_argument("--output", choices=["text", "json"], default="text")
    for sub in (wake, reconcile):
        sub.add_argument("--token", help="API token (CONTROLLER_API_TOKEN)")


def _base_url(args: argparse.Namespace) -> str:
    url = str(args.url or Settings().http_addr)
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _token(args: argparse.Namespace) -> str | None:
    if args.token is not None:
        return str(args.token)
    configured = Settings().api_token
    return configured.get_secret_value() if configured is not None else None


async def status(args: argparse.Namespace) -> int:
    url = _base_url(args) + "/status"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=TIMEOUT) as response,
        ):
            body: dict[str, Any] = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(_unreachable(url, exc), file=sys.stderr)
        return EXIT_REFUSED
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


async def _post(url: str, token: str | None) -> tuple[int, str] | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, headers=headers, timeout=TIMEOUT) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(_unreachable(url, exc), file=sys.stderr)
        return None


def _unreachable(url: str, exc: BaseException) -> str:
    """Never prints a password given in the URL."""
    return redact_userinfo(f"infra-controller: cannot reach {url}: {exc}")


def _refused(what: str, status: int, text: str) -> int:
    try:
        message = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        message = text
    print(f"infra-controller: {what} refused ({status}): {message}", file=sys.stderr)
    return EXIT_REFUSED


async def wake(args: argparse.Namespace) -> int:
    url = f"{_base_url(args)}/environments/{quote(args.environment, safe='')}/wake"
    answer = await _post(url, _token(args))
    if answer is None:
        return EXIT_REFUSED
    if answer[0] != 202:
        return _refused("wake", *answer)
    print(f"{args.environment}: wake accepted")
    return EXIT_OK


async def reconcile(args: argparse.Namespace) -> int:
    url = f"{_base_url(args)}/reconcile"
    if args.environment:
        url += f"?environment={quote(args.environment, safe='')}"
    answer = await _post(url, _token(args))
    if answer is None:
        return EXIT_REFUSED
    if answer[0] != 202:
        return _refused("reconcile", *answer)
    target = args.environment or "every environment"
    print(f"{target}: pass requested; failed Terraform runs are retried now")
    return EXIT_OK
