"""What the engine knows of one environment between passes, in memory (the persisted part
lives in the state memory): its last decisions and facts, its result and backoff, its wakes."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from controller.core.backoff import ENVIRONMENT_BACKOFF
from controller.core.desired_state import Environment
from reconcilers.interface import AttributeValue, Decision, EnvironmentFacts

Result = Literal["success", "error", "skipped"]


@dataclass
class EnvironmentRuntime:
    facts: EnvironmentFacts = field(default_factory=EnvironmentFacts)  # the last known
    decisions: tuple[tuple[str, Decision], ...] = ()  # (reconciler, decision) of the last pass
    last_action: Mapping[str, AttributeValue] | None = None
    last_result: Result | None = None
    last_error: str | None = None
    last_update: datetime | None = None
    result_changed_at: datetime | None = None
    failures: int = 0
    retry_at: datetime | None = None
    # the spec last reconciled: a changed spec is not held back by the old one's failures
    spec: Environment | None = None
    # wakes are numbered: a pass satisfies only those asked before it observed
    wakes_requested: int = 0
    wakes_before_pass: int = 0  # those asked before the current pass observed
    wakes_satisfied: int = 0
    # a wake the activator made between passes: when its first request came (the next pass
    # takes it, to time the wake from there)
    woken_outside_pass: datetime | None = None

    @property
    def wake_pending(self) -> bool:
        return self.wakes_requested > self.wakes_satisfied

    def backing_off(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at

    def note_result(
        self, result: Result, error: str | None, now: datetime, rng: random.Random
    ) -> timedelta | None:
        """Record a pass's result; returns the backoff delay after a failure."""
        if self.last_result != result:
            self.result_changed_at = now
        self.last_result, self.last_error, self.last_update = result, error, now
        if result != "error":
            self.failures, self.retry_at = 0, None
            return None
        self.failures += 1
        delay = ENVIRONMENT_BACKOFF.delay(self.failures, rng)
        self.retry_at = now + delay
        return delay

    def merge_facts(self, facts: EnvironmentFacts) -> None:
        """What this pass observed, unknown included: only the load balancer's address, which
        never changes, is kept from before when this pass could not read it."""
        self.facts = replace(facts, endpoint=facts.endpoint or self.facts.endpoint)
