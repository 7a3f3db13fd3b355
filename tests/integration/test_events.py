"""Events (contract section 11): every transition kept, the newest first through `/events` and
`infra-controller events`, the last 1,000 across restarts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.core.events import StampedEvent
from controller.core.state_store import FileStateStore
from controller.engine.event_log import EventLog
from tests.conftest import ApiFactory, pass_until
from tests.processes import ROOT

pytestmark = pytest.mark.integration
TOKEN = "test-token-123"


def desired(workdir: Path, power: str = "on") -> str:
    return (
        f"version: 1\nenvironments:\n  staging:\n    power: {power}\n    region: eu-west-3\n"
        f"    terraform: {{runner: cli, workdir: {workdir}, timeout: 5m}}\n"
        "  other:\n    power: off\n"
    )


async def test_transitions_are_events_newest_first_and_survive_a_restart(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform), api_token=TOKEN)
    h = api.h
    await pass_until(h, lambda r: r.environments["staging"].facts.power_state == "RUNNING")
    assert (await api.post("/environments/staging/suspend", TOKEN, json={"reason": "demo"}))[
        0
    ] == 202
    status, body = await api.get("/events?environment=staging")
    assert status == 200
    kinds = [e["kind"] for e in body["events"]]
    assert kinds[0] == "suspended"  # the newest first
    assert {"run_started", "run_succeeded", "power_state_changed"} <= set(kinds)
    started = next(e for e in body["events"] if e["kind"] == "run_started")
    assert started["environment"] == "staging"
    assert started["attributes"]["operation"] == "apply"
    assert started["revision"].startswith("sha256:") and len(started["reconcile_id"]) == 12
    changed = next(e for e in body["events"] if e["kind"] == "power_state_changed")
    assert (changed["from"], changed["to"]) == ("STARTING", "RUNNING")
    _, only = await api.get("/events?kind=run_started,run_succeeded&limit=1")
    assert [e["kind"] for e in only["events"]] == ["run_succeeded"]
    _, later = await api.get(f"/events?since={body['events'][0]['time']}")
    assert later["events"] == []
    for bad in ("limit=0", "limit=5000", "since=yesterday", "since=2026-11-25T10:00:00"):
        assert (await api.get(f"/events?{bad}"))[0] == 400, bad
    await h.controller.close()

    again = await api_factory(desired(quick_terraform), api_token=TOKEN)
    _, kept = await again.get("/events?environment=staging")
    assert [e["kind"] for e in kept["events"]] == kinds


async def test_an_invalid_desired_state_and_its_repair_are_events(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform, power="off"), api_token=TOKEN)
    h = api.h
    await h.controller.reconcile_once()
    h.write("version: 1\nenvironments:\n  staging: {power: maybe}\n")
    await h.controller.reconcile_once()
    h.write(desired(quick_terraform, power="off"))
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once()
    _, body = await api.get("/events?kind=desired_state_invalid,desired_state_valid")
    invalid, valid = reversed(body["events"])
    assert invalid["kind"] == "desired_state_invalid" and invalid["environment"] is None
    assert "power" in invalid["reason"]
    assert valid["kind"] == "desired_state_valid"


async def test_only_the_last_thousand_events_are_kept(tmp_path: Path) -> None:
    store = FileStateStore(str(tmp_path / "state.json"))
    events = EventLog(store, keep=1000)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for index in range(1200):
        events.add(StampedEvent(start + timedelta(seconds=index), "e", "k", f"r{index}"))
    await events.flush()
    stored = await store.load_events()
    assert len(stored) == 1000
    assert stored[0]["reason"] == "r200" and stored[-1]["reason"] == "r1199"


async def test_the_events_command_prints_lines_and_json(
    api_factory: ApiFactory, quick_terraform: Path
) -> None:
    api = await api_factory(desired(quick_terraform), api_token=TOKEN)
    await pass_until(api.h, lambda r: r.environments["staging"].facts.power_state == "RUNNING")

    def events(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controller", "events", *args, "--url", api.base],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    # in a thread: the controller under test answers meanwhile
    text = await asyncio.to_thread(events, "staging")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "staging  power_state_changed  STARTING -> RUNNING" in lines[-1]  # oldest first
    assert "staging  run_started" in lines[0]
    as_json = await asyncio.to_thread(events, "staging", "--output", "json")
    assert json.loads(as_json.stdout)["events"][0]["environment"] == "staging"
