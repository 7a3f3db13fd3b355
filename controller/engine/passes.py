"""What a pass is asked to do, and what it reports."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.engine.runtime import Result
from reconcilers.interface import Decision, EnvironmentFacts


@dataclass(frozen=True)
class PassRequest:
    """Why a pass runs now. Triggers merge: two requests before a pass make one pass.

    A wake, a git push or a webhook run a pass now, but only `POST /reconcile` retries failed
    Terraform runs without waiting for their backoff, and only for the environments it names.
    """

    fetch_now: bool = False  # read the desired state even while its source backs off
    due_now: frozenset[str] = frozenset()  # reconciled even while backing off (a wake)
    retry: frozenset[str] = frozenset()  # failed runs retried now, backoffs ignored
    retry_all: bool = False  # `retry` for every environment

    def merge(self, other: PassRequest) -> PassRequest:
        return PassRequest(
            fetch_now=self.fetch_now or other.fetch_now,
            due_now=self.due_now | other.due_now,
            retry=self.retry | other.retry,
            retry_all=self.retry_all or other.retry_all,
        )

    def retries(self, name: str) -> bool:
        return self.retry_all or name in self.retry


RETRY_EVERYTHING = PassRequest(fetch_now=True, retry_all=True)


def summarise(decisions: Sequence[tuple[str, Decision]]) -> tuple[str, str]:
    """The environment's (action, reason): the first policy that acts, else the first that could
    not decide (what failed), else the first that holds the environment (a run in flight), else
    the last one that applies to it (the first one, when none does)."""
    if not decisions:
        return "none", "not reconciled"
    ordered = [decision for _, decision in decisions]
    picks: tuple[Callable[[Decision], bool], ...] = (
        lambda d: d.changes_aws,
        lambda d: d.unknown,
        lambda d: d.holds,
    )
    for pick in picks:
        for decision in ordered:
            if pick(decision):
                return decision.action, decision.reason
    relevant = [d for d in ordered if d.relevant]
    # none applies: the first policy says why (the power policy: "power is reported")
    chosen = relevant[-1] if relevant else ordered[0]
    return chosen.action, chosen.reason


@dataclass(frozen=True)
class EnvironmentOutcome:
    result: Result
    decisions: tuple[tuple[str, Decision], ...] = ()  # (reconciler, decision), in order
    facts: EnvironmentFacts = field(default_factory=EnvironmentFacts)
    error: str | None = None

    def decision(self, reconciler: str) -> Decision | None:
        return dict(self.decisions).get(reconciler)

    def summary(self) -> tuple[str, str]:
        return summarise(self.decisions)


@dataclass(frozen=True)
class PassReport:
    reconcile_id: str
    revision: str | None
    desired_state_valid: bool
    environments: Mapping[str, EnvironmentOutcome] = field(default_factory=dict)

    @property
    def results(self) -> dict[str, Result]:
        return {name: outcome.result for name, outcome in self.environments.items()}

    @property
    def failed(self) -> bool:
        return any(o.result == "error" for o in self.environments.values())

    @property
    def pending(self) -> bool:
        """Some change would be made (what `plan` exits 1 for)."""
        return any(
            decision.changes_aws
            for outcome in self.environments.values()
            for _, decision in outcome.decisions
        )

    def summary(self, name: str) -> tuple[str, str]:
        return self.environments[name].summary()

    def decision(self, name: str, reconciler: str) -> Decision:
        decision = self.environments[name].decision(reconciler)
        if decision is None:
            raise KeyError(f"{name}: no {reconciler} decision in this pass")
        return decision
