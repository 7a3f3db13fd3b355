"""The leader's lease: one DynamoDB item in the state table (contract section 12).

The item (`environment` = `#leader`, or `#leader/I/N` for a shard) holds the `holder`, an
`epoch` that grows by one at every change of holder (the fencing token every state write
checks), and `renewals`, which grows at every renewal. Candidates never compare clocks: a lease
is expired when a candidate has seen neither number move for the lease's duration, by its own
monotonic clock (as Kubernetes' leader election does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.core.aws import AwsClients, AwsError

LEASE_ITEM = "#leader"
RELEASED = "(released)"  # the holder of a lease handed over at shutdown


class LeaseError(Exception):
    """The lease could not be read or written (not a refusal: nobody knows who holds it)."""


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    epoch: int
    renewals: int


@dataclass(frozen=True)
class Fence:
    """What a fenced write checks: the lease item still names this holder at this epoch."""

    key: str
    holder: str
    epoch: int


def lease_key(shard: tuple[int, int] | None) -> str:
    return LEASE_ITEM if shard is None else f"{LEASE_ITEM}/{shard[0]}/{shard[1]}"


class DynamoDbLease:
    def __init__(
        self, aws: AwsClients, table: str, key: str, region: str | None, duration: float
    ) -> None:
        self._aws = aws
        self.table = table
        self.key = key
        self._region = region
        self._duration = duration

    async def read(self) -> LeaseRecord | None:
        try:
            answer = await self._aws.call(
                "dynamodb",
                "GetItem",
                self._region,
                TableName=self.table,
                Key={"environment": {"S": self.key}},
                ConsistentRead=True,
            )
        except AwsError as exc:
            raise LeaseError(str(exc)) from exc
        item = answer.get("Item")
        if item is None:
            return None
        try:
            return LeaseRecord(
                str(item["holder"]["S"]), int(item["epoch"]["N"]), int(item["renewals"]["N"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LeaseError(f"the lease item {self.key} is not one: {exc}") from exc

    async def take(self, me: str, seen: LeaseRecord | None) -> LeaseRecord | None:
        """Become the holder if the lease is still as `seen` (None: no lease yet). Returns
        the new lease, or None when someone else changed it first."""
        epoch = (seen.epoch if seen else 0) + 1
        if seen is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(environment)"}
        else:
            condition = {
                "ConditionExpression": "holder = :h AND epoch = :e AND renewals = :r",
                "ExpressionAttributeValues": {
                    ":h": {"S": seen.holder},
                    ":e": {"N": str(seen.epoch)},
                    ":r": {"N": str(seen.renewals)},
                },
            }
        item = {
            "environment": {"S": self.key},
            "holder": {"S": me},
            "epoch": {"N": str(epoch)},
            "renewals": {"N": "0"},
            "duration_seconds": {"N": f"{self._duration:g}"},
        }
        if not await self._conditional("PutItem", Item=item, **condition):
            return None
        return LeaseRecord(me, epoch, 0)

    async def renew(self, held: LeaseRecord) -> LeaseRecord | None:
        """One more renewal; None when the lease is no longer `held` (lost)."""
        done = await self._conditional(
            "UpdateItem",
            Key={"environment": {"S": self.key}},
            UpdateExpression="SET renewals = renewals + :one",
            ConditionExpression="holder = :h AND epoch = :e",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":h": {"S": held.holder},
                ":e": {"N": str(held.epoch)},
            },
        )
        return LeaseRecord(held.holder, held.epoch, held.renewals + 1) if done else None

    async def release(self, held: LeaseRecord) -> None:
        """Hand the lease over at shutdown: the next candidate need not wait for it to expire.
        The item stays (its epoch only grows, so an old token never becomes valid again)."""
        await self._conditional(
            "UpdateItem",
            Key={"environment": {"S": self.key}},
            UpdateExpression="SET holder = :released",
            ConditionExpression="holder = :h AND epoch = :e",
            ExpressionAttributeValues={
                ":released": {"S": RELEASED},
                ":h": {"S": held.holder},
                ":e": {"N": str(held.epoch)},
            },
        )

    async def _conditional(self, operation: str, **params: Any) -> bool:
        try:
            table = {"TableName": self.table}
            await self._aws.call("dynamodb", operation, self._region, **table, **params)
        except AwsError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise LeaseError(str(exc)) from exc
        return True
