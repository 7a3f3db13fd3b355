"""The demo service itself: what its Fargate task would serve, on 127.0.0.1."""

from __future__ import annotations

from aiohttp import web

GREETING = "hello from the demo service"


async def hello(request: web.Request) -> web.Response:
    if "text/html" in request.headers.get("Accept", ""):
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>demo</title></head><body><h1>{GREETING}</h1>"
            "<p>It is awake. Leave it alone for <code>idle.after</code> and the controller "
            "scales it to zero; the next visit wakes it.</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html")
    return web.Response(text=f"{GREETING}\n")


async def start_demo_app(host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve until `runner.cleanup()`."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
