"""The one owner of the persisted records: loaded from the store, a working copy per
environment, and a single write path with optimistic versioning (a conflict means another
controller wrote first: this one steps back and re-reads).

What cannot be read is never guessed: a store that cannot be read at all stops every action
until it can; a record that cannot be read stops its environment only.
"""

from __future__ import annotations

from controller.core.records import EnvironmentRecord
from controller.core.state_store import StateStore, StoreConflict


class StateMemory:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._stored: dict[str, EnvironmentRecord] = {}  # as last read from or written to the store
        self._working: dict[str, EnvironmentRecord] = {}
        self._unreadable: dict[str, str] = {}
        self._forgotten: set[str] = set()
        self._loaded = False

    @property
    def description(self) -> str:
        return self.store.description

    async def ensure_loaded(self) -> None:
        """Read the records once, and again after a conflict or while some are unreadable: the
        store's copy wins. Raises StateStoreError when the store cannot be read."""
        if self._loaded:
            return
        stored = await self.store.load()
        self._stored.update(stored.records)
        self._working.update(
            (name, record) for name, record in stored.records.items() if name not in self._forgotten
        )
        self._unreadable = dict(stored.unreadable)
        self._loaded = not self._unreadable

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
            written = await self.store.put(name, record)
        except StoreConflict:
            self._loaded = False
            raise
        self._stored[name] = self._working[name] = written
        return written

    async def save(self, name: str) -> None:
        """Write the working record of `name` if it changed since it was stored."""
        working = self._working.get(name)
        if working is not None and working != self._stored.get(name, EnvironmentRecord()):
            await self.put(name, working)
