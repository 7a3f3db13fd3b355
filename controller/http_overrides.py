"""The overrides operators set at runtime (contract section 10): suspend and resume, power on
or off ahead of the schedule and git, and the earlier system's start/stop interface. Each is
written to the state store before the answer, so a restart keeps it."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, Literal, TypeVar

from aiohttp import web

from controller.core.clock import utc_iso
from controller.core.durations import parse_duration
from controller.core.state_store import StateStoreError
from controller.engine.api_overrides import UnknownEnvironment
from controller.engine.controller import Controller
from controller.http_common import CONTROLLER_KEY, authorized, environment_request, error
from controller.status_view import seed_status

OVERRIDE_MAX_BYTES = 4096
REASON_MAX_CHARS = 200
DEFAULT_SUSPEND_REASON = "suspended through the API"
# an override is written between passes: a pass that runs longer gets a 503 and Retry-After
OVERRIDE_WAIT_SECONDS = 20.0
T = TypeVar("T")
MIN_OVERRIDE, MAX_OVERRIDE = timedelta(minutes=1), timedelta(days=30)


async def _json_object(request: web.Request, shape: str) -> dict[str, Any] | web.Response:
    """The body as a JSON object (an empty body is `{}`); the refusal when malformed. `shape`
    shows what is expected, in the refusal."""
    if request.content_length is not None and request.content_length > OVERRIDE_MAX_BYTES:
        return error(413, f"body larger than {OVERRIDE_MAX_BYTES} bytes")
    try:
        body = await request.content.read(OVERRIDE_MAX_BYTES + 1)
    except web.RequestPayloadError:  # e.g. a chunked body cut short
        return error(400, "malformed body")
    if len(body) > OVERRIDE_MAX_BYTES:
        return error(413, f"body larger than {OVERRIDE_MAX_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # 4 KiB of brackets nest deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        return error(400, f"the body must be JSON: {shape}")
    return data


def _reason(data: dict[str, Any], default: str) -> str | web.Response:
    reason = data.get("reason", default)
    if not isinstance(reason, str):
        return error(400, "reason: a text")
    reason = " ".join(reason.split())  # one line in logs and status
    if not reason or len(reason) > REASON_MAX_CHARS:
        return error(400, f"reason: 1 to {REASON_MAX_CHARS} characters")
    return reason


def _unknown_keys(data: dict[str, Any], allowed: set[str], shape: str) -> web.Response | None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        return error(400, f"unknown field {unknown[0]!r}: the body must be JSON: {shape}")
    return None


async def _written(work: Awaitable[T]) -> T | web.Response:
    """What an override write returned, or the answer saying why nothing changed."""
    try:
        return await work
    except UnknownEnvironment:
        return error(404, "unknown environment (removed by a new revision)")
    except (StateStoreError, TimeoutError) as exc:
        return _not_written(exc)


def _not_written(exc: BaseException) -> web.Response:
    detail = "a pass is in progress" if isinstance(exc, TimeoutError) else str(exc)
    response = error(503, f"not recorded, nothing changed ({detail}); retry")
    response.headers["Retry-After"] = "5"
    return response


async def suspend(request: web.Request) -> web.Response:
    """Suspend until `resume`: persisted before the answer (so a restart keeps it)."""
    target = await environment_request(request)
    if isinstance(target, web.Response):
        return target
    controller, name = target
    shape = '{"reason": "..."}'
    data = await _json_object(request, shape)
    if isinstance(data, web.Response):
        return data
    if refused := _unknown_keys(data, {"reason"}, shape):
        return refused
    reason = _reason(data, DEFAULT_SUSPEND_REASON)
    if isinstance(reason, web.Response):
        return reason
    written = await _written(controller.overrides.suspend(name, reason, OVERRIDE_WAIT_SECONDS))
    if isinstance(written, web.Response):
        return written
    body = {"message": f"{name} suspended", "environment": name, "suspended": True}
    return web.json_response(body, status=202)


async def resume(request: web.Request) -> web.Response:
    """Clear a suspension set through the API; the desired state's `suspend: true` wins."""
    target = await environment_request(request)
    if isinstance(target, web.Response):
        return target
    controller, name = target
    env = controller.snapshot().environments.get(name)
    if env is not None and env.spec.suspend:
        return error(
            409,
            f"{name} is suspended by the desired state (suspend: true): change it in git; "
            "nothing changed",
        )
    cleared = await _written(controller.overrides.resume(name, OVERRIDE_WAIT_SECONDS))
    if isinstance(cleared, web.Response):
        return cleared
    message = f"{name} resumed" if cleared else f"{name} was not suspended"
    body = {"message": message, "environment": name, "suspended": False}
    return web.json_response(body, status=202)


