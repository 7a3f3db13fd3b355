"""The commands that talk to a running controller over its HTTP API: status, wake, reconcile,
suspend and resume.

With `--output json` the answer is the only thing on stdout, as one JSON document; whatever goes
wrong is said on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

# the HTTP client, the settings and the git source are imported by the commands when they run:
# the command line's parser (and so `--help`) loads this module without them
EXIT_OK, EXIT_REFUSED = 0, 2
TIMEOUT_SECONDS = 10


def add_remote_commands(commands: Any) -> None:
    """`status`, `wake ENV`, `reconcile [ENV]`, `suspend ENV` and `resume ENV` on the CLI's
    subparsers."""
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
    suspend = commands.add_parser(
        "suspend",
        help="stop acting on an environment (it is still observed) until `resume`; kept "
        "across restarts",
    )
    suspend.add_argument("environment")
    suspend.add_argument("--reason", help="why, shown in status and logs")
    resume = commands.add_parser(
        "resume",
        help="undo `suspend` (an environment with `suspend: true` in the desired state stays "
        "suspended)",
    )
    resume.add_argument("environment")
    power = commands.add_parser(
        "power",
        help="power an environment on or off now, ahead of its schedule and git, until --for "
        "ends (or the schedule's next change); --clear goes back to the schedule and git",
    )
    power.add_argument("environment")
    power.add_argument("state", nargs="?", choices=["on", "off"])
    power.add_argument("--for", dest="duration", help="how long, e.g. 2h or 1h30m")
    power.add_argument("--reason", help="why, shown in status and logs")
    power.add_argument("--clear", action="store_true", help="remove the override")
    for sub in (status, wake, reconcile, suspend, resume, power):
        sub.add_argument("--url", help="controller base URL (default from CONTROLLER_HTTP_ADDR)")
        sub.add_argument("--output", choices=["text", "json"], default="text")
    for sub in (wake, reconcile, suspend, resume, power):
        sub.add_argument("--token", help="API token (CONTROLLER_API_TOKEN)")


def base_url(args: argparse.Namespace) -> str:
    from controller.core.settings import Settings

    url = str(args.url or Settings().http_addr)
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _token(args: argparse.Namespace) -> str | None:
    if args.token is not None:
        return str(args.token)
    from controller.core.settings import Settings

    configured = Settings().api_token
    return configured.get_secret_value() if configured is not None else None


async def get_json(url: str) -> dict[str, Any] | None:
    """The JSON object `url` answers; None (said on stderr) when unreachable or refused."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as response,
        ):
            if response.status >= 400:
                print(f"infra-controller: {url}: {response.status}", file=sys.stderr)
                return None
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(unreachable(url, exc), file=sys.stderr)
        return None
    return body if isinstance(body, dict) else None


async def status(args: argparse.Namespace) -> int:
    body = await get_json(base_url(args) + "/status")
    if body is None:
        return EXIT_REFUSED
    if args.output == "json":
        print(json.dumps(body, indent=2))
        return EXIT_OK
    print("\n".join(status_lines(body, time.time())))
    return EXIT_OK


# ---- the text of `status` ----

STATUS_COLUMNS = ("ENVIRONMENT", "POWER", "SERVICE", "LAST REQUEST", "LAST ACTION", "NEXT CHANGE")


def status_lines(body: dict[str, Any], now: float) -> list[str]:
    """What a person reads: the desired state (and what is wrong with it), then one row per
    environment, then what failed in each environment that failed. `now`: seconds since the
    epoch, for the "ago" of the last actions."""
    lines = _desired_state_lines(body)
    dry_run = bool(body.get("dry_run"))
    environments: dict[str, Any] = body.get("environments") or {}
    rows: list[tuple[str, ...]] = [STATUS_COLUMNS]
    rows += [_row(name, env, now, dry_run) for name, env in sorted(environments.items())]
    lines += _table(rows)
    for name, env in sorted(environments.items()):
        failure = _failure(env)
        if failure:
            lines.append(f"! {name}: {failure}")
    return lines


def _desired_state_lines(body: dict[str, Any]) -> list[str]:
    revision = body.get("revision")
    source = body.get("source")
    mode = " (dry run: nothing is changed)" if body.get("dry_run") else ""
    if body.get("desired_state_valid"):
        lines = [f"desired state {revision} from {source}{mode}"]
    elif revision:
        lines = [
            f"desired state INVALID ({body.get('attempted_revision')} from {source}): "
            f"keeping {revision}{mode}"
        ]
    else:
        lines = [f"no valid desired state from {source} yet{mode}"]
    lines += [f"  {problem}" for problem in body.get("desired_state_errors") or []]
    if body.get("source_error"):
        lines.append(f"  source unavailable: {body['source_error']}")
    store = body.get("state_store") or {}
    if store.get("problem"):
        lines.append(f"state store {store.get('location')}: {store['problem']}")
    return [*lines, ""]


def _row(name: str, env: dict[str, Any], now: float, dry_run: bool) -> tuple[str, ...]:
    power = str(env.get("power") or "unknown")
    if env.get("suspended"):
        power += " (suspended)"
    return (
        name,
        power,
        _service_cell(env.get("service")),
        _last_request(env.get("service")),
        _last_action(env.get("last_action"), now),
        _next_change(env, dry_run),
    )


def _service_cell(service: dict[str, Any] | None) -> str:
    if service is None:
        return "-"  # no service declared
    if service.get("observed") != "present":
        return str(service.get("observed") or "unknown")
    return f"{service.get('desired')}/{service.get('running')}"


