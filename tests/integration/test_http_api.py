"""The HTTP endpoints of contract section 6, through real HTTP, against the local emulator."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from controller.core.aws import AwsClients
from controller.engine.passes import PassRequest
from controller.sandbox.demo_stack import DemoStack
from tests.conftest import REGION, ApiFactory
from tests.waiting import until

pytestmark = pytest.mark.integration
TOKEN = "test-token-123"
SECRET = "hook-secret"


def desired(stack: DemoStack) -> str:
    return f"""
    version: 1
    environments:
      demo:
        power: on
        service: {{cluster: {stack.cluster}, name: {stack.service}}}
        idle: {{after: 5m, wake: manual}}
      plain:
        power: off
    """


async def test_metrics_are_served_in_prometheus_format(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack))
    await api.h.controller.reconcile_once()
    status, text = await api.get("/metrics")
    assert status == 200
    for name in (
        "infra_controller_reconcile_total",
        "infra_controller_reconcile_duration_seconds_bucket",
        "infra_controller_last_successful_reconcile_timestamp_seconds",
        "infra_controller_desired_state_valid 1.0",
        "infra_controller_desired_state_info{revision=",
        'infra_controller_power_state{environment="demo",state="RUNNING"} 1.0',
        'infra_controller_service_desired_count{environment="demo"} 1.0',
        'infra_controller_service_running_count{environment="demo"}',
        'infra_controller_service_active{environment="demo"} 1.0',
        'infra_controller_seconds_since_last_request{environment="demo"}',
        'infra_controller_aws_api_calls_total{operation="DescribeServices",outcome="success",service="ecs"}',
    ):
        assert name in text, name


async def test_healthz_follows_the_heartbeat_of_the_loop(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack))
    assert (await api.get("/healthz"))[0] == 200  # just started: within the grace of 3 intervals
    await api.h.controller.reconcile_once()
    assert (await api.get("/healthz"))[0] == 200
    api.h.clock.advance(timedelta(minutes=3, seconds=1))  # no pass for over 3 intervals
    assert (await api.get("/healthz"))[0] == 503


async def test_readyz_waits_for_a_valid_desired_state(api_factory: ApiFactory) -> None:
    api = await api_factory("version: 1\nenvironments:\n  a:\n    power: nope\n")
    await api.h.controller.reconcile_once()
    assert (await api.get("/readyz"))[0] == 503
    api.h.write("version: 1\nenvironments:\n  a:\n    power: on\n")
    await api.h.controller.reconcile_once()
    assert (await api.get("/readyz"))[0] == 200


async def test_status_reports_every_environment(api_factory: ApiFactory, stack: DemoStack) -> None:
    api = await api_factory(desired(stack))
    await api.h.controller.reconcile_once()
    status, body = await api.get("/status")
    assert status == 200
    assert body["revision"].startswith("sha256:")
    assert body["desired_state_valid"] is True
    demo = body["environments"]["demo"]
    assert demo["power"] == "RUNNING"
    assert demo["service"]["desired"] == 1
    assert demo["service"]["active"] is True
    assert isinstance(demo["service"]["seconds_since_last_request"], int)
    assert demo["conditions"][0]["type"] == "Reconciled"
    assert body["environments"]["plain"]["power"] == "STOPPED"


async def test_environment_status_has_the_seed_shape(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack))
    await api.h.controller.reconcile_once()
    status, body = await api.get("/environments/demo/status")
    assert status == 200
    assert body["status"] == "RUNNING"
    assert body["endpoint"] == f"http://{stack.dns_name}"
    assert body["lastUpdate"].endswith("Z")
    assert "last_update" not in body  # one name for one thing: the seed's, in the seed's view
    _, everything = await api.get("/status")
    assert "lastUpdate" not in everything["environments"]["demo"]
    assert (await api.get("/environments/nope/status"))[0] == 404


async def test_mutating_endpoints_are_forbidden_without_a_configured_token(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack))
    await api.h.controller.reconcile_once()
    assert (await api.post("/environments/demo/wake", token="anything"))[0] == 403
    assert (await api.post("/reconcile", token="anything"))[0] == 403
    assert (await api.post("/hooks/git", data=b"{}"))[0] == 403


async def test_mutating_endpoints_need_the_right_token(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), api_token=TOKEN)
    await api.h.controller.reconcile_once()
    for token in (None, "wrong", TOKEN + "x", ""):
        assert (await api.post("/environments/demo/wake", token=token))[0] == 401
        assert (await api.post("/reconcile", token=token))[0] == 401
    assert (await api.post("/environments/nope/wake", token=TOKEN))[0] == 404
    assert (await api.post("/reconcile?environment=nope", token=TOKEN))[0] == 404
    status, body = await api.post("/reconcile?environment=demo", token=TOKEN)
    assert (status, body["environment"]) == (202, "demo")
    status, body = await api.post("/environments/plain/wake", token=TOKEN)
    assert status == 409
    assert "no service" in body["error"]


async def test_wake_takes_effect_at_once_not_at_the_next_interval(
    api_factory: ApiFactory, seed_aws: AwsClients, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), api_token=TOKEN)
    controller = api.h.controller
    await controller.reconcile_once()
    api.h.clock.advance(timedelta(minutes=6))
    await controller.reconcile_once()
    assert api.h.status()["environments"]["demo"]["service"]["desired"] == 0
    stop = asyncio.Event()
    loop_task = asyncio.create_task(controller.run(stop))
    try:
        await until(lambda: controller.snapshot().passes_completed >= 3)
        # the loop now waits for its interval on a clock that does not move
        status, _ = await api.post("/environments/demo/wake", token=TOKEN)
        assert status == 202
        await until(lambda: api.h.status()["environments"]["demo"]["service"]["desired"] == 1)
        answer = await seed_aws.call(
            "ecs", "DescribeServices", REGION, cluster=stack.cluster, services=[stack.service]
        )
        assert answer["services"][0]["desiredCount"] == 1
        passes = controller.snapshot().passes_completed
        assert (await api.post("/reconcile", token=TOKEN))[0] == 202
        await until(lambda: controller.snapshot().passes_completed > passes)
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, 10)


def _sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_git_webhook_checks_the_signature_and_triggers_a_pass(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), webhook_secret=SECRET)
    controller = api.h.controller
    body = b'{"ref": "refs/heads/main"}'
    assert (await api.post("/hooks/git", data=body))[0] == 401
    bad = {"X-Hub-Signature-256": _sign(body, "other")}
    assert (await api.post("/hooks/git", data=body, headers=bad))[0] == 401
    tampered = {"X-Hub-Signature-256": _sign(body)}
    assert (await api.post("/hooks/git", data=body + b" ", headers=tampered))[0] == 401
    big = b"x" * (1024 * 1024 + 10)
    assert (await api.post("/hooks/git", data=big, headers={"X-Hub-Signature-256": _sign(big)}))[
        0
    ] == 413
    stop = asyncio.Event()
    loop_task = asyncio.create_task(controller.run(stop))
    try:
        await until(lambda: controller.snapshot().passes_completed >= 1)
        good = {"X-Hub-Signature-256": _sign(body)}
        assert (await api.post("/hooks/git", data=body, headers=good))[0] == 202
        await until(lambda: controller.snapshot().passes_completed >= 2)
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, 10)


PLAIN = "version: 1\nenvironments:\n  plain:\n    power: off\n"


async def test_git_webhook_verifies_the_whole_body_however_it_is_sent(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory(PLAIN, webhook_secret=SECRET)

    async def chunked(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):  # no Content-Length: chunked encoding
            yield body[start : start + 64 * 1024]

    # bigger than what one read returns: the signature is over all of it
    large = b'{"ref": "refs/heads/main", "pad": "' + b"x" * 400_000 + b'"}'
    status, body = await api.post(
        "/hooks/git", data=large, headers={"X-Hub-Signature-256": _sign(large)}
    )
    assert status == 202, body
    in_chunks = large + b" "
    headers = {"X-Hub-Signature-256": _sign(in_chunks)}
    assert (await api.post("/hooks/git", data=chunked(in_chunks), headers=headers))[0] == 202
    at_limit = b" " * (1024 * 1024)
    headers = {"X-Hub-Signature-256": _sign(at_limit)}
    assert (await api.post("/hooks/git", data=at_limit, headers=headers))[0] == 202
    over = at_limit + b" "
    headers = {"X-Hub-Signature-256": _sign(over)}
    status, body = await api.post("/hooks/git", data=chunked(over), headers=headers)
    assert (status, body["error"]) == (413, "body larger than 1048576 bytes")


async def test_a_replayed_webhook_delivery_triggers_no_new_fetch_or_pass(
    api_factory: ApiFactory, stack: DemoStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await api_factory(desired(stack), webhook_secret=SECRET)
    controller = api.h.controller
    requested: list[PassRequest] = []
    ask_for_a_pass = controller.request_pass

    def spy(request: PassRequest) -> None:
        requested.append(request)
        ask_for_a_pass(request)

    monkeypatch.setattr(controller, "request_pass", spy)
    body = b'{"ref": "refs/heads/main", "after": "1111"}'
    delivery = {"X-Hub-Signature-256": _sign(body), "X-GitHub-Delivery": "d-1"}
    stop = asyncio.Event()
    loop_task = asyncio.create_task(controller.run(stop))
    try:
        await until(lambda: controller.snapshot().passes_completed >= 1)
        assert (await api.post("/hooks/git", data=body, headers=delivery))[0] == 202
        await until(lambda: controller.snapshot().passes_completed >= 2)
        forged_id = {**delivery, "X-GitHub-Delivery": "d-forged"}
        for headers in [delivery] * 6 + [forged_id]:
            status, answer = await api.post("/hooks/git", data=body, headers=headers)
            assert (status, answer["message"]) == (200, "delivery already received")
        # the handler asks for a pass synchronously: none was asked for by the replays
        assert [r.fetch_now for r in requested] == [True]
        assert controller.snapshot().passes_completed == 2
        # and a new push still goes through at once (the clock never moves)
        pushed = b'{"ref": "refs/heads/main", "after": "2222"}'
        headers = {"X-Hub-Signature-256": _sign(pushed), "X-GitHub-Delivery": "d-2"}
        assert (await api.post("/hooks/git", data=pushed, headers=headers))[0] == 202
        await until(lambda: controller.snapshot().passes_completed >= 3)
        assert len(requested) == 2
    finally:
        stop.set()
        await asyncio.wait_for(loop_task, 10)
    assert controller.snapshot().passes_completed == 3


async def test_wakes_and_reconciles_asked_during_shutdown_are_refused_not_lost(
    api_factory: ApiFactory, stack: DemoStack
) -> None:
    api = await api_factory(desired(stack), api_token=TOKEN)
    controller = api.h.controller
    stop = asyncio.Event()
    loop_task = asyncio.create_task(controller.run(stop))
    await until(lambda: controller.snapshot().passes_completed >= 1)
    stop.set()  # shutting down: the HTTP server still answers until the process exits
    await asyncio.wait_for(loop_task, 10)
    status, body = await api.post("/environments/demo/wake", token=TOKEN)
    assert (status, body["error"].startswith("shutting down")) == (503, True)
    assert (await api.post("/reconcile", token=TOKEN))[0] == 503
