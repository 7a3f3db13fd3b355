"""The HTTP server (contract section 6): metrics, health, status, and the mutating API.

Mutating endpoints answer 403 when no token is configured and 401 without the right bearer
token (compared in constant time); the webhook the same with its HMAC signature.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.core.clock import utc_iso
from controller.engine.controller import Controller
from controller.engine.passes import PassRequest
from controller.status_view import controller_status, seed_status

log = structlog.get_logger("infra_controller.http")

WEBHOOK_MAX_BYTES = 1024 * 1024
CONTROLLER_KEY = web.AppKey("controller", Controller)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the API token; the refusal otherwise."""
    token = request.app[CONTROLLER_KEY].settings.api_token
    if token is None:
        return _error(403, "the API is disabled: set CONTROLLER_API_TOKEN to enable it")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        return _error(401, "missing or invalid bearer token")
    return None


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CONTROLLER_KEY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    if controller.healthy():
        return web.json_response({"status": "ok"})
    last = controller.snapshot().last_pass_completed_at
    return web.json_response(
        {"status": "stale", "last_pass_completed_at": utc_iso(last)}, status=503
    )


async def readyz(request: web.Request) -> web.Response:
    if request.app[CONTROLLER_KEY].ready():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "no valid desired state loaded"}, status=503)


async def status(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    return web.json_response(controller_status(controller.snapshot(), controller.clock.now()))


async def environment_status(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    name = request.match_info["name"]
    env = controller.snapshot().environments.get(name)
    if env is None:
        return _error(404, f"unknown environment {name!r}")
    return web.json_response(seed_status(env, controller.clock.now()))


async def wake(request: web.Request) -> web.Response:
    if refused := _authorized(request):
        return refused
    controller = request.app[CONTROLLER_KEY]
    name = request.match_info["name"]
    if not controller.knows(name):
        return _error(404, f"unknown environment {name!r}")
    reason = controller.request_wake(name)
    if reason is not None:
        return _error(409, reason)
    return web.json_response({"message": f"waking {name}", "environment": name}, status=202)


async def reconcile(request: web.Request) -> web.Response:
    """A pass now; failed Terraform runs of the environment (or of all) retried at once."""
    if refused := _authorized(request):
        return refused
    controller = request.app[CONTROLLER_KEY]
    name = request.query.get("environment") or None
    if controller.request_retry(name) is not None:
        return _error(404, f"unknown environment {name!r}")
    body: dict[str, Any] = {"message": "reconcile requested", "environment": name}
    return web.json_response(body, status=202)


async def git_hook(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    secret = controller.settings.webhook_secret
    if secret is None:
        return _error(403, "the webhook is disabled: set CONTROLLER_WEBHOOK_SECRET to enable it")
    if request.content_length is not None and request.content_length > WEBHOOK_MAX_BYTES:
        return _error(413, f"body larger than {WEBHOOK_MAX_BYTES} bytes")
    body = await request.content.read(WEBHOOK_MAX_BYTES + 1)
    if len(body) > WEBHOOK_MAX_BYTES:
        return _error(413, f"body larger than {WEBHOOK_MAX_BYTES} bytes")
    expected = (
        "sha256=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    )
    given = request.headers.get("X-Hub-Signature-256", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return _error(401, "missing or invalid X-Hub-Signature-256")
    log.info("git webhook received", delivery=request.headers.get("X-GitHub-Delivery"))
    controller.request_pass(PassRequest(fetch_now=True))
    return web.json_response({"message": "fetch and reconcile requested"}, status=202)


def build_app(controller: Controller) -> web.Application:
    app = web.Application(client_max_size=WEBHOOK_MAX_BYTES + 1)
    app[CONTROLLER_KEY] = controller
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/environments/{name}/status", environment_status)
    app.router.add_post("/environments/{name}/wake", wake)
    app.router.add_post("/reconcile", reconcile)
    app.router.add_post("/hooks/git", git_hook)
    return app


async def start_http_server(controller: Controller, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(build_app(controller), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("http server listening", address=f"{host}:{port}")
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (the configuration may ask for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP server is not listening")
