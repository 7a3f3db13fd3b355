"""The environment the policies act on: the desired state with the runtime overrides applied.

A suspension from the API suspends an environment the desired state does not; the desired
state's `suspend: true` always suspends, whatever the API says (it is what git reviewed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord

SuspendedBy = Literal["desired_state", "api"]
SUSPENDED_BY: tuple[SuspendedBy, ...] = ("desired_state", "api")


@dataclass(frozen=True)
class SuspensionView:
    """Why an environment is suspended, as `/status` shows it."""

    by: SuspendedBy
    reason: str
    since: datetime | None  # None: the desired state's, whose commit time is not tracked


def suspension(spec: Environment, record: EnvironmentRecord) -> SuspensionView | None:
    """The suspension in force, the desired state's first."""
    if spec.suspend:
        return SuspensionView("desired_state", "suspend: true in the desired state", None)
    asked = record.overrides.suspension
    if asked is not None:
        return SuspensionView("api", asked.reason, asked.since)
    return None


def effective(spec: Environment, record: EnvironmentRecord) -> Environment:
    """`spec` as the policies must treat it now."""
    if not spec.suspend and record.overrides.suspension is not None:
        return spec.model_copy(update={"suspend": True})
    return spec
