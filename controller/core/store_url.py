"""A state store from its URL (`CONTROLLER_STATE_STORE`): `file://PATH` or `dynamodb://TABLE`."""

from __future__ import annotations

from collections.abc import Callable

from controller.core.aws import AwsClients
from controller.core.lease import Fence
from controller.core.state_store import FileStateStore, StateStore, StateStoreError


def open_state_store(
    url: str,
    aws: AwsClients | None = None,
    shard: tuple[int, int] | None = None,
    fence: Callable[[], Fence | None] | None = None,
) -> StateStore:
    """`fence` (leader election) and `shard` apply to `dynamodb://`, the only store that
    settings allow with them."""
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
        from controller.core.dynamodb_store import DynamoDbStateStore

        return DynamoDbStateStore(aws, table, fence=fence, shard=shard)
    raise StateStoreError(f"unknown state store {url!r}: expected file://PATH or dynamodb://TABLE")
