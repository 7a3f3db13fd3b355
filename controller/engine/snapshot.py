"""The immutable picture of the controller the engine publishes after each pass: what `/status`,
`/healthz` and the CLI read, so that no reader ever touches live engine state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord
from controller.desired.tracker import DesiredStateView
from controller.engine.runtime import EnvironmentRuntime, Result
from reconcilers.interface import AttributeValue, Decision, EnvironmentFacts


@dataclass(frozen=True)
class EnvironmentSnapshot:
    spec: Environment
    record: EnvironmentRecord
    facts: EnvironmentFacts = field(default_factory=EnvironmentFacts)
    decisions: tuple[tuple[str, Decision], ...] = ()
    last_action: Mapping[str, AttributeValue] | None = None
    result: Result | None = None
    error: str | None = None
    failures: int = 0
    retry_at: datetime | None = None
    result_changed_at: datetime | None = None
    last_update: datetime | None = None
    wake_pending: bool = False

    @staticmethod
    def of(
        spec: Environment, record: EnvironmentRecord, runtime: EnvironmentRuntime | None
    ) -> EnvironmentSnapshot:
        if runtime is None:
            return EnvironmentSnapshot(spec, record)
        return EnvironmentSnapshot(
            spec=spec,
            record=record,
            facts=runtime.facts,
            decisions=runtime.decisions,
            last_action=MappingProxyType(dict(runtime.last_action))
            if runtime.last_action
            else None,
            result=runtime.last_result,
            error=runtime.last_error,
            failures=runtime.failures,
            retry_at=runtime.retry_at,
            result_changed_at=runtime.result_changed_at,
            last_update=runtime.last_update,
            wake_pending=runtime.wake_pending,
        )


@dataclass(frozen=True)
class Snapshot:
    desired: DesiredStateView
    dry_run: bool
    started_at: datetime
    last_pass_completed_at: datetime | None = None
    passes_completed: int = 0
    state_store: str = ""
    state_store_problem: str | None = None
    leader: bool = True  # False: a follower (leader election), which observes only
    shard: str | None = None  # `I/N` when this controller owns one shard of the environments
    environments: Mapping[str, EnvironmentSnapshot] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def revision(self) -> str | None:
        return self.desired.revision
