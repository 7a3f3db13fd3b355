"""The state stores: file:// and dynamodb:// keep records across restarts and refuse to
overwrite a record another controller changed (conditional writes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.core.aws import AwsClients
from controller.core.dynamodb_store import DynamoDbStateStore
from controller.core.records import (
    EnvironmentRecord,
    IdleRecord,
    Overrides,
    PowerRecord,
    RunInfo,
    RunResult,
    Suspension,
)
from controller.core.state_store import (
    FileStateStore,
    StateStore,
    StateStoreError,
    StoreConflict,
)
from controller.core.store_url import open_state_store
from tests.conftest import REGION, Harness, MakeController, create_state_table

pytestmark = pytest.mark.integration
NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
RECORD = EnvironmentRecord(
    idle=IdleRecord(awake_since=NOW),
    power=PowerRecord(
        state="STARTING",
        run=RunInfo("codebuild", "apply", "tok", NOW, "tf:1", "https://logs"),
        last_result=RunResult("destroy", True, NOW - timedelta(hours=1), 600.0, "ok", "tf:0"),
        failures=0,
        durations={"destroy": (600.0, 540.0)},
        changed_at=NOW,
    ),
    overrides=Overrides(suspension=Suspension("load test until 14:00", NOW)),
)


async def _dynamodb_store(seed_aws: AwsClients) -> DynamoDbStateStore:
    await create_state_table(seed_aws)
    return DynamoDbStateStore(seed_aws, "infra-controller", REGION)


@pytest.fixture
async def dynamodb_store(seed_aws: AwsClients) -> DynamoDbStateStore:
    return await _dynamodb_store(seed_aws)


@pytest.fixture(params=["file", "dynamodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, seed_aws: AwsClients) -> StateStore:
    if request.param == "file":
        return FileStateStore(str(tmp_path / "state.json"))
    return await _dynamodb_store(seed_aws)


async def test_a_record_round_trips_with_its_run_in_flight_and_overrides(store: StateStore) -> None:
    written = await store.put("staging", RECORD)
    assert written.version == 1
    loaded = (await store.load()).records["staging"]
    assert loaded == written


async def test_a_stale_write_is_refused(store: StateStore) -> None:
    first = await store.put("staging", RECORD)
    await store.put("staging", first)  # another controller moves it to version 2
    with pytest.raises(StoreConflict):
        await store.put("staging", first)
    with pytest.raises(StoreConflict):
        await store.put("staging", EnvironmentRecord())  # a fresh record over an existing one


async def test_the_controller_runs_on_a_dynamodb_store(
    make_controller: MakeController, dynamodb_store: DynamoDbStateStore, fake_terraform: Path
) -> None:
    h: Harness = make_controller(
        f"version: 1\nenvironments:\n  staging:\n    power: on\n    region: {REGION}\n"
        f"    terraform: {{runner: cli, workdir: {fake_terraform}}}\n",
        state_store="dynamodb://infra-controller",
    )
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "terraform_apply"
    stored = (await dynamodb_store.load()).records["staging"]
    assert stored.power.run is not None
    assert stored.power.run.run_id is not None


async def test_unknown_store_urls_are_refused() -> None:
    aws = AwsClients(REGION)
    for url in ("redis://x", "file://", "dynamodb://"):
        with pytest.raises(StateStoreError):
            open_state_store(url, aws)
    assert isinstance(open_state_store("dynamodb://t", aws), DynamoDbStateStore)
    await aws.close()


async def test_a_state_file_written_by_the_previous_release_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {
                "version": 2,
                "environments": {
                    "staging": {
                        "idle": {"awake_since": "2026-01-15T10:30:00+00:00", "asleep_since": None},
                        "power": {
                            "state": "STARTING",
                            "run": {
                                "runner": "cli",
                                "operation": "apply",
                                "token": "tok",
                                "started_at": "2026-01-15T10:30:00+00:00",
                                "run_id": "cli:tok",
                                "logs_url": None,
                            },
                            "last_result": None,
                            "failures": 0,
                            "retry_at": None,
                            "durations": {"apply": [600.0]},
                            "changed_at": "2026-01-15T10:30:00+00:00",
                        },
                        "version": 7,
                    }
                },
            }
        )
    )
    record = (await FileStateStore(str(path)).load()).records["staging"]
    assert record.version == 7
    assert record.idle.awake_since == NOW
    assert record.power.run is not None and record.power.run.run_id == "cli:tok"
    assert record.power.estimated_duration("apply") == timedelta(minutes=10)


@pytest.mark.parametrize(
    "entry",
    [
        {"power": {"state": "SLEEPING"}},
        {"idle": {"awake_since": "2026-01-15T10:30:00"}},  # a time without its zone
        {"power": {"run": {"runner": "cli"}}},
        "not a record",
    ],
)
async def test_a_record_the_controller_cannot_fully_read_is_set_apart(
    tmp_path: Path, entry: object
) -> None:
    path = tmp_path / "state.json"
    good = {"power": {"state": "RUNNING"}}
    path.write_text(json.dumps({"version": 2, "environments": {"staging": entry, "ok": good}}))
    loaded = await FileStateStore(str(path)).load()
    assert "invalid record of staging" in loaded.unreadable["staging"]
    assert set(loaded.records) == {"ok"}
    with pytest.raises(StateStoreError, match="unreadable"):  # never overwritten blindly
        await FileStateStore(str(path)).put("staging", EnvironmentRecord())


async def test_an_unreadable_dynamodb_item_is_set_apart(
    dynamodb_store: DynamoDbStateStore, seed_aws: AwsClients
) -> None:
    await dynamodb_store.put("ok", RECORD)
    item = {"environment": {"S": "bad"}, "record": {"S": "[1, 2]"}, "version": {"N": "3"}}
    await seed_aws.call("dynamodb", "PutItem", REGION, TableName="infra-controller", Item=item)
    loaded = await dynamodb_store.load()
    assert set(loaded.records) == {"ok"}
    assert "invalid record of bad" in loaded.unreadable["bad"]


async def test_events_are_kept_beside_the_records_without_disturbing_them(
    store: StateStore,
) -> None:
    await store.put("staging", RECORD)
    events = [{"time": "2026-01-15T10:30:00.000Z", "kind": "run_started", "reason": "x"}]
    await store.save_events(events)
    assert await store.load_events() == events
    loaded = await store.load()
    assert set(loaded.records) == {"staging"} and loaded.unreadable == {}
    await store.put("staging", loaded.records["staging"])  # a record write keeps the events
    assert await store.load_events() == events


async def test_a_thousand_long_events_fit_dynamodb_s_item_limit_the_oldest_giving_way(
    dynamodb_store: DynamoDbStateStore,
) -> None:
    events = [{"kind": "run_failed", "n": i, "reason": "x" * 500} for i in range(1000)]
    await dynamodb_store.save_events(events)  # about 560 KB as JSON: over 400 KB
    kept = await dynamodb_store.load_events()
    assert 300 < len(kept) < 1000
    assert kept[-1]["n"] == 999  # the newest are kept
