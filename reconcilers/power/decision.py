"""The power state machine: STOPPED / STARTING / RUNNING / STOPPING / ERROR, decided purely.

`decide_power(spec, observed, now)` returns the action (start an apply or a destroy, or nothing),
the state to report, a human reason, and the environment's next power record. It never starts a
run while one is in flight, and starts nothing once the environment has converged.
`decide_in_context` adds what the engine keeps from it: the record, the power state published to
the policies that follow, the events of the pass and the condition shown in `/status`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from controller.core.backoff import TERRAFORM_RETRY
from controller.core.desired_state import Environment
from controller.core.durations import format_duration
from controller.core.records import (
    DURATION_HISTORY,
    Operation,
    PowerRecord,
    PowerState,
    RunResult,
)
from reconcilers.interface import Condition, Decision, EnvironmentContext, Event, suspended
from reconcilers.terraform.runner import RunStatus

PowerAction = Literal["none", "terraform_apply", "terraform_destroy"]
TRANSITIONAL: tuple[PowerState, ...] = ("STARTING", "STOPPING", "ERROR")


@dataclass(frozen=True)
class PowerObservation:
    record: PowerRecord
    run_status: RunStatus | None = None  # the in-flight run's status; None if none or unknown
    poll_error: str | None = None
    # whether the declared service exists; None when no service is declared or the read failed
    service_exists: bool | None = None
    service_error: str | None = None
    # no record, and the runner could not tell whether a run is in flight: nothing may start
    runs_unknown: str | None = None


@dataclass(frozen=True, kw_only=True)
class PowerDecision(Decision):
    action: PowerAction = "none"
    state: PowerState | None  # None: unknown (a failed read, and nothing recorded before)
    power_record: PowerRecord  # the record after this decision (before any new run starts)
    completed: RunResult | None = None  # a run observed finishing in this pass

    @property
    def operation(self) -> Operation | None:
        if self.action == "terraform_apply":
            return "apply"
        if self.action == "terraform_destroy":
            return "destroy"
        return None


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
    if succeeded:
        durations = dict(record.durations)
        past = durations.get(run.operation, ())[-(DURATION_HISTORY - 1) :]
        durations[run.operation] = (*past, result.duration_seconds)
        updated = replace(
            record, run=None, last_result=result, failures=0, retry_at=None, durations=durations
        )
        final: PowerState = "RUNNING" if run.operation == "apply" else "STOPPED"
        return _with_state(updated, final, now), result
    failures = record.failures + 1
    updated = replace(
        record,
        run=None,
        last_result=result,
        failures=failures,
        retry_at=now + TERRAFORM_RETRY.delay(failures),
    )
    return _with_state(updated, "ERROR", now), result


def report_only_state(spec: Environment, service_exists: bool | None) -> PowerState | None:
    """Without a terraform block, power is observed, never acted on: from the declared service
    when there is one (None while its state is unknown), else from the desired state."""
    if service_exists is not None:
        return "RUNNING" if service_exists else "STOPPED"
    if spec.service is not None:
        return None
    return "RUNNING" if spec.power == "on" else "STOPPED"


def _in_flight(spec: Environment, observed: PowerObservation, now: datetime) -> PowerDecision:
    """A run is in flight: follow it; nothing new starts before it is over."""
    record = observed.record
    run = record.run
    assert run is not None
    state = _running_state(run.operation)
    if observed.run_status is None:
        reason = f"{run.operation} run {run.run_id or '(starting)'}: status unknown"
        if observed.poll_error:
            reason += f" ({observed.poll_error})"
        return PowerDecision(
            state=state,
            reason=reason,
            power_record=_with_state(record, state, now),
            unknown=True,
            holds=True,
        )
    elapsed = now - run.started_at
    left = record.estimated_duration(run.operation) - elapsed
    reason = f"{run.operation} running for {format_duration(elapsed)}"
    reason += f", about {format_duration(left)} left" if left > timedelta(0) else ""
    wanted: Operation = "apply" if spec.power == "on" else "destroy"
    if wanted != run.operation:
        reason += f"; power is now {spec.power}: the {wanted} follows once it finishes"
    return PowerDecision(
        state=state, reason=reason, power_record=_with_state(record, state, now), holds=True
    )


def decide_power(
    spec: Environment, observed: PowerObservation, now: datetime, retry_now: bool = False
) -> PowerDecision:
    """`retry_now` (a `POST /reconcile`) retries a failed run without waiting for its backoff."""
    record = observed.record
    if record.run is not None:
        status = observed.run_status
        if status is None or status.state == "IN_PROGRESS":
            return _in_flight(spec, observed, now)
        record, completed = _finish(record, status, now)
        decision = _converge(spec, replace(observed, record=record), now, retry_now)
        outcome = "succeeded" if completed.succeeded else f"failed ({completed.detail})"
        return replace(
            decision,
            reason=f"{completed.operation} {outcome} after "
            f"{format_duration(completed.duration_seconds)}; {decision.reason}",
            completed=completed,
            holds=True,
        )
    return _converge(spec, observed, now, retry_now)


def _converge(
    spec: Environment, observed: PowerObservation, now: datetime, retry_now: bool
) -> PowerDecision:
    """No run in flight: start the run that brings the environment to its desired power."""
    record = observed.record

    def result(
        action: PowerAction,
        state: PowerState | None,
        reason: str,
        unknown: bool = False,
        guessed: bool = False,
    ) -> PowerDecision:
        # a guess is reported, never recorded: a recorded state decides later runs
        recorded = record if guessed or state is None else _with_state(record, state, now)
        return PowerDecision(
            action=action,
            state=state,
            reason=reason,
            power_record=recorded,
            unknown=unknown,
            holds=action != "none" or state in TRANSITIONAL,
            relevant=spec.terraform is not None,
        )

    observed_state = observed.service_exists is not None
    if spec.terraform is None:
        if spec.service is not None and not observed_state:  # the read failed: say so
            why = observed.service_error or "read failed"
            return result("none", None, f"service state unknown ({why}): power not known", True)
        state = report_only_state(spec, observed.service_exists)
        reason = "no terraform block: power is reported, not acted on"
        return result("none", state, reason, guessed=not observed_state)
    current = record.state
    if spec.suspend:
        state = current or report_only_state(spec, observed.service_exists)
        active = spec.model_copy(update={"suspend": False})
        reason = suspended(_converge(active, observed, now, retry_now))
        return result("none", state, reason, guessed=current is None)
    if observed.runs_unknown is not None:
        reason = f"no record, and {observed.runs_unknown}: no run started"
        return result("none", current, reason, unknown=True)
    declares_service = spec.service is not None
    if declares_service and not observed_state:
        # unknown is never a reason to act, nor to record a state that later runs rest on
        error = observed.service_error or "read failed"
        reason = f"service state unknown ({error}): no run started"
        return result("none", current, reason, unknown=True)

    operation: Operation = "apply" if spec.power == "on" else "destroy"
    converged_state: PowerState = "RUNNING" if operation == "apply" else "STOPPED"
    stack_exists = operation == "apply"  # what converged looks like from the service
    converged = current == converged_state or (
        current is None and observed.service_exists is stack_exists
    )
    if declares_service and bool(observed.service_exists) is not stack_exists:
        converged = False  # the stack was created or destroyed outside the controller
    if converged:
        return result(
            "none", converged_state, f"converged: power {spec.power} and {converged_state.lower()}"
        )

    last = record.last_result
    backing_off = (
        current == "ERROR"
        and last is not None
        and last.operation == operation
        and record.retry_at is not None
        and now < record.retry_at
    )
    if backing_off and not retry_now:
        assert last is not None and record.retry_at is not None
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
    reason = f"power {spec.power} and the environment is {was}"
    return result(action, _running_state(operation), reason)


def decide_in_context(
    context: EnvironmentContext, observed: PowerObservation, now: datetime
) -> PowerDecision:
    """The power policy applied to one environment of a pass, with what the engine keeps."""
    spec, facts = context.spec, context.facts
    decision = decide_power(spec, observed, now, retry_now=context.retry_now)
    if context.power_why is not None and spec.terraform is not None:
        # the power is not git's: the reason names where it comes from
        decision = replace(decision, reason=f"{context.power_why}; {decision.reason}")
    events: list[Event] = []
    if decision.completed is not None:
        events.append(_run_finished(decision.completed))
    previous = context.record.power.state
    if previous is not None and decision.state is not None and previous != decision.state:
        events.append(_state_changed(previous, decision.state, decision.reason))
    change = {}
    if decision.operation is not None and spec.terraform is not None:
        change = {
            "operation": f"terraform {decision.operation}",
            "runner": spec.terraform.runner,
            "target": spec.terraform.project or spec.terraform.workdir,
        }
    return replace(
        decision,
        record=replace(context.record, power=decision.power_record),
        facts=replace(facts, power_state=decision.state),
        events=tuple(events),
        conditions=(_condition(spec, decision),),
        change=change,
    )


def _run_finished(result: RunResult) -> Event:
    outcome = "succeeded" if result.succeeded else "failed"
    return Event(
        f"run_{outcome}",
        result.detail,
        severity="info" if result.succeeded else "error",
        attributes={
            "operation": result.operation,
            "outcome": outcome,
            "run_id": result.run_id,
            "duration_seconds": result.duration_seconds,
        },
    )


def _state_changed(previous: PowerState, state: PowerState, reason: str) -> Event:
    return Event("power_state_changed", reason, from_state=previous, to_state=state)


def _condition(spec: Environment, decision: PowerDecision) -> Condition:
    wanted: PowerState = "RUNNING" if spec.power == "on" else "STOPPED"
    converged = decision.state == wanted and decision.action == "none" and not decision.unknown
    state = decision.state.title() if decision.state else "Unknown"
    return Condition("PowerConverged", converged, state, decision.reason)
