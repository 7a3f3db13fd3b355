"""The power state machine: STOPPED / STARTING / RUNNING / STOPPING / ERROR, decided purely.

`decide_power(spec, observed, now)` returns the action (start an apply or a destroy, or nothing),
the state to report, a human reason, and the environment's next power record. It never starts a
run while one is in flight, and starts nothing once the environment has converged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from statistics import median
from typing import Literal

from controller.desired_state import Environment
from controller.durations import format_duration

PowerState = Literal["STOPPED", "STARTING", "RUNNING", "STOPPING", "ERROR"]
Operation = Literal["apply", "destroy"]
PowerAction = Literal["none", "terraform_apply", "terraform_destroy"]
RunState = Literal["IN_PROGRESS", "SUCCEEDED", "FAILED"]

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=1)
# the earlier infrastructure manager's figures, used until the environment has run history
DEFAULT_DURATIONS = {"apply": timedelta(minutes=15), "destroy": timedelta(minutes=10)}
HISTORY = 5


@dataclass(frozen=True)
class RunInfo:
    """A Terraform run recorded before it starts (so a restart finds it), then its id."""

    runner: str
    operation: Operation
    token: str  # idempotency token: a repeated start after a crash finds the same run
    started_at: datetime
    run_id: str | None = None  # None: the start was recorded but not confirmed
    logs_url: str | None = None


@dataclass(frozen=True)
class RunResult:
    operation: Operation
    succeeded: bool
    finished_at: datetime
    duration_seconds: float
    detail: str
    run_id: str | None = None


@dataclass(frozen=True)
class PowerRecord:
    """What the controller keeps of an environment's power across passes and restarts."""

    state: PowerState | None = None
    run: RunInfo | None = None
    last_result: RunResult | None = None
    failures: int = 0
    retry_at: datetime | None = None
    durations: dict[str, tuple[float, ...]] = field(default_factory=dict)
    changed_at: datetime | None = None


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    detail: str = ""


@dataclass(frozen=True)
class PowerObservation:
    record: PowerRecord
    run_status: RunStatus | None = None  # the in-flight run's status; None if none or unknown
    poll_error: str | None = None
    # whether the declared service exists; None when no service is declared or the read failed
    service_exists: bool | None = None
    service_error: str | None = None


@dataclass(frozen=True)
class PowerDecision:
    action: PowerAction
    state: PowerState
    reason: str
    record: PowerRecord  # the record after this decision (before any new run starts)
    completed: RunResult | None = None  # a run observed finishing in this pass
    unknown: bool = False

    @property
    def operation(self) -> Operation | None:
        if self.action == "terraform_apply":
            return "apply"
        if self.action == "terraform_destroy":
            return "destroy"
        return None


def retry_delay(failures: int) -> timedelta:
    """1m, 2m, 4m ... capped at 1h: a failing Terraform run is never retried in a tight loop."""
    delay: timedelta = RETRY_BASE * 2 ** max(0, min(failures - 1, 10))
    return min(delay, RETRY_CAP)


def estimated_duration(record: PowerRecord, operation: Operation) -> timedelta:
    past = record.durations.get(operation)
    return timedelta(seconds=float(median(past))) if past else DEFAULT_DURATIONS[operation]


def _running_state(operation: Operation) -> PowerState:
    return "STARTING" if operation == "apply" else "STOPPING"


def _with_state(record: PowerRecord, state: PowerState, now: datetime) -> PowerRecord:
    if record.state == state:
        return record
    return replace(record, state=state, changed_at=now)


def _finish(record: PowerRecord, status: RunStatus, now: datetime) -> tuple[PowerRecord, RunResult]:
    run = record.run
    assert run is not None
    succeeded = status.state == "SUCCEEDED"
    result = RunResult(
        operation=run.operation,
        succeeded=succeeded,
        finished_at=now,
        duration_seconds=max(0.0, (now - run.started_at).total_seconds()),
        detail=status.detail,
        run_id=run.run_id,
    )
    durations = dict(record.durations)
    if succeeded:
        durations[run.operation] = (
            *durations.get(run.operation, ())[-(HISTORY - 1) :],
            result.duration_seconds,
        )
        updated = replace(
            record, run=None, last_result=result, failures=0, retry_at=None, durations=durations
        )
        return _with_state(
            updated, "RUNNING" if run.operation == "apply" else "STOPPED", now
        ), result
    failures = record.failures + 1
    updated = replace(
        record,
        run=None,
        last_result=result,
        failures=failures,
        retry_at=now + retry_delay(failures),
    )
    return _with_state(updated, "ERROR", now), result