def _last_request(service: dict[str, Any] | None) -> str:
    seconds = (service or {}).get("seconds_since_last_request")
    return "-" if seconds is None else f"{_span(seconds)} ago"


def _last_action(action: dict[str, Any] | None, now: float) -> str:
    if not action:
        return "-"
    at = _epoch(action.get("at"))
    when = f" {_span(max(0.0, now - at))} ago" if at is not None else ""
    return f"{action.get('action')}{when}"


def _next_change(env: dict[str, Any], dry_run: bool) -> str:
    """What the last pass says comes next: a Terraform run under way, an action a dry run did
    not take, a retry after failures; "-" when nothing is due."""
    run = env.get("current_run")
    if run:
        return f"{run.get('operation')} running, ~{_span(run.get('estimated_seconds_left'))} left"
    power = env.get("power_detail") or {}
    if power.get("retry_at"):
        return f"power retry at {_clock(power['retry_at'])}"
    for condition in env.get("conditions") or []:
        if condition.get("type") == "BackingOff":
            # "N failure(s); next attempt at ISO": the time, when the message still ends so
            next_attempt = str(condition.get("message") or "").rpartition(" at ")[2]
            at = _clock(next_attempt) if _epoch(next_attempt) is not None else None
            return f"retry at {at}" if at else "retry after failures"
    action = (env.get("last_decision") or {}).get("action")
    if dry_run and action not in (None, "none"):
        return f"{action} (dry run)"
    override = env.get("override") or {}
    if env.get("power_source") == "override" and override.get("expires_at"):
        return f"override ends at {_clock(override['expires_at'])}"
    if env.get("next_change"):
        after = "off" if env.get("power_in_force") == "on" else "on"
        return f"power {after} at {_clock(env['next_change'])}"
    return "-"


def _failure(env: dict[str, Any]) -> str | None:
    for condition in env.get("conditions") or []:
        if condition.get("type") == "Reconciled" and condition.get("reason") == "Failed":
            return str(condition.get("message"))
    return None


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _span(seconds: Any) -> str:
    """A duration the way a person says it: 40s, 12m, 3h, 2d."""
    try:
        value = max(0, round(float(seconds)))
    except (TypeError, ValueError):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value // size}{unit}"
    return f"{value}s"


def _epoch(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def _clock(iso: str) -> str:
    """`HH:MM:SS` local time, as the console logs show it."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return iso


# ---- the commands that ask for something ----


async def _post(
    url: str, token: str | None, body: dict[str, Any] | None = None, method: str = "POST"
) -> tuple[int, str] | None:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, headers=headers, json=body, timeout=timeout) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(unreachable(url, exc), file=sys.stderr)
        return None


def unreachable(url: str, exc: BaseException) -> str:
    """Never prints a password given in the URL."""
    from controller.desired.git_source import redact_userinfo

    return redact_userinfo(f"infra-controller: cannot reach {url}: {exc}")


def _answer(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"message": text}


def _refused(what: str, status: int, text: str) -> int:
    message = _answer(text).get("error", text)
    print(f"infra-controller: {what} refused ({status}): {message}", file=sys.stderr)
    return EXIT_REFUSED


async def _ask(
    args: argparse.Namespace,
    what: str,
    url: str,
    said: str | None,
    body: dict[str, Any] | None = None,
    method: str = "POST",
) -> int:
    """POST `url`; on 202 print `said`, else the server's message (with `--output json`, the
    server's answer with `accepted: true`)."""
    answer = await _post(url, _token(args), body, method)
    if answer is None:
        return EXIT_REFUSED
    status, text = answer
    if status not in (202, 204):
        return _refused(what, status, text)
    if args.output == "json":
        print(json.dumps({"accepted": True, **_answer(text)}))
    else:
        print(said or _answer(text).get("message", text))
    return EXIT_OK


def _environment_url(args: argparse.Namespace, verb: str) -> str:
    return f"{base_url(args)}/environments/{quote(args.environment, safe='')}/{verb}"


async def wake(args: argparse.Namespace) -> int:
    url = _environment_url(args, "wake")
    return await _ask(args, "wake", url, f"{args.environment}: wake accepted")


async def reconcile(args: argparse.Namespace) -> int:
    url = f"{base_url(args)}/reconcile"
    if args.environment:
        url += f"?environment={quote(args.environment, safe='')}"
    target = args.environment or "every environment"
    said = f"{target}: pass requested; failed Terraform runs are retried now"
    return await _ask(args, "reconcile", url, said)


async def suspend(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason is not None else None
    said = f"{args.environment}: suspended; observed, never acted on, until `resume`"
    return await _ask(args, "suspend", _environment_url(args, "suspend"), said, body)


async def resume(args: argparse.Namespace) -> int:
    # the server says which: resumed, or was not suspended
    return await _ask(args, "resume", _environment_url(args, "resume"), None)


async def power(args: argparse.Namespace) -> int:
    url = _environment_url(args, "power")
    if args.clear:
        if args.state or args.duration or args.reason:
            print(
                "infra-controller: power --clear takes no state, --for or --reason", file=sys.stderr
            )
            return EXIT_REFUSED
        said = f"{args.environment}: power override cleared; the schedule and git decide again"
        return await _ask(args, "power", url, said, method="DELETE")
    if args.state is None:
        print("infra-controller: power needs on, off or --clear", file=sys.stderr)
        return EXIT_REFUSED
    body: dict[str, Any] = {"power": args.state}
    if args.duration is not None:
        body["for"] = args.duration
    if args.reason is not None:
        body["reason"] = args.reason
    return await _ask(args, "power", url, None, body)
