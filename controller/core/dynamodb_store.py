"""The `dynamodb://TABLE` state store: one item per environment, partition key `environment`
(string), holding `record` (JSON) and `version`; written with conditional writes.

With leader election on, every write also checks, in the same transaction, that the lease this
controller acts under is still its own (`Fence`): a leader paused past its lease cannot write
over what the next leader wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from controller.core.aws import AwsClients, AwsError
from controller.core.lease import Fence
from controller.core.records import (
    EnvironmentRecord,
    InvalidRecord,
    record_from_json,
    record_to_json,
)
from controller.core.state_store import StateStoreError, StoreConflict, StoredRecords

# a page holds up to 1 MB of records, a thousand environments or more: a table that keeps
# asking for more pages is not to be trusted
MAX_SCAN_PAGES = 100
# items that are not environments start with a character no environment name has
RESERVED_PREFIX = "#"
EVENTS_ITEM = "#events"
EVENTS_ITEM_BYTES = 350_000  # under DynamoDB's 400 KB per item, with room for the key


class DynamoDbStateStore:
    """Table with partition key `environment` (string); items hold `record` (JSON) and `version`."""

    def __init__(
        self,
        aws: AwsClients,
        table: str,
        region: str | None = None,
        fence: Callable[[], Fence | None] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self._aws = aws
        self.table = table
        self.region = region
        self.description = f"dynamodb://{table}"
        # with leader election: the lease every write checks (None from it: not the leader)
        self.fence = fence
        # each shard keeps its own events: one item written whole by each would lose others'
        self.events_key = EVENTS_ITEM if shard is None else f"{EVENTS_ITEM}/{shard[0]}/{shard[1]}"

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
                Key={"environment": {"S": self.events_key}},
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
        text = json.dumps(events)
        while len(text.encode()) > EVENTS_ITEM_BYTES and events:
            # DynamoDB refuses items over 400 KB: the oldest events give way
            events = events[max(1, len(events) // 10) :]
            text = json.dumps(events)
        item = {"environment": {"S": self.events_key}, "events": {"S": text}}
        try:
            await self._write(self.events_key, {"Item": item})
        except StoreConflict as exc:  # no condition of its own: only the lease can refuse
            raise StateStoreError(str(exc)) from exc

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
        item = {
            "environment": {"S": name},
            "record": {"S": json.dumps(body)},
            "version": {"N": str(written.version)},
        }
        await self._write(name, {"Item": item, **condition})
        return written

    async def _write(self, name: str, put: dict[str, Any]) -> None:
        """A conditional put; with a fence, in one transaction with the lease's check."""
        fence = self.fence() if self.fence is not None else None
        if self.fence is not None and fence is None:
            raise NotLeader(f"{name}: not written: this controller is not the leader")
        try:
            if fence is None:
                table = {"TableName": self.table}
                await self._aws.call("dynamodb", "PutItem", self.region, **table, **put)
                return
            check = {
                "TableName": self.table,
                "Key": {"environment": {"S": fence.key}},
                "ConditionExpression": "holder = :h AND epoch = :e",
                "ExpressionAttributeValues": {
                    ":h": {"S": fence.holder},
                    ":e": {"N": str(fence.epoch)},
                },
            }
            await self._aws.call(
                "dynamodb",
                "TransactWriteItems",
                self.region,
                TransactItems=[
                    {"ConditionCheck": check},
                    {"Put": {"TableName": self.table, **put}},
                ],
            )
        except AwsError as exc:
            if exc.code == "ConditionalCheckFailedException":
                raise StoreConflict(f"{name}: changed by another controller") from exc
            if exc.code == "TransactionCanceledException":
                lease, record = _cancellation_reasons(str(exc))
                if lease == "ConditionalCheckFailed":
                    raise NotLeader(f"{name}: not written: the lease moved on") from exc
                if record == "ConditionalCheckFailed":
                    raise StoreConflict(f"{name}: changed by another controller") from exc
            raise StateStoreError(f"cannot write {self.description}: {exc}") from exc


class NotLeader(StateStoreError):
    """A fenced write refused: this controller does not hold the lease (any more)."""


def _cancellation_reasons(message: str) -> tuple[str | None, str | None]:
    """The reasons of a cancelled two-item transaction, from its message (`... [A, B]`)."""
    found = re.search(r"\[([A-Za-z]+), ([A-Za-z]+)\]", message)
    return (found.group(1), found.group(2)) if found else (None, None)
