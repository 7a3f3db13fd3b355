"""The one owner of the persisted records: loaded from the store, a working copy per
environment, and a single write path with optimistic versioning (a conflict means another
controller wrote first: this one steps back and re-reads).

What cannot be read is never guessed, nor rewritten from this process's own copy (another
writer may have written since). A store whose medium fails (a disk, a mount, DynamoDB) stops
every environment until it reads again. A store whose content is garbage is set aside, kept,
and the environments continue as after a lost store, which starts no run blindly: the power
policy first asks the runners for a run in flight. A record that vanished, or that cannot be
read, is dropped from memory the same way; an unreadable one stops its environment until it
is repaired or removed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import structlog

from controller.core.records import EnvironmentRecord
from controller.core.state_store import StateStore, StateStoreError, StoreConflict, StoreCorrupt

log = structlog.get_logger("infra_controller.state")
# the cost accounting changes every record every pass: it is written this often (or with any
# other change), not once a pass; a restart counts the gap since, up to cost.MAX_STEP
ACCOUNTING_WRITE_EVERY = timedelta(minutes=5)


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
        """Read the records when not read yet, after a conflict, while some are unreadable, and
        when the store changed behind this process's back: the store's copy wins. Raises
        StateStoreError when the store cannot be read."""
        if self._loaded and not await self.store.changed():
            return
        try:
            stored = await self.store.load()
        except StoreCorrupt as exc:
            aside = await self.store.set_aside()
            if aside is None:
                raise
            log.error(
                "state store unreadable: set aside; continuing as after a lost store",
                kept_as=aside,
                error=str(exc),
            )
            self._start_over(set(self._working) | set(self._stored))
            self._unreadable, self._loaded, self.problem = {}, True, None
            return
        vanished = {
            name
            for name, record in self._stored.items()
            if record.version > 0 and name not in stored.records and name not in stored.unreadable
        }
        if vanished:
            log.error(
                "records missing from the state store: continuing as after a lost store",
                environments=sorted(vanished),
            )
        self._start_over(vanished | set(stored.unreadable))
        self._stored = dict(stored.records)
        self._working.update(
            (name, record) for name, record in stored.records.items() if name not in self._forgotten
        )
        self._unreadable = dict(stored.unreadable)
        self._loaded = not self._unreadable
        self.problem = next(iter(self._unreadable.values()), None)

    def _start_over(self, names: set[str]) -> None:
        """Forget what this process held of these records: they start again as new ones."""
        for name in names:
            self._working.pop(name, None)
            self._stored.pop(name, None)

    def reread(self) -> None:
        """Read the store again before the next use (a follower: the leader writes it)."""
        self._loaded = False

    def note_unreadable(self, error: BaseException) -> None:
        """The store could not be read in time, or at all (it is read again next pass)."""
        reason = str(error) or "no answer in time"
        self.problem = f"state store unreadable: {reason}"
        self._loaded = False

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
        except StateStoreError as exc:
            self.problem = f"state store write failed: {exc}"
            raise
        if not self._unreadable:
            self.problem = None
        self._stored[name] = self._working[name] = written
        return written

    async def save(self, name: str) -> None:
        """Write the working record of `name` if it changed since it was stored: at once,
        unless only its cost accounting moved (every pass does), which is written every
        `ACCOUNTING_WRITE_EVERY` (a record per environment and pass, for a figure whose gap
        after a restart is counted anyway)."""
        working = self._working.get(name)
        stored = self._stored.get(name, EnvironmentRecord())
        if working is not None and working != stored and not _accounting_only(working, stored):
            await self.put(name, working)


def _accounting_only(working: EnvironmentRecord, stored: EnvironmentRecord) -> bool:
    """Only the cost accounting moved since `stored`, within the same month, and it was
    written less than `ACCOUNTING_WRITE_EVERY` ago (by the accounting's own clock)."""
    if replace(working, cost=stored.cost) != stored or working.cost.month != stored.cost.month:
        return False
    written, now = stored.cost.accounted_at, working.cost.accounted_at
    return written is not None and now is not None and now - written < ACCOUNTING_WRITE_EVERY
