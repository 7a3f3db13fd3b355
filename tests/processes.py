"""Long-running `infra-controller` processes for the tests: started, waited for, stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def spawn(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`infra-controller ARGS` as a long-running process; its logs (stderr) are kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "controller", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_daemon(
    tmp_path: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return spawn(tmp_path, "run", "--http-addr", f"127.0.0.1:{port}", *extra, env=env)


def start_sandbox(tmp_path: Path, port: int, workdir: Path) -> subprocess.Popen[str]:
    return spawn(
        tmp_path,
        "sandbox",
        "--http-addr",
        f"127.0.0.1:{port}",
        "--log-format",
        "json",
        "--workdir",
        str(workdir),
    )


def interrupt_and_read_logs(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Ctrl-C the process, check it exits 0 in time, and return its JSON log lines."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert proc.stderr is not None
    return [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]


def wait_for_http(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the daemon did not become ready")
