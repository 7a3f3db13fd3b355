"""`infra-controller events [ENV]`: what happened, from a running controller's `/events`
(contract section 11), oldest first like a log; `--follow` keeps printing new ones."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from controller.cli_remote import EXIT_OK, EXIT_REFUSED, base_url, get_json

FOLLOW_EVERY_SECONDS = 2.0


def add_events_command(commands: Any) -> None:
    events = commands.add_parser(
        "events", help="recent events (power changes, runs, scale to zero, wakes, overrides)"
    )
    events.add_argument("environment", nargs="?")
    events.add_argument("--kind", action="append", default=[], help="only this kind (repeatable)")
    events.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--url", help="controller base URL (default from CONTROLLER_HTTP_ADDR)")
    events.add_argument("--output", choices=["text", "json"], default="text")


def _url(args: argparse.Namespace, since: str | None) -> str:
    query: list[tuple[str, str]] = [("limit", str(args.limit))]
    if args.environment:
        query.append(("environment", args.environment))
    query += [("kind", kind) for kind in args.kind]
    if since:
        query.append(("since", since))
    return f"{base_url(args)}/events?{urlencode(query)}"


def event_line(event: dict[str, Any]) -> str:
    """`2026-11-25 14:02:11  staging  power_state_changed  STARTING -> RUNNING  reason`"""
    try:
        when = datetime.fromisoformat(str(event.get("time")).replace("Z", "+00:00"))
        shown = when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        shown = str(event.get("time"))
    change = ""
    if event.get("from") or event.get("to"):
        change = f"{event.get('from') or '?'} -> {event.get('to') or '?'}"
    cells = [shown, str(event.get("environment") or "-"), str(event.get("kind")), change]
    return "  ".join([*(c for c in cells if c), str(event.get("reason", ""))])


async def events(args: argparse.Namespace) -> int:
    import asyncio  # here, not above: `--help` loads this module without the event loop

    if not 1 <= args.limit <= 1000:
        print("infra-controller: --limit: 1 to 1000", file=sys.stderr)
        return EXIT_REFUSED
    body = await get_json(_url(args, None))
    if body is None:
        return EXIT_REFUSED
    found: list[dict[str, Any]] = list(reversed(body.get("events") or []))  # oldest first
    if args.output == "json" and not args.follow:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    _print(found, args.output)
    since = found[-1]["time"] if found else None
    while args.follow:
        await asyncio.sleep(FOLLOW_EVERY_SECONDS)
        body = await get_json(_url(args, since))
        if body is None:
            return EXIT_REFUSED
        fresh = list(reversed(body.get("events") or []))
        _print(fresh, args.output)
        since = fresh[-1]["time"] if fresh else since
    return EXIT_OK


def _print(found: list[dict[str, Any]], output: str) -> None:
    for event in found:
        print(json.dumps(event) if output == "json" else event_line(event), flush=True)
