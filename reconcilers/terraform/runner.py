"""The interface every Terraform runner offers: start a run, poll runs, cancel a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
class RunToPoll:
    environment: str
    run: RunInfo
    spec: TerraformSpec
    region: str


class RunnerError(Exception):
    """A run could not be started or polled; the message is safe to log."""


class TerraformRunner(Protocol):
    name: str

    async def start(
        self, environment: str, spec: TerraformSpec, region: str, operation: Operation, token: str
    ) -> StartedRun:
        """Start a run. Calling it again with the same token must not start a second run."""
        ...

    async def poll(self, runs: Sequence[RunToPoll]) -> dict[str, RunStatus]:
        """Status by environment; an environment missing from the answer is unknown."""
        ...

    async def cancel(self, run: RunToPoll) -> None: ...

    async def close(self, grace_seconds: float) -> None:
        """On shutdown: stop following runs (a runner's own processes get one SIGINT)."""
        ...
