"""Every transition, kept: the last 1,000 events (contract section 11), in memory for `/events`
and in the state store across restarts.

Events come from the policies' decisions and actions (a power state change, a run, a scale to
zero, a wake), from the API (an override, a suspension) and from the desired state (invalid,
valid again). They are written once per pass, not once each: a pass that scales fifty services
writes the store once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import structlog

from controller.core.events import StampedEvent, event_from_json
from controller.core.state_store import StateStore, StateStoreError

log = structlog.get_logger("infra_controller.events")

KEPT_EVENTS = 1000
REASON_LIMIT = 500  # characters: a Terraform error can be long; the store holds a thousand


class EventLog:
    def __init__(self, store: StateStore, keep: int = KEPT_EVENTS) -> None:
        self._store = store
        self._keep = keep
        self._events: deque[StampedEvent] = deque(maxlen=keep)
        self._loaded = False
        self._load_lock = asyncio.Lock()  # two first reads at once must not add twice
        self._unsaved: list[StampedEvent] = []  # added since the last write
        self._unannounced: list[StampedEvent] = []  # for the notifications, once each

    def add(self, event: StampedEvent) -> None:
        # to the millisecond, as shown: `since` then compares what the reader saw
        event = replace(
            event,
            time=event.time.replace(microsecond=event.time.microsecond // 1000 * 1000),
            reason=event.reason[:REASON_LIMIT],
        )
        self._events.append(event)
        for pending in (self._unsaved, self._unannounced):
            pending.append(event)
            del pending[: -self._keep]  # bounded like the log itself

    def take_unannounced(self) -> list[StampedEvent]:
        """The events added since the last call, oldest first (each is handed out once)."""
        taken, self._unannounced = self._unannounced, []
        return taken

    def reload(self) -> None:
        """Read the store again before the next use: another controller writes it (this one
        follows, or has just taken over from the one that did). What this one added and did
        not write yet is kept."""
        self._loaded = False

    async def _load(self) -> None:
        async with self._load_lock:
            if self._loaded:
                return
            stored = [e for e in map(event_from_json, await self._store.load_events()) if e]
            self._events.clear()
            self._events.extend(sorted(stored, key=lambda e: e.time))
            self._events.extend(self._unsaved)
            self._loaded = True

    async def flush(self) -> None:
        """Write the events to the store if any came since the last write. A store that
        cannot be written keeps them in memory, for the next flush."""
        try:
            await self._load()
            if self._unsaved:
                written = len(self._unsaved)
                await self._store.save_events([e.to_json() for e in self._events])
                del self._unsaved[:written]  # those added during the write stay unsaved
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
