"""Hostile clients of the HTTP port (contract sections 8 and 13), over raw sockets on 127.0.0.1:
thousands of idle or slow connections, slow bodies, unread answers, undecodable header bytes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller.http_api import GUARD_KEY, bound_port, start_http_server
from controller.http_guard import ConnectionGuard, raise_open_file_limit
from tests.conftest import MakeController
from tests.waiting import until

pytestmark = pytest.mark.integration
TOKEN = "test-token-123"
SECRET = "hook-secret"
PLAIN = "version: 1\nenvironments:\n  plain:\n    power: off\n"
# a well-formed signature header: the body has to be read before it can be checked
SIGNED = b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\n"


@dataclass
class Server:
    port: int
    guard: ConnectionGuard

    async def healthz(self) -> tuple[int, float]:
        """Status and seconds taken, on a new connection."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/healthz") as response,
        ):
            return response.status, loop.time() - started

    async def raw(self, request: bytes) -> bytes:
        """The whole answer to bytes that aiohttp's client would not send."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(request)
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()


StartServer = Callable[..., Awaitable[Server]]  # start(**start_http_server keywords) -> Server


@pytest.fixture
async def start(make_controller: MakeController) -> AsyncIterator[StartServer]:
    runners: list[web.AppRunner] = []

    async def make(**limits: Any) -> Server:
        harness = make_controller(PLAIN, api_token=TOKEN, webhook_secret=SECRET)
        runner = await start_http_server(harness.controller, "127.0.0.1", 0, **limits)
        runners.append(runner)
        return Server(bound_port(runner), runner.app[GUARD_KEY])

    yield make
    for runner in runners:
        await runner.cleanup()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """Returns once the server closed (or reset) the connection; what it sent is ignored."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass


async def test_thousands_of_slow_connections_are_cut_off_while_healthz_still_answers(
    start: StartServer, logs: io.StringIO
) -> None:
    if raise_open_file_limit() < 5000:  # both ends of 2,000 connections live in this process
        pytest.skip("needs 5,000 open files")
    header_timeout = 5.0
    server = await start(header_timeout=header_timeout, max_connections=4000)
    loop = asyncio.get_running_loop()
    count = 2000
    cut_after: list[float] = []

    async def slow_client(kind: int) -> None:
        opened = loop.time()  # before connecting: the server's timer starts later, not earlier
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        closed = asyncio.create_task(closed_by_server(reader))
        if kind == 1:  # part of the headers, then nothing
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        elif kind == 2:  # one complete request, then idle on the kept-alive connection
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        elif kind == 3:  # headers trickling in, never complete: the timer must not restart
            writer.write(b"GET /status HTTP/1.1\r\n")
            while not closed.done():
                writer.write(b"X-Slow: 1\r\n")
                await asyncio.wait({closed}, timeout=0.25)  # the slow client's own pace
        # kind 0: connects and sends nothing
        await closed
        cut_after.append(loop.time() - opened)
        writer.close()

    started = loop.time()
    clients = [asyncio.create_task(slow_client(i % 4)) for i in range(count)]
    await until(lambda: server.guard.open_connections >= count)
    opening = loop.time() - started
    status, latency = await server.healthz()
    assert status == 200
    assert latency < 2.0
    assert not cut_after  # all still open when /healthz answered
    await asyncio.wait_for(asyncio.gather(*clients), 30)
    # none before the header timeout, all soon after it
    assert min(cut_after) >= header_timeout - 0.05
    assert max(cut_after) < header_timeout + 5
    assert server.guard.open_connections == 0
    lines = logs.getvalue().splitlines()
    assert len(lines) < 20, lines[:20]
    print(  # the figures, with -s
        f"\n{count} slow connections open in {opening:.2f}s;"
        f" /healthz in {latency * 1000:.0f} ms; cut after {min(cut_after):.2f}-"
        f"{max(cut_after):.2f}s; {len(lines)} log lines"
    )


