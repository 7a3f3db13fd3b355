"""The desired-state tracker: fetch from the source, keep the last valid revision in force.

An unreachable source backs off (the state in force still applies); an invalid revision changes
nothing and is reported once, not every interval; a valid one replaces the state in force.
Each refresh returns what happened, for the reporter to log and count.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from controller.core.backoff import SOURCE_BACKOFF
from controller.core.desired_state import DesiredState
from controller.desired.loader import Problem
from controller.desired.source import DesiredStateSource, SourceUnavailable


@dataclass(frozen=True)
class Refresh:
    """The outcome of one refresh."""

    outcome: Literal["backing_off", "unavailable", "loaded", "invalid"]
    revision: str | None = None  # the revision fetched (loaded or invalid)
    new: bool = False  # loaded: a revision not in force before; invalid: not attempted before
    error: str | None = None  # unavailable: why
    failures: int = 0  # unavailable: consecutive failures
    retry_in: timedelta | None = None  # unavailable: when the source is read again
    problems: tuple[Problem, ...] = ()  # invalid: every problem found


@dataclass(frozen=True)
class DesiredStateView:
    """The tracker as `/status` shows it."""

    source: str
    revision: str | None  # the revision in force (the last valid one)
    attempted_revision: str | None
    valid: bool | None  # None: nothing fetched yet
    problems: tuple[Problem, ...] = ()
    source_error: str | None = None
    last_fetch_at: datetime | None = None
    environments: frozenset[str] = field(default_factory=frozenset)


class DesiredStateTracker:
    def __init__(
        self,
        source: DesiredStateSource,
        rng: random.Random | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.source = source
        # a shard's controller keeps only the environments it owns (CONTROLLER_SHARD)
        self._owns = owns
        self._rng = rng or random.Random()
        self.desired: DesiredState | None = None  # the desired state in force (last valid)
        self.revision: str | None = None
        self._attempted: str | None = None
        self._valid: bool | None = None
        self._problems: tuple[Problem, ...] = ()
        self._error: str | None = None
        self._failures = 0
        self._retry_at: datetime | None = None
        self._last_fetch_at: datetime | None = None

    async def refresh(self, now: datetime, force: bool = False) -> Refresh:
        """Read the source, unless it is backing off (`force` reads it anyway)."""
        if not force and self._retry_at is not None and now < self._retry_at:
            return Refresh("backing_off")
        try:
            snapshot = await self.source.fetch()
        except SourceUnavailable as exc:
            self._failures += 1
            delay = SOURCE_BACKOFF.delay(self._failures, self._rng)
            self._retry_at = now + delay
            self._error = str(exc)
            return Refresh(
                "unavailable", error=self._error, failures=self._failures, retry_in=delay
            )
        self._failures, self._retry_at, self._error = 0, None, None
        self._last_fetch_at = now
        previous_attempt, self._attempted = self._attempted, snapshot.revision
        if snapshot.loaded is None:
            self._valid = False
            self._problems = tuple(snapshot.problems)
            return Refresh(
                "invalid",
                snapshot.revision,
                new=snapshot.revision != previous_attempt,
                problems=self._problems,
            )
        new = snapshot.revision != self.revision
        self.desired = self._owned(snapshot.loaded.state)
        self.revision = snapshot.revision
        self._valid, self._problems = True, ()
        return Refresh("loaded", snapshot.revision, new=new)

    def _owned(self, state: DesiredState) -> DesiredState:
        if self._owns is None:
            return state
        owned = {name: env for name, env in state.environments.items() if self._owns(name)}
        return state.model_copy(update={"environments": owned})

    async def watch(self, changed: Callable[[], None]) -> None:
        await self.source.watch(changed)

    def view(self) -> DesiredStateView:
        return DesiredStateView(
            source=self.source.description,
            revision=self.revision,
            attempted_revision=self._attempted,
            valid=self._valid,
            problems=self._problems,
            source_error=self._error,
            last_fetch_at=self._last_fetch_at,
            environments=frozenset(self.desired.environments if self.desired else ()),
        )
