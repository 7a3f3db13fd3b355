"""State store faults: a store that cannot be written, a deleted store, garbage in the store.
Each is detected, reported once, shown by /readyz and a metric, and recovered from without
guessing and without starting a run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from controller.core.state_store import FileStateStore
from controller.sandbox.demo_stack import DemoStack
from tests.conftest import Harness, MakeController, fake_terraform_behaviour
from tests.waiting import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNREADABLE = {
    "garbage": "{not json at all",
    "truncated": '{"version": 2, "environments": {"web": {"idle": {"awake_since": "2026-',
    "not an object": "[1, 2, 3]",
    "deeply nested": "[" * 100_000,
}


def desired(stack: DemoStack, extra: str = "") -> str:
    return (
        "version: 1\nenvironments:\n  web:\n    power: on\n"
        f"{extra}    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, wake: manual}\n"
    )


def store_ok(h: Harness) -> float:
    return h.metric("infra_controller_state_store_ok")


def test_run_once_fails_when_its_state_cannot_be_saved(tmp_path: Path, stack: DemoStack) -> None:
    (tmp_path / "desired_state.yaml").write_text(desired(stack))
    result = subprocess.run(
        [sys.executable, "-m", "controller", "run", "--once"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CONTROLLER_STATE_STORE": "file:///proc/no-such-dir/state.json",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "record not saved" in result.stderr


async def test_a_store_that_cannot_be_written_is_shown_by_readyz_and_a_metric(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    lock = Path(str(h.state_path) + ".lock")
    os.mkdir(lock)  # the store reads, but cannot take its write lock
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "error"}
    assert store_ok(h) == 0
    reason = h.controller.ready()
    assert reason is not None and reason.startswith("state store write failed")
    assert h.status()["state_store"]["problem"] == reason
    os.rmdir(lock)
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    assert (store_ok(h), h.controller.ready()) == (1, None)


async def test_a_deleted_store_continues_as_after_a_lost_store_in_the_same_pass(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.state_path.unlink()
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    record = (await FileStateStore(str(h.state_path)).load()).records["web"]
    # nothing of the old record is guessed back: the awake service counts as just woken
    assert record.idle.awake_since == h.clock.now()
    assert record.version == 1


@pytest.mark.parametrize("content", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_garbage_in_the_store_is_set_aside_and_reported_once(
    make_controller: MakeController, stack: DemoStack, logs: io.StringIO, content: str
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.state_path.write_text(content)
    for _ in range(2):
        h.clock.advance(timedelta(minutes=1))
        report = await h.controller.reconcile_once()
        assert report.results == {"web": "success"}
    (aside,) = h.state_path.parent.glob("state.json.unreadable-*")
    assert aside.read_text() == content  # kept for whoever wants to look at it
    assert "web" in (await FileStateStore(str(h.state_path)).load()).records
    events = [json.loads(line)["event"] for line in logs.getvalue().splitlines()]
    assert events.count("state store unreadable: set aside; continuing as after a lost store") == 1


async def test_a_second_writer_s_run_survives_garbage_in_the_shared_store(
    make_controller: MakeController, fake_terraform: Path
) -> None:
    fake_terraform_behaviour(fake_terraform, destroy={"seconds": 3})
    body = (
        "version: 1\nenvironments:\n  lab:\n    power: off\n    region: eu-west-3\n"
        f"    terraform: {{runner: cli, workdir: {fake_terraform}}}\n"
    )
    first: Harness = make_controller(body)
    second: Harness = make_controller(body)  # the same state file and runs directory
    await first.controller.reconcile_once()  # no record: nothing in flight; a destroy starts
    assert (first.state_path.parent / "state.json").exists()
    first.state_path.write_text(first.state_path.read_text() + "garbage appended by someone")
    report = await second.controller.reconcile_once()
    # the garbage is set aside; the run in flight is found through its runner, not restarted
    assert report.decision("lab", "power").action == "none"
    assert report.environments["lab"].facts.power_state == "STOPPING"
    await until(lambda: invocations(fake_terraform).count("destroy") == 1, limit=10)
    assert invocations(fake_terraform).count("destroy") == 1


async def test_a_store_whose_medium_fails_stops_everything_and_is_reported_once(
    make_controller: MakeController, stack: DemoStack, fake_terraform: Path, logs: io.StringIO
) -> None:
    terraform = f"    terraform: {{runner: cli, workdir: {fake_terraform}}}\n"
    h: Harness = make_controller(desired(stack, terraform))
    os.mkdir(h.state_path)  # reading it fails as a disk or a mount would
    for _ in range(3):
        report = await h.controller.reconcile_once()
        assert report.results == {"web": "error"}
        h.clock.advance(timedelta(minutes=20))  # past any backoff
    reason = h.controller.ready()
    assert reason is not None and reason.startswith("state store unreadable")
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert sum(line["event"].startswith("state store fault") for line in lines) == 1
    os.rmdir(h.state_path)  # the medium is back (and empty: as after a lost store)
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    assert report.environments["web"].facts.power_state == "RUNNING"  # adopted, not applied
    assert not (fake_terraform / "invocations.log").exists()
    assert h.controller.ready() is None


async def test_an_unreadable_record_the_operator_removes_starts_again_as_new(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    document = json.loads(h.state_path.read_text())
    document["environments"]["web"]["power"] = {"state": "SLEEPING"}
    h.state_path.write_text(json.dumps(document))
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "error"}
    assert "invalid record of web" in (report.environments["web"].error or "")
    h.state_path.write_text(json.dumps({"version": 2, "environments": {}}))  # removed
    h.clock.advance(timedelta(minutes=20))
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    record = (await FileStateStore(str(h.state_path)).load()).records["web"]
    assert (record.version, record.idle.awake_since) == (1, h.clock.now())  # new, not the old


def invocations(workdir: Path) -> list[str]:
    log = workdir / "invocations.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line)["argv"][0] for line in lines]
