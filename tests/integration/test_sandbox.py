"""`infra-controller sandbox` as a user runs it: real subprocesses on 127.0.0.1, what they print,
the API they serve, and what they leave in the temp dir. Each run stops (SIGINT, or a short
`--duration`) as soon as the test has seen what it needs."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.sandbox.emulator import free_port
from tests.run_processes import running
from tests.waiting import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
READY = "The sandbox is ready"


class Sandbox:
    """One `sandbox` process, its stdout and stderr in files, its temp dir a test directory."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.temp = tmp_path / "temp"
        self.temp.mkdir(exist_ok=True)
        self.stdout_path = tmp_path / "stdout"
        self.stderr_path = tmp_path / "stderr"
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLLER_")}
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller", "sandbox", *args],
                cwd=tmp_path,
                env={**base, "PYTHONPATH": str(ROOT), "TMPDIR": str(self.temp), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def ready(self) -> list[str]:
        """The lines printed once the sandbox is ready (the token, the commands to try)."""

        def printed() -> bool:
            assert self.proc.poll() is None, self.stderr
            out = self.stdout  # the banner ends with the path of the desired state
            return READY in out and out.rstrip("\n").endswith("desired_state.yaml")

        await until(printed, limit=60)
        return self.stdout.split(READY, 1)[1].splitlines()

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def left_in_temp(self) -> list[str]:
        return sorted(path.name for path in self.temp.iterdir())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sandboxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for sandbox in started:
        sandbox.kill()


def command(lines: list[str], name: str) -> list[str]:
    """The printed command whose words include `name` (`wake`, `status`, `curl`), as argv."""
    indented = [line for line in lines if line.startswith("    ")]
    (line,) = [line for line in indented if name in shlex.split(line)]
    return shlex.split(line)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def post_wake(url: str, token: str) -> int:
    request = urllib.request.Request(
        f"{url}/environments/demo/wake",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


async def test_a_generated_token_is_printed_with_commands_that_work(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    port = free_port()
    sandbox = Sandbox(tmp_path, env={"CONTROLLER_HTTP_ADDR": f"127.0.0.1:{port}"})
    sandboxes.append(sandbox)
    lines = await sandbox.ready()
    url = f"http://127.0.0.1:{port}"
    assert lines[0].startswith(f": the controller answers at {url} ")
    assert "made for this run" in lines[1]
    token = lines[2].strip()

    status = command(lines, "status")
    assert status[-2:] == ["--url", url]
    shown = await asyncio.to_thread(run, status)
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "demo" in shown.stdout

    wake = command(lines, "wake")
    assert wake[-4:] == ["--url", url, "--token", token]
    woken = await asyncio.to_thread(run, wake)
    assert woken.returncode == 0, woken.stderr

    curl = command(lines, "curl")
    assert curl[curl.index("-H") + 1] == f"Authorization: Bearer {token}"
    assert curl[-1] == f"{url}/environments/demo/wake"
    assert await asyncio.to_thread(post_wake, url, token) == 202
    assert await asyncio.to_thread(post_wake, url, token + "x") == 401

    assert await asyncio.to_thread(sandbox.interrupt) == 0
    assert sandbox.left_in_temp() == []


async def test_the_users_token_is_never_printed_and_a_given_workdir_is_kept(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    token = "users-own-token-4f1c"
    port = free_port()
    workdir = tmp_path / "mine"
    with socket.socket() as busy:  # the variable names a busy port: the flag must win
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {
            "CONTROLLER_API_TOKEN": token,
            "CONTROLLER_HTTP_ADDR": f"127.0.0.1:{busy.getsockname()[1]}",
        }
        args = ("--http-addr", f"127.0.0.1:{port}", "--workdir", str(workdir), "--log-format")
        sandbox = Sandbox(tmp_path, *args, "json", env=env)
        sandboxes.append(sandbox)
        lines = await sandbox.ready()
    url = f"http://127.0.0.1:{port}"
    assert command(lines, "wake")[-2:] == ["--token", "$CONTROLLER_API_TOKEN"]
    assert command(lines, "curl")[-3:] == [
        "-H",
        "Authorization: Bearer $CONTROLLER_API_TOKEN",
        f"{url}/environments/demo/wake",
    ]
    assert await asyncio.to_thread(post_wake, url, token) == 202
    assert await asyncio.to_thread(sandbox.interrupt) == 0
    assert token not in sandbox.stdout + sandbox.stderr
    events = [json.loads(line) for line in sandbox.stderr.splitlines() if line.startswith("{")]
    assert "sandbox ready" in [event["event"] for event in events]
    last = [line.strip() for line in lines if line.strip()][-1]
    assert last == str(workdir.resolve() / "desired_state.yaml")
    assert (workdir / "desired_state.yaml").is_file()
    assert sandbox.left_in_temp() == []


def test_a_run_with_a_duration_ends_by_itself_and_removes_its_temp_dir(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path, "--http-addr", f"127.0.0.1:{free_port()}", "--duration", "0.5")
    try:
        assert sandbox.proc.wait(timeout=60) == 0, sandbox.stderr
    finally:
        sandbox.kill()
    assert "sandbox stopped" in sandbox.stderr
    assert sandbox.left_in_temp() == []


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # not a process, or one gone meanwhile
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


async def test_a_sandbox_killed_outright_leaves_no_emulator_running(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    sandbox = Sandbox(tmp_path, "--http-addr", f"127.0.0.1:{free_port()}")
    sandboxes.append(sandbox)
    await sandbox.ready()
    (emulator,) = [pid for pid in children(sandbox.proc.pid) if running(pid, "moto_process")]
    sandbox.kill()  # SIGKILL: no handler, no cleanup of its own
    await until(lambda: not running(emulator, "moto_process"), limit=15)


@pytest.mark.parametrize("where", ["flag", "variable"])
def test_a_busy_port_is_one_line_on_stderr_and_exit_2(tmp_path: Path, where: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        args, env = (
            (["--http-addr", addr], {}) if where == "flag" else ([], {"CONTROLLER_HTTP_ADDR": addr})
        )
        sandbox = Sandbox(tmp_path, *args, env=env)
        try:
            assert sandbox.proc.wait(timeout=60) == 2
        finally:
            sandbox.kill()
    (line,) = sandbox.stderr.splitlines()
    assert line.startswith(f"infra-controller: cannot listen on {addr}: ")
    assert "--http-addr" in line
    assert sandbox.stdout == ""
    assert sandbox.left_in_temp() == []


def test_make_sandbox_passes_args_to_the_sandbox(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    args = "--http-addr 127.0.0.1:9090 --log-format json"
    planned = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "sandbox", f"ARGS={args}", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines()[-1] == f"{venv}/bin/infra-controller sandbox {args}"
