"""What a pass logs in JSON, at any fleet size: a decision line when an environment's decision
changes, and one `pass completed` line per pass (its heartbeat), whatever else happened."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

from tests.conftest import MakeController


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stream.getvalue().splitlines()]
    stream.seek(0)
    stream.truncate()
    return found


async def test_a_pass_logs_one_heartbeat_and_only_the_decisions_that_changed(
    make_controller: MakeController, logs: io.StringIO
) -> None:
    environments = "".join(f"  env-{i}:\n    power: on\n" for i in range(30))
    h = make_controller(f"version: 1\nenvironments:\n{environments}  off:\n    power: off\n")
    await h.controller.reconcile_once()
    first = lines(logs)
    assert sum(1 for line in first if line["event"] == "decision") == 31
    for _ in range(3):
        h.clock.advance(timedelta(minutes=1))
        await h.controller.reconcile_once()
    later = lines(logs)
    assert [line["event"] for line in later if line["event"] == "decision"] == []
    summaries = [line for line in later if line["event"] == "pass completed"]
    assert len(summaries) == 3
    assert summaries[-1]["environments"] == 31
    assert summaries[-1]["succeeded"] == 31 and summaries[-1]["failed"] == 0
    assert isinstance(summaries[-1]["seconds"], float)
    h.write("version: 1\nenvironments:\n" + environments + "  off:\n    power: on\n")
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once()
    changed = [line for line in lines(logs) if line["event"] == "decision"]
    assert [line["environment"] for line in changed] == ["off"]
