"""The controller's own memory across restarts (contract section 3, `CONTROLLER_STATE_STORE`).

One record per environment (`controller.core.records`). A run is written here *before* it
starts, so a restarted controller finds it and follows it instead of starting another.

Every record carries a version and is written only if nobody wrote it since it was read:
`file://PATH` under an exclusive file lock with an atomic rename, `dynamodb://TABLE` with a
conditional PutItem. A conflict means another controller acted: this one steps back.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from controller.core.atomic_file import encode_state, write_atomically
from controller.core.records import (
    EnvironmentRecord,
    InvalidRecord,
    record_from_json,
    record_to_json,
)


class StateStoreError(Exception):
    pass


class StoreConflict(StateStoreError):
    """The record changed since it was read (another controller wrote it)."""


class StoreCorrupt(StateStoreError):
    """The store's content cannot be read (not its medium: the file reads, but is garbage)."""


@dataclass(frozen=True)
class StoredRecords:
    """Every record in the store; one that cannot be fully read is listed with why, apart."""

    records: dict[str, EnvironmentRecord] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


class StateStore(Protocol):
    description: str

    async def load(self) -> StoredRecords:
        """Raises StateStoreError when the store as a whole cannot be read."""
        ...

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        """Write if the stored version is still `record.version`; returns the new version."""
        ...

    async def set_aside(self) -> str | None:
        """Move an unreadable store out of the way, kept, so that it can be written anew;
        returns where it went, or None when this kind of store cannot."""
        ...

    async def changed(self) -> bool:
        """Whether the store was changed by someone else since this one last read or wrote
        it, as far as it can tell cheaply (False when it cannot tell)."""
        ...

    async def load_events(self) -> list[dict[str, Any]]:
        """The events kept (oldest first); [] when none. Raises StateStoreError."""
        ...

    async def save_events(self, events: list[dict[str, Any]]) -> None:
        """Keep `events` (oldest first) instead of those kept. Raises StateStoreError."""
        ...


# ---- file ----

Written = EnvironmentRecord | StateStoreError  # what one put of a batch came to


@dataclass
class _QueuedPut:
    name: str
    record: EnvironmentRecord
    done: asyncio.Future[EnvironmentRecord]


