"""Suspend and resume at runtime through the API: persisted in the state store before the 202,
kept across a restart, shown in /status and a metric, cleared by resume; the desired state's
`suspend: true` always wins."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from controller.core.aws import AwsClients
from controller.core.clock import utc_iso
from controller.core.state_store import FileStateStore
from controller.sandbox.demo_stack import DemoStack
from tests.conftest import ApiFactory, desired_count

pytestmark = pytest.mark.integration
TOKEN = "test-token-123"


def desired(stack: DemoStack, suspend: bool = False) -> str:
    return (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    suspend: {'true' if suspend else 'false'}\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, wake: manual}\n"
    )


async def test_suspend_through_the_api_is_persisted_shown_and_observes_only(
    api_factory: ApiFactory, seed_aws: AwsClients, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), api_token=TOKEN)
    h = api.h
    await h.controller.reconcile_once()
    status, body = await api.post(
        "/environments/demo/suspend", TOKEN, json={"reason": "load test until 14:00"}
    )
    assert (status, body["suspended"], body["environment"]) == (202, True, "demo")
    # written before the answer: what a restart reads
    stored = (await FileStateStore(str(h.state_path)).load()).records["demo"]
    assert stored.overrides.suspension is not None
    assert stored.overrides.suspension.reason == "load test until 14:00"
    shown = h.status()["environments"]["demo"]["suspended"]
    assert shown == {
        "by": "api",
        "reason": "load test until 14:00",
        "since": utc_iso(h.clock.now()),
    }
    assert h.metric("infra_controller_suspended", environment="demo", by="api") == 0  # no pass
    h.clock.advance(timedelta(minutes=20))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "none"
    assert report.decision("demo", "idle").reason.startswith(
        "suspended: would scale_to_zero (no requests for"
    )
    assert await desired_count(seed_aws, stack) == 1
    assert h.metric("infra_controller_suspended", environment="demo", by="api") == 1
    conditions = h.status()["environments"]["demo"]["conditions"]
    suspended = next(c for c in conditions if c["type"] == "Suspended")
    assert (suspended["reason"], suspended["message"]) == (
        "SuspendedThroughAPI",
        "load test until 14:00",
    )
    status, body = await api.post("/environments/demo/wake", TOKEN)
    assert (status, body["error"]) == (409, "the environment is suspended")


async def test_a_suspension_survives_a_restart_and_resume_lets_the_controller_act(
    api_factory: ApiFactory, seed_aws: AwsClients, stack: DemoStack
) -> None:
    first = await api_factory(desired(stack), api_token=TOKEN)
    await first.h.controller.reconcile_once()
    assert (await first.post("/environments/demo/suspend", TOKEN))[0] == 202
    await first.h.controller.close()

    # a new process on the same state file: still suspended, from its first pass
    api = await api_factory(desired(stack), api_token=TOKEN)
    h = api.h
    h.clock.advance(timedelta(minutes=20))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").reason.startswith("suspended: would scale_to_zero")
    assert h.status()["environments"]["demo"]["suspended"]["reason"] == (
        "suspended through the API"
    )
    assert await desired_count(seed_aws, stack) == 1

    status, body = await api.post("/environments/demo/resume", TOKEN)
    assert (status, body["suspended"], body["message"]) == (202, False, "demo resumed")
    assert h.status()["environments"]["demo"]["suspended"] is None
    stored = (await FileStateStore(str(h.state_path)).load()).records["demo"]
    assert stored.overrides.suspension is None
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert await desired_count(seed_aws, stack) == 0
    assert h.metric("infra_controller_suspended", environment="demo", by="api") == 0
    status, body = await api.post("/environments/demo/resume", TOKEN)
    assert (status, body["message"]) == (202, "demo was not suspended")


async def test_the_desired_state_s_suspend_wins_over_resume(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack, suspend=True), api_token=TOKEN)
    h = api.h
    await h.controller.reconcile_once()
    assert h.status()["environments"]["demo"]["suspended"] == {
        "by": "desired_state",
        "reason": "suspend: true in the desired state",
        "since": None,
    }
    assert h.metric("infra_controller_suspended", environment="demo", by="desired_state") == 1
    status, body = await api.post("/environments/demo/resume", TOKEN)
    assert status == 409
    assert "suspend: true" in body["error"]
    # a suspension asked now outlasts the desired state's: it holds once git says false
    assert (await api.post("/environments/demo/suspend", TOKEN))[0] == 202
    h.write(desired(stack))
    await h.controller.reconcile_once()
    assert h.status()["environments"]["demo"]["suspended"]["by"] == "api"


async def test_suspend_and_resume_refuse_bad_requests_and_change_nothing(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), api_token=TOKEN)
    h = api.h
    await h.controller.reconcile_once()
    for path in ("/environments/demo/suspend", "/environments/demo/resume"):
        assert (await api.post(path))[0] == 401
        assert (await api.post(path, "wrong-token"))[0] == 401
    assert (await api.post("/environments/nope/suspend", TOKEN))[0] == 404
    assert (await api.post("/environments/nope/resume", TOKEN))[0] == 404
    bad_bodies: list[tuple[bytes, int]] = [
        (b"not json", 400),
        (b'{"reason": 5}', 400),
        (b'{"reason": "x", "for": "2h"}', 400),
        (b'{"reason": "   "}', 400),
        (b'{"reason": "' + b"x" * 201 + b'"}', 400),
        (b"{" + b" " * 5000 + b"}", 413),
        (b"[1]", 400),
        (b"[" * 3000, 400),  # nested deeper than the JSON parser goes
    ]
    for body, expected in bad_bodies:
        status, _ = await api.post("/environments/demo/suspend", TOKEN, data=body)
        assert status == expected, body[:40]
    assert h.status()["environments"]["demo"]["suspended"] is None


async def test_the_api_is_disabled_without_a_token(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack))
    await api.h.controller.reconcile_once()
    assert (await api.post("/environments/demo/suspend", "anything"))[0] == 403


async def test_a_suspension_that_cannot_be_written_is_refused_and_not_in_force(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), api_token=TOKEN)
    h = api.h
    await h.controller.reconcile_once()
    lock = Path(str(h.state_path) + ".lock")
    os.unlink(lock)  # left by the first write
    os.mkdir(lock)  # the store reads, but cannot take its write lock
    status, body = await api.post("/environments/demo/suspend", TOKEN)
    assert status == 503
    assert body["error"].startswith("not recorded, nothing changed")
    assert h.status()["environments"]["demo"]["suspended"] is None
    os.rmdir(lock)
    h.clock.advance(timedelta(minutes=20))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
