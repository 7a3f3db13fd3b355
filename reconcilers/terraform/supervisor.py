"""Runs one Terraform run on behalf of the cli runner, independently of the controller.

    python -m reconcilers.terraform.supervisor RUN_FILE LOG_FILE WORKDIR BINARY OPERATION TIMEOUT

It runs `init -input=false`, then `OPERATION -input=false -auto-approve -json -lock-timeout=5m`
with `TF_IN_AUTOMATION=1`, Terraform's output going to LOG_FILE, and records its progress and
then its outcome in RUN_FILE. It lives in its own session, so the run and its outcome survive a
controller that stops, crashes or only ran `run --once`. A SIGINT or SIGTERM to it, or the
timeout, becomes exactly one SIGINT to Terraform (its graceful stop), and it waits for Terraform.

Terraform runs only once its pid is in RUN_FILE: each step starts as a gate (a tiny Python
process that execs Terraform in place, same pid) released only after the pid is recorded. So if
this supervisor dies, the controller still sees the Terraform process and waits for it to exit
before it starts another run. Neither this process nor Terraform gets the controller's own
settings (`CONTROLLER_*`: its API token, webhook secret, git token).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

# argv: the gate's read end, then BINARY ARGS...; exits NOT_STARTED if never released
GATE = (
    "import os, sys\n"
    "if os.read(int(sys.argv[1]), 1) != b'1':\n"
    "    sys.exit(125)\n"
    "try:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "except OSError as exc:\n"
    "    print(f'terraform could not run: {exc}', flush=True)\n"
    "    sys.exit(127)\n"
)
NOT_STARTED = 125


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".run-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment without the controller's settings, whose secrets Terraform must not see
    (case-insensitive: the controller's settings are read case-insensitively)."""
    return {k: v for k, v in environ.items() if not k.upper().startswith("CONTROLLER_")}


def claim_interrupt(run_file: Path) -> bool:
    """True once per run, for whoever sends Terraform its SIGINT (this supervisor, or the
    controller when the supervisor is gone): a second SIGINT would abort Terraform mid-write."""
    try:
        os.close(os.open(run_file.with_suffix(".sigint"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:
        return True  # no marker possible: one SIGINT from here beats none
    return True


# ---- a run's processes seen from the controller ----

# this version's supervisor, or one started by an earlier version before an upgrade
SUPERVISOR_MARKERS = (b"reconcilers/terraform/supervisor.py", b"terraform_supervisor")


def process_running(pid: int, matches: Callable[[bytes], bool]) -> bool:
    """Whether `pid` runs and its command line `matches`: once a process is gone its pid may be
    reused by another program, and a zombie (gone, not yet reaped) has an empty command line."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: its command line tells
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume it runs rather than risk a second run beside it
    return matches(cmdline)


def supervisor_running(pid: object, run_file: object = None) -> bool:
    """Whether `pid` is the supervisor of that run (its command line names the run file, when
    the record says which: a reused pid may be another run's supervisor)."""

    def matches(cmdline: bytes) -> bool:
        if isinstance(run_file, str) and os.fsencode(run_file) not in cmdline:
            return False
        return any(marker in cmdline for marker in SUPERVISOR_MARKERS)

    return isinstance(pid, int) and process_running(pid, matches)


def orphaned_terraform(record: Mapping[str, Any]) -> int | None:
    """The pid of a run's Terraform (gate included) if it runs on while its supervisor is gone:
    its command line names the binary the run file records."""
    if record.get("state") in ("SUCCEEDED", "FAILED") or supervisor_running(
        record.get("supervisor_pid"), record.get("run_file")
    ):
        return None
    pid, binary = record.get("pid"), record.get("binary")
    if not isinstance(pid, int) or not isinstance(binary, str):
        return None
    named = os.fsencode(binary)
    return pid if process_running(pid, lambda cmdline: named in cmdline.split(b"\0")) else None


# ---- the supervisor ----


class Supervisor:
    def __init__(
        self,
        run_file: Path,
        log_file: Path,
        workdir: Path,
        binary: str,
        operation: str,
        timeout: float,
        environment: str | None = None,
    ) -> None:
        self.run_file = run_file
        self.environment = environment
        self.log_file = log_file
        self.workdir = workdir
        self.binary = binary
        self.operation = operation
        self.deadline = time.monotonic() + timeout
        # on record, so a controller can enforce the timeout of a Terraform left without us
        self.wall_deadline = time.time() + timeout
        self.timeout = timeout
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_requested = False
        self.interrupted = False
        self.timed_out = False

    def record(self, **fields: Any) -> None:
        write_json(
            self.run_file,
            {
                "supervisor_pid": os.getpid(),
                "run_file": str(self.run_file),
                "environment": self.environment,
                "operation": self.operation,
                "binary": self.binary,
                "deadline": self.wall_deadline,
                **fields,
            },
        )

    def request_stop(self, signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        # only a flag: the wait loop sends the SIGINT, never between starting and releasing
        self.stop_requested = True

    def interrupt(self) -> None:
        """Exactly one SIGINT to Terraform, however many times it is asked for."""
        if self.interrupted:
            return
        self.interrupted = True
        if self.child is not None and self.child.poll() is None and claim_interrupt(self.run_file):
            self.child.send_signal(signal.SIGINT)

    def step(self, name: str, args: list[str], log: IO[bytes]) -> int:
        env = {**child_environment(os.environ), "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        gate_read, gate_write = os.pipe()
        try:
            self.child = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", GATE, str(gate_read), self.binary, *args],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(gate_read,),
            )
        except BaseException:
            os.close(gate_write)
            raise
        finally:
            os.close(gate_read)
        try:
            # the pid is on record before Terraform runs; if this process dies before the
            # release, the gate reads EOF and Terraform never starts
            self.record(state="IN_PROGRESS", step=name, pid=self.child.pid)
            if not self.stop_requested:
                with contextlib.suppress(OSError):
                    os.write(gate_write, b"1")
        finally:
            os.close(gate_write)
        while True:
            try:
                return self.child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                if self.interrupted:
                    continue
                if time.monotonic() >= self.deadline:
                    self.timed_out = True
                    self.interrupt()
                elif self.stop_requested:
                    self.interrupt()

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        self.record(state="IN_PROGRESS", step="init", pid=None)
        code = 1
        step = "init"
        try:
            with open(self.log_file, "ab", buffering=0) as log:
                code = self.step("init", ["init", "-input=false"], log)
                if code == 0 and not (self.stop_requested or self.interrupted):
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
        stopped = self.stop_requested or self.interrupted
        if self.timed_out:
            detail = f"timed out after {self.timeout:g}s (terraform {step} exit {code})"
        elif code == 0 and not stopped:
            detail = f"terraform {self.operation} succeeded"
        elif stopped and code == NOT_STARTED:
            detail = f"interrupted before terraform {step} started"
            code = 1
        elif stopped and code == 0:
            detail = f"interrupted after terraform {step}"
            code = 1
        else:
            detail = f"terraform {step} exited with {code}"
        self.record(
            state="SUCCEEDED" if code == 0 else "FAILED", step=step, detail=detail, exit_code=code
        )
        return 0


def main(argv: list[str]) -> int:
    run_file, log_file, workdir, binary, operation, timeout, *rest = argv
    environment = rest[0] if rest else None  # recorded, so a lost state store finds the run
    return Supervisor(
        Path(run_file),
        Path(log_file),
        Path(workdir),
        binary,
        operation,
        float(timeout),
        environment,
    ).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
