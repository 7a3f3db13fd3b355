"""AWS answers that fail, hang, or cannot be read, injected by a proxy between the controller
and the local emulator: none of them ever leads to an action, and each fails only the
environments that depended on the call."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.core.aws import AwsClients
from controller.engine.passes import PassRequest
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from tests.conftest import REGION, Harness, MakeController, create_state_table, desired_count
from tests.fault_proxy import Fault, FaultKind, FaultProxy

pytestmark = pytest.mark.integration
DUBLIN = "eu-west-1"


def environment(name: str, stack: DemoStack, extra: str = "", wake: str = "manual") -> str:
    return (
        f"  {name}:\n    power: on\n    region: {stack.region}\n{extra}"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        f"    idle: {{after: 5m, active_count: 2, wake: {wake}}}\n"
    )


async def powered_web(seed_aws: AwsClients, workdir: Path) -> str:
    """A document with one environment: a service, and Terraform (cli runner) to power it."""
    (stack,) = await create_demo_stack(seed_aws, REGION)
    terraform = f"    terraform: {{runner: cli, workdir: {workdir}}}\n"
    return "version: 1\nenvironments:\n" + environment("web", stack, terraform)


def terraform_runs(workdir: Path) -> list[str]:
    log = workdir / "invocations.log"
    return (
        [line for line in log.read_text().splitlines() if "init" not in line]
        if log.exists()
        else []
    )


async def test_an_html_page_with_status_200_never_starts_terraform(
    make_controller: MakeController,
    seed_aws: AwsClients,
    fake_terraform: Path,
    proxy: FaultProxy,
) -> None:
    h: Harness = make_controller(await powered_web(seed_aws, fake_terraform))
    first = await h.controller.reconcile_once()
    assert first.environments["web"].facts.power_state == "RUNNING"  # adopted, no run
    proxy.set(Fault("html200", "DescribeServices"))
    for _ in range(3):  # what a middlebox login page answers, pass after pass
        h.clock.advance(timedelta(minutes=1))
        report = await h.controller.reconcile_once(PassRequest(due_now=frozenset({"web"})))
        assert report.results["web"] == "error"
        assert report.decision("web", "power").action == "none"
        assert "MalformedAnswer" in report.summary("web")[1]
    assert proxy.injected[("html200", "DescribeServices")] == 3
    calls = "infra_controller_aws_api_calls_total"
    labels = {"service": "ecs", "operation": "DescribeServices", "outcome": "error"}
    assert h.metric(calls, **labels) == 3  # an answer that cannot be read is a failed call
    assert terraform_runs(fake_terraform) == []
    actions = "infra_controller_actions_total"
    assert h.metric(actions, environment="web", action="terraform_apply") == 0


@pytest.mark.parametrize("kind", ["garbage", "truncate", "html200", "reset", "error500"])
async def test_an_unreadable_answer_fails_only_the_environments_that_depended_on_it(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy, kind: FaultKind
) -> None:
    (paris,) = await create_demo_stack(seed_aws, REGION, name="paris")
    (dublin,) = await create_demo_stack(seed_aws, DUBLIN, name="dublin")
    body = (
        "version: 1\nenvironments:\n"
        + environment("paris", paris)
        + environment("dublin", dublin)
        + "  plain:\n    power: off\n"
    )
    h: Harness = make_controller(body, max_attempts=1)
    # from the first pass: a target group read once is kept, never read again in the next
    proxy.set(Fault(kind, "DescribeTargetGroups", region=DUBLIN))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.results == {"paris": "success", "dublin": "error", "plain": "success"}
    assert report.decision("paris", "idle").action == "scale_to_zero"
    assert report.decision("dublin", "idle").action == "none"
    assert await desired_count(seed_aws, paris) == 0
    assert await desired_count(seed_aws, dublin) == 1  # untouched: still its one task


async def test_a_hang_in_one_cluster_does_not_hold_back_another(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy
) -> None:
    (slow,) = await create_demo_stack(seed_aws, REGION, name="slow")
    (idle,) = await create_demo_stack(seed_aws, REGION, name="idle")
    body = "version: 1\nenvironments:\n" + environment("slow", slow) + environment("idle", idle)
    # a 9 s pass gives a call 1.8 s and a region 2.25 s: the hanging cluster costs one call
    h: Harness = make_controller(body, pass_timeout="9s")
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    proxy.set(Fault("hang", "DescribeServices", match=slow.cluster))
    report = await h.controller.reconcile_once()
    assert report.results == {"slow": "error", "idle": "success"}
    assert report.decision("idle", "idle").action == "scale_to_zero"
    assert await desired_count(seed_aws, idle) == 0
    assert "Timeout" in report.summary("slow")[1]


async def test_a_throttled_metric_read_is_counted_and_never_idle(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy
) -> None:
    (stack,) = await create_demo_stack(seed_aws, REGION)
    h: Harness = make_controller(
        "version: 1\nenvironments:\n" + environment("web", stack), max_attempts=1
    )
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    proxy.set(Fault("throttle", "GetMetricData"))
    report = await h.controller.reconcile_once()
    assert report.decision("web", "idle").action == "none"
    assert report.decision("web", "idle").unknown
    calls = "infra_controller_aws_api_calls_total"
    labels = {"service": "cloudwatch", "operation": "GetMetricData", "outcome": "throttled"}
    assert h.metric(calls, **labels) >= 1
    assert await desired_count(seed_aws, stack) == 1


async def test_a_wake_asked_while_a_pass_observes_is_never_lost(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy
) -> None:
    (stack,) = await create_demo_stack(seed_aws, REGION)
    h: Harness = make_controller("version: 1\nenvironments:\n" + environment("web", stack))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))  # idle: this pass scales the service to zero
    proxy.set(Fault("delay", "GetMetricData", delay=1.0))
    reading = proxy.arrived("GetMetricData")
    scaling = asyncio.create_task(h.controller.reconcile_once())
    await asyncio.wait_for(reading.wait(), 10)
    assert h.controller.request_wake("web") is None  # accepted (202) while the pass observes
    report = await scaling
    assert report.decision("web", "idle").action == "scale_to_zero"
    assert await desired_count(seed_aws, stack) == 0
    assert h.status()["environments"]["web"]["wake_pending"] is True
    proxy.clear()
    report = await h.controller.reconcile_once()
    assert report.decision("web", "idle").action == "scale_up"
    assert await desired_count(seed_aws, stack) == 2
    assert h.status()["environments"]["web"]["wake_pending"] is False


def without_services(answer: dict[str, Any]) -> dict[str, Any]:
    """DescribeServices answering, well formed, about nothing: neither found nor missing."""
    return {**answer, "services": [], "failures": []}


async def test_a_service_an_answer_does_not_mention_is_unknown_never_missing(
    make_controller: MakeController,
    seed_aws: AwsClients,
    fake_terraform: Path,
    proxy: FaultProxy,
) -> None:
    h: Harness = make_controller(await powered_web(seed_aws, fake_terraform))
    await h.controller.reconcile_once()  # RUNNING, adopted
    proxy.set(Fault("rewrite", "DescribeServices", rewrite=without_services))
    h.clock.advance(timedelta(minutes=1))
    report = await h.controller.reconcile_once(PassRequest(due_now=frozenset({"web"})))
    assert report.results["web"] == "error"
    assert report.decision("web", "power").action == "none"  # not "missing, apply again"
    assert "not mentioned" in report.summary("web")[1]
    assert terraform_runs(fake_terraform) == []


def partial(answer: dict[str, Any]) -> dict[str, Any]:
    """The recent datapoints left out, and said so only by the status code."""
    results = [
        {**r, "Timestamps": [], "Values": [], "StatusCode": "PartialData"}
        for r in answer["MetricDataResults"]
    ]
    return {**answer, "MetricDataResults": results}


def endless(answer: dict[str, Any]) -> dict[str, Any]:
    return {**answer, "NextToken": "more"}


async def test_partial_metric_data_is_unknown_never_idle(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy
) -> None:
    (stack,) = await create_demo_stack(seed_aws, REGION)
    h: Harness = make_controller("version: 1\nenvironments:\n" + environment("web", stack))
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    proxy.set(Fault("rewrite", "GetMetricData", rewrite=partial))
    report = await h.controller.reconcile_once()
    assert report.decision("web", "idle").action == "none"
    assert report.decision("web", "idle").unknown
    assert await desired_count(seed_aws, stack) == 1


async def test_an_endless_series_of_pages_fails_its_region_only(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy
) -> None:
    (paris,) = await create_demo_stack(seed_aws, REGION, name="paris")
    (dublin,) = await create_demo_stack(seed_aws, DUBLIN, name="dublin")
    body = (
        "version: 1\nenvironments:\n" + environment("paris", paris) + environment("dublin", dublin)
    )
    h: Harness = make_controller(body, pass_timeout="9s")
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    proxy.set(Fault("rewrite", "GetMetricData", region=DUBLIN, rewrite=endless))
    report = await h.controller.reconcile_once()
    assert report.results == {"paris": "success", "dublin": "error"}
    assert report.decision("paris", "idle").action == "scale_to_zero"
    assert proxy.injected[("rewrite", "GetMetricData")] <= 5  # pages are capped
    assert await desired_count(seed_aws, dublin) == 1


async def test_an_endless_state_store_scan_fails_the_pass_in_time_and_starts_nothing(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy
) -> None:
    await create_state_table(seed_aws)
    (stack,) = await create_demo_stack(seed_aws, REGION)
    body = "version: 1\nenvironments:\n" + environment("web", stack)
    h: Harness = make_controller(body, state_store="dynamodb://infra-controller", pass_timeout="9s")

    def more(answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "LastEvaluatedKey": {"environment": {"S": "more"}}}

    proxy.set(Fault("rewrite", "Scan", rewrite=more))
    report = await asyncio.wait_for(h.controller.reconcile_once(), 9)  # never stuck
    assert report.results == {"web": "error"}
    reason = h.controller.ready()
    assert reason is not None and reason.startswith("state store unreadable")
    assert await desired_count(seed_aws, stack) == 1


SLOW_REGION = {
    "services hang": [Fault("hang", "DescribeServices", region=DUBLIN)],
    "target groups hang": [Fault("hang", "DescribeTargetGroups", region=DUBLIN)],
    # each call in time, together too slow: what a soak under faults ran into
    "everything slow": [
        Fault("delay", "DescribeServices", region=DUBLIN, delay=1.5),
        Fault("delay", "DescribeTargetGroups", region=DUBLIN, delay=1.5),
        Fault("hang", "GetMetricData", region=DUBLIN),
    ],
}


@pytest.mark.parametrize("faults", list(SLOW_REGION.values()), ids=list(SLOW_REGION))
async def test_a_slow_region_does_not_hold_back_another(
    make_controller: MakeController, seed_aws: AwsClients, proxy: FaultProxy, faults: list[Fault]
) -> None:
    (paris,) = await create_demo_stack(seed_aws, REGION, name="paris")
    (dublin,) = await create_demo_stack(seed_aws, DUBLIN, name="dublin")
    body = (
        "version: 1\nenvironments:\n" + environment("paris", paris) + environment("dublin", dublin)
    )
    h: Harness = make_controller(body, pass_timeout="9s")
    # from the first pass: a target group read once is kept, never read again in the next
    proxy.set(*faults)
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.results == {"paris": "success", "dublin": "error"}
    assert report.decision("paris", "idle").action == "scale_to_zero"
    proxy.clear()  # the checks below go through the proxy too
    assert await desired_count(seed_aws, dublin) == 1
