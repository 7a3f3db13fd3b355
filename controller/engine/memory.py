"""The one owner of the persisted records: loaded once, a working copy per environment, and a
single write path with optimistic versioning (a conflict means another controller wrote first:
this one steps back and re-reads)."""

from __future__ import annotations

import structlog

from controller.core.records import EnvironmentRecord
from controller.core.state_store import StateStore, StateStoreError, StoreConflict

log = structlog.get_logger("infra_controller.state")


class StateMemory:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._stored: dict[str, EnvironmentRecord] = {}  # as last read from or written to the store
        self._working: dict[str, EnvironmentRecord] = {}
        self._loaded = False

    @property
    def description(self) -> str:
        return self.store.description

    async def ensure_loaded(self) -> None:
        """Read every record once (and again after a conflict): the store's copy wins."""
        if self._loaded:
            return
        try:
            stored = await self.store.load()
        except StateStoreError as exc:
            log.error("state store unreadable; starting without memory", error=str(exc))
            stored = {}
        self._stored.update(stored)
        self._working.update(stored)
        self._loaded = True

    def record(self, name: str) -> EnvironmentRecord:
        return self._working.get(name) or self._stored.get(name) or EnvironmentRecord()

    def tracked(self) -> set[str]:
        """The environments with a working record (loaded, or reconciled since)."""
        return set(self._working)

    def update(self, name: str, record: EnvironmentRecord) -> None:
        """Keep a new working copy; it is written by the next `flush`."""
        self._working[name] = record

    def was_stored(self, name: str) -> bool:
        return name in self._stored and self._stored[name].version > 0

    def forget(self, name: str) -> None:
        """Stop tracking a removed environment. Its stored record is kept, in the store and
        here: if the environment comes back, it continues from that version."""
        self._working.pop(name, None)

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        """Write now; raises StoreConflict if another controller wrote since `record.version`."""
        try:
            written = await self.store.put(name, record)
        except StoreConflict:
            self._loaded = False  # re-read everything before the next pass acts
            raise
        self._stored[name] = self._working[name] = written
        return written

    async def flush(self) -> list[str]:
        """Write every working record that changed; returns the names that could not be."""
        failed: list[str] = []
        for name, working in list(self._working.items()):
            if working == self._stored.get(name, EnvironmentRecord()):
                continue
            try:
                await self.put(name, working)
            except StoreConflict as exc:
                log.warning(
                    "state store conflict: another controller acted; re-reading",
                    environment=name,
                    error=str(exc),
                )
                failed.append(name)
            except StateStoreError as exc:
                log.error("state store write failed", environment=name, error=str(exc))
                failed.append(name)
        return failed
