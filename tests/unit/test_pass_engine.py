"""The pass engine with small in-memory policies: the order reconcilers decide in, the facts
they pass on, isolation of environments, backoff and what may cut it short, wakes, dry runs.

The policies here are scripted stand-ins; the engine, the state memory (a real file store),
the reporter and its metrics are the product's own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from controller.core.clock import ManualClock
from controller.core.desired_state import DesiredState
from controller.core.records import IdleRecord
from controller.core.state_store import FileStateStore
from controller.engine.memory import StateMemory
from controller.engine.metrics import ControllerMetrics
from controller.engine.pass_engine import PassEngine, PassOptions
from controller.engine.passes import EnvironmentOutcome, PassRequest, summarise
from controller.engine.reporter import Reporter
from reconcilers.interface import (
    ActOutcome,
    Decision,
    EnvironmentContext,
    EnvironmentFacts,
    Observer,
    Unobserved,
)

OPTIONS = PassOptions(dry_run=False, pass_timeout=timedelta(seconds=10))


@dataclass
class Scripted:
    """A policy whose observation and decision are set by the test; it records what it saw."""

    name: str
    action: str = "none"
    unknown: bool = False
    satisfies_wake: bool = False
    fail_act_for: set[str] = field(default_factory=set)
    fail_observe: bool = False
    omit: set[str] = field(default_factory=set)  # environments left out of the observation
    during_observe: Callable[[], None] | None = None
    remember: bool = False  # keep the time of the decision in the persisted record
    seen: list[tuple[str, object, EnvironmentContext]] = field(default_factory=list)
    acted: list[str] = field(default_factory=list)

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, str]:
        if self.during_observe is not None:
            self.during_observe()
        if self.fail_observe:
            raise RuntimeError("garbage answer")
        return {c.name: f"{self.name}-observed" for c in contexts if c.name not in self.omit}

    def decide(
        self, context: EnvironmentContext, observation: str | Unobserved, now: datetime
    ) -> Decision:
        self.seen.append((context.name, observation, context))
        unknown = self.unknown or isinstance(observation, Unobserved)
        record = context.record
        if self.remember:
            record = replace(record, idle=IdleRecord(awake_since=now))
        return Decision(
            record=record,
            action="none" if unknown else self.action,
            reason=f"{self.name} decided",
            unknown=unknown,
            facts=replace(context.facts, power_state="RUNNING"),
            satisfies_wake=self.satisfies_wake,
        )

    async def act(
        self, context: EnvironmentContext, decision: Decision, now: datetime
    ) -> ActOutcome:
        if context.name in self.fail_act_for:
            raise RuntimeError(f"{context.name}: act failed")
        self.acted.append(context.name)
        return ActOutcome(last_action={"action": decision.action})

    async def close(self, grace_seconds: float) -> None:
        pass


def desired(*names: str, region: str = "eu-west-3") -> DesiredState:
    return DesiredState.model_validate(
        {"version": 1, "environments": {n: {"power": "on", "region": region} for n in names}}
    )


@dataclass
class Rig:
    engine: PassEngine
    clock: ManualClock
    metrics: ControllerMetrics

    async def run(
        self,
        state: DesiredState,
        request: PassRequest | None = None,
        options: PassOptions = OPTIONS,
    ) -> dict[str, EnvironmentOutcome]:
        return await self.engine.run(state, request or PassRequest(), options)

    def reconciles(self, environment: str, reconciler: str, result: str) -> float:
        labels = {"environment": environment, "reconciler": reconciler, "result": result}
        value = self.metrics.registry.get_sample_value("infra_controller_reconcile_total", labels)
        return value or 0.0


@dataclass
class FailingObserver:
    """An observer whose reads blow up (a garbage answer the AWS layer let through)."""

    name: str = "broken-observer"

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, EnvironmentFacts]:
        raise KeyError("serviceName")

    def unobserved(self, context: EnvironmentContext, reason: str) -> EnvironmentFacts:
        return replace(context.facts, service_error=reason)


def rig(
    tmp_path: Path,
    *reconcilers: Scripted,
    observers: Sequence[Observer] = (),
) -> Rig:
    clock = ManualClock()
    metrics = ControllerMetrics()
    engine = PassEngine(
        observers=observers,
        reconcilers=list(reconcilers),
        memory=StateMemory(FileStateStore(str(tmp_path / "state.json"))),
        reporter=Reporter(metrics),
        clock=clock,
        resolve_region=lambda region: region or "eu-west-3",
    )
    return Rig(engine, clock, metrics)


async def test_reconcilers_decide_in_declared_order_and_see_the_facts_before_them(
    tmp_path: Path,
) -> None:
    first, second = Scripted("first"), Scripted("second")
    outcomes = await rig(tmp_path, first, second).run(desired("a"))
    assert [name for name, _ in outcomes["a"].decisions] == ["first", "second"]
    (_, observed, before), (_, _, after) = first.seen[0], second.seen[0]
    assert observed == "first-observed"
    assert before.facts.power_state is None
    assert after.facts.power_state == "RUNNING"  # published by the first decision


async def test_an_environment_left_out_of_an_observation_is_unobserved_and_fails(
    tmp_path: Path,
) -> None:
    policy = Scripted("p", action="act", omit={"b"})
    r = rig(tmp_path, policy)
    outcomes = await r.run(desired("a", "b"))
    assert outcomes["a"].result == "success"
    assert outcomes["b"].result == "error"
    assert isinstance(policy.seen[1][1], Unobserved)
    assert policy.acted == ["a"]  # unknown is never a reason to act
    assert r.reconciles("b", "p", "error") == 1


async def test_a_failing_observation_fails_only_that_policy_and_never_acts(tmp_path: Path) -> None:
    broken, fine = Scripted("broken", action="act", fail_observe=True), Scripted("fine")
    outcomes = await rig(tmp_path, broken, fine).run(desired("a"))
    assert outcomes["a"].result == "error"
    assert broken.acted == []
    observation = broken.seen[0][1]
    assert isinstance(observation, Unobserved)
    assert observation.reason == "observation failed: garbage answer"
    assert [name for name, _ in outcomes["a"].decisions] == ["broken", "fine"]


async def test_an_exception_in_one_environment_does_not_touch_the_others(tmp_path: Path) -> None:
    policy = Scripted("p", action="act", fail_act_for={"b"})
    outcomes = await rig(tmp_path, policy).run(desired("a", "b", "c"))
    assert {n: o.result for n, o in outcomes.items()} == {
        "a": "success",
        "b": "error",
        "c": "success",
    }
    assert sorted(policy.acted) == ["a", "c"]


async def test_a_failed_environment_backs_off_and_only_a_wake_a_retry_or_a_new_spec_cut_it_short(
    tmp_path: Path,
) -> None:
    policy = Scripted("p", unknown=True)
    r = rig(tmp_path, policy)
    state = desired("a")
    assert (await r.run(state))["a"].result == "error"
    assert (await r.run(state))["a"].result == "skipped"
    assert (await r.run(state, PassRequest(fetch_now=True)))["a"].result == "skipped"  # a push
    assert (await r.run(state, PassRequest(due_now=frozenset({"a"}))))["a"].result == "error"
    assert (await r.run(state, PassRequest(retry=frozenset({"a"}))))["a"].result == "error"
    assert (await r.run(desired("a", region="eu-west-1")))["a"].result == "error"  # a new spec
    assert (await r.run(desired("a", region="eu-west-1")))["a"].result == "skipped"
    assert r.reconciles("a", "p", "skipped") == 3


async def test_only_a_retry_request_lets_a_policy_ignore_its_own_backoff(tmp_path: Path) -> None:
    policy = Scripted("p")
    r = rig(tmp_path, policy)
    for request in (
        PassRequest(),
        PassRequest(fetch_now=True),
        PassRequest(due_now=frozenset({"a", "b"})),
        PassRequest(retry=frozenset({"b"})),
        PassRequest(retry=frozenset({"a"})),
        PassRequest(retry_all=True),
    ):
        await r.run(desired("a", "b"), request)
    retry_now_of_a = [context.retry_now for name, _, context in policy.seen if name == "a"]
    assert retry_now_of_a == [False, False, False, False, True, True]


async def test_a_wake_asked_during_a_pass_is_not_satisfied_by_that_pass(tmp_path: Path) -> None:
    policy = Scripted("p", satisfies_wake=True)
    r = rig(tmp_path, policy)
    runtime = r.engine.runtime("a")
    runtime.wakes_requested = 1
    await r.run(desired("a"))
    assert not runtime.wake_pending  # asked before the pass observed: satisfied

    def wake_arrives() -> None:
        runtime.wakes_requested += 1

    policy.during_observe = wake_arrives  # asked while the pass observes
    await r.run(desired("a"))
    assert runtime.wake_pending
    assert [c.wake_requested for _, _, c in policy.seen] == [True, False]
    policy.during_observe = None
    await r.run(desired("a"))
    assert not runtime.wake_pending


async def test_a_dry_run_decides_but_never_acts(tmp_path: Path) -> None:
    policy = Scripted("p", action="act")
    options = PassOptions(dry_run=True, pass_timeout=timedelta(seconds=10))
    outcomes = await rig(tmp_path, policy).run(desired("a"), options=options)
    assert outcomes["a"].summary() == ("act", "p decided")
    assert policy.acted == []
    assert policy.seen[0][2].dry_run


async def test_records_are_saved_and_a_removed_environment_keeps_its_record(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path, Scripted("p", remember=True))
    await r.run(desired("a", "b"))
    store = FileStateStore(str(tmp_path / "state.json"))
    saved = (await store.load()).records
    assert saved["b"].idle.awake_since == r.clock.now()
    r.clock.advance(60)
    await r.run(desired("a"))
    assert set(r.engine.runtimes) == {"a"}
    after = (await store.load()).records
    assert after["b"] == saved["b"]  # left as it is: never deleted, never destroyed
    assert after["a"].idle.awake_since == r.clock.now()
    assert after["a"].version == 2


def _decision(action: str = "none", holds: bool = False, relevant: bool = True) -> Decision:
    return Decision(
        action=action, reason=f"{action}/{holds}/{relevant}", holds=holds, relevant=relevant
    )


def test_the_environment_speaks_with_the_acting_failing_holding_or_last_relevant_one() -> None:
    acting, holding = _decision("scale"), _decision(holds=True)
    plain, irrelevant = _decision(), _decision(relevant=False)
    failing = Decision(reason="activity unknown (throttled)", unknown=True)
    assert summarise([]) == ("none", "not reconciled")
    assert summarise([("a", holding), ("b", acting)]) == ("scale", acting.reason)
    assert summarise([("a", holding), ("b", failing)]) == ("none", failing.reason)
    assert summarise([("a", plain), ("b", holding)]) == ("none", holding.reason)
    assert summarise([("a", plain), ("b", irrelevant)]) == ("none", plain.reason)
    first = Decision(reason="power is reported", relevant=False)
    assert summarise([("a", first), ("b", irrelevant)]) == ("none", "power is reported")


async def test_an_observer_that_fails_leaves_its_facts_unknown_and_the_pass_goes_on(
    tmp_path: Path,
) -> None:
    policy = Scripted("p")
    outcomes = await rig(tmp_path, policy, observers=[FailingObserver()]).run(desired("a", "b"))
    assert set(outcomes) == {"a", "b"}
    assert [c.facts.service_error for _, _, c in policy.seen] == [
        "observation failed: 'serviceName'"
    ] * 2


async def test_a_wake_whose_change_failed_stays_pending(tmp_path: Path) -> None:
    policy = Scripted("p", action="scale_up", satisfies_wake=True, fail_act_for={"a"})
    r = rig(tmp_path, policy)
    runtime = r.engine.runtime("a")
    runtime.wakes_requested = 1
    assert (await r.run(desired("a")))["a"].result == "error"
    assert runtime.wake_pending  # the scale-up failed: the wake is kept
    policy.fail_act_for = set()
    await r.run(desired("a"), PassRequest(due_now=frozenset({"a"})))
    assert not runtime.wake_pending


async def test_a_record_that_cannot_be_saved_fails_its_environment(tmp_path: Path) -> None:
    (tmp_path / "state.json.lock").mkdir()  # the store reads, but cannot take its write lock
    r = rig(tmp_path, Scripted("p", remember=True))
    outcome = (await r.run(desired("a")))["a"]
    assert outcome.result == "error"
    assert outcome.error is not None and outcome.error.startswith("record not saved: ")


async def test_an_unreadable_record_stops_only_its_environment(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(
        json.dumps({"version": 2, "environments": {"a": {}, "b": {"power": {"state": "MAYBE"}}}})
    )
    policy = Scripted("p", action="act")
    outcomes = await rig(tmp_path, policy).run(desired("a", "b"))
    assert outcomes["a"].result == "success"
    assert outcomes["b"].result == "error"
    assert outcomes["b"].error is not None and "invalid record of b" in outcomes["b"].error
    assert [name for name, _, _ in policy.seen] == ["a"]
    assert policy.acted == ["a"]


async def test_a_store_whose_medium_fails_stops_every_environment(tmp_path: Path) -> None:
    os.mkdir(tmp_path / "state.json")  # reading it fails, as a disk or a mount would
    policy = Scripted("p", action="act")
    r = rig(tmp_path, policy)
    outcomes = await r.run(desired("a", "b"))
    assert {o.result for o in outcomes.values()} == {"error"}
    assert policy.seen == []
    os.rmdir(tmp_path / "state.json")  # back: the next due pass acts again
    r.clock.advance(60)
    assert {o.result for o in (await r.run(desired("a", "b"))).values()} == {"success"}


async def test_garbage_in_the_store_is_set_aside_and_the_pass_goes_on(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    policy = Scripted("p", action="act")
    outcomes = await rig(tmp_path, policy).run(desired("a", "b"))
    assert {o.result for o in outcomes.values()} == {"success"}
    (aside,) = [p for p in os.listdir(tmp_path) if p.startswith("state.json.unreadable-")]
    assert (tmp_path / aside).read_text() == "{not json"
