"""The reconcile loop: load the desired state, observe, decide, act, report; again every interval.

Environments are reconciled concurrently and isolated: a failure of one is logged, counted and
backed off without blocking or failing the others. A wake, `POST /reconcile` or a webhook
triggers a pass at once instead of waiting for the interval.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from controller import status_view
from controller.aws import AwsClients, NoRegion
from controller.clock import Clock, utc_iso
from controller.desired_state import DesiredState, Environment
from controller.desired_state_loader import Problem
from controller.durations import format_duration
from controller.environment_runtime import EnvironmentRuntime, Result
from controller.metrics import ControllerMetrics
from controller.settings import Settings
from controller.sources import DesiredStateSource, SourceUnavailable
from controller.state_store import (
    StateStore,
    StateStoreError,
    StoreConflict,
)
from reconcilers.cli_runner import CliRunner
from reconcilers.codebuild_runner import CodeBuildRunner
from reconcilers.idle import (
    IdleReconciler,
    IdleTarget,
    ObservedEnvironment,
    ServiceCount,
    publish_service_metrics,
)
from reconcilers.idle_decision import (
    IdleDecision,
    IdleObservation,
    decide,
)
from reconcilers.power import PolledRun, PowerReconciler, PowerTarget, with_polled_run
from reconcilers.power_decision import (
    PowerDecision,
    PowerObservation,
    decide_power,
)

log = structlog.get_logger("infra_controller")

BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_CAP = timedelta(minutes=15)
# on SIGTERM: the current pass gets this long to finish, then Terraform processes this long to
# stop (one SIGINT); all within the 10 s the contract allows
SHUTDOWN_GRACE_SECONDS = 5.0
RUNNER_STOP_GRACE_SECONDS = 3.0


def backoff_delay(failures: int, rng: random.Random) -> timedelta:
    """Capped exponential backoff with +-10 % jitter: 5s, 10s, 20s ... 15m."""
    if failures <= 0:
        return timedelta(0)
    base: timedelta = min(BACKOFF_BASE * 2 ** min(failures - 1, 20), BACKOFF_CAP)
    return base * rng.uniform(0.9, 1.1)


@dataclass
class PassReport:
    reconcile_id: str
    revision: str | None
    desired_state_valid: bool
    results: dict[str, Result] = field(default_factory=dict)
    decisions: dict[str, IdleDecision] = field(default_factory=dict)
    power_decisions: dict[str, PowerDecision] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(result == "error" for result in self.results.values())

    def summary(self, name: str) -> tuple[str, str]:
        """(action, reason) of an environment: the power action first, then the idle one."""
        return summarise(self.power_decisions.get(name), self.decisions.get(name))

    @property
    def pending(self) -> bool:
        return any(d.changes_aws for d in self.decisions.values()) or any(
            d.action != "none" for d in self.power_decisions.values()
        )


def summarise(power: PowerDecision | None, idle: IdleDecision | None) -> tuple[str, str]:
    # the power reason while Terraform is acting (or failed); the idle policy's otherwise
    if power is not None and (
        power.action != "none"
        or power.completed is not None
        or power.state in ("STARTING", "STOPPING", "ERROR")
    ):
        return power.action, power.reason
    if idle is not None:
        return idle.action, idle.reason
    if power is not None:
        return power.action, power.reason
    return "none", "not reconciled"


class Controller:
    def __init__(
        self,
        settings: Settings,
        source: DesiredStateSource,
        aws: AwsClients,
        store: StateStore,
        clock: Clock,
        metrics: ControllerMetrics | None = None,
        idle: IdleReconciler | None = None,
        power: PowerReconciler | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.aws = aws
        self.store = store
        self.clock = clock
        self.metrics = metrics or ControllerMetrics()
        self.idle = idle or IdleReconciler(aws)
        self.power = power or PowerReconciler(
            {"codebuild": CodeBuildRunner(aws), "cli": CliRunner(settings.runs_dir)}, store
        )
        self._managed: set[str] = set()
        self.rng = rng or random.Random()
        self.started_at = clock.now()
        self.desired: DesiredState | None = None
        self.revision: str | None = None  # the revision in force (last valid)
        self.attempted_revision: str | None = None
        self.desired_state_valid: bool | None = None
        self.problems: list[Problem] = []
        self.source_error: str | None = None
        self.source_failures = 0
        self.source_retry_at: datetime | None = None
        self.last_fetch_at: datetime | None = None
        self.environments: dict[str, EnvironmentRuntime] = {}
        self.last_pass_completed_at: datetime | None = None
        self.passes_completed = 0
        self._store_loaded = False
        self._pass_lock = asyncio.Lock()
        self._trigger = asyncio.Event()
        self._force_next = False

    # ---- triggers from the API ----

    def request_pass(self, force: bool = True) -> None:
        """Run a pass now (environments in backoff included when `force`)."""
        self._force_next = self._force_next or force
        self._trigger.set()

    def knows(self, name: str) -> bool:
        return self.desired is not None and name in self.desired.environments

    def request_wake(self, name: str) -> str | None:
        """Ask for a wake; returns why it is refused, or None when accepted."""
        if self.desired is None or name not in self.desired.environments:
            return "unknown environment"
        spec = self.desired.environments[name]
        if spec.service is None or spec.idle is None:
            return "the environment has no service with an idle policy"
        if spec.power == "off":
            return "the environment's power is off"
        if spec.suspend:
            return "the environment is suspended"
        self.environments.setdefault(name, EnvironmentRuntime()).wake_requested = True
        log.info("wake requested", environment=name, revision=self.revision)
        self.request_pass(force=True)
        return None

    # ---- desired state ----

    async def load_desired_state(self, force: bool = False) -> None:
        """Fetch the desired state; on any failure the last valid one stays in force."""
        now = self.clock.now()
        if not force and self.source_retry_at is not None and now < self.source_retry_at:
            return  # the source is backing off; the desired state in force still applies
        try:
            snapshot = await self.source.fetch()
        except SourceUnavailable as exc:
            self.source_failures += 1
            delay = backoff_delay(self.source_failures, self.rng)
            self.source_retry_at = now + delay
            self.source_error = str(exc)
            self.metrics.desired_state_fetches.labels("error").inc()
            log.error(
                "desired state source unavailable",
                error=self.source_error,
                failures=self.source_failures,
                retry_in=format_duration(delay),
                keeping=self.revision or "nothing: no valid desired state yet",
            )
            return
        self.metrics.desired_state_fetches.labels("success").inc()
        self.source_failures = 0
        self.source_retry_at = None
        self.source_error = None
        self.last_fetch_at = now
        previous_attempt = self.attempted_revision
        self.attempted_revision = snapshot.revision
        if snapshot.loaded is not None:
            if snapshot.revision != self.revision:
                log.info(
                    "desired state loaded",
                    source=self.source.description,
                    revision=snapshot.revision,
                    environments=sorted(snapshot.loaded.state.environments),
                )
                self.metrics.desired_state_info.clear()
                self.metrics.desired_state_info.labels(snapshot.revision).set(1)
            self.desired = snapshot.loaded.state
            self.revision = snapshot.revision
            self.desired_state_valid = True
            self.problems = []
        else:
            self.desired_state_valid = False
            self.problems = snapshot.problems
            if snapshot.revision != previous_attempt:
                # an invalid revision is reported once, not every interval
                for problem in snapshot.problems:
                    log.error(
                        "desired state invalid",
                        problem=str(problem),
                        attempted_revision=snapshot.revision,
                        keeping=self.revision or "nothing: no valid desired state yet",
                    )
        self.metrics.desired_state_valid.set(1 if self.desired_state_valid else 0)

    # ---- one pass ----

    async def reconcile_once(
        self, force: bool = False, act: bool = True, persist: bool = True
    ) -> PassReport:
        """One pass over every environment. `act=False` decides and logs only (plan, dry-run)."""
        async with self._pass_lock:
            reconcile_id = uuid.uuid4().hex[:12]
            with (
                structlog.contextvars.bound_contextvars(
                    reconcile_id=reconcile_id, environment=None, revision=self.revision
                ),
                self.metrics.reconcile_duration.labels("pass").time(),
            ):
                report = await self._pass(reconcile_id, force, act, persist)
            self.last_pass_completed_at = self.clock.now()
            self.passes_completed += 1
            if report.desired_state_valid and not report.failed:
                self.metrics.last_successful_reconcile.set(self.clock.now().timestamp())
            return report

    async def _pass(self, reconcile_id: str, force: bool, act: bool, persist: bool) -> PassReport:
        await self.load_desired_state(force=force)
        structlog.contextvars.bind_contextvars(revision=self.revision)
        report = PassReport(reconcile_id, self.revision, bool(self.desired_state_valid))
        if self.desired is None:
            return report
        if not self._store_loaded:
            await self._load_store()
        desired = self.desired
        self._forget_removed(desired)
        now = self.clock.now()
        dry_run = self.settings.dry_run or not act

        targets: list[IdleTarget] = []
        for name, spec in desired.environments.items():
            runtime = self.environments.setdefault(name, EnvironmentRuntime())
            if not force and runtime.retry_at is not None and now < runtime.retry_at:
                report.results[name] = "skipped"
                self.metrics.reconcile_total.labels(name, "idle", "skipped").inc()
                log.info(
                    "decision",
                    environment=name,
                    action="none",
                    reason=(
                        f"backing off after {runtime.failures} failure(s); retry in "
                        f"{format_duration(runtime.retry_at - now)}"
                    ),
                )
                continue
            try:
                region = self.aws.region(spec.region)
            except NoRegion as exc:
                self._record(name, runtime, None, "error", now, str(exc))
                report.results[name] = "error"
                continue
            targets.append(
                IdleTarget(name, spec, region, runtime.wakefulness, runtime.wake_requested)
            )

        deadline = (
            asyncio.get_running_loop().time() + self.settings.effective_pass_timeout.total_seconds()
        )
        observed: dict[str, ObservedEnvironment] = {}
        polled: dict[str, PolledRun] = {}
        observe_error = None
        power_targets = [
            PowerTarget(t.name, t.spec, t.region, self.environments[t.name].working_record())
            for t in targets
            if self.environments[t.name].power_record.run is not None
        ]
        try:
            async with asyncio.timeout_at(deadline):
                with self.metrics.reconcile_duration.labels("observe").time():
                    observed, polled = await asyncio.gather(
                        self.idle.observe(targets, now),
                        self.power.poll(power_targets, recover=not dry_run),
                    )
        except TimeoutError:
            observe_error = "observation timed out"
            log.error("observation timed out", timeout=str(self.settings.effective_pass_timeout))

        outcomes = await asyncio.gather(
            *(
                self._reconcile_environment(
                    t,
                    observed.get(t.name),
                    polled.get(t.name),
                    observe_error,
                    now,
                    deadline,
                    dry_run,
                    force,
                )
                for t in targets
            )
        )
        for target, (result, idle, power) in zip(targets, outcomes, strict=True):
            report.results[target.name] = result
            if idle is not None:
                report.decisions[target.name] = idle
            if power is not None:
                report.power_decisions[target.name] = power

        if act and not self.settings.dry_run:
            await self._publish_custom_metrics(targets, now)
        if persist:
            await self._save_store()
        return report

    async def _reconcile_environment(
        self,
        target: IdleTarget,
        observed: ObservedEnvironment | None,
        polled: PolledRun | None,
        observe_error: str | None,
        now: datetime,
        deadline: float,
        dry_run: bool,
        force: bool,
    ) -> tuple[Result, IdleDecision | None, PowerDecision | None]:
        name = target.name
        runtime = self.environments[name]
        with structlog.contextvars.bound_contextvars(environment=name):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._reconcile(
                        target, runtime, observed, polled, observe_error, now, dry_run, force
                    )
            except TimeoutError:
                self._record(name, runtime, None, "error", now, "timed out")
                return "error", None, None
            except StoreConflict as exc:
                log.warning(
                    "state store conflict: another controller acted; re-reading", error=str(exc)
                )
                self._store_loaded = False
                self._record(name, runtime, None, "error", now, str(exc))
                return "error", None, None
            except Exception as exc:  # one environment's failure never fails another
                log.exception("reconcile failed", error=str(exc))
                self._record(name, runtime, None, "error", now, str(exc))
                return "error", None, None

    async def _reconcile(
        self,
        target: IdleTarget,
        runtime: EnvironmentRuntime,
        observed: ObservedEnvironment | None,
        polled: PolledRun | None,
        observe_error: str | None,
        now: datetime,
        dry_run: bool,
        force: bool,
    ) -> tuple[Result, IdleDecision, PowerDecision]:
        spec = target.spec
        if observed is None:
            observation = IdleObservation(
                service=None,
                activity=None,
                wakefulness=runtime.wakefulness,
                wake_requested=runtime.wake_requested,
                error=observe_error,
            )
        else:
            observation = observed.observation
            runtime.endpoint = observed.endpoint or runtime.endpoint
        runtime.wakefulness = observation.wakefulness
        if observation.service is not None:
            runtime.service = observation.service
        self._track_last_request(runtime, observation)

        power = decide_power(
            spec,
            PowerObservation(
                record=with_polled_run(runtime.power_record, polled),
                run_status=polled.status if polled else None,
                poll_error=(polled.error if polled else None) or observe_error,
                service_exists=(
                    observation.service.exists
                    if spec.service is not None and observation.service is not None
                    else None
                ),
                service_error=observation.error,
            ),
            now,
            retry_now=force,
        )
        observation = replace(
            observation, power_state=power.state if spec.terraform is not None else None
        )
        idle = decide(spec, observation, now)
        action, reason = summarise(power, idle)
        log.info(
            "decision",
            action=action,
            reason=reason,
            power_state=power.state,
            power_action=power.action,
            power_reason=power.reason,
            idle_action=idle.action,
            idle_reason=idle.reason,
            observed_desired_count=(
                observation.service.desired_count if observation.service else None
            ),
            dry_run=dry_run,
        )
        if runtime.wake_requested and (
            idle.action == "scale_up" or (observation.service and observation.service.awake)
        ):
            runtime.wake_requested = False

        self._apply_power_decision(target.name, runtime, power, now)
        if power.action != "none" and not dry_run:
            await self._start_run(target, runtime, power, now)
        if idle.changes_aws and not dry_run:
            await self._act_idle(target, runtime, idle, now)

        runtime.last_decision = idle
        runtime.last_power_decision = power
        idle_result: Result = "error" if idle.unknown else "success"
        power_result: Result = "error" if power.unknown else "success"
        result: Result = "error" if "error" in (idle_result, power_result) else "success"
        unknown_reason = power.reason if power.unknown else idle.reason
        self._record(
            target.name,
            runtime,
            spec,
            result,
            now,
            unknown_reason if result == "error" else None,
            by_reconciler={"idle": idle_result, "power": power_result},
        )
        return result, idle, power

    def _apply_power_decision(
        self, name: str, runtime: EnvironmentRuntime, power: PowerDecision, now: datetime
    ) -> None:
        """Adopt the decision's record, and report a finished run and a state change."""
        completed = power.completed
        if completed is not None:
            outcome = "succeeded" if completed.succeeded else "failed"
            self.metrics.terraform_runs_total.labels(name, completed.operation, outcome).inc()
            self.metrics.terraform_run_duration.labels(completed.operation, outcome).observe(
                completed.duration_seconds
            )
            emit = log.info if completed.succeeded else log.error
            emit(
                "terraform run finished",
                operation=completed.operation,
                outcome=outcome,
                run_id=completed.run_id,
                detail=completed.detail,
                duration=format_duration(completed.duration_seconds),
            )
        previous = runtime.power
        if previous is not None and previous != power.state:
            log.info(
                "power state changed", previous=previous, state=power.state, reason=power.reason
            )
        runtime.power = power.state
        runtime.power_record = power.record

    async def _start_run(
        self, target: IdleTarget, runtime: EnvironmentRuntime, power: PowerDecision, now: datetime
    ) -> None:
        spec = target.spec.terraform
        assert spec is not None
        log.info(
            "aws change",
            action=power.action,
            reason=power.reason,
            operation=f"terraform {power.operation}",
            runner=spec.runner,
            target=spec.project or spec.workdir,
        )
        stored = await self.power.start(
            PowerTarget(target.name, target.spec, target.region, runtime.working_record()),
            power,
            now,
        )
        runtime.adopt(stored)
        run = stored.power.run
        if run is None:  # the runner refused to start it
            result = stored.power.last_result
            log.error(
                "terraform run could not start",
                operation=power.operation,
                error=result.detail if result else None,
            )
            self.metrics.terraform_runs_total.labels(
                target.name, power.operation or "", "not_started"
            ).inc()
            if runtime.power != "ERROR":
                log.info(
                    "power state changed",
                    previous=runtime.power,
                    state="ERROR",
                    reason=result.detail if result else "could not start",
                )
            runtime.power = "ERROR"
            return
        self.metrics.actions_total.labels(target.name, power.action).inc()
        runtime.last_action = {
            "action": power.action,
            "reason": power.reason,
            "run_id": run.run_id,
            "logs_url": run.logs_url,
            "at": utc_iso(now),
        }
        log.info(
            "terraform run started",
            operation=run.operation,
            run_id=run.run_id,
            logs_url=run.logs_url,
        )

    async def _act_idle(
        self, target: IdleTarget, runtime: EnvironmentRuntime, idle: IdleDecision, now: datetime
    ) -> None:
        spec = target.spec
        assert spec.service is not None
        log.info(
            "aws change",
            action=idle.action,
            reason=idle.reason,
            operation="ecs:UpdateService",
            cluster=spec.service.cluster,
            service=spec.service.name,
            desired_count=idle.desired_count,
        )
        with self.metrics.reconcile_duration.labels("idle_act").time():
            await self.idle.act(target, idle)
        self.metrics.actions_total.labels(target.name, idle.action).inc()
        runtime.wakefulness = runtime.wakefulness.after(idle, now)
        runtime.last_action = {
            "action": idle.action,
            "reason": idle.reason,
            "desired_count": idle.desired_count,
            "at": utc_iso(now),
        }
        if runtime.service is not None:
            runtime.service = replace(runtime.service, desired_count=idle.desired_count or 0)

    def _track_last_request(
        self, runtime: EnvironmentRuntime, observation: IdleObservation
    ) -> None:
        activity = observation.activity
        if activity is None or activity.requests is None:
            return
        seen = activity.last_request_end()
        candidates = [t for t in (runtime.last_request_at, seen) if t is not None]
        if candidates:
            runtime.last_request_at = max(candidates)
        else:
            runtime.last_request_at = activity.window_start

    def _record(
        self,
        name: str,
        runtime: EnvironmentRuntime,
        spec: Environment | None,
        result: Result,
        now: datetime,
        error: str | None,
        by_reconciler: dict[str, Result] | None = None,
    ) -> None:
        """Record an environment's result; `by_reconciler` splits it between idle and power."""
        for reconciler, outcome in (by_reconciler or {"idle": result, "power": result}).items():
            self.metrics.reconcile_total.labels(name, reconciler, outcome).inc()
        if runtime.last_result != result:
            runtime.result_changed_at = now
        runtime.last_result = result
        runtime.last_error = error
        runtime.last_update = now
        if result == "error":
            runtime.failures += 1
            delay = backoff_delay(runtime.failures, self.rng)
            runtime.retry_at = now + delay
            log.warning(
                "environment failed",
                error=error,
                failures=runtime.failures,
                retry_in=format_duration(delay),
                environment=name,
            )
        else:
            runtime.failures = 0
            runtime.retry_at = None
        if spec is None:
            return
        if runtime.power is not None:
            self.metrics.set_power_state(name, runtime.power)
        if runtime.service is not None and spec.service is not None:
            self.metrics.service_desired_count.labels(name).set(runtime.service.desired_count)
            self.metrics.service_running_count.labels(name).set(runtime.service.running_count)
            self.metrics.service_active.labels(name).set(1 if runtime.service.awake else 0)
        if runtime.last_request_at is not None:
            self.metrics.seconds_since_last_request.labels(name).set(
                max(0.0, (now - runtime.last_request_at).total_seconds())
            )

    def _forget_removed(self, desired: DesiredState) -> None:
        for name in list(self.environments):
            if name not in desired.environments:
                if self.environments[name].stored.version or name in self._managed:
                    log.warning(
                        "environment removed from the desired state: no longer managed, "
                        "left as it is",
                        environment=name,
                    )
                del self.environments[name]
                self._managed.discard(name)
                self.metrics.forget_environment(name)
        self._managed.update(desired.environments)

    async def _publish_custom_metrics(self, targets: list[IdleTarget], now: datetime) -> None:
        counts = [
            ServiceCount(
                t.region, t.spec.service.cluster, t.spec.service.name, runtime.service.desired_count
            )
            for t in targets
            if t.spec.service is not None
            and (runtime := self.environments[t.name]).service is not None
            and runtime.service.exists
        ]
        if not counts:
            return
        try:
            await publish_service_metrics(self.aws, self.settings.cloudwatch_namespace, counts, now)
        except Exception as exc:  # reporting must never fail a pass
            log.warning("publishing CloudWatch metrics failed", error=str(exc))

    async def _load_store(self) -> None:
        try:
            stored = await self.store.load()
        except StateStoreError as exc:
            log.error("state store unreadable; starting without memory", error=str(exc))
            stored = {}
        for name, record in stored.items():
            runtime = self.environments.setdefault(name, EnvironmentRuntime())
            runtime.adopt(record)
            if runtime.power is None and record.power.state is not None:
                runtime.power = record.power.state
        self._store_loaded = True

    async def _save_store(self) -> None:
        for name, runtime in self.environments.items():
            working = runtime.working_record()
            if working == runtime.stored:
                continue
            try:
                runtime.adopt(await self.store.put(name, working))
            except StoreConflict as exc:
                log.warning(
                    "state store conflict: another controller acted; re-reading",
                    environment=name,
                    error=str(exc),
                )
                self._store_loaded = False
            except StateStoreError as exc:
                log.error("state store write failed", environment=name, error=str(exc))

    # ---- the daemon ----

    def healthy(self) -> bool:
        """A pass completed within 3 intervals (or the controller started less than 3 ago)."""
        last = self.last_pass_completed_at or self.started_at
        return self.clock.now() - last <= 3 * self.settings.interval

    def ready(self) -> bool:
        return self.desired is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Pass, wait interval +-5 % (or a trigger), repeat, until `stop` is set."""
        log.info(
            "controller started",
            interval=format_duration(self.settings.interval),
            dry_run=self.settings.dry_run,
            source=self.source.description,
        )
        stop_wait = asyncio.create_task(stop.wait())
        watcher = asyncio.create_task(self._watch_source())
        try:
            while not stop.is_set():
                force, self._force_next = self._force_next, False
                self._trigger.clear()
                pass_task = asyncio.create_task(self.reconcile_once(force=force))
                await asyncio.wait({pass_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not pass_task.done():
                    # shutting down: let the current action finish, within the grace period
                    done, _ = await asyncio.wait({pass_task}, timeout=SHUTDOWN_GRACE_SECONDS)
                    if not done:
                        pass_task.cancel()
                        log.warning("pass cut short by shutdown")
                    await asyncio.gather(pass_task, return_exceptions=True)
                    break
                if exc := pass_task.exception():
                    log.error("pass failed", error=repr(exc))
                delay = self.settings.interval.total_seconds() * self.rng.uniform(0.95, 1.05)
                await self._wait(delay, stop_wait)
        finally:
            stop_wait.cancel()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await self.power.close(RUNNER_STOP_GRACE_SECONDS)
        log.info("controller stopped")

    async def _watch_source(self) -> None:
        def changed() -> None:
            log.info("desired state changed", source=self.source.description)
            self.request_pass(force=False)

        try:
            await self.source.watch(changed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # without a watcher the interval still picks changes up
            log.warning("watching the desired state stopped", error=str(exc))

    async def _wait(self, delay: float, stop_wait: asyncio.Task[Any]) -> None:
        sleeper = asyncio.create_task(self.clock.sleep(delay))
        trigger = asyncio.create_task(self._trigger.wait())
        try:
            await asyncio.wait({sleeper, trigger, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            trigger.cancel()

    # ---- reporting (rendered by controller.status_view) ----

    def environment_status(self, name: str) -> dict[str, Any]:
        return status_view.environment_status(self, name)

    def status(self) -> dict[str, Any]:
        return status_view.controller_status(self)
