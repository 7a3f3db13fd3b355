"""State store faults: a store that cannot be written, a deleted store, garbage in the store.
Each is detected, reported once, shown by /readyz and a metric, and recovered from without
guessing and without starting a run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog

from controller.core.aws import AwsClients
from controller.core.state_store import FileStateStore
from controller.logging_setup import configure_logging
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from tests.conftest import REGION, Harness, MakeController

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNREADABLE = {
    "garbage": "{not json at all",
    "truncated": '{"version": 2, "environments": {"web": {"idle": {"awake_since": "2026-',
    "not an object": "[1, 2, 3]",
    "deeply nested": "[" * 100_000,
}


@pytest.fixture
async def stack(seed_aws: AwsClients) -> DemoStack:
    (demo,) = await create_demo_stack(seed_aws, REGION)
    return demo


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("json", stream=buffer)
    yield buffer
    structlog.reset_defaults()


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


async def test_a_deleted_store_is_rewritten_from_memory_in_the_same_pass(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    awake_since = (await FileStateStore(str(h.state_path)).load()).records["web"].idle.awake_since
    h.state_path.unlink()
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    rewritten = (await FileStateStore(str(h.state_path)).load()).records["web"]
    assert rewritten.idle.awake_since == awake_since  # what this controller knew, not a guess


@pytest.mark.parametrize("content", list(UNREADABLE.values()), ids=list(UNREADABLE))
async def test_garbage_in_the_store_of_a_running_controller_is_set_aside_and_rewritten(
    make_controller: MakeController, stack: DemoStack, logs: io.StringIO, content: str
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.state_path.write_text(content)
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    (aside,) = h.state_path.parent.glob("state.json.unreadable-*")
    assert aside.read_text() == content  # kept for whoever wants to look at it
    assert "web" in (await FileStateStore(str(h.state_path)).load()).records
    events = [json.loads(line)["event"] for line in logs.getvalue().splitlines()]
    assert events.count("state store unreadable: set aside, rewritten from memory") == 1


async def test_garbage_in_the_store_at_start_stops_everything_reports_once_and_starts_no_run(
    make_controller: MakeController,
    stack: DemoStack,
    fake_terraform: Path,
    logs: io.StringIO,
) -> None:
    terraform = f"    terraform: {{runner: cli, workdir: {fake_terraform}}}\n"
    h: Harness = make_controller(desired(stack, terraform))
    h.state_path.write_text(UNREADABLE["garbage"])
    for _ in range(3):
        report = await h.controller.reconcile_once()
        assert report.results == {"web": "error"}
        h.clock.advance(timedelta(minutes=20))  # past any backoff
    reason = h.controller.ready()
    assert reason is not None and reason.startswith("state store unreadable")
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert sum(line["event"].startswith("state store fault") for line in lines) == 1
    h.state_path.unlink()  # the operator moves the file away: as after a lost store
    report = await h.controller.reconcile_once()
    assert report.results == {"web": "success"}
    assert report.environments["web"].facts.power_state == "RUNNING"  # adopted, not applied
    assert not (fake_terraform / "invocations.log").exists()
    assert h.controller.ready() is None