async def set_power(request: web.Request) -> web.Response:
    """`{"power": "on"|"off", "for": "2h", "reason": "demo"}`: the power in force, ahead of the
    schedule and git, until it expires."""
    target = await environment_request(request)
    if isinstance(target, web.Response):
        return target
    controller, name = target
    shape = '{"power": "on"|"off", "for": "2h", "reason": "..."}'
    data = await _json_object(request, shape)
    if isinstance(data, web.Response):
        return data
    if refused := _unknown_keys(data, {"power", "for", "reason"}, shape):
        return refused
    power = data.get("power")
    if power not in ("on", "off"):
        return error(400, f"power: on or off; the body must be JSON: {shape}")
    duration = _duration(data.get("for"))
    if isinstance(duration, web.Response):
        return duration
    reason = _reason(data, f"power {power} through the API")
    if isinstance(reason, web.Response):
        return reason
    override = await _written(
        controller.overrides.override_power(name, power, duration, reason, OVERRIDE_WAIT_SECONDS)
    )
    if isinstance(override, web.Response):
        return override
    body = {
        "message": f"{name}: power {power} "
        + (f"until {utc_iso(override.expires_at)}" if override.expires_at else "until cleared"),
        "environment": name,
        "power": power,
        "expires_at": utc_iso(override.expires_at),
        "reason": reason,
    }
    return web.json_response(body, status=202)


def _duration(value: object) -> timedelta | web.Response | None:
    if value is None:
        return None
    try:
        duration = parse_duration(value) if isinstance(value, str) else None
    except ValueError:
        duration = None
    if duration is None or not MIN_OVERRIDE <= duration <= MAX_OVERRIDE:
        return error(400, "for: a duration from 1m to 30d, e.g. 2h or 1h30m")
    return duration


async def clear_power(request: web.Request) -> web.Response:
    target = await environment_request(request)
    if isinstance(target, web.Response):
        return target
    controller, name = target
    written = await _written(controller.overrides.clear_power_override(name, OVERRIDE_WAIT_SECONDS))
    if isinstance(written, web.Response):
        return written
    return web.Response(status=204)


def _default_environment(controller: Controller) -> str | web.Response:
    """The environment of the earlier system's /infra/* interface."""
    configured = controller.settings.default_environment
    names = list(controller.snapshot().environments)
    if configured is not None:
        if configured in names:
            return configured
        return error(
            404, f"CONTROLLER_DEFAULT_ENVIRONMENT names an unknown environment {configured!r}"
        )
    if len(names) == 1:
        return names[0]
    return error(404, "several environments: set CONTROLLER_DEFAULT_ENVIRONMENT to choose one")


async def infra_status(request: web.Request) -> web.Response:
    """The earlier system's `GET /infra/status`, in its shape."""
    controller = request.app[CONTROLLER_KEY]
    name = _default_environment(controller)
    if isinstance(name, web.Response):
        return name
    env = controller.snapshot().environments[name]
    seed = seed_status(env, controller.clock.now())
    return web.json_response({k: seed[k] for k in ("status", "endpoint", "lastUpdate")})


async def infra_start(request: web.Request) -> web.Response:
    return await _infra_power(request, "on")


async def infra_stop(request: web.Request) -> web.Response:
    return await _infra_power(request, "off")


async def _infra_power(request: web.Request, power: Literal["on", "off"]) -> web.Response:
    """The earlier system's start and stop buttons: a power override until the schedule's next
    change (or until cleared), answered in its shape."""
    if refused := authorized(request):
        return refused
    controller = request.app[CONTROLLER_KEY]
    name = _default_environment(controller)
    if isinstance(name, web.Response):
        return name
    if controller.stopping:
        return error(503, "shutting down; ask again once restarted")
    verb = "start" if power == "on" else "stop"
    written = await _written(
        controller.overrides.override_power(
            name, power, None, f"/infra/{verb} (the earlier interface)", OVERRIDE_WAIT_SECONDS
        )
    )
    if isinstance(written, web.Response):
        return written
    env = controller.snapshot().environments[name]
    operation: Literal["apply", "destroy"] = "apply" if power == "on" else "destroy"
    current = env.facts.power_state or env.record.power.state
    done, going = ("RUNNING", "STARTING") if power == "on" else ("STOPPED", "STOPPING")
    minutes = math.ceil(env.record.power.estimated_duration(operation).total_seconds() / 60)
    body = {
        "message": f"Infrastructure {'starting' if power == 'on' else 'stopping'}",
        "status": done if current == done else going,
        "estimatedTime": f"{minutes} minutes",
    }
    return web.json_response(body, status=202)


def add_override_routes(app: web.Application) -> None:
    app.router.add_get("/infra/status", infra_status)
    app.router.add_post("/infra/start", infra_start)
    app.router.add_post("/infra/stop", infra_stop)
    app.router.add_post("/environments/{name}/suspend", suspend)
    app.router.add_post("/environments/{name}/resume", resume)
    app.router.add_post("/environments/{name}/power", set_power)
    app.router.add_delete("/environments/{name}/power", clear_power)
