"""An event as kept and shown (contract section 11): what `/events` returns, what the state
store keeps and what notifications carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class StampedEvent:
    """An event as `/events` shows it."""

    time: datetime
    environment: str | None
    kind: str
    reason: str
    from_state: str | None = None
    to_state: str | None = None
    revision: str | None = None
    reconcile_id: str | None = None
    severity: str = "info"
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            # to the millisecond: `since` (for `events --follow`) must not repeat an event
            "time": self.time.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "environment": self.environment,
            "kind": self.kind,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "revision": self.revision,
            "reconcile_id": self.reconcile_id,
            "severity": self.severity,
            "attributes": dict(self.attributes),
        }


def event_from_json(data: Mapping[str, Any]) -> StampedEvent | None:
    """A stored event, or None when it is not one (it is skipped, not trusted)."""
    try:
        time = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
        attributes = data.get("attributes") or {}
        return StampedEvent(
            time=time,
            environment=data.get("environment"),
            kind=str(data["kind"]),
            reason=str(data.get("reason", "")),
            from_state=data.get("from"),
            to_state=data.get("to"),
            revision=data.get("revision"),
            reconcile_id=data.get("reconcile_id"),
            severity=str(data.get("severity", "info")),
            attributes=attributes if isinstance(attributes, dict) else {},
        )
    except (KeyError, TypeError, ValueError):
        return None
