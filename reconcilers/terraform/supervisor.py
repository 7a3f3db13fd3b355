"""Runs one Terraform run on behalf of the cli runner, independently of the controller.

    python -m reconcilers.terraform.supervisor RUN_FILE LOG_FILE WORKDIR BINARY OPERATION TIMEOUT

It runs `init -input=false`, then `OPERATION -input=false -auto-approve -json -lock-timeout=5m`
with `TF_IN_AUTOMATION=1`, Terraform's output going to LOG_FILE, and records its progress and
then its outcome in RUN_FILE. It lives in its own session, so the run and its outcome survive a
controller that stops, crashes or only ran `run --once`. A SIGINT or SIGTERM to it, or the
timeout, becomes exactly one SIGINT to Terraform (its graceful stop), and it waits for Terraform.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".run-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)


class Supervisor:
    def __init__(
        self,
        run_file: Path,
        log_file: Path,
        workdir: Path,
        binary: str,
        operation: str,
        timeout: float,
    ) -> None:
        self.run_file = run_file
        self.log_file = log_file
        self.workdir = workdir
        self.binary = binary
        self.operation = operation
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.child: subprocess.Popen[bytes] | None = None
        self.interrupted = False
        self.timed_out = False

    def record(self, **fields: Any) -> None:
        write_json(
            self.run_file,
            {
                "supervisor_pid": os.getpid(),
                "operation": self.operation,
                "binary": self.binary,
                **fields,
            },
        )

    def interrupt(self, signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        """Exactly one SIGINT to Terraform, however many times it is asked for."""
        if self.interrupted:
            return
        self.interrupted = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)

    def step(self, name: str, args: list[str], log: Any) -> int:
        env = {**os.environ, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        self.child = subprocess.Popen(
            [self.binary, *args],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.record(state="IN_PROGRESS", step=name, pid=self.child.pid)
        while True:
            try:
                return self.child.wait(timeout=max(0.1, min(1.0, self.deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= self.deadline and not self.interrupted:
                    self.timed_out = True
                    self.interrupt()

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.interrupt)
        signal.signal(signal.SIGTERM, self.interrupt)
        self.record(state="IN_PROGRESS", step="init", pid=None)
        code = 1
        step = "init"
        try:
            with open(self.log_file, "ab", buffering=0) as log:
                code = self.step("init", ["init", "-input=false"], log)
                if code == 0 and not self.interrupted:
                    step = self.operation
                    code = self.step(
                        self.operation,
                        [
                            self.operation,
                            "-input=false",
                            "-auto-approve",
                            "-json",
                            "-lock-timeout=5m",
                        ],
                        log,
                    )
        except OSError as exc:
            self.record(state="FAILED", detail=f"terraform could not run: {exc}", exit_code=None)
            return 1
        if self.timed_out:
            detail = f"timed out after {self.timeout:g}s (terraform {step} exit {code})"
        elif code == 0 and not self.interrupted:
            detail = f"terraform {self.operation} succeeded"
        elif self.interrupted and code == 0:
            detail = f"interrupted after terraform {step}"
            code = 1
        else:
            detail = f"terraform {step} exited with {code}"
        self.record(
            state="SUCCEEDED" if code == 0 else "FAILED", step=step, detail=detail, exit_code=code
        )
        return 0


def main(argv: list[str]) -> int:
    run_file, log_file, workdir, binary, operation, timeout = argv
    return Supervisor(
        Path(run_file), Path(log_file), Path(workdir), binary, operation, float(timeout)
    ).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
