"""What every HTTP handler shares: the controller in the app, error answers, the token check."""

from __future__ import annotations

import hmac

from aiohttp import web

from controller.engine.controller import Controller

CONTROLLER_KEY = web.AppKey("controller", Controller)


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def header_bytes(request: web.Request, name: str) -> bytes | None:
    """The header as sent, or None when it cannot be one of ours: aiohttp decodes header bytes
    as UTF-8 with surrogate escapes, and an undecodable byte is no valid token or signature."""
    try:
        return request.headers.get(name, "").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the API token; the refusal otherwise."""
    token = request.app[CONTROLLER_KEY].settings.api_token
    if token is None:
        return error(403, "the API is disabled: set CONTROLLER_API_TOKEN to enable it")
    scheme, _, given = (header_bytes(request, "Authorization") or b"").partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(
        given.strip(), token.get_secret_value().encode()
    ):
        return error(401, "missing or invalid bearer token")
    return None


async def environment_request(request: web.Request) -> tuple[Controller, str] | web.Response:
    """The controller and the environment a mutating request names; the refusal otherwise
    (no token, unknown environment, shutting down)."""
    if refused := authorized(request):
        return refused
    controller = request.app[CONTROLLER_KEY]
    name = request.match_info["name"]
    if not controller.knows(name):
        return error(404, f"unknown environment {name!r}")
    if controller.stopping:
        return error(503, "shutting down: no pass follows; ask again once restarted")
    return controller, name
