"""The interface every Terraform runner offers: start a run, poll runs, cancel a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation, RunInfo

RunState = Literal["IN_PROGRESS", "SUCCEEDED", "FAILED"]


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    detail: str = ""


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    logs_url: str | None = None


@dataclass(frozen=True)
class FoundRun:
    """A run found in flight for an environment the controller has no record of."""

    run_id: str
    operation: Operation
    token: str
    started_at: datetime | None = None
    logs_url: str | None = None


@dataclass(frozen=True)
class RunToPoll:
    environment: str
    run: RunInfo
    spec: TerraformSpec
    region: str


class RunnerError(Exception):
    """A run could not be started or polled; the message is safe to log.

    `maybe_started`: the start's outcome is unknown (a timeout, a 5xx, an unreadable answer):
    the run may exist. It is then confirmed with the same token, never started anew.
    """

    def __init__(self, message: str, maybe_started: bool = False) -> None:
        super().__init__(message)
        self.maybe_started = maybe_started


class TerraformRunner(Protocol):
    name: str
    # how long a repeated start with the same token is known not to start another run
    # (None: for ever); past it, a recorded start is confirmed with `find`
    token_window: timedelta | None

    async def start(
        self, environment: str, spec: TerraformSpec, region: str, operation: Operation, token: str
    ) -> StartedRun:
        """Start a run. Calling it again with the same token within `token_window` must not
        start a second run."""
        ...

    async def find(
        self, environment: str, spec: TerraformSpec, region: str, token: str
    ) -> StartedRun | None:
        """The run started with `token`, or None if there is none; never starts anything.
        Raises RunnerError (maybe_started) when it cannot tell."""
        ...

    async def in_flight(
        self, environment: str, spec: TerraformSpec, region: str
    ) -> FoundRun | None:
        """A run of `environment` that has not finished, whoever started it (a state store
        that was lost forgot it). Raises RunnerError when it cannot tell."""
        ...

    async def poll(self, runs: Sequence[RunToPoll]) -> dict[str, RunStatus]:
        """Status by environment; an environment missing from the answer is unknown."""
        ...

    async def cancel(self, run: RunToPoll) -> None: ...

    async def close(self, grace_seconds: float) -> None:
        """On shutdown: stop following runs (a runner's own processes get one SIGINT)."""
        ...
