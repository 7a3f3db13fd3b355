"""The controller's own memory across restarts (contract section 3, `CONTROLLER_STATE_STORE`).

One record per environment: what AWS does not record (when its service last woke and fell
asleep) and its power state with the Terraform run in flight. A run is written here *before* it
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
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from controller.aws import AwsClients, AwsError
from reconcilers.idle_decision import Wakefulness
from reconcilers.power_decision import PowerRecord, RunInfo, RunResult


class StateStoreError(Exception):
    pass


class StoreConflict(StateStoreError):
    """The record changed since it was read (another controller wrote it)."""


@dataclass(frozen=True)
class EnvironmentRecord:
    wakefulness: Wakefulness = field(default_factory=Wakefulness)
    power: PowerRecord = field(default_factory=PowerRecord)
    version: int = 0  # 0: never written


class StateStore(Protocol):
    description: str

    async def load(self) -> dict[str, EnvironmentRecord]: ...

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        """Write if the stored version is still `record.version`; returns the new version."""
        ...


# ---- (de)serialisation ----


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def record_to_json(record: EnvironmentRecord) -> dict[str, Any]:
    power = record.power
    return {
        "idle": {
            "awake_since": _iso(record.wakefulness.awake_since),
            "asleep_since": _iso(record.wakefulness.asleep_since),
        },
        "power": {
            "state": power.state,
            "run": None
            if power.run is None
            else {**asdict(power.run), "started_at": _iso(power.run.started_at)},
            "last_result": None
            if power.last_result is None
            else {**asdict(power.last_result), "finished_at": _iso(power.last_result.finished_at)},
            "failures": power.failures,
            "retry_at": _iso(power.retry_at),
            "durations": {op: list(values) for op, values in power.durations.items()},
            "changed_at": _iso(power.changed_at),
        },
        "version": record.version,
    }


def record_from_json(data: dict[str, Any]) -> EnvironmentRecord:
    idle = data.get("idle") or {}
    power = data.get("power") or {}
    run = power.get("run")
    last = power.get("last_result")
    return EnvironmentRecord(
        wakefulness=Wakefulness(
            awake_since=_time(idle.get("awake_since")), asleep_since=_time(idle.get("asleep_since"))
        ),
        power=PowerRecord(
            state=power.get("state"),
            run=None
            if not run
            else RunInfo(
                runner=run["runner"],
                operation=run["operation"],
                token=run["token"],
                started_at=_time(run["started_at"]) or datetime.fromtimestamp(0),
                run_id=run.get("run_id"),
                logs_url=run.get("logs_url"),
            ),
            last_result=None
            if not last
            else RunResult(
                operation=last["operation"],
                succeeded=bool(last["succeeded"]),
                finished_at=_time(last["finished_at"]) or datetime.fromtimestamp(0),
                duration_seconds=float(last["duration_seconds"]),
                detail=str(last["detail"]),
                run_id=last.get("run_id"),
            ),
            failures=int(power.get("failures", 0)),
            retry_at=_time(power.get("retry_at")),
            durations={
                op: tuple(float(v) for v in values)
                for op, values in (power.get("durations") or {}).items()
            },
            changed_at=_time(power.get("changed_at")),
        ),
        version=int(data.get("version", 0)),
    )


# ---- file ----


class FileStateStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file://{path}"

    def _read_unlocked(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateStoreError(f"cannot read state store {self.path}: {exc}") from exc
        return data if isinstance(data, dict) else {}

    def _locked(self) -> Any:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        lock = open(self.path + ".lock", "a+")  # noqa: SIM115 - closed by the caller
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def _load(self) -> dict[str, EnvironmentRecord]:
        data = self._read_unlocked()
        return {
            name: record_from_json(entry)
            for name, entry in (data.get("environments") or {}).items()
        }

    def _put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        lock = self._locked()
        try:
            data = self._read_unlocked()
            environments = dict(data.get("environments") or {})
            stored = int((environments.get(name) or {}).get("version", 0))
            if stored != record.version:
                raise StoreConflict(
                    f"{name}: the stored record is at version {stored}, not {record.version}"
                )
            written = replace(record, version=record.version + 1)
            environments[name] = record_to_json(written)
            self._write({"version": 2, "environments": environments})
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

    async def load(self) -> dict[str, EnvironmentRecord]:
        return await asyncio.to_thread(self._load)

    async def put(self, name: str, record: EnvironmentRecord) -> EnvironmentRecord:
        try:
            return await asyncio.to_thread(self._put, name, record)
        except OSError as exc:
            raise StateStoreError(f"cannot write state store {self.path}: {exc}") from exc


# ---- DynamoDB ----


class DynamoDbStateStore:
    """Table with partition key `environment` (string); items hold `record` (JSON) and `version`."""

    def __init__(self, aws: AwsClients, table: str, region: str | None = None) -> None:
        self._aws = aws
        self.table = table
        self.region = region
        self.description = f"dynamodb://{table}"

    async def load(self) -> dict[str, EnvironmentRecord]:
        records: dict[str, EnvironmentRecord] = {}
        params: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        try:
            while True:
                answer = await self._aws.call("dynamodb", "Scan", self.region, **params)
                for item in answer.get("Items", []):
                    data = json.loads(item["record"]["S"])
                    data["version"] = int(item["version"]["N"])
                    records[item["environment"]["S"]] = record_from_json(data)
                if "LastEvaluatedKey" not in answer:
                    return records
                params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        except AwsError as exc:
            raise StateStoreError(f"cannot read {self.description}: {exc}") from exc

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
