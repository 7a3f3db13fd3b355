"""A hostile desired state against a running controller and the CLI (contract section 13): an
alias bomb or 5,000 levels of nesting is refused with a positioned problem, the last valid state
stays in force, and the HTTP server keeps answering while the document is parsed."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.desired import file_source, loader
from controller.http_api import bound_port, start_http_server
from controller.sandbox.emulator import LocalAws
from tests.conftest import Harness, MakeController
from tests.processes import ROOT
from tests.unit.test_loader_limits import alias_bomb, nested
from tests.waiting import until

pytestmark = pytest.mark.integration

VALID = "version: 1\nenvironments:\n  demo:\n    power: off\n"
HOSTILE = {
    # 9**6 nodes once expanded: the full 9-level bomb runs only in capped child processes below
    "alias bomb": (alias_bomb(6), "more than 10,000 nodes"),
    "5,000 levels": (nested(5000), "nested deeper than 64 levels"),
}


class SlowParse:
    """Wraps the real parse and holds it until released, so a test can act *during* a parse.
    A parse on the event loop's thread would hold the loop too: `finished` then gets set
    before anything else on the loop runs (the hold gives up after `limit` seconds)."""

    def __init__(self, limit: float = 3.0) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.limit = limit

    def __call__(self, text: str, file: str, **options: int) -> loader.LoadedDesiredState:
        self.started.set()
        try:
            self.release.wait(self.limit)
            return loader.parse_desired_state(text, file, **options)
        finally:
            self.finished.set()


@pytest.fixture
async def running(
    make_controller: MakeController, aws_env: LocalAws
) -> AsyncIterator[tuple[Harness, str, aiohttp.ClientSession]]:
    """A controller running its loop and HTTP server, with a valid desired state loaded."""
    harness = make_controller(VALID)
    runner = await start_http_server(harness.controller, "127.0.0.1", 0)
    stop = asyncio.Event()
    loop_task = asyncio.create_task(harness.controller.run(stop))
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
    try:
        await until(lambda: harness.controller.snapshot().passes_completed >= 1)
        yield harness, f"http://127.0.0.1:{bound_port(runner)}", session
    finally:
        stop.set()
        await loop_task
        await session.close()
        await runner.cleanup()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
async def test_hostile_document_is_refused_and_the_last_valid_state_stays_in_force(
    running: tuple[Harness, str, aiohttp.ClientSession],
    monkeypatch: pytest.MonkeyPatch,
    hostile: str,
) -> None:
    harness, base, session = running
    status, body = await get(session, base + "/status")
    assert (status, body["desired_state_valid"]) == (200, True)
    valid_revision = body["revision"]

    slow = SlowParse()
    monkeypatch.setattr(file_source, "parse_desired_state", slow)
    text, expected = HOSTILE[hostile]
    harness.desired_path.write_text(text)  # the file watch starts a pass

    await until(slow.started.is_set)
    # the parse is in progress: the server answers, and the loop is free to run it
    assert (await get(session, base + "/healthz"))[0] == 200
    assert not slow.finished.is_set(), "the parse held the event loop"
    slow.release.set()

    def refused() -> bool:
        return harness.controller.snapshot().desired.valid is False

    await until(refused)
    status, body = await get(session, base + "/status")
    assert status == 200
    assert body["desired_state_valid"] is False
    assert body["revision"] == valid_revision  # the last valid state is still the one in force
    assert set(body["environments"]) == {"demo"}
    (problem,) = body["desired_state_errors"]
    assert problem.startswith(f"{harness.desired_path}:")
    assert expected in problem
    _, metrics = await get(session, base + "/metrics")
    assert "infra_controller_desired_state_valid 0.0" in metrics
    assert harness.metric("infra_controller_desired_state_valid") == 0
    assert (await get(session, base + "/healthz"))[0] == 200


def capped_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`infra-controller ARGS` in a process capped at 1 GiB of address space: a regression
    fails the test with a MemoryError instead of taking the machine's memory."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=cap,
        check=False,
    )


def test_validate_refuses_an_alias_bomb_quickly_with_one_positioned_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())  # the full 342 bytes: 9 anchors of 9 aliases
    started = time.monotonic()
    result = capped_cli("validate", str(bomb), cwd=tmp_path)
    assert time.monotonic() - started < 10  # mostly interpreter start; was a 3.4 GB timeout
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{bomb}:5:8: more than 10,000 nodes (after expanding alias *d): refused "
        "(an alias counts as a copy of what it refers to)"
    ]


def test_validate_refuses_deep_nesting_with_one_positioned_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text(nested(5000))
    result = capped_cli("validate", str(deep), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{deep}:2:")
    assert line.endswith("nested deeper than 64 levels: refused")
    assert "Traceback" not in result.stderr


def test_validate_takes_no_more_than_50_mb_to_refuse_the_bomb(tmp_path: Path) -> None:
    """The whole CLI process, interpreter included, under a 1 GiB address-space cap."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from controller.cli import main\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "code = main(['validate', sys.argv[1]])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(code, after - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bomb)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    code, grown_kib = result.stdout.split()
    assert code == "2", result.stderr[-2000:]
    assert int(grown_kib) < 50 * 1024
