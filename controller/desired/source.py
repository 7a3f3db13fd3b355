"""Where the desired state comes from: the interface every source offers, and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from controller.desired.loader import LoadedDesiredState, Problem


@dataclass(frozen=True)
class SourceSnapshot:
    revision: str
    loaded: LoadedDesiredState | None  # None when the document did not validate
    problems: list[Problem] = field(default_factory=list)


class SourceUnavailable(Exception):
    """The source could not be read (an unreachable remote, a timeout); says nothing of validity.

    Its message is safe to log: sources redact credentials before raising it.
    """


class DesiredStateSource(Protocol):
    description: str  # safe to log: no credentials

    async def fetch(self) -> SourceSnapshot:
        """The current desired state; raises SourceUnavailable when it cannot be read."""
        ...

    async def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify` whenever the source changes (runs until cancelled)."""
        ...

    def close(self) -> None: ...