class FileStateStore:
    """One JSON file. The puts of a pass are written together: the environments of a pass
    save their records at the same moment, and each put waits for the batch it is in, so a
    pass over a thousand environments reads and writes the file once, not once each."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file://{path}"
        self._seen: tuple[int, int, int] | None = None  # the file as last read or written
        # the entries known readable, as last read or written: one found unchanged in the file
        # is not validated again (a thousand validations a pass, for nothing)
        self._readable: dict[str, tuple[Any, int]] = {}  # name -> (entry, its version)
        self._queued: list[_QueuedPut] = []
        self._writer: asyncio.Task[None] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    async def changed(self) -> bool:
        return await asyncio.to_thread(self._signature) != self._seen

    def _read_unlocked(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except OSError as exc:  # the medium (a disk, an NFS mount): may well be transient
            raise StateStoreError(f"cannot read state store {self.path}: {exc!r}") from exc
        except (ValueError, RecursionError) as exc:
            raise StoreCorrupt(f"cannot read state store {self.path}: {exc!r}") from exc
        if not isinstance(data, dict):
            raise StoreCorrupt(f"cannot read state store {self.path}: not a JSON object")
        return data

    def _locked(self) -> Any:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        lock = open(self.path + ".lock", "a+")  # noqa: SIM115 - closed by the caller
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def _load(self) -> StoredRecords:
        self._seen = self._signature()
        environments = self._read_unlocked().get("environments") or {}
        if not isinstance(environments, dict):
            raise StoreCorrupt(f"{self.path}: `environments` is not a mapping")
        loaded = StoredRecords()
        self._readable = {}
        for name, entry in environments.items():
            try:
                loaded.records[name] = record_from_json(entry)
            except InvalidRecord as exc:
                loaded.unreadable[name] = f"{self.path}: invalid record of {name}: {exc}"
            else:
                self._readable[name] = (entry, loaded.records[name].version)
        return loaded

    def _put_many(self, puts: list[tuple[str, EnvironmentRecord]]) -> list[Written]:
        """Every put of a batch, in order, under one lock, with one read and one write."""
        lock = self._locked()
        try:
            data = self._read_unlocked()
            environments = data.get("environments") or {}
            if not isinstance(environments, dict):
                raise StateStoreError(f"{self.path}: `environments` is not a mapping")
            results = [self._apply(environments, name, record) for name, record in puts]
            if any(isinstance(result, EnvironmentRecord) for result in results):
                text = encode_state({**data, "version": 2, "environments": environments})
                write_atomically(self.path, text)
                self._seen = self._signature()
            return results
        finally:
            lock.close()

    def _apply(self, environments: dict[str, Any], name: str, record: EnvironmentRecord) -> Written:
        entry = environments.get(name)
        try:  # never overwrite what cannot be read: it may record a run in flight
            known = self._readable.get(name)
            if entry is None:
                stored = 0
            elif known is not None and known[0] == entry:  # as this process last read it
                stored = known[1]
            else:
                stored = record_from_json(entry).version
        except InvalidRecord as exc:
            return StateStoreError(f"{self.path}: the record of {name} is unreadable: {exc}")
        if stored != record.version:
            return StoreConflict(
                f"{name}: the stored record is at version {stored}, not {record.version}"
            )
        written = replace(record, version=record.version + 1)
        environments[name] = record_to_json(written)
        self._readable[name] = (environments[name], written.version)
        return written

    async def _write_queued(self) -> None:
        """Write every put queued, a batch at a time: those queued while a batch is written
        make the next one. A put whose caller gave up before its batch began is not written."""
        while self._queued:
            batch = [put for put in self._queued if not put.done.done()]
            self._queued = []
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(
                    self._put_many, [(put.name, put.record) for put in batch]
                )
            except OSError as exc:
                failed = StateStoreError(f"cannot write state store {self.path}: {exc}")
                results = [failed] * len(batch)
            except StateStoreError as exc:
                results = [exc] * len(batch)
            except Exception as exc:  # never a writer gone with its puts left waiting
                failed = StateStoreError(f"cannot write state store {self.path}: {exc!r}")
                results = [failed] * len(batch)
            for put, result in zip(batch, results, strict=True):
                if put.done.done():
                    continue
                if isinstance(result, EnvironmentRecord):
                    put.done.set_result(result)
                else:  # each its own: a traceback per waiter
                    put.done.set_exception(type(result)(str(result)))

    async def load(self) -> StoredRecords:
        return await asyncio.to_thread(self._load)

    def _load_events(self) -> list[dict[str, Any]]:
        events = self._read_unlocked().get("events") or []
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    def _save_events(self, events: list[dict[str, Any]]) -> None:
        lock = self._locked()
        try:
            data = self._read_unlocked()
            text = encode_state({"version": 2, "environments": {}, **data, "events": events})
            write_atomically(self.path, text)
            self._seen = self._signature()
        finally:
            lock.close()

    async def load_events(self) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self._load_events)
        except StoreCorrupt:
            return []  # the records' reader reports and sets aside a store that is garbage

    async def save_events(self, events: list[dict[str, Any]]) -> None:
        try:
            await asyncio.to_thread(self._save_events, events)
        except OSError as exc:
            raise StateStoreError(f"cannot write state store {self.path}: {exc}") from exc

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        """Queued with the puts of the other environments of the pass, and written with
        them: one read and one write of the file for all (group commit). Returns once its
        batch is on the disk."""
        done: asyncio.Future[EnvironmentRecord] = asyncio.get_running_loop().create_future()
        self._queued.append(_QueuedPut(name, record, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await done

    def _set_aside(self) -> str:
        lock = self._locked()
        try:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = f"{self.path}.unreadable-{stamp}-{uuid.uuid4().hex[:8]}"
            os.replace(self.path, aside)
            return aside
        finally:
            lock.close()

    async def set_aside(self) -> str | None:
        try:
            return await asyncio.to_thread(self._set_aside)
        except OSError:
            return None


# ---- DynamoDB ----
