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
