"""Prometheus metrics of contract section 7, on a registry owned by one controller instance.

The series labelled by environment are `controller.engine.series` families: a thousand
environments make twenty thousand of them, too many for prometheus_client's own objects."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from controller.core.records import POWER_STATES
from controller.engine.overrides import POWER_SOURCES, SUSPENDED_BY
from controller.engine.series import EnvironmentCounter, EnvironmentGauge, EnvironmentHistogram

# no `_created` series beside each counter and histogram: a third of /metrics at a thousand
# environments, and nothing reads them (rate() and increase() do without)
disable_created_metrics()  # type: ignore[no-untyped-call]


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._one_hot: dict[tuple[str, str], str | None] = {}  # (gauge, environment) -> value
        self._define_pass_metrics(self.registry)
        self._define_desired_state_metrics(self.registry)
        self._define_environment_metrics(self.registry)
        self._define_change_metrics(self.registry)
        self._define_wake_metrics(self.registry)
        self._define_cost_metrics(self.registry)
        self.leader = Gauge(
            "infra_controller_leader",
            "1 while this controller acts (the leader, or the only controller), 0 on a follower.",
            registry=self.registry,
        )
        self.leader.set(1)
        self.notifications_total = Counter(
            "infra_controller_notifications",
            "Notifications by entry of `notifications` and outcome: sent, failed (an attempt, "
            "retried), rejected (4xx), misconfigured (no URL), dropped (after an hour, queue "
            "full or at shutdown).",
            ["name", "outcome"],
            registry=self.registry,
        )

    def _define_pass_metrics(self, r: CollectorRegistry) -> None:
        self.reconcile_total = EnvironmentCounter(
            "infra_controller_reconcile",
            "Reconciliations by environment, reconciler and result (success/error/skipped).",
            ["environment", "reconciler", "result"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "infra_controller_reconcile_duration_seconds",
            "Time spent reconciling, by reconciler (`pass` is a whole pass).",
            ["reconciler"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.last_successful_reconcile = Gauge(
            "infra_controller_last_successful_reconcile_timestamp_seconds",
            "Unix time of the end of the last pass in which no environment failed.",
            registry=r,
        )

    def _define_desired_state_metrics(self, r: CollectorRegistry) -> None:
        self.desired_state_valid = Gauge(
            "infra_controller_desired_state_valid",
            "1 when the latest desired state validated, 0 when it did not.",
            registry=r,
        )
        self.desired_state_info = Gauge(
            "infra_controller_desired_state_info",
            "1, labelled with the revision of the desired state in force.",
            ["revision"],
            registry=r,
        )
        self.desired_state_fetches = Counter(
            "infra_controller_desired_state_fetches",
            "Reads of the desired-state source (file or git) by outcome (success/error).",
            ["outcome"],
            registry=r,
        )

        self.state_store_ok = Gauge(
            "infra_controller_state_store_ok",
            "1 while the state store reads and writes, 0 while it is at fault (see /readyz).",
            registry=r,
        )

    def _define_environment_metrics(self, r: CollectorRegistry) -> None:
        self.power_state = EnvironmentGauge(
            "infra_controller_power_state",
            "1 for the environment's current power state, 0 for the others.",
            ["environment", "state"],
            registry=r,
        )
        self.service_desired_count = EnvironmentGauge(
            "infra_controller_service_desired_count",
            "The ECS service's desiredCount as last observed.",
            ["environment"],
            registry=r,
        )
        self.service_running_count = EnvironmentGauge(
            "infra_controller_service_running_count",
            "The ECS service's runningCount as last observed.",
            ["environment"],
            registry=r,
        )
        self.service_active = EnvironmentGauge(
            "infra_controller_service_active",
            "1 when the service is awake (desiredCount > 0), 0 when scaled to zero.",
            ["environment"],
            registry=r,
        )
        self.seconds_since_last_request = EnvironmentGauge(
            "infra_controller_seconds_since_last_request",
            "Seconds since the end of the last minute with an ALB request (a lower bound when "
            "no request was seen since the controller started).",
            ["environment"],
            registry=r,
        )

        self.power_desired = EnvironmentGauge(
            "infra_controller_power_desired",
            "1 for where the environment's power in force comes from (git, schedule, override, "
            "suspend), 0 for the others.",
            ["environment", "source"],
            registry=r,
        )
        self.override_expiry = EnvironmentGauge(
            "infra_controller_override_expiry_timestamp_seconds",
            "Unix time the environment's power override expires (no series without one).",
            ["environment"],
            registry=r,
        )
        self.suspended = EnvironmentGauge(
            "infra_controller_suspended",
            "1 while the environment is suspended (observed, never acted on), 0 otherwise; "
            "`by` is desired_state (suspend: true) or api (infra-controller suspend).",
            ["environment", "by"],
            registry=r,
        )

    def _define_change_metrics(self, r: CollectorRegistry) -> None:
        self.actions_total = EnvironmentCounter(
            "infra_controller_actions",
            "Changes made to AWS, by environment and action.",
            ["environment", "action"],
            registry=r,
        )
        self.terraform_runs_total = EnvironmentCounter(
            "infra_controller_terraform_runs",
            "Terraform runs by environment, operation and outcome.",
            ["environment", "operation", "outcome"],
            registry=r,
        )
        self.terraform_run_duration = Histogram(
            "infra_controller_terraform_run_duration_seconds",
            "Duration of finished Terraform runs, by operation and outcome.",
            ["operation", "outcome"],
            buckets=(30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200),
            registry=r,
        )
        self.aws_api_calls_total = Counter(
            "infra_controller_aws_api_calls",
            "AWS API calls by service, operation and outcome (success/throttled/error).",
            ["service", "operation", "outcome"],
            registry=r,
        )

    def _define_wake_metrics(self, r: CollectorRegistry) -> None:
        self.wakes_total = EnvironmentCounter(
            "infra_controller_wakes",
            "Services woken, by environment and source (activator, metric, api, schedule).",
            ["environment", "source"],
            registry=r,
        )
        self.scale_to_zero_lag = EnvironmentHistogram(
            "infra_controller_scale_to_zero_lag_seconds",
            "From a service's last request (as far as the metrics tell) to its scale to zero.",
            ["environment"],
            buckets=(60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400),
            registry=r,
        )
        self.wake_duration = EnvironmentHistogram(
            "infra_controller_wake_duration_seconds",
            "From a wake's signal to a running task behind a healthy target.",
            ["environment"],
            buckets=(5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
            registry=r,
        )

    def _define_cost_metrics(self, r: CollectorRegistry) -> None:
        self.powered_on_seconds = EnvironmentCounter(
            "infra_controller_powered_on_seconds",
            "Time the environment was powered on (STARTING, RUNNING, STOPPING), as observed.",
            ["environment"],
            registry=r,
        )
        self.awake_seconds = EnvironmentCounter(
            "infra_controller_service_awake_seconds",
            "Time the environment's service was awake (desiredCount above 0), as observed.",
            ["environment"],
            registry=r,
        )
        self.savings = EnvironmentCounter(
            "infra_controller_estimated_savings_dollars",
            "Estimated USD saved, by lever: power (time STOPPED at cost.hourly_when_on), idle "
            "(time at zero at the Fargate price of the service's tasks).",
            ["environment", "lever"],
            registry=r,
        )

    def count_notification(self, name: str, outcome: str) -> None:
        self.notifications_total.labels(name, outcome).inc()

    def count_aws_call(self, service: str, operation: str, outcome: str) -> None:
        self.aws_api_calls_total.labels(service, operation, outcome).inc()

    def _unchanged(self, gauge: str, environment: str, value: str | None) -> bool:
        """Whether a one-hot gauge of `environment` already says `value` (its series are then
        left as they are: a thousand environments, a dozen series each, every pass)."""
        key = (gauge, environment)
        if key in self._one_hot and self._one_hot[key] == value:
            return True
        self._one_hot[key] = value
        return False

    def set_power_state(self, environment: str, state: str | None) -> None:
        if self._unchanged("power_state", environment, state):
            return
        for candidate in POWER_STATES:
            self.power_state.labels(environment, candidate).set(1 if candidate == state else 0)

    def set_power_source(self, environment: str, source: str) -> None:
        if self._unchanged("power_desired", environment, source):
            return
        for candidate in POWER_SOURCES:
            self.power_desired.labels(environment, candidate).set(1 if candidate == source else 0)

    def set_override_expiry(self, environment: str, timestamp: float | None) -> None:
        if self._unchanged("override_expiry", environment, str(timestamp)):
            return
        if timestamp is None:
            with contextlib.suppress(KeyError):
                self.override_expiry.remove(environment)
        else:
            self.override_expiry.labels(environment).set(timestamp)

    def set_suspended(self, environment: str, by: str | None) -> None:
        if self._unchanged("suspended", environment, by):
            return
        for candidate in SUSPENDED_BY:
            self.suspended.labels(environment, candidate).set(1 if candidate == by else 0)

    def forget_service(self, environment: str) -> None:
        """Drop an environment's service series (its state is unknown)."""
        for gauge in (self.service_desired_count, self.service_running_count, self.service_active):
            with contextlib.suppress(KeyError):
                gauge.remove(environment)

    def forget_environment(self, environment: str) -> None:
        """Drop the per-environment series of an environment that left the desired state."""
        for gauge in (
            self.service_desired_count,
            self.service_running_count,
            self.service_active,
            self.seconds_since_last_request,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(environment)
        for state in POWER_STATES:
            with contextlib.suppress(KeyError):
                self.power_state.remove(environment, state)
        for by in SUSPENDED_BY:
            with contextlib.suppress(KeyError):
                self.suspended.remove(environment, by)
        for source in POWER_SOURCES:
            with contextlib.suppress(KeyError):
                self.power_desired.remove(environment, source)
        for one_hot in ("power_state", "power_desired", "suspended"):
            self._one_hot.pop((one_hot, environment), None)
        self.set_override_expiry(environment, None)
        self._one_hot.pop(("override_expiry", environment), None)
