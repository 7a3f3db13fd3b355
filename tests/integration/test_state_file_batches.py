"""The file state store writes the records of a pass together: one read and one write of the
file for all of them (group commit), each record still checked against its own version, and a
write cut short never loses the previous content."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.core import atomic_file, state_store
from controller.core.records import EnvironmentRecord, IdleRecord
from controller.core.state_store import FileStateStore, StateStoreError, StoreConflict
from tests.conftest import MakeController

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def record(minute: int = 30) -> EnvironmentRecord:
    return EnvironmentRecord(idle=IdleRecord(awake_since=NOW.replace(minute=minute)))


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the file store writes, in order (the writes themselves still happen)."""
    written: list[str] = []
    real = atomic_file.write_atomically

    def counting(path: str, text: str, prefix: str = ".state-") -> None:
        written.append(text)
        real(path, text, prefix)

    monkeypatch.setattr(state_store, "write_atomically", counting)
    return written


async def test_puts_made_together_are_written_in_one_write(
    tmp_path: Path, writes: list[str]
) -> None:
    store = FileStateStore(str(tmp_path / "state.json"))
    names = [f"env-{i}" for i in range(200)]
    written = await asyncio.gather(*(store.put(name, record()) for name in names))
    assert [r.version for r in written] == [1] * 200
    assert len(writes) == 1
    loaded = await store.load()
    assert sorted(loaded.records) == sorted(names)


async def test_a_stale_put_fails_alone_and_the_rest_of_its_batch_is_written(
    tmp_path: Path, writes: list[str]
) -> None:
    store = FileStateStore(str(tmp_path / "state.json"))
    await store.put("a", record())
    results = await asyncio.gather(
        store.put("a", record(1)),  # version 0: another writer wrote it since
        store.put("b", record(2)),
        return_exceptions=True,
    )
    assert isinstance(results[0], StoreConflict)
    assert isinstance(results[1], EnvironmentRecord)
    loaded = (await store.load()).records
    assert loaded["a"].idle.awake_since == NOW and loaded["b"].version == 1
    assert len(writes) == 2


async def test_an_unreadable_record_is_never_overwritten_by_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": 2, "environments": {"bad": {"power": 42}}}))
    store = FileStateStore(str(path))
    results = await asyncio.gather(
        store.put("bad", record()), store.put("good", record()), return_exceptions=True
    )
    assert isinstance(results[0], StateStoreError) and "unreadable" in str(results[0])
    assert isinstance(results[1], EnvironmentRecord)
    stored = json.loads(path.read_text())["environments"]
    assert stored["bad"] == {"power": 42}


async def test_puts_queued_while_a_batch_is_written_make_the_next_one_in_order(
    tmp_path: Path, writes: list[str]
) -> None:
    store = FileStateStore(str(tmp_path / "state.json"))
    first = asyncio.create_task(store.put("a", record()))
    await asyncio.sleep(0)  # the first batch is being written
    second = asyncio.create_task(store.put("a", replace(record(5), version=1)))
    assert (await first).version == 1
    assert (await second).version == 2
    assert (await store.load()).records["a"].idle.awake_since == NOW.replace(minute=5)


async def test_a_put_given_up_before_its_batch_began_is_not_written(tmp_path: Path) -> None:
    store = FileStateStore(str(tmp_path / "state.json"))
    put = asyncio.create_task(store.put("a", record()))
    await asyncio.sleep(0)  # queued, its batch not begun
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    await store.put("b", record())
    assert sorted((await store.load()).records) == ["b"]


async def test_a_write_cut_short_keeps_the_previous_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = FileStateStore(str(path))
    await store.put("a", record())
    before = path.read_text()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StateStoreError, match="No space left"):
        await store.put("a", replace(record(1), version=1))
    monkeypatch.undo()
    assert path.read_text() == before
    assert [name for name in os.listdir(tmp_path) if name.startswith(".state-")] == []
    assert (await FileStateStore(str(path)).load()).records["a"].version == 1


async def test_the_state_file_holds_one_environment_a_line(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = FileStateStore(str(path))
    await asyncio.gather(store.put("a", record()), store.put("b", record()))
    await store.save_events([{"kind": "woken"}, {"kind": "scaled_to_zero"}])
    lines = path.read_text().splitlines()
    assert [line.split(":")[0].strip() for line in lines if line.startswith('  "')] == [
        '"a"',
        '"b"',
    ]
    assert sum(1 for line in lines if '"kind"' in line) == 2
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["version"] == 2 and set(data["environments"]) == {"a", "b"}


@pytest.mark.integration
async def test_a_pass_over_many_environments_writes_the_state_file_once(
    make_controller: MakeController, writes: list[str]
) -> None:
    environments = "".join(f"  env-{i}:\n    power: on\n" for i in range(60))
    h = make_controller(f"version: 1\nenvironments:\n{environments}")
    await h.controller.reconcile_once()
    records_written = [text for text in writes if '"env-0"' in text and '"events"' not in text]
    assert len(records_written) == 1
    assert len(json.loads(h.state_path.read_text())["environments"]) == 60


async def test_an_entry_another_writer_changed_is_read_again_never_trusted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    store = FileStateStore(str(path))
    await store.put("a", record())
    data = json.loads(path.read_text())
    data["environments"]["a"]["power"] = "garbage"  # another writer, behind this one's back
    path.write_text(json.dumps(data))
    with pytest.raises(StateStoreError, match="unreadable"):
        await store.put("a", replace(record(5), version=1))
    assert json.loads(path.read_text())["environments"]["a"]["power"] == "garbage"


@pytest.mark.integration
async def test_the_cost_accounting_alone_is_written_every_five_minutes_not_every_pass(
    make_controller: MakeController, writes: list[str]
) -> None:
    h = make_controller("version: 1\nenvironments:\n  a:\n    power: on\n")
    await h.controller.reconcile_once()
    assert len(writes) == 1  # the new record
    for _ in range(4):
        h.clock.advance(timedelta(minutes=1))
        await h.controller.reconcile_once()
    assert len(writes) == 1
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once()
    assert len(writes) == 2
    stored = json.loads(h.state_path.read_text())["environments"]["a"]["cost"]
    assert stored["accounted_at"] is not None


@pytest.mark.integration
async def test_a_change_besides_the_accounting_is_written_at_once(
    make_controller: MakeController,
) -> None:
    h = make_controller("version: 1\nenvironments:\n  a:\n    power: on\n")
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=1))
    await h.controller.overrides.suspend("a", "load test", wait=5)
    stored = json.loads(h.state_path.read_text())["environments"]["a"]
    assert stored["overrides"]["suspension"]["reason"] == "load test"
