"""The pass engine: one pass over every environment of the desired state in force.

Observe (the observers' facts, then every reconciler's batched reads, concurrently), decide
(each environment's reconcilers in their declared order, each seeing the facts the previous
ones published), act (the decided changes, in the same order). Environments are reconciled
concurrently and isolated: a failure, an exception or a timeout in one is recorded and backed
off without touching the others. The engine knows no policy by name.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from controller.core.aws import NoRegion
from controller.core.clock import Clock
from controller.core.cost import account
from controller.core.desired_state import DesiredState, Environment
from controller.core.records import EnvironmentRecord
from controller.core.state_store import StateStoreError, StoreConflict
from controller.engine.cloudwatch import ServiceCount
from controller.engine.memory import StateMemory
from controller.engine.overrides import effective, override_ended, power_in_force, suspension
from controller.engine.passes import EnvironmentOutcome, PassRequest
from controller.engine.reporter import Reporter
from controller.engine.runtime import EnvironmentRuntime, Result
from reconcilers.interface import (
    Decision,
    EnvironmentContext,
    Observer,
    Reconciler,
    Unobserved,
)

log = structlog.get_logger("infra_controller")

AnyReconciler = Reconciler[Any, Any]
STORE_SHARE = 0.3  # of the pass timeout, for reading the state store


class NotLeading(RuntimeError):
    """A change asked of a controller that is not the leader."""


OBSERVE_SHARE = 0.6  # of the pass timeout, for the observers' and reconcilers' reads
Observations = dict[str, tuple[Mapping[str, Any], str]]  # reconciler -> (by name, why missing)


@dataclass(frozen=True)
class PassOptions:
    dry_run: bool  # decide and log, change nothing
    pass_timeout: timedelta
    persist: bool = True  # save the records (plan does not)


class PassEngine:
    def __init__(
        self,
        observers: Sequence[Observer],
        reconcilers: Sequence[AnyReconciler],
        memory: StateMemory,
        reporter: Reporter,
        clock: Clock,
        resolve_region: Callable[[str | None], str],
        rng: random.Random | None = None,
    ) -> None:
        self.observers = list(observers)
        # with leader election: whether this controller may change AWS now (checked per change)
        self.may_act: Callable[[], bool] = lambda: True
        self.reconcilers = list(reconcilers)
        self.memory = memory
        self.reporter = reporter
        self.clock = clock
        self._region = resolve_region
        self._rng = rng or random.Random()
        self.runtimes: dict[str, EnvironmentRuntime] = {}

    @property
    def reconciler_names(self) -> list[str]:
        return [r.name for r in self.reconcilers]

    def runtime(self, name: str) -> EnvironmentRuntime:
        return self.runtimes.setdefault(name, EnvironmentRuntime())

    async def close(self, grace_seconds: float) -> None:
        """Shutdown: every reconciler stops what it runs between passes."""
        for reconciler in self.reconcilers:
            await reconciler.close(grace_seconds)

    async def run(
        self, desired: DesiredState, request: PassRequest, options: PassOptions
    ) -> dict[str, EnvironmentOutcome]:
        now = self.clock.now()
        budget = options.pass_timeout.total_seconds()
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(budget * STORE_SHARE):
                await self.memory.ensure_loaded()
        except (StateStoreError, TimeoutError) as exc:
            # what was recorded (a run in flight) is unknown: nothing may be decided on it
            self.memory.note_unreadable(exc)
            self.reporter.state_store(self.memory.problem)
            error = f"state store unreadable: {self.memory.problem}"
            failed = {
                name: self._failed(name, self.runtime(name), now, error)
                for name in desired.environments
            }
            self.reporter.pass_summary(failed, asyncio.get_running_loop().time() - started)
            return failed
        self._forget_removed(desired)
        contexts, outcomes = self._contexts(desired, request, options.dry_run, now)
        # reading may take part of the pass, never all of it: deciding and acting keep theirs
        observed_by = started + budget * OBSERVE_SHARE
        deadline = started + budget
        with self.reporter.timed("observe"):
            contexts = await self._gather_facts(contexts, now, observed_by)
            observations = await self._observe(contexts, now, observed_by)
        results = await asyncio.gather(
            *(self._environment(c, observations, now, deadline, options) for c in contexts)
        )
        outcomes.update(zip((c.name for c in contexts), results, strict=True))
        if not options.dry_run:
            await self.reporter.publish_service_metrics(self._service_counts(contexts), now)
        self.reporter.state_store(self.memory.problem)
        self.reporter.pass_summary(outcomes, asyncio.get_running_loop().time() - started)
        return outcomes

    def _contexts(
        self, desired: DesiredState, request: PassRequest, dry_run: bool, now: datetime
    ) -> tuple[list[EnvironmentContext], dict[str, EnvironmentOutcome]]:
        """The environments due in this pass; the others' outcomes (backing off, no region)."""
        contexts: list[EnvironmentContext] = []
        outcomes: dict[str, EnvironmentOutcome] = {}
        for name, spec in desired.environments.items():
            runtime = self.runtimes.setdefault(name, EnvironmentRuntime())
            due = request.retries(name) or name in request.due_now or spec != runtime.spec
            if runtime.backing_off(now) and not due:
                assert runtime.retry_at is not None
                self.reporter.skipped(
                    name, self.reconciler_names, runtime.failures, runtime.retry_at - now
                )
                outcomes[name] = EnvironmentOutcome("skipped", facts=runtime.facts)
                continue
            runtime.spec = spec
            runtime.wakes_before_pass = runtime.wakes_requested  # asked before we observe
            unreadable = self.memory.unreadable(name)
            if unreadable is not None:  # what it recorded is unknown: decide nothing on it
                outcomes[name] = self._failed(name, runtime, now, unreadable)
                continue
            record = self._ended_overrides(name, spec, self.memory.record(name), now)
            in_force = suspension(spec, record)
            self.reporter.suspension(name, in_force.by if in_force else None)
            power = power_in_force(spec, record, now)
            self.reporter.power_source(name, power)
            try:
                region = self._region(spec.region)
            except NoRegion as exc:
                outcomes[name] = self._failed(name, runtime, now, str(exc))
                continue
            woken, runtime.woken_outside_pass = runtime.woken_outside_pass, None
            contexts.append(
                EnvironmentContext(
                    name=name,
                    woken_outside_pass=woken,
                    spec=effective(spec, record, now, power),  # overrides and schedule applied
                    power_why=power.why,
                    region=region,
                    record=record,
                    wake_requested=runtime.wake_pending,
                    retry_now=request.retries(name),
                    dry_run=dry_run,
                )
            )
        return contexts, outcomes

    async def _gather_facts(
        self, contexts: list[EnvironmentContext], now: datetime, deadline: float
    ) -> list[EnvironmentContext]:
        for observer in self.observers:
            try:
                async with asyncio.timeout_at(deadline):
                    facts = await observer.observe(contexts, now)
            except TimeoutError:
                log.error("observation timed out", observer=observer.name)
                facts = {c.name: observer.unobserved(c, "observation timed out") for c in contexts}
            except Exception as exc:  # unknown for these environments, never a reason to act
                log.exception("observation failed", observer=observer.name, error=str(exc))
                reason = f"observation failed: {exc}"
                facts = {c.name: observer.unobserved(c, reason) for c in contexts}
            contexts = [
                c if (new := facts.get(c.name, c.facts)) is c.facts else replace(c, facts=new)
                for c in contexts
            ]
        return contexts

    async def _observe(
        self, contexts: list[EnvironmentContext], now: datetime, deadline: float
    ) -> Observations:
        async def observe(reconciler: AnyReconciler) -> tuple[Mapping[str, Any], str]:
            try:
                async with asyncio.timeout_at(deadline):
                    return await reconciler.observe(contexts, now), "not observed"
            except TimeoutError:
                log.error("observation timed out", reconciler=reconciler.name)
                return {}, "observation timed out"
            except Exception as exc:  # unknown for these environments, never a reason to act
                log.exception("observation failed", reconciler=reconciler.name, error=str(exc))
                return {}, f"observation failed: {exc}"

        answers = await asyncio.gather(*(observe(r) for r in self.reconcilers))
        return {r.name: answer for r, answer in zip(self.reconcilers, answers, strict=True)}

    async def _environment(
        self,
        context: EnvironmentContext,
        observations: Observations,
        now: datetime,
        deadline: float,
        options: PassOptions,
    ) -> EnvironmentOutcome:
        runtime = self.runtimes[context.name]
        with structlog.contextvars.bound_contextvars(environment=context.name):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._reconcile(context, runtime, observations, now, options)
            except TimeoutError:
                return self._failed(context.name, runtime, now, "timed out")
            except StoreConflict as exc:
                log.warning("state store conflict: another controller acted; re-reading")
                return self._failed(context.name, runtime, now, str(exc))
            except StateStoreError as exc:  # reported once by the reporter, not per environment
                return self._failed(context.name, runtime, now, f"record not saved: {exc}")
            except Exception as exc:  # one environment's failure never fails another
                log.exception("reconcile failed", error=str(exc))
                return self._failed(context.name, runtime, now, str(exc))

    async def _reconcile(
        self,
        context: EnvironmentContext,
        runtime: EnvironmentRuntime,
        observations: Observations,
        now: datetime,
        options: PassOptions,
    ) -> EnvironmentOutcome:
        decisions: list[tuple[str, Decision]] = []
        for reconciler in self.reconcilers:
            found, missing = observations[reconciler.name]
            observation = found.get(context.name, Unobserved(missing))
            decision = reconciler.decide(context, observation, now)
            decisions.append((reconciler.name, decision))
            context = context.after(decision)
        self.reporter.decided(decisions, context.facts, options.dry_run)
        runtime.decisions = tuple(decisions)
        for reconciler, (_, decision) in zip(self.reconcilers, decisions, strict=True):
            self.reporter.events(context.name, decision.events)
            if decision.changes_aws and not options.dry_run:
                if not self.may_act():  # checked before every change: leadership can end
                    log.warning("not acting: no longer the leader", action=decision.action)
                    continue
                context = await self._act(reconciler, context, decision, runtime, now)
        # only once every change is made: a wake whose scale-up failed is still pending
        if any(d.satisfies_wake for _, d in decisions):
            runtime.wakes_satisfied = max(runtime.wakes_satisfied, runtime.wakes_before_pass)
        runtime.merge_facts(context.facts)
        if options.persist:
            context = self._account(context, now)
        self.memory.update(context.name, context.record)
        if options.persist:
            await self.memory.save(context.name)  # a record not saved fails the environment
        by_reconciler: dict[str, Result] = {
            name: "error" if decision.unknown else "success" for name, decision in decisions
        }
        error = next((d.reason for _, d in decisions if d.unknown), None)
        result: Result = "error" if error is not None else "success"
        self._note_result(context.name, runtime, by_reconciler, error, now)
        return EnvironmentOutcome(result, runtime.decisions, runtime.facts, error)

    async def _act(
        self,
        reconciler: AnyReconciler,
        context: EnvironmentContext,
        decision: Decision,
        runtime: EnvironmentRuntime,
        now: datetime,
    ) -> EnvironmentContext:
        self.reporter.changing(decision)
        with self.reporter.timed(f"{reconciler.name}_act"):
            outcome = await reconciler.act(context, decision, now)
        self.reporter.acted(context.name, decision, outcome)
        self.reporter.events(context.name, outcome.events)
        if outcome.performed and outcome.last_action is not None:
            runtime.last_action = outcome.last_action
        return context.after(outcome)

    def _account(self, context: EnvironmentContext, now: datetime) -> EnvironmentContext:
        """Time powered on and awake, and the levers' savings, up to this pass."""
        facts, spec = context.facts, context.spec
        state = facts.power_state
        powered_on = None if state in (None, "ERROR") else state != "STOPPED"
        service = facts.service
        awake = None if service is None else (service.exists and service.awake)
        hourly = spec.cost.hourly_when_on if spec.cost else None
        cost, step = account(
            context.record.cost, now, powered_on, awake, hourly, facts.hourly_when_awake
        )
        self.reporter.cost(context.name, step)
        return replace(context, record=replace(context.record, cost=cost))

    def _ended_overrides(
        self, name: str, spec: Environment, record: EnvironmentRecord, now: datetime
    ) -> EnvironmentRecord:
        """The record without a power override that no longer applies (saved with the pass)."""
        ended = override_ended(spec, record, now)
        if ended is None:
            return record
        log.info("power override ended", environment=name, reason=ended)
        self.reporter.record(name, "override_ended", ended)
        record = replace(record, overrides=replace(record.overrides, power=None))
        self.memory.update(name, record)
        return record

    async def act_outside_pass(
        self, name: str, spec: Environment, reconciler_name: str, decision: Decision
    ) -> None:
        """One change decided outside a pass (a request at the activator), made and reported
        as a pass makes it. Its record is not written: the next pass, which this change
        does not conflict with, observes the result and records it."""
        if not self.may_act():
            raise NotLeading("this controller is not the leader: another one acts")
        reconciler = next(r for r in self.reconcilers if r.name == reconciler_name)
        runtime = self.runtime(name)
        now = self.clock.now()
        context = EnvironmentContext(
            name=name,
            spec=spec,
            region=self._region(spec.region),
            record=self.memory.record(name),
            facts=runtime.facts,
        )
        with structlog.contextvars.bound_contextvars(environment=name, reconcile_id=None):
            self.reporter.decided(((reconciler_name, decision),), runtime.facts, False)
            after = await self._act(reconciler, context, decision, runtime, now)
        runtime.facts = after.facts
        runtime.woken_outside_pass = runtime.woken_outside_pass or now

    def _failed(
        self, name: str, runtime: EnvironmentRuntime, now: datetime, error: str
    ) -> EnvironmentOutcome:
        by_reconciler: dict[str, Result] = {r.name: "error" for r in self.reconcilers}
        self._note_result(name, runtime, by_reconciler, error, now)
        return EnvironmentOutcome("error", facts=runtime.facts, error=error)

    def _note_result(
        self,
        name: str,
        runtime: EnvironmentRuntime,
        by_reconciler: dict[str, Result],
        error: str | None,
        now: datetime,
    ) -> None:
        result: Result = "error" if "error" in by_reconciler.values() else "success"
        retry_in = runtime.note_result(result, error, now, self._rng)
        self.reporter.result(name, by_reconciler, error, runtime.failures, retry_in)
        self.reporter.facts(name, runtime.facts, now)

    def _forget_removed(self, desired: DesiredState) -> None:
        """An environment gone from the desired state is left as it is: never destroyed."""
        for name in sorted(set(self.runtimes) | self.memory.tracked()):
            if name not in desired.environments:
                managed = name in self.runtimes or self.memory.was_stored(name)
                self.reporter.removed(name, was_managed=managed)
                switched = self.memory.record(name).routes.switched
                if switched:  # left as it is, this too: say what a person must put back
                    log.error(
                        "environment removed while its routes are at the activator: switch "
                        "them back to its service (or put the environment back)",
                        environment=name,
                        routes=[e.rule_arn or e.listener_arn for e in switched],
                    )
                self.runtimes.pop(name, None)
                self.memory.forget(name)

    def _service_counts(self, contexts: Sequence[EnvironmentContext]) -> list[ServiceCount]:
        counts = []
        for context in contexts:
            service, spec = self.runtimes[context.name].facts.service, context.spec.service
            if spec is not None and service is not None and service.exists:
                counts.append(
                    ServiceCount(context.region, spec.cluster, spec.name, service.desired_count)
                )
        return counts