def report_only_state(spec: Environment, service_exists: bool | None) -> PowerState:
    """Without a terraform block, power is observed, never acted on."""
    if service_exists is not None:
        return "RUNNING" if service_exists else "STOPPED"
    return "RUNNING" if spec.power == "on" else "STOPPED"


def decide_power(
    spec: Environment, observed: PowerObservation, now: datetime, retry_now: bool = False
) -> PowerDecision:
    """`retry_now` (a `POST /reconcile`) retries a failed run without waiting for its backoff."""
    record = observed.record
    completed: RunResult | None = None

    if record.run is not None:
        run = record.run
        status = observed.run_status
        if status is None:
            reason = f"{run.operation} run {run.run_id or '(starting)'}: status unknown"
            if observed.poll_error:
                reason += f" ({observed.poll_error})"
            state = _running_state(run.operation)
            return PowerDecision(
                "none", state, reason, _with_state(record, state, now), unknown=True
            )
        if status.state == "IN_PROGRESS":
            elapsed = now - run.started_at
            left = estimated_duration(record, run.operation) - elapsed
            reason = f"{run.operation} running for {format_duration(elapsed)}"
            reason += f", about {format_duration(left)} left" if left > timedelta(0) else ""
            wanted: Operation = "apply" if spec.power == "on" else "destroy"
            if wanted != run.operation:
                reason += f"; power is now {spec.power}: the {wanted} follows once it finishes"
            state = _running_state(run.operation)
            return PowerDecision("none", state, reason, _with_state(record, state, now))
        record, completed = _finish(record, status, now)

    def result(
        action: PowerAction, state: PowerState, reason: str, unknown: bool = False
    ) -> PowerDecision:
        if completed is not None:
            outcome = "succeeded" if completed.succeeded else f"failed ({completed.detail})"
            reason = (
                f"{completed.operation} {outcome} after "
                f"{format_duration(completed.duration_seconds)}; {reason}"
            )
        return PowerDecision(
            action, state, reason, _with_state(record, state, now), completed, unknown
        )

    if spec.terraform is None:
        state = report_only_state(spec, observed.service_exists)
        return result("none", state, "no terraform block: power is reported, not acted on")
    current: PowerState | None = record.state
    if spec.suspend:
        return result(
            "none",
            current or report_only_state(spec, observed.service_exists),
            "suspended: observing only",
        )

    declares_service = spec.service is not None
    if declares_service and observed.service_exists is None:
        return result(
            "none",
            current or "ERROR" if current == "ERROR" else (current or "STOPPED"),
            f"service state unknown ({observed.service_error or 'read failed'}): no run started",
            unknown=True,
        )

    operation: Operation = "apply" if spec.power == "on" else "destroy"
    if operation == "apply":
        converged = current == "RUNNING" or (current is None and observed.service_exists is True)
        if declares_service and not observed.service_exists:
            converged = False  # the stack is gone (destroyed outside the controller): apply again
        if converged:
            return result("none", "RUNNING", "converged: power on and running")
    else:
        converged = current == "STOPPED" or (current is None and observed.service_exists is False)
        if declares_service and observed.service_exists:
            converged = False
        if converged:
            return result("none", "STOPPED", "converged: power off and stopped")

    last = record.last_result
    if (
        current == "ERROR"
        and last is not None
        and last.operation == operation
        and record.retry_at is not None
        and now < record.retry_at
        and not retry_now
    ):
        return result(
            "none",
            "ERROR",
            f"last {operation} failed ({last.detail}); retry in "
            f"{format_duration(record.retry_at - now)} (failure {record.failures})",
        )
    was = current or (
        "unknown" if not declares_service else ("RUNNING" if observed.service_exists else "STOPPED")
    )
    action: PowerAction = "terraform_apply" if operation == "apply" else "terraform_destroy"
    return result(
        action, _running_state(operation), f"power {spec.power} and the environment is {was}"
    )
