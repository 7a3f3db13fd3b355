"""The development Terraform runner: `terraform` (or `tofu`) as a subprocess in `workdir`.

`init -input=false`, then `apply|destroy -input=false -auto-approve -json -lock-timeout=5m` with
`TF_IN_AUTOMATION=1`. The `-json` stream becomes structured log events (diagnostics, the change
summary, resource progress as a heartbeat). On timeout or shutdown the process gets exactly one
SIGINT (Terraform's graceful stop: a second one would abort it mid-write) and is waited for.

Each run keeps a small file (its pid, then its outcome) in `runs_dir`, so a controller restarted
while Terraform still runs follows that process instead of starting another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from controller.desired_state import TerraformSpec
from reconcilers.power_decision import Operation, RunStatus
from reconcilers.terraform_runner import RunnerError, RunToPoll, StartedRun

log = structlog.get_logger("infra_controller.terraform")
PROGRESS_LOG_EVERY = 30.0


@dataclass
class _Run:
    run_id: str
    environment: str
    operation: Operation
    file: Path
    binary: str
    process: asyncio.subprocess.Process | None = None
    step: str = "init"
    status: RunStatus = field(default_factory=lambda: RunStatus("IN_PROGRESS", "starting"))
    interrupted: bool = False
    last_progress_log: float = 0.0
    task: asyncio.Task[None] | None = None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".run-")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _process_alive(pid: int, binary: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # the pid may have been reused by another program since
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return binary.encode() in cmdline


def _resolve(spec: TerraformSpec) -> tuple[str, Path]:
    assert spec.workdir is not None
    binary = shutil.which(spec.binary)
    if binary is None:
        raise RunnerError(f"{spec.binary} not found on PATH")
    workdir = Path(spec.workdir).resolve()
    if not workdir.is_dir():
        raise RunnerError(f"workdir {spec.workdir} is not a directory")
    return binary, workdir


class CliRunner:
    name = "cli"

    def __init__(self, runs_dir: str) -> None:
        self.runs_dir = Path(runs_dir)
        self._runs: dict[str, _Run] = {}

    def _file(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id.removeprefix('cli:')}.json"

    async def start(
        self, environment: str, spec: TerraformSpec, region: str, operation: Operation, token: str
    ) -> StartedRun:
        run_id = f"cli:{token}"
        if run_id in self._runs or await asyncio.to_thread(self._file(run_id).exists):
            return StartedRun(run_id)  # the same token: the run already exists
        binary, workdir = await asyncio.to_thread(_resolve, spec)
        run = _Run(run_id, environment, operation, self._file(run_id), binary)
        await asyncio.to_thread(
            _write_json,
            run.file,
            {
                "environment": environment,
                "operation": operation,
                "binary": binary,
                "step": "init",
                "pid": None,
            },
        )
        self._runs[run_id] = run
        run.task = asyncio.create_task(self._execute(run, workdir, spec, operation))
        return StartedRun(run_id)

    async def _execute(
        self, run: _Run, workdir: Path, spec: TerraformSpec, operation: Operation
    ) -> None:
        # the run outlives the pass that started it: its log lines carry the run, not the pass
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            environment=run.environment, run_id=run.run_id, operation=operation
        )
        env = {**os.environ, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        code: int | None = None
        try:
            async with asyncio.timeout(spec.timeout.total_seconds()):
                code = await self._step(run, workdir, env, "init", ["init", "-input=false"])
                if code == 0:
                    code = await self._step(
                        run,
                        workdir,
                        env,
                        operation,
                        [operation, "-input=false", "-auto-approve", "-json", "-lock-timeout=5m"],
                    )
            if code == 0:
                run.status = RunStatus("SUCCEEDED", f"terraform {operation} succeeded")
            else:
                run.status = RunStatus("FAILED", f"terraform {run.step} exited with {code}")
        except TimeoutError:
            log.error("terraform run timed out: interrupting it", timeout=str(spec.timeout))
            code = await self._interrupt_and_wait(run)
            run.status = RunStatus("FAILED", f"timed out after {spec.timeout} (exit {code})")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            run.status = RunStatus("FAILED", f"terraform could not run: {exc}")
        await asyncio.to_thread(
            _write_json,
            run.file,
            {
                "environment": run.environment,
                "operation": operation,
                "state": run.status.state,
                "detail": run.status.detail,
                "exit_code": code,
            },
        )
        log.info("terraform process exited", outcome=run.status.state, detail=run.status.detail)

    async def _step(
        self, run: _Run, workdir: Path, env: dict[str, str], step: str, args: list[str]
    ) -> int:
        run.step = step
        process = await asyncio.create_subprocess_exec(
            run.binary,
            *args,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on the controller's terminal must not reach it
        )
        run.process = process
        await asyncio.to_thread(
            _write_json,
            run.file,
            {
                "environment": run.environment,
                "operation": run.operation,
                "binary": run.binary,
                "step": step,
                "pid": process.pid,
            },
        )
        log.info("terraform started", step=step, pid=process.pid)
        await self._read_output(run, process)
        return await process.wait()

    async def _read_output(self, run: _Run, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self._log_line(run, raw.decode(errors="replace").rstrip())

    async def _interrupt_and_wait(self, run: _Run) -> int | None:
        process = run.process
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        self._interrupt(run)
        with contextlib.suppress(ValueError, OSError):
            await self._read_output(run, process)
        return await process.wait()

    def _interrupt(self, run: _Run) -> None:
        """Exactly one SIGINT, whatever asks for it (a timeout, a cancel, a shutdown)."""
        if run.interrupted or run.process is None or run.process.returncode is not None:
            return
        run.interrupted = True
        log.warning("sending SIGINT to terraform", pid=run.process.pid, environment=run.environment)
        with contextlib.suppress(ProcessLookupError):
            run.process.send_signal(signal.SIGINT)

    def _log_line(self, run: _Run, line: str) -> None:
        if not line:
            return
        try:
            message = json.loads(line)
        except ValueError:
            log.info("terraform output", step=run.step, line=line[:2000])
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "diagnostic":
            diagnostic = message.get("diagnostic") or {}
            severity = diagnostic.get("severity", "error")
            emit = log.error if severity == "error" else log.warning
            emit(
                "terraform diagnostic",
                severity=severity,
                summary=diagnostic.get("summary"),
                detail=diagnostic.get("detail"),
                address=diagnostic.get("address"),
            )
        elif kind == "change_summary":
            changes = message.get("changes") or {}
            log.info(
                "terraform change summary",
                add=changes.get("add"),
                change=changes.get("change"),
                remove=changes.get("remove"),
                summary=message.get("@message"),
            )
        elif kind == "apply_progress":
            # the heartbeat of a long apply: logged at most every 30 s
            now = time.monotonic()
            if now - run.last_progress_log >= PROGRESS_LOG_EVERY:
                run.last_progress_log = now
                hook = message.get("hook") or {}
                log.info(
                    "terraform progress",
                    resource=(hook.get("resource") or {}).get("addr"),
                    action=hook.get("action"),
                    elapsed_seconds=hook.get("elapsed_seconds"),
                )
        elif kind in ("apply_complete", "apply_errored"):
            hook = message.get("hook") or {}
            emit = log.info if kind == "apply_complete" else log.error
            emit(
                f"terraform {kind.replace('_', ' ')}",
                resource=(hook.get("resource") or {}).get("addr"),
                action=hook.get("action"),
                elapsed_seconds=hook.get("elapsed_seconds"),
            )
        elif message.get("@level") in ("error", "warn"):
            log.warning("terraform message", message=message.get("@message"))

    async def poll(self, runs: Sequence[RunToPoll]) -> dict[str, RunStatus]:
        statuses: dict[str, RunStatus] = {}
        for item in runs:
            run_id = item.run.run_id
            if run_id is None:
                continue
            known = self._runs.get(run_id)
            if known is not None:
                statuses[item.environment] = known.status
                if known.status.state != "IN_PROGRESS":
                    self._runs.pop(run_id, None)
                continue
            statuses[item.environment] = await asyncio.to_thread(self._recover, run_id)
        return statuses

    def _recover(self, run_id: str) -> RunStatus:
        """A run this process did not start: the controller restarted while it ran."""
        data = _read_json(self._file(run_id))
        if data is None:
            return RunStatus("FAILED", "no record of the run: its outcome is unknown")
        if data.get("state") in ("SUCCEEDED", "FAILED"):
            return RunStatus(data["state"], str(data.get("detail", "")))
        pid = data.get("pid")
        if isinstance(pid, int) and _process_alive(pid, str(data.get("binary", "terraform"))):
            return RunStatus(
                "IN_PROGRESS", f"following terraform pid {pid} started before a restart"
            )
        return RunStatus("FAILED", "terraform ended while the controller was down; outcome unknown")

    async def cancel(self, run: RunToPoll) -> None:
        known = self._runs.get(run.run.run_id or "")
        if known is not None:
            self._interrupt(known)

    async def close(self, grace_seconds: float) -> None:
        """Interrupt running processes once and give them `grace_seconds`; a process still
        running after that goes on by itself, and the next controller follows it."""
        running = [r for r in self._runs.values() if r.task is not None and not r.task.done()]
        for run in running:
            self._interrupt(run)
        tasks = [r.task for r in running if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
