"""Every transition, kept: the last 1,000 events (contract section 11), in memory for `/events`
and in the state store across restarts.

Events come from the policies' decisions and actions (a power state change, a run, a scale to
zero, a wake), from the API (an override, a suspension) and from the desired state (invalid,
valid again). They are written once per pass, not once each: a pass that scales fifty services
writes the store once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from controller.core.state_store import StateStore, StateStoreError

log = structlog.get_logger("infra_controller.events")

KEPT_EVENTS = 1000
REASON_LIMIT = 500  # characters: a Terraform error can be long; the store holds a thousand


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


def _from_json(data: Mapping[str, Any]) -> StampedEvent | None:
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


class EventLog:
    def __init__(self, store: StateStore, keep: int = KEPT_EVENTS) -> None:
        self._store = store
        self._events: deque[StampedEvent] = deque(maxlen=keep)
        self._loaded = False
        self._unsaved = False

    def add(self, event: StampedEvent) -> None:
        # to the millisecond, as shown: `since` then compares what the reader saw
        event = replace(
            event,
            time=event.time.replace(microsecond=event.time.microsecond // 1000 * 1000),
            reason=event.reason[:REASON_LIMIT],
        )
        self._events.append(event)
        self._unsaved = True

    async def _load(self) -> None:
        if self._loaded:
            return
        stored = [e for e in map(_from_json, await self._store.load_events()) if e is not None]
        fresh = list(self._events)  # those added before the store could be read
        self._events.clear()
        self._events.extend(sorted(stored, key=lambda e: e.time))
        self._events.extend(fresh)
        self._loaded = True

    async def flush(self) -> None:
        """Write the events to the store if any came since the last write. A store that
        cannot be written keeps them in memory, for the next flush."""
        try:
            await self._load()
            if self._unsaved:
                await self._store.save_events([e.to_json() for e in self._events])
                self._unsaved = False
        except StateStoreError as exc:
            log.warning("events not saved; kept in memory", error=str(exc))

    async def query(
        self,
        environment: str | None = None,
        kinds: Sequence[str] = (),
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[StampedEvent]:
        """The newest first."""
        try:
            await self._load()
        except StateStoreError as exc:
            log.warning("stored events not read", error=str(exc))
        found = [
            e
            for e in reversed(self._events)
            if (environment is None or e.environment == environment)
            and (not kinds or e.kind in kinds)
            and (since is None or e.time > since)
        ]
        return found[:limit]
