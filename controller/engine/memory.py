"""The one owner of the persisted records: loaded from the store, a working copy per
environment, and a single write path with optimistic versioning (a conflict means another
controller wrote first: this one steps back and re-reads).

What cannot be read is never guessed. A record that cannot be read stops its environment
only. A store that cannot be read at all stops every environment, unless this process still
holds every record (it has been running): then the unreadable store is set aside, kept, and
written anew from memory. Records that vanished from the store (a deleted file) are rewritten
from memory the same way. Nothing is ever rebuilt by guessing, and no run is started for it.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from controller.core.records import EnvironmentRecord
from controller.core.state_store import StateStore, StateStoreError, StoreConflict

log = structlog.get_logger("infra_controller.state")


class StateMemory:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._stored: dict[str, EnvironmentRecord] = {}  # as last read from or written to the store
        self._working: dict[str, EnvironmentRecord] = {}
        self._unreadable: dict[str, str] = {}
        self._forgotten: set[str] = set()
        self._loaded = False
        self.problem: str | None = None  # the store's current fault, for /readyz and the logs

    @property
    def description(self) -> str:
        return self.store.description

    async def ensure_loaded(self) -> None:
        """Read the records once, and again after a conflict or while some are unreadable: the
        store's copy wins. Raises StateStoreError when the store cannot be read."""
        if self._loaded and not await self.store.changed():
            return
        try:
            stored = await self.store.load()
        except StateStoreError as exc:
            self.problem = f"state store unreadable: {exc}"
            if not self._working or (aside := await self.store.set_aside()) is None:
                raise
            log.error("state store unreadable: set aside, rewritten from memory", kept_as=aside)
            await self._rewrite_from_memory(set(self._working))
            self._loaded = True
            return
        vanished = {
            name
            for name, record in self._stored.items()
            if record.version > 0 and name not in stored.records and name not in stored.unreadable
        }
        self._stored = dict(stored.records)
        self._working.update(
            (name, record) for name, record in stored.records.items() if name not in self._forgotten
        )
        if vanished & set(self._working):
            log.error(
                "records missing from the state store: rewritten from memory",
                environments=sorted(vanished),
            )
            await self._rewrite_from_memory(vanished)
        self._unreadable = dict(stored.unreadable)
        self._loaded = not self._unreadable
        self.problem = next(iter(self._unreadable.values()), None)

    async def _rewrite_from_memory(self, names: set[str]) -> None:
        """Write these working records anew (as version 0 in the store), now."""
        for name in sorted(names):
            self._stored.pop(name, None)
            if name in self._working:
                self._working[name] = replace(self._working[name], version=0)
                await self.save(name)

    def unreadable(self, name: str) -> str | None:
        """Why the stored record of `name` cannot be read, if it cannot."""
        return self._unreadable.get(name)

    def record(self, name: str) -> EnvironmentRecord:
        return self._working.get(name) or self._stored.get(name) or EnvironmentRecord()

    def tracked(self) -> set[str]:
        """The environments with a working record (loaded, or reconciled since)."""
        return set(self._working)

    def update(self, name: str, record: EnvironmentRecord) -> None:
        """Keep a new working copy; `save` writes it."""
        self._working[name] = record
        self._forgotten.discard(name)

    def was_stored(self, name: str) -> bool:
        return name in self._stored and self._stored[name].version > 0

    def forget(self, name: str) -> None:
        """Stop tracking a removed environment. Its stored record is kept, in the store and
        here: if the environment comes back, it continues from that version."""
        self._working.pop(name, None)
        self._forgotten.add(name)

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        """Write now. Raises StoreConflict if another controller wrote since `record.version`
        (everything is re-read before the next pass), StateStoreError if the write failed."""
        try:
            written = await self._write(name, record)
        except StoreConflict:
            if not await self._vanished(name):
                self._loaded = False
                raise
            # the store lost it (a deleted file): written anew, once, from this very record
            written = await self._write(name, replace(record, version=0))
        self._stored[name] = self._working[name] = written
        return written

    async def _write(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        try:
            written = await self.store.put(name, record)
        except StoreConflict:
            raise
        except StateStoreError as exc:
            self.problem = f"state store write failed: {exc}"
            raise
        if self.problem is not None and not self._unreadable:
            self.problem = None
        return written

    async def _vanished(self, name: str) -> bool:
        """After a conflict: is the record simply gone from the store?"""
        try:
            stored = await self.store.load()
        except StateStoreError:
            return False
        return name not in stored.records and name not in stored.unreadable

    async def save(self, name: str) -> None:
        """Write the working record of `name` if it changed since it was stored."""
        working = self._working.get(name)
        if working is not None and working != self._stored.get(name, EnvironmentRecord()):
            await self.put(name, working)
