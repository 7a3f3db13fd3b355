"""The reporter: everything the engine tells the outside world about a pass, in one place.

Prometheus metrics, the `decision` line of each environment, the `aws change` line before each
change, the lines of the events the policies produce, and the CloudWatch custom metrics. The
engine decides and acts; it never formats a log line or touches a metric itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import structlog

from controller.core.clock import Clock, SystemClock
from controller.core.cost import CostStep
from controller.core.durations import format_duration
from controller.core.events import StampedEvent
from controller.desired.tracker import DesiredStateView, Refresh
from controller.engine.cloudwatch import ServiceCount, ServiceMetricsPublisher
from controller.engine.event_log import EventLog
from controller.engine.metrics import ControllerMetrics
from controller.engine.overrides import PowerInForce
from controller.engine.passes import EnvironmentOutcome, summarise
from controller.engine.runtime import Result
from reconcilers.interface import ActOutcome, AttributeValue, Decision, EnvironmentFacts, Event

log = structlog.get_logger("infra_controller")
PASS_SUMMARY = "pass completed"  # every pass's line: its heartbeat (JSON logs only)


class Reporter:
    def __init__(
        self,
        metrics: ControllerMetrics,
        publisher: ServiceMetricsPublisher | None = None,
        *,
        clock: Clock | None = None,
        event_log: EventLog | None = None,
    ) -> None:
        self.metrics = metrics
        self._publisher = publisher
        self._store_problem: str | None = None
        self._clock = clock or SystemClock()
        self.event_log = event_log
        self._desired_valid: bool | None = None  # the latest desired state's validity
        # events are kept only by a controller that acts (not a follower's or a plan's pass)
        self.recording = True
        # the desired state's own events, told by one controller of a sharded fleet only
        self.tells_desired_state = True

    def record(
        self,
        environment: str | None,
        kind: str,
        reason: str,
        *,
        from_state: str | None = None,
        to_state: str | None = None,
        severity: str = "info",
        **attributes: AttributeValue,
    ) -> None:
        """Keep an event (stamped with the time and the pass it happens in)."""
        if self.event_log is None or not self.recording:
            return
        if environment is None and not self.tells_desired_state:
            return
        context = structlog.contextvars.get_contextvars()
        self.event_log.add(
            StampedEvent(
                time=self._clock.now(),
                environment=environment,
                kind=kind,
                reason=reason,
                from_state=from_state,
                to_state=to_state,
                revision=context.get("revision"),
                reconcile_id=context.get("reconcile_id"),
                severity=severity,
                attributes=attributes,
            )
        )

    # ---- the desired state ----

    def desired_state(self, refresh: Refresh, view: DesiredStateView) -> None:
        keeping = view.revision or "nothing: no valid desired state yet"
        if refresh.outcome == "unavailable":
            self.metrics.desired_state_fetches.labels("error").inc()
            log.error(
                "desired state source unavailable",
                error=refresh.error,
                failures=refresh.failures,
                retry_in=format_duration(refresh.retry_in or timedelta(0)),
                keeping=keeping,
            )
            return
        if refresh.outcome == "backing_off":
            return
        self.metrics.desired_state_fetches.labels("success").inc()
        if refresh.outcome == "loaded" and refresh.new:
            log.info(
                "desired state loaded",
                source=view.source,
                revision=refresh.revision,
                environments=sorted(view.environments),
            )
            self.metrics.desired_state_info.clear()
            self.metrics.desired_state_info.labels(refresh.revision).set(1)
        if refresh.outcome == "invalid" and refresh.new:
            # an invalid revision is reported once, not every interval
            for problem in refresh.problems:
                log.error(
                    "desired state invalid",
                    problem=str(problem),
                    attempted_revision=refresh.revision,
                    keeping=keeping,
                )
            self.record(
                None,
                "desired_state_invalid",
                "; ".join(str(p) for p in refresh.problems[:3]) or "invalid",
                severity="error",
                attempted_revision=refresh.revision,
                keeping=view.revision,
            )
        elif refresh.outcome == "loaded" and self._desired_valid is False:
            self.record(None, "desired_state_valid", f"revision {refresh.revision} is valid")
        if refresh.outcome in ("loaded", "invalid"):
            self._desired_valid = refresh.outcome == "loaded"
        self.metrics.desired_state_valid.set(1 if view.valid else 0)

    def timed(self, step: str) -> AbstractContextManager[None]:
        """Time a step of the pass in `infra_controller_reconcile_duration_seconds`."""
        timer: AbstractContextManager[None] = self.metrics.reconcile_duration.labels(step).time()
        return timer

    # ---- one environment's pass ----

    def skipped(
        self, name: str, reconcilers: Sequence[str], failures: int, retry_in: timedelta
    ) -> None:
        for reconciler in reconcilers:
            self.metrics.reconcile_total.labels(name, reconciler, "skipped").inc()
        log.info(
            "decision",
            environment=name,
            action="none",
            reason=f"backing off after {failures} failure(s); retry in {format_duration(retry_in)}",
        )

    def decided(
        self, decisions: Sequence[tuple[str, Decision]], facts: EnvironmentFacts, dry_run: bool
    ) -> None:
        action, reason = summarise(decisions)
        detail: dict[str, Any] = {}
        for reconciler, decision in decisions:
            if (decision.action, decision.reason) == (action, reason) or not decision.relevant:
                continue  # said once, above; or a policy that does not apply here
            detail[f"{reconciler}_action"] = decision.action
            detail[f"{reconciler}_reason"] = decision.reason
        log.info(
            "decision",
            action=action,
            reason=reason,
            power_state=facts.power_state,
            **detail,
            observed_desired_count=(
                facts.service.desired_count if facts.service and facts.service.exists else None
            ),
            dry_run=dry_run,
        )

    def changing(self, decision: Decision) -> None:
        """Logged before every change to AWS, with its reason."""
        log.info("aws change", action=decision.action, reason=decision.reason, **decision.change)

    def acted(self, name: str, decision: Decision, outcome: ActOutcome) -> None:
        if outcome.performed:
            self.metrics.actions_total.labels(name, decision.action).inc()

    def events(self, name: str, events: Sequence[Event]) -> None:
        for event in events:
            handler = _EVENT_HANDLERS.get(event.kind)
            if handler is not None:
                handler(self.metrics, name, event)
            self.record(
                name,
                event.kind,
                event.reason,
                from_state=event.from_state,
                to_state=event.to_state,
                severity=event.severity,
                **event.attributes,
            )

    def result(
        self,
        name: str,
        by_reconciler: dict[str, Result],
        error: str | None,
        failures: int,
        retry_in: timedelta | None,
    ) -> None:
        for reconciler, outcome in by_reconciler.items():
            self.metrics.reconcile_total.labels(name, reconciler, outcome).inc()
        if retry_in is not None:
            log.warning(
                "environment failed",
                error=error,
                failures=failures,
                retry_in=format_duration(retry_in),
                environment=name,
            )

    def facts(self, name: str, facts: EnvironmentFacts, now: datetime) -> None:
        # unknown in this pass: no state is 1 (rather than a stale one)
        self.metrics.set_power_state(name, facts.power_state)
        service = facts.service
        if service is None:  # unknown in this pass: no figure rather than a stale one
            self.metrics.forget_service(name)
        else:
            present = service.exists
            self.metrics.service_desired_count.labels(name).set(
                service.desired_count if present else 0
            )
            self.metrics.service_running_count.labels(name).set(
                service.running_count if present else 0
            )
            self.metrics.service_active.labels(name).set(1 if present and service.awake else 0)
        if facts.last_request_at is not None:
            self.metrics.seconds_since_last_request.labels(name).set(
                max(0.0, (now - facts.last_request_at).total_seconds())
            )

    def cost(self, name: str, step: CostStep) -> None:
        self.metrics.powered_on_seconds.labels(name).inc(step.powered_on_seconds)
        self.metrics.awake_seconds.labels(name).inc(step.awake_seconds)
        self.metrics.savings.labels(name, "power").inc(step.power_savings)
        self.metrics.savings.labels(name, "idle").inc(step.idle_savings)

    def suspension(self, name: str, by: str | None) -> None:
        self.metrics.set_suspended(name, by)

    def power_source(self, name: str, power: PowerInForce) -> None:
        self.metrics.set_power_source(name, power.source)
        expiry = power.override.expires_at if power.override else None
        self.metrics.set_override_expiry(name, expiry.timestamp() if expiry else None)

    def removed(self, name: str, was_managed: bool) -> None:
        if was_managed:
            log.warning(
                "environment removed from the desired state: no longer managed, left as it is",
                environment=name,
            )
        self.metrics.forget_environment(name)

    def state_store(self, problem: str | None) -> None:
        """A state store fault is logged when it appears or changes, not every pass."""
        self.metrics.state_store_ok.set(0 if problem else 1)
        if problem == self._store_problem:
            return
        if problem is not None:
            log.error("state store fault: nothing depending on it is done", problem=problem)
        else:
            log.info("state store works again")
        self._store_problem = problem

    # ---- the whole pass ----

    def pass_summary(self, outcomes: Mapping[str, EnvironmentOutcome], seconds: float) -> None:
        """The pass's one line, whatever changed (a decision line comes only when the decision
        changes): how many environments, their results, the actions decided, how long."""
        results = Counter(outcome.result for outcome in outcomes.values())
        actions = Counter(
            outcome.summary()[0] for outcome in outcomes.values() if outcome.result != "skipped"
        )
        log.info(
            PASS_SUMMARY,
            environments=len(outcomes),
            succeeded=results["success"],
            failed=results["error"],
            skipped=results["skipped"],
            actions={action: n for action, n in sorted(actions.items()) if action != "none"},
            seconds=round(seconds, 3),
        )

    def pass_completed(self, succeeded: bool, now: datetime) -> None:
        if succeeded:
            self.metrics.last_successful_reconcile.set(now.timestamp())

    async def publish_service_metrics(self, counts: Sequence[ServiceCount], now: datetime) -> None:
        if self._publisher is None or not counts:
            return
        try:
            await self._publisher.publish(counts, now)
        except Exception as exc:  # reporting must never fail a pass
            log.warning("publishing CloudWatch metrics failed", error=str(exc))


# ---- events: their log lines and the metrics counted from them ----


def _power_state_changed(metrics: ControllerMetrics, name: str, event: Event) -> None:
    log.info(
        "power state changed", previous=event.from_state, state=event.to_state, reason=event.reason
    )


def _run_started(metrics: ControllerMetrics, name: str, event: Event) -> None:
    a = event.attributes
    log.info(
        "terraform run started",
        operation=a["operation"],
        run_id=a["run_id"],
        logs_url=a["logs_url"],
    )


def _run_finished(metrics: ControllerMetrics, name: str, event: Event) -> None:
    a = event.attributes
    operation, outcome = str(a["operation"]), str(a["outcome"])
    duration = float(a["duration_seconds"] or 0.0)
    metrics.terraform_runs_total.labels(name, operation, outcome).inc()
    metrics.terraform_run_duration.labels(operation, outcome).observe(duration)
    emit = log.info if outcome == "succeeded" else log.error
    emit(
        "terraform run finished",
        operation=operation,
        outcome=outcome,
        run_id=a["run_id"],
        detail=event.reason,
        duration=format_duration(duration),
    )


def _run_not_started(metrics: ControllerMetrics, name: str, event: Event) -> None:
    operation = str(event.attributes["operation"])
    metrics.terraform_runs_total.labels(name, operation, "not_started").inc()
    log.error("terraform run could not start", operation=operation, error=event.reason)


def _run_unconfirmed(metrics: ControllerMetrics, name: str, event: Event) -> None:
    log.warning("terraform run start unconfirmed", reason=event.reason)


def _woken(metrics: ControllerMetrics, name: str, event: Event) -> None:
    metrics.wakes_total.labels(name, str(event.attributes.get("source") or "metric")).inc()


def _scaled_to_zero(metrics: ControllerMetrics, name: str, event: Event) -> None:
    lag = event.attributes.get("lag_seconds")
    if isinstance(lag, int | float):
        metrics.scale_to_zero_lag.labels(name).observe(float(lag))


def _wake_completed(metrics: ControllerMetrics, name: str, event: Event) -> None:
    duration = float(event.attributes.get("duration_seconds") or 0.0)
    metrics.wake_duration.labels(name).observe(duration)
    log.info(
        "wake completed",
        source=event.attributes.get("source"),
        duration=format_duration(duration),
        reason=event.reason,
    )


_EVENT_HANDLERS: dict[str, Callable[[ControllerMetrics, str, Event], None]] = {
    "woken": _woken,
    "scaled_to_zero": _scaled_to_zero,
    "wake_completed": _wake_completed,
    "run_unconfirmed": _run_unconfirmed,
    "power_state_changed": _power_state_changed,
    "run_started": _run_started,
    "run_succeeded": _run_finished,
    "run_failed": _run_finished,
    "run_not_started": _run_not_started,
}
