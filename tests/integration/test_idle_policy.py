"""The idle policy end to end against the local AWS emulator (moto server over HTTP).

The clock is a ManualClock: idle windows pass by advancing it, never by sleeping.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from controller.core.aws import AwsClients
from controller.engine.passes import RETRY_EVERYTHING
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.emulator import free_port
from controller.sandbox.traffic import send_requests
from tests.conftest import REGION, Harness, MakeController, desired_count

pytestmark = pytest.mark.integration


def desired(stack: DemoStack, name: str = "demo", wake: str = "on-request", extra: str = "") -> str:
    return f"""
    version: 1
    environments:
      {name}:
        power: on
        {extra}
        service: {{cluster: {stack.cluster}, name: {stack.service}}}
        idle: {{after: 5m, active_count: 2, wake: {wake}}}
    """


async def test_idle_service_is_scaled_to_zero_after_idle_after(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    first = await h.controller.reconcile_once()
    assert first.decision("demo", "idle").reason == "awake for 0s, less than idle.after 5m"
    h.clock.advance(timedelta(minutes=5, seconds=1))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert report.results["demo"] == "success"
    assert await desired_count(seed_aws, stack) == 0
    status = h.status()["environments"]["demo"]
    assert status["service"]["desired"] == 0
    assert status["last_action"]["action"] == "scale_to_zero"
    # no request seen: the lag counts from the start of the first window read, a lower bound
    lag = "infra_controller_scale_to_zero_lag_seconds"
    assert h.metric(f"{lag}_count", environment="demo") == 1
    assert h.metric(f"{lag}_sum", environment="demo") >= 5 * 60


async def test_recent_request_keeps_the_service_awake(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    await send_requests(seed_aws, stack, 3, h.clock.now() - timedelta(minutes=2))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "none"
    assert report.decision("demo", "idle").reason.startswith("last request")
    assert await desired_count(seed_aws, stack) == 1


async def test_a_restarted_controller_remembers_when_the_service_woke(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    later = make_controller(desired(stack))  # same state store file, fresh process memory
    later.clock.advance(timedelta(minutes=6))
    report = await later.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"


async def test_a_503_while_asleep_wakes_an_on_request_service(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    await h.controller.reconcile_once()
    assert await desired_count(seed_aws, stack) == 0
    h.clock.advance(timedelta(seconds=30))
    assert not await send_requests(seed_aws, stack, 1, h.clock.now())
    h.clock.advance(timedelta(seconds=30))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_up"
    assert await desired_count(seed_aws, stack) == 2
    # freshly woken: not scaled down again before idle.after, even with no traffic
    h.clock.advance(timedelta(minutes=4))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "none"
    assert await desired_count(seed_aws, stack) == 2


async def test_manual_wake_policy_ignores_503s(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack, wake="manual"))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    await h.controller.reconcile_once()
    await send_requests(seed_aws, stack, 5, h.clock.now())
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "none"
    assert await desired_count(seed_aws, stack) == 0
    assert h.controller.request_wake("demo") is None
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").reason == "wake requested through the API"
    assert await desired_count(seed_aws, stack) == 2


@pytest.mark.parametrize("extra", ["suspend: true", "power: off"])
async def test_suspended_or_powered_off_environment_is_never_scaled(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, extra: str
) -> None:
    body = desired(stack, extra=extra).replace("power: on\n        power: off", "power: off")
    h: Harness = make_controller(body)
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(hours=1))
    report = await h.controller.reconcile_once()
    decision = report.decision("demo", "idle")
    assert decision.action == "none"
    assert await desired_count(seed_aws, stack) == 1
    if extra == "suspend: true":
        # observed as if acting, so the operator sees what would happen
        assert decision.reason.startswith("suspended: would scale_to_zero (no requests for")
    else:
        assert h.calls("GetMetricData") == 0  # powered off: no metric is read (or paid for)


async def test_dry_run_decides_and_logs_but_changes_nothing(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack), dry_run=True)
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert await desired_count(seed_aws, stack) == 1
    assert h.calls("UpdateService") == 0
    assert h.calls("PutMetricData") == 0


async def test_unreadable_metrics_mean_unknown_and_nothing_is_scaled(
    make_controller: MakeController,
    seed_aws: AwsClients,
    stack: DemoStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the SDK's service-specific endpoint variable sends CloudWatch to a closed port
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{free_port()}")
    h: Harness = make_controller(desired(stack), max_attempts=1)
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once(RETRY_EVERYTHING)
    assert report.decision("demo", "idle").action == "none"
    assert report.decision("demo", "idle").unknown
    assert report.results["demo"] == "error"
    assert await desired_count(seed_aws, stack) == 1
    errors = h.metric(
        "infra_controller_reconcile_total", environment="demo", reconciler="idle", result="error"
    )
    assert errors == 2
    assert os.environ["AWS_ENDPOINT_URL_CLOUDWATCH"]


async def test_one_failing_environment_does_not_block_another(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    body = (
        desired(stack)
        + """
      broken:
        power: on
        service: {cluster: no-such-cluster, name: nothing}
        idle: {after: 5m}
    """
    )
    h: Harness = make_controller(body)
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.results["broken"] == "error"
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert await desired_count(seed_aws, stack) == 0
    assert report.failed


async def test_failing_environment_backs_off_and_is_skipped_until_retry(
    make_controller: MakeController, stack: DemoStack
) -> None:
    body = """
    version: 1
    environments:
      broken:
        power: on
        service: {cluster: no-such-cluster, name: nothing}
        idle: {after: 5m}
    """
    h: Harness = make_controller(body)
    results = []
    for _ in range(6):
        report = await h.controller.reconcile_once()
        results.append(report.results["broken"])
        h.clock.advance(timedelta(seconds=30))
    # 5 s, 10 s, 20 s, 40 s, 80 s: the later failures skip passes instead of retrying each one
    assert results[:4] == ["error"] * 4
    assert "skipped" in results[4:]
    forced = await h.controller.reconcile_once(RETRY_EVERYTHING)
    assert forced.results["broken"] == "error"


async def test_missing_service_is_reported_not_acted_on(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack).replace(stack.service, "gone"))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").reason == "service not found (status MISSING)"
    assert h.status()["environments"]["demo"]["power"] == "STOPPED"


async def test_invalid_desired_state_keeps_the_last_valid_one(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    good = h.controller.snapshot().revision
    h.write("version: 1\nenvironments:\n  demo:\n    power: of\n")
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert not report.desired_state_valid
    assert report.revision == good
    assert (
        report.decision("demo", "idle").action == "scale_to_zero"
    )  # the last valid state still holds
    status = h.status()
    assert status["desired_state_valid"] is False
    assert status["desired_state_errors"][0].endswith(
        ":4:12: environments.demo.power: Input should be 'on' or 'off'"
    )


async def test_removed_environment_is_no_longer_managed_and_left_as_it_is(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.write("version: 1\nenvironments: {}\n")
    h.clock.advance(timedelta(hours=1))
    report = await h.controller.reconcile_once()
    assert report.results == {}
    assert await desired_count(seed_aws, stack) == 1
    assert "demo" not in h.status()["environments"]


async def test_custom_cloudwatch_metrics_are_published(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h: Harness = make_controller(desired(stack))
    await h.controller.reconcile_once()
    listed = await seed_aws.call("cloudwatch", "ListMetrics", REGION, Namespace="InfraController")
    names = {
        (m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
        for m in listed["Metrics"]
    }
    dims = (("Cluster", stack.cluster), ("Service", stack.service))
    assert names == {("ServiceDesiredCount", dims), ("ServiceStatus", dims)}


async def test_one_pass_for_twenty_environments_batches_its_calls(
    make_controller: MakeController, seed_aws: AwsClients
) -> None:
    stacks = await create_demo_stack(seed_aws, REGION, name="many", services=20)
    body = "version: 1\nenvironments:\n" + "".join(
        f"  env-{i}:\n    power: on\n    service: {{cluster: {s.cluster}, name: {s.service}}}\n"
        f"    idle: {{after: 5m}}\n"
        for i, s in enumerate(stacks)
    )
    h: Harness = make_controller(body)
    report = await h.controller.reconcile_once()
    assert set(report.results.values()) == {"success"}
    assert h.calls("DescribeServices") == 2
    assert h.calls("DescribeTargetGroups") == 1
    assert h.calls("GetMetricData") == 1
    assert h.calls("PutMetricData") == 1
