"""The development Terraform runner: `terraform` (or `tofu`) run locally, in `workdir`.

Each run is carried out by a small supervisor process (`terraform.supervisor`) in its own
session: it runs `init -input=false`, then `apply|destroy -input=false -auto-approve -json
-lock-timeout=5m` with `TF_IN_AUTOMATION=1`, writes Terraform's output to a log file and records
the outcome in a run file, both in `runs_dir`. So a run and its outcome survive the controller
(a restart, a crash, `run --once`), and a restarted controller follows the run it finds instead
of starting another. The controller turns the `-json` log into structured log events
(diagnostics, the change summary, resource progress as a heartbeat). On timeout or shutdown
Terraform gets exactly one SIGINT (its graceful stop; a second one would abort it mid-write).

A run is over only when its Terraform process is gone. If the supervisor dies (a SIGKILL, the
OOM killer) while Terraform goes on, the run stays in progress until that process exits (then
its outcome is unknown: a failure, retried with backoff), so no second run can start next to it;
the controller then interrupts it itself on timeout, cancel or shutdown, still exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation
from reconcilers.terraform import supervisor
from reconcilers.terraform.runner import (
    FoundRun,
    RunnerError,
    RunStatus,
    RunToPoll,
    StartedRun,
)
from reconcilers.terraform.terraform_log import log_terraform_line

log = structlog.get_logger("infra_controller.terraform")
FINAL = ("SUCCEEDED", "FAILED")
# a run recorded but whose supervisor has not written yet is starting, for at most this long
STARTING_GRACE = 60.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _status_of(data: dict[str, Any] | None) -> RunStatus:
    if data is None:
        return RunStatus("FAILED", "no record of the run: its outcome is unknown")
    if data.get("state") in FINAL:
        return RunStatus(data["state"], str(data.get("detail", "")))
    step = data.get("step", "")
    pid = data.get("supervisor_pid")
    if supervisor.supervisor_running(pid, data.get("run_file")):
        return RunStatus("IN_PROGRESS", f"terraform {step} running")
    orphan = supervisor.orphaned_terraform(data)
    if orphan is not None:
        # not over while terraform runs: a run started now would run beside it
        return RunStatus(
            "IN_PROGRESS",
            f"terraform {step} (pid {orphan}) still running but its supervisor is gone: "
            "waiting for it to exit, its outcome will be unknown",
        )
    created = data.get("created_at")
    if pid is None and isinstance(created, float) and time.time() - created < STARTING_GRACE:
        return RunStatus("IN_PROGRESS", "terraform starting")
    return RunStatus("FAILED", "the run's process ended without an outcome: unknown")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _resolve(spec: TerraformSpec) -> tuple[str, Path]:
    assert spec.workdir is not None
    binary = shutil.which(spec.binary)
    if binary is None:
        raise RunnerError(f"{spec.binary} not found on PATH")
    workdir = Path(spec.workdir).resolve()
    if not workdir.is_dir():
        raise RunnerError(f"workdir {spec.workdir} is not a directory")
    return binary, workdir


@dataclass
class _Followed:
    """A run whose log this controller turns into log events."""

    run_id: str
    environment: str
    operation: str
    run_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None  # when this controller started it
    offset: int = 0
    partial: bytes = b""
    last_progress_log: float = 0.0
    task: asyncio.Task[None] | None = None


class CliRunner:
    name = "cli"
    token_window: timedelta | None = (
        None  # a run's files are named by its token: a repeat always finds them
    )

    def __init__(self, runs_dir: str, follow_seconds: float = 0.25) -> None:
        self.runs_dir = Path(runs_dir)
        self.follow_seconds = follow_seconds
        self._followed: dict[str, _Followed] = {}
        self._orphans_logged: set[str] = set()

    def _files(self, run_id: str) -> tuple[Path, Path]:
        stem = run_id.removeprefix("cli:")
        return self.runs_dir / f"{stem}.json", self.runs_dir / f"{stem}.log"

    async def start(
        self, environment: str, spec: TerraformSpec, region: str, operation: Operation, token: str
    ) -> StartedRun:
        run_id = f"cli:{token}"
        run_file, log_file = self._files(run_id)
        if run_id in self._followed or await asyncio.to_thread(run_file.exists):
            return StartedRun(run_id)  # the same token: the run already exists
        binary, workdir = await asyncio.to_thread(_resolve, spec)
        try:
            process = await asyncio.to_thread(
                self._spawn,
                run_file,
                log_file,
                workdir,
                binary,
                operation,
                spec.timeout.total_seconds(),
                environment,
            )
        except OSError as exc:  # a full disk, no runs directory: nothing was started
            raise RunnerError(f"the run could not be started: {exc}") from exc
        followed = _Followed(run_id, environment, operation, run_file, log_file, process)
        self._follow(followed)
        return StartedRun(run_id)

    def _spawn(
        self,
        run_file: Path,
        log_file: Path,
        workdir: Path,
        binary: str,
        operation: str,
        timeout: float,
        environment: str,
    ) -> subprocess.Popen[bytes]:
        run_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.touch()
        # recorded before the process exists, so a poll never finds no trace of the run; from
        # its start on, only the supervisor writes this file (no lost update)
        supervisor.write_json(
            run_file,
            {
                "state": "IN_PROGRESS",
                "step": "starting",
                "supervisor_pid": None,
                "run_file": str(run_file),
                "environment": environment,
                "operation": operation,
                "binary": binary,
                "created_at": time.time(),
            },
        )
        return subprocess.Popen(
            [
                sys.executable,
                supervisor.__file__,
                str(run_file),
                str(log_file),
                str(workdir),
                binary,
                operation,
                str(timeout),
                environment,
            ],
            env=supervisor.child_environment(os.environ),  # no controller secrets
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # neither a Ctrl-C on the controller nor its exit reach it
        )

    def _follow(self, followed: _Followed) -> None:
        self._followed[followed.run_id] = followed
        followed.task = asyncio.create_task(self._tail(followed))

    async def _tail(self, followed: _Followed) -> None:
        # the run outlives the pass that started it: its log lines carry the run, not the pass
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            environment=followed.environment,
            run_id=followed.run_id,
            operation=followed.operation,
        )
        try:
            while True:
                status = await asyncio.to_thread(self._finished, followed)
                for line in await asyncio.to_thread(self._new_lines, followed):
                    followed.last_progress_log = log_terraform_line(
                        line, followed.last_progress_log
                    )
                if status is not None:
                    log.info("terraform process exited", outcome=status.state, detail=status.detail)
                    return
                await asyncio.sleep(self.follow_seconds)
        finally:
            self._followed.pop(followed.run_id, None)

    def _finished(self, followed: _Followed) -> RunStatus | None:
        if followed.process is not None:
            followed.process.poll()  # reap it: no zombie
        status = self._status(followed.run_file)
        return status if status.state in FINAL else None

    def _new_lines(self, followed: _Followed) -> list[str]:
        try:
            with open(followed.log_file, "rb") as handle:
                handle.seek(followed.offset)
                chunk = handle.read()
        except OSError:
            return []
        followed.offset += len(chunk)
        *lines, followed.partial = (followed.partial + chunk).split(b"\n")
        return [line.decode(errors="replace").rstrip() for line in lines]

    async def poll(self, runs: Sequence[RunToPoll]) -> dict[str, RunStatus]:
        statuses: dict[str, RunStatus] = {}
        for item in runs:
            run_id = item.run.run_id
            if run_id is None:
                continue
            run_file, log_file = self._files(run_id)
            status = await asyncio.to_thread(self._check, run_id)
            if status.state == "IN_PROGRESS" and run_id not in self._followed:
                # a run started before a restart: follow its log from here on
                followed = _Followed(
                    run_id, item.environment, item.run.operation, run_file, log_file
                )
                # from its current end: what happened meanwhile was logged by the previous one
                followed.offset = await asyncio.to_thread(_size, log_file)
                self._follow(followed)
            statuses[item.environment] = status
        return statuses

    def _status(self, run_file: Path) -> RunStatus:
        return _status_of(_read_json(run_file))

    def _check(self, run_id: str) -> RunStatus:
        """The run's status; a Terraform left without its supervisor is watched from here:
        past the run's deadline it gets the SIGINT its supervisor would have sent."""
        data = _read_json(self._files(run_id)[0])
        status = _status_of(data)
        in_progress = data is not None and status.state == "IN_PROGRESS"
        orphan = supervisor.orphaned_terraform(data) if data and in_progress else None
        if data is None or orphan is None:
            self._orphans_logged.discard(run_id)
            return status
        if run_id not in self._orphans_logged:
            self._orphans_logged.add(run_id)
            log.warning(
                "terraform run lost its supervisor: waiting for terraform to exit",
                run_id=run_id,
                pid=orphan,
                step=data.get("step"),
            )
        deadline = data.get("deadline")
        if isinstance(deadline, int | float) and time.time() >= deadline:
            self._interrupt(run_id, "timed out")
        return status

    def _interrupt(self, run_id: str, why: str = "stopped") -> None:
        """Stop the run with exactly one SIGINT to Terraform: through its supervisor (which
        sends it once), or directly, once per run, when the supervisor is gone."""
        run_file = self._files(run_id)[0]
        data = _read_json(run_file) or {}
        if data.get("state") in FINAL:
            return
        pid = data.get("supervisor_pid")
        if isinstance(pid, int) and supervisor.supervisor_running(pid, data.get("run_file")):
            log.warning("interrupting terraform", run_id=run_id, supervisor_pid=pid, why=why)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            return
        orphan = supervisor.orphaned_terraform(data)
        if orphan is not None and supervisor.claim_interrupt(run_file):
            log.warning(
                "interrupting terraform, its supervisor is gone", run_id=run_id, pid=orphan, why=why
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGINT)

    async def find(
        self, environment: str, spec: TerraformSpec, region: str, token: str
    ) -> StartedRun | None:
        run_id = f"cli:{token}"
        run_file, _ = self._files(run_id)
        exists = run_id in self._followed or await asyncio.to_thread(run_file.exists)
        return StartedRun(run_id) if exists else None

    async def in_flight(
        self, environment: str, spec: TerraformSpec, region: str
    ) -> FoundRun | None:
        return await asyncio.to_thread(self._in_flight, environment)

    def _in_flight(self, environment: str) -> FoundRun | None:
        for run_file in sorted(self.runs_dir.glob("*.json")):
            data = _read_json(run_file)
            if data is None or data.get("environment") != environment:
                continue
            operation = data.get("operation")
            if operation not in ("apply", "destroy"):
                continue
            if _status_of(data).state == "IN_PROGRESS":
                created = data.get("created_at")
                started = (
                    datetime.fromtimestamp(created, UTC) if isinstance(created, float) else None
                )
                token = run_file.stem
                return FoundRun(f"cli:{token}", operation, token, started)
        return None

    async def cancel(self, run: RunToPoll) -> None:
        if run.run.run_id:
            await asyncio.to_thread(self._interrupt, run.run.run_id)

    async def detach(self) -> None:
        """Stop following the runs without stopping them (what a controller that dies does):
        each run's supervisor still records its outcome, for the next controller to read."""
        tasks = [f.task for f in self._followed.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self, grace_seconds: float) -> None:
        """On shutdown: one SIGINT to each run in flight, then `grace_seconds` to see it end.
        A run still stopping after that ends by itself and records its outcome."""
        running = [f for f in self._followed.values() if f.task is not None and not f.task.done()]
        for followed in running:
            await asyncio.to_thread(self._interrupt, followed.run_id)
        tasks = [f.task for f in running if f.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
