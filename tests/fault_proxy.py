"""A fault-injecting HTTP proxy between the controller and the local AWS emulator.

Point `AWS_ENDPOINT_URL` at it: it forwards every request to the emulator, except those a
fault rule picks, which get, per operation and at a chosen rate: a throttling error, a 500, a
hang, a connection reset, a truncated or garbage body, an HTML page with status 200, or a
delay. It recognises the operation of each AWS protocol the controller uses (JSON with
`X-Amz-Target`, query with `Action=`, RPC v2 CBOR with `/operation/NAME`) and the region from
the request's signature. Used by the fault tests and the soak benchmark; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from tests import cbor_lite

FaultKind = Literal[
    "throttle", "error500", "hang", "reset", "truncate", "garbage", "html200", "delay", "rewrite"
]
# rewrite: the emulator's answer, decoded, changed by the fault's `rewrite`, encoded again
Rewrite = Callable[[dict[str, Any]], dict[str, Any]]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "throttle",
    "error500",
    "hang",
    "reset",
    "truncate",
    "garbage",
    "html200",
    "delay",
)
_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")
_HOP_BY_HOP = {
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "keep-alive",
}
HANG_SECONDS = 60.0  # a hang ends with the client's own timeout long before this


@dataclass
class Fault:
    kind: FaultKind
    operation: str | None = None  # e.g. DescribeServices; None: any operation
    rate: float = 1.0  # chance that a matching request gets the fault
    match: str | None = None  # a text the request body must contain (a cluster name, ...)
    region: str | None = None
    times: int | None = None  # inject at most this many times
    delay: float = 1.0  # for `delay`
    rewrite: Rewrite | None = None  # for `rewrite` (JSON and CBOR answers)

    def applies(self, operation: str, region: str | None, body: bytes) -> bool:
        return (
            (self.operation is None or self.operation == operation)
            and (self.region is None or self.region == region)
            and (self.match is None or self.match.encode() in body)
            and (self.times is None or self.times > 0)
        )


def operation_of(request: web.Request, body: bytes) -> str:
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if "/operation/" in request.path:
        return request.path.rsplit("/", 1)[-1]
    action = parse_qs(body.decode(errors="replace")).get("Action")
    return action[0] if action else "unknown"


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 256
    return (bytes([0x60 + len(data)]) if len(data) < 24 else bytes([0x78, len(data)])) + data


def _cbor_map(entries: dict[str, str]) -> bytes:
    """A CBOR map of short texts: enough for an RPC v2 CBOR error body."""
    out = bytes([0xA0 + len(entries)])
    for key, value in entries.items():
        out += _cbor_text(key) + _cbor_text(value)
    return out


def throttling_answer(request: web.Request) -> web.Response:
    """What AWS answers a throttled call, in the request's protocol."""
    message = "Rate exceeded"
    if request.headers.get("X-Amz-Target"):
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return web.Response(status=400, body=body, content_type="application/x-amz-json-1.1")
    if "/operation/" in request.path:
        body = _cbor_map({"__type": "ThrottlingException", "message": message})
        return web.Response(
            status=400,
            body=body,
            headers={"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"},
        )
    xml = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
        f"<Message>{message}</Message></Error><RequestId>f</RequestId></ErrorResponse>"
    )
    return web.Response(status=400, text=xml, content_type="text/xml")


class FaultProxy:
    def __init__(self, upstream: str, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.rng = random.Random(seed)
        self.injected: Counter[tuple[FaultKind, str]] = Counter()
        self.requests: Counter[str] = Counter()
        self.eligible = 0  # requests some rule could have faulted
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._arrived: dict[str, asyncio.Event] = {}
        self._stopping = asyncio.Event()  # releases hung requests

    def set(self, *faults: Fault) -> None:
        self.faults = list(faults)

    def clear(self) -> None:
        self.faults = []

    def arrived(self, operation: str) -> asyncio.Event:
        """Set when a request for `operation` next reaches the proxy."""
        event = asyncio.Event()
        self._arrived[operation] = event
        return event

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _pick(self, operation: str, region: str | None, body: bytes) -> Fault | None:
        if any(fault.applies(operation, region, body) for fault in self.faults):
            self.eligible += 1
        for fault in self.faults:
            if fault.applies(operation, region, body) and self.rng.random() < fault.rate:
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = operation_of(request, body)
        found = _REGION.search(request.headers.get("Authorization", ""))
        self.requests[operation] += 1
        if (event := self._arrived.pop(operation, None)) is not None:
            event.set()
        fault = self._pick(operation, found.group(1) if found else None, body)
        if fault is None:
            return await self._forward(request, body)
        self.injected[(fault.kind, operation)] += 1
        return await self._inject(fault, request, body)

    async def _inject(self, fault: Fault, request: web.Request, body: bytes) -> web.StreamResponse:
        if fault.kind == "throttle":
            return throttling_answer(request)
        if fault.kind == "error500":
            return web.Response(status=500, body=b"")
        if fault.kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HANG_SECONDS)
            return web.Response(status=504)
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if fault.kind == "garbage":
            noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 512)))
            return web.Response(status=200, body=noise)
        if fault.kind == "html200":
            page = "<html><body><h1>Proxy login required</h1></body></html>"
            return web.Response(status=200, text=page, content_type="text/html")
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay)
            return await self._forward(request, body)
        answer = await self._forward(request, body)
        whole = answer.body if isinstance(answer.body, bytes) else b""
        if fault.kind == "rewrite":
            assert fault.rewrite is not None
            return _rewritten(answer, whole, fault.rewrite)
        return web.Response(status=answer.status, body=whole[: len(whole) // 2])  # truncate

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=payload, headers=kept)


def _rewritten(answer: web.Response, body: bytes, rewrite: Rewrite) -> web.Response:
    """The answer with its decoded body changed: a well-formed answer saying something else."""
    cbor = "cbor" in answer.headers.get("Content-Type", "")
    decoded = cbor_lite.loads(body) if cbor else json.loads(body)
    changed = rewrite(decoded)
    payload = cbor_lite.dumps(changed) if cbor else json.dumps(changed, default=str).encode()
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
    return web.Response(status=answer.status, body=payload, headers=headers)
