"""A git desired-state source keeps a cache repository in the temp dir while the controller runs,
and nothing of it (directory or git process) once the controller has stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controller.desired.git_source import GitCredentials, GitSource, parse_git_location
from controller.sandbox.emulator import LocalAws, free_port
from tests.git_helpers import Repo
from tests.run_processes import processes_naming
from tests.waiting import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DESIRED = "version: 1\nenvironments:\n  a:\n    power: off\n    region: eu-west-3\n"


def caches(temp: Path) -> list[str]:
    return sorted(path.name for path in temp.glob("infra-controller-git-*"))


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return int(answer.status) == 200
    except (OSError, urllib.error.URLError):
        return False


async def test_the_daemon_removes_its_git_cache_when_it_stops(
    tmp_path: Path, aws_env: LocalAws
) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit({"desired_state.yaml": DESIRED})
    temp = tmp_path / "temp"
    temp.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)}
    command = [sys.executable, "-m", "controller", "run", "--desired-state", repo.file_url]
    options = ["--http-addr", f"127.0.0.1:{port}", "--state-store", f"file://{tmp_path}/s.json"]
    proc = await asyncio.create_subprocess_exec(
        *command,
        *options,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), limit=30)
        assert len(caches(temp)) == 1  # where the cache lives while it runs
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert caches(temp) == []


async def test_a_fetch_stopped_midway_leaves_no_cache_and_no_git_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with socket.socket() as silent:  # a git server that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        remote = f"http://127.0.0.1:{silent.getsockname()[1]}/config.git"
        source = GitSource(parse_git_location(f"git+{remote}"), GitCredentials(), timeout=60)
        fetch = asyncio.create_task(source.fetch())
        try:
            await until(lambda: bool(processes_naming(remote)), limit=30)
            fetch.cancel()  # as a shutdown does
            await asyncio.gather(fetch, return_exceptions=True)
        finally:
            source.close()
        assert caches(temp) == []
        assert processes_naming(remote) == []
