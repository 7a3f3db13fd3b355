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
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from controller.core.aws import AwsClients, AwsError
from controller.core.records import (
    EnvironmentRecord,
    InvalidRecord,
    record_from_json,
    record_to_json,
)

# a page holds up to 1 MB of records, a thousand environments or more: a table that keeps
# asking for more pages is not to be trusted
MAX_SCAN_PAGES = 100
# items that are not environments start with a character no environment name has
RESERVED_PREFIX = "#"
EVENTS_ITEM = "#events"


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


class FileStateStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file://{path}"
        self._seen: tuple[int, int, int] | None = None  # the file as last read or written

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
        for name, entry in environments.items():
            try:
                loaded.records[name] = record_from_json(entry)
            except InvalidRecord as exc:
                loaded.unreadable[name] = f"{self.path}: invalid record of {name}: {exc}"
        return loaded

    def _put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        lock = self._locked()
        try:
            data = self._read_unlocked()
            environments = data.get("environments") or {}
            if not isinstance(environments, dict):
                raise StateStoreError(f"{self.path}: `environments` is not a mapping")
            entry = environments.get(name)
            try:  # never overwrite what cannot be read: it may record a run in flight
                stored = record_from_json(entry).version if entry is not None else 0
            except InvalidRecord as exc:
                raise StateStoreError(
                    f"{self.path}: the record of {name} is unreadable: {exc}"
                ) from exc
            if stored != record.version:
                raise StoreConflict(
                    f"{name}: the stored record is at version {stored}, not {record.version}"
                )
            written = replace(record, version=record.version + 1)
            environments[name] = record_to_json(written)
            self._write({**data, "version": 2, "environments": environments})
            self._seen = self._signature()
            return written
        finally:
            lock.close()

    def _write(self, data: dict[str, Any]) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, temp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise

    async def load(self) -> StoredRecords:
        return await asyncio.to_thread(self._load)

    def _load_events(self) -> list[dict[str, Any]]:
        events = self._read_unlocked().get("events") or []
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    def _save_events(self, events: list[dict[str, Any]]) -> None:
        lock = self._locked()
        try:
            data = self._read_unlocked()
            self._write({"version": 2, "environments": {}, **data, "events": events})
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
        try:
            return await asyncio.to_thread(self._put, name, record)
        except OSError as exc:
            raise StateStoreError(f"cannot write state store {self.path}: {exc}") from exc

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


class DynamoDbStateStore:
    """Table with partition key `environment` (string); items hold `record` (JSON) and `version`."""

    def __init__(self, aws: AwsClients, table: str, region: str | None = None) -> None:
        self._aws = aws
        self.table = table
        self.region = region
        self.description = f"dynamodb://{table}"

    async def load(self) -> StoredRecords:
        loaded = StoredRecords()
        params: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        try:
            for _ in range(MAX_SCAN_PAGES):
                answer = await self._aws.call("dynamodb", "Scan", self.region, **params)
                for item in answer["Items"]:  # an answer without them is not "no record"
                    self._read_item(item, loaded)
                if "LastEvaluatedKey" not in answer:
                    return loaded
                params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
            raise StateStoreError(
                f"cannot read {self.description}: still more pages after {MAX_SCAN_PAGES}"
            )
        except AwsError as exc:
            raise StateStoreError(f"cannot read {self.description}: {exc}") from exc
        except (KeyError, TypeError, AttributeError) as exc:
            raise StateStoreError(f"{self.description}: an item without its key: {exc}") from exc

    def _read_item(self, item: dict[str, Any], loaded: StoredRecords) -> None:
        name = str(item["environment"]["S"])
        if name.startswith(RESERVED_PREFIX):  # not an environment (the events)
            return
        try:
            data = json.loads(item["record"]["S"])
            if not isinstance(data, dict):
                raise InvalidRecord("not a JSON object")
            data["version"] = int(item["version"]["N"])
            loaded.records[name] = record_from_json(data)
        except (KeyError, TypeError, ValueError) as exc:  # InvalidRecord is a ValueError
            loaded.unreadable[name] = f"{self.description}: invalid record of {name}: {exc}"

    async def set_aside(self) -> str | None:
        """A table is never moved: its unreadable items stop their environments only."""
        return None

    async def load_events(self) -> list[dict[str, Any]]:
        try:
            answer = await self._aws.call(
                "dynamodb",
                "GetItem",
                self.region,
                TableName=self.table,
                Key={"environment": {"S": EVENTS_ITEM}},
                ConsistentRead=True,
            )
        except AwsError as exc:
            raise StateStoreError(f"cannot read {self.description}: {exc}") from exc
        try:
            events = json.loads(answer["Item"]["events"]["S"]) if "Item" in answer else []
        except (KeyError, TypeError, ValueError):
            return []  # unreadable events are not worth stopping for: they start again
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    async def save_events(self, events: list[dict[str, Any]]) -> None:
        try:
            await self._aws.call(
                "dynamodb",
                "PutItem",
                self.region,
                TableName=self.table,
                Item={"environment": {"S": EVENTS_ITEM}, "events": {"S": json.dumps(events)}},
            )
        except AwsError as exc:
            raise StateStoreError(f"cannot write {self.description}: {exc}") from exc

    async def changed(self) -> bool:
        return False  # conditional writes find out instead

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        written = replace(record, version=record.version + 1)
        body = record_to_json(written)
        body.pop("version")
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(environment)"}
            if record.version == 0
            else {
                "ConditionExpression": "version = :expected",
                "ExpressionAttributeValues": {":expected": {"N": str(record.version)}},
            }
        )
        try:
            await self._aws.call(
                "dynamodb",
                "PutItem",
                self.region,
                TableName=self.table,
                Item={
                    "environment": {"S": name},
                    "record": {"S": json.dumps(body)},
                    "version": {"N": str(written.version)},
                },
                **condition,
            )
        except AwsError as exc:
            if exc.code == "ConditionalCheckFailedException":
                raise StoreConflict(f"{name}: changed by another controller") from exc
            raise StateStoreError(f"cannot write {self.description}: {exc}") from exc
        return written


def open_state_store(url: str, aws: AwsClients | None = None) -> StateStore:
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        if not path:
            raise StateStoreError("file:// needs a path, e.g. file://.controller-state.json")
        return FileStateStore(path)
    if url.startswith("dynamodb://"):
        table = url.removeprefix("dynamodb://")
        if not table or aws is None:
            raise StateStoreError(
                "dynamodb:// needs a table name, e.g. dynamodb://infra-controller"
            )
        return DynamoDbStateStore(aws, table)
    raise StateStoreError(f"unknown state store {url!r}: expected file://PATH or dynamodb://TABLE")