async def test_at_the_connection_cap_the_oldest_idle_connections_make_room(
    start: StartServer, logs: io.StringIO
) -> None:
    server = await start(max_connections=100, header_timeout=60, body_timeout=60)
    # the oldest connection is inside a request (its body is slow): it is kept
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
    busy_writer.write(
        b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" + SIGNED + b"\r\n{"
    )
    await until(lambda: server.guard.requests_in_progress == 1)
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
    closed = [asyncio.create_task(closed_by_server(reader)) for reader, _ in idle]
    await until(lambda: server.guard.evicted >= 201)
    status, latency = await server.healthz()
    assert status == 200
    assert latency < 2.0
    await until(lambda: sum(task.done() for task in closed) >= 202)
    # the oldest idle ones went, in order; the busy one stayed
    gone = [i for i, task in enumerate(closed) if task.done()]
    assert gone == list(range(len(gone)))
    assert server.guard.open_connections <= 100
    assert not busy_reader.at_eof()
    for task in closed:
        task.cancel()
    for _, writer in idle:
        writer.close()
    busy_writer.close()
    assert len(logs.getvalue().splitlines()) < 5  # the eviction warning is rate-limited


async def test_a_body_slower_than_its_deadline_is_cut_off(start: StartServer) -> None:
    server = await start(body_timeout=1.0)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = loop.time()
    writer.write(
        b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n" + SIGNED + b"\r\n{"
    )
    closed = asyncio.create_task(closed_by_server(reader))
    while not closed.done():  # a byte at a time: progress, but too slow
        writer.write(b" ")
        await asyncio.wait({closed}, timeout=0.1)
    assert 1.0 <= loop.time() - started < 5
    assert server.guard.cut == 1
    writer.close()


async def test_an_answer_the_client_does_not_read_is_cut_off_at_its_deadline(
    start: StartServer,
) -> None:
    server = await start(body_timeout=1.0)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    # pipelined requests whose answers are never read fill the socket buffers
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 5000)
    await until(lambda: server.guard.cut == 1, limit=20)
    await asyncio.wait_for(closed_by_server(reader), 10)
    writer.close()


@pytest.mark.parametrize(
    ("header", "path", "body"),
    [
        (b"Authorization: Bearer \xff\xfe" + TOKEN.encode(), b"/reconcile", b""),
        (b"Authorization: \xc3\x28 " + TOKEN.encode(), b"/reconcile", b""),
        (b"X-Hub-Signature-256: sha256=\xff\xfe", b"/hooks/git", b"{}"),
    ],
)
async def test_undecodable_credentials_get_401_and_are_logged_as_json(
    start: StartServer, logs: io.StringIO, header: bytes, path: bytes, body: bytes
) -> None:
    server = await start()
    answer = await server.raw(
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )
    assert status_of(answer) == 401
    for line in logs.getvalue().splitlines():
        assert isinstance(json.loads(line), dict), line


async def test_every_log_line_of_a_hostile_exchange_is_one_json_object(
    start: StartServer, logs: io.StringIO
) -> None:
    server = await start()
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    exchanges = [
        # malformed: aiohttp logs the parser's exception (a traceback) on aiohttp.server
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: \x00\x01\r\nConnection: close\r\n\r\n", 400),
        (
            b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: "
            + signature.encode()
            + b"\r\nX-GitHub-Delivery: \xff\xfe\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body,
            202,
        ),
    ]
    for request, expected in exchanges:
        assert status_of(await server.raw(request)) == expected
    logging.getLogger("botocore.credentials").warning("a library's warning")
    records = [json.loads(line) for line in logs.getvalue().splitlines()]
    for record in records:
        assert {"event", "level", "timestamp"} <= record.keys(), record
    traceback = next(r for r in records if r.get("logger") == "aiohttp.server")
    assert traceback["level"] == "error"
    assert "Traceback" in traceback["exception"]
    assert any(r["event"] == "git webhook received" for r in records)
    assert records[-1]["logger"] == "botocore.credentials"


async def test_slow_webhook_bodies_never_lock_out_the_health_check(start: StartServer) -> None:
    server = await start(max_connections=20)
    slow = []
    for _ in range(20):  # every connection inside a request, its body trickling
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n" + SIGNED + b"\r\n{"
        )
        slow.append(writer)
    try:
        for _ in range(3):
            status, _ = await server.healthz()
            assert status == 200
    finally:
        for writer in slow:
            writer.close()


async def test_a_webhook_without_a_well_formed_signature_is_refused_unread(
    start: StartServer,
) -> None:
    server = await start()
    for header in (b"", b"X-Hub-Signature-256: sha1=abc\r\n", b"X-Hub-Signature-256: x\r\n"):
        # the body announced is never sent: the answer comes without reading it
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n" + header + b"\r\n"
        )
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        finally:
            writer.close()
        assert status_of(head) == 401
