"""A state store from its URL (`CONTROLLER_STATE_STORE`): `file://PATH` or `dynamodb://TABLE`."""

from __future__ import annotations

from controller.core.aws import AwsClients
from controller.core.state_store import FileStateStore, StateStore, StateStoreError


def open_state_store(
    url: str, aws: AwsClients | None = None, shard: tuple[int, int] | None = None
) -> StateStore:
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

        return DynamoDbStateStore(aws, table, shard=shard)
    raise StateStoreError(f"unknown state store {url!r}: expected file://PATH or dynamodb://TABLE")
