"""The idle policy asks CloudWatch for a service's requests only when its idle window could
close (each metric asked for is billed), and still scales it to zero on time, from a read of
that pass; an asleep service behind the activator is never read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.core.aws import AwsClients
from controller.sandbox.demo_stack import DemoStack
from controller.sandbox.traffic import send_requests
from tests.alb import Alb, activator_settings
from tests.conftest import Harness, MakeController, desired_count

pytestmark = pytest.mark.integration
MINUTE = timedelta(minutes=1)


def desired(stack: DemoStack) -> str:
    return (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        "    idle: {after: 5m, wake: on-request}\n"
    )


def metric_reads(h: Harness) -> float:
    return h.calls("GetMetricData")


async def test_a_quiet_service_is_read_when_its_window_closes_and_scaled_to_zero_then(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h = make_controller(desired(stack))
    await h.controller.reconcile_once()  # first seen: read once, for its last request
    assert metric_reads(h) == 1
    for _ in range(4):
        h.clock.advance(MINUTE)
        report = await h.controller.reconcile_once()
        assert report.decision("demo", "idle").action == "none"
    assert metric_reads(h) == 1  # awake for less than idle.after: nothing to ask
    h.clock.advance(MINUTE)
    report = await h.controller.reconcile_once()
    assert metric_reads(h) == 2
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert await desired_count(seed_aws, stack) == 0


async def test_a_busy_service_is_read_about_once_per_idle_window_not_every_pass(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h = make_controller(desired(stack))
    for _ in range(20):  # twenty minutes, a request every minute
        await send_requests(seed_aws, stack, 3, h.clock.now())
        report = await h.controller.reconcile_once()
        assert report.decision("demo", "idle").action == "none"
        h.clock.advance(MINUTE)
    assert 3 <= metric_reads(h) <= 6  # every 5 minutes or so, not 20 times
    assert await desired_count(seed_aws, stack) == 1
    # its requests stop: scaled to zero once its last one is idle.after old, not later
    quiet_passes = 0
    while (await h.controller.reconcile_once()).decision("demo", "idle").action == "none":
        quiet_passes += 1
        assert quiet_passes < 7
        h.clock.advance(MINUTE)
    assert quiet_passes >= 4  # its last request, a minute before these passes, was seen
    assert await desired_count(seed_aws, stack) == 0


async def test_a_request_between_two_reads_is_seen_by_the_read_that_could_scale_it(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack
) -> None:
    h = make_controller(desired(stack))
    await h.controller.reconcile_once()
    h.clock.advance(4 * MINUTE)
    await send_requests(seed_aws, stack, 1, h.clock.now())  # while nothing is read
    await h.controller.reconcile_once()
    h.clock.advance(MINUTE + timedelta(seconds=30))
    report = await h.controller.reconcile_once()  # awake 5m30s: read, and the request seen
    assert report.decision("demo", "idle").action == "none"
    assert report.decision("demo", "idle").reason.startswith("last request")
    assert await desired_count(seed_aws, stack) == 1


async def test_an_asleep_service_behind_the_activator_is_never_read(
    make_controller: MakeController, seed_aws: AwsClients, stack: DemoStack, alb: Alb
) -> None:
    h = make_controller(desired(stack), **activator_settings(alb))
    await h.controller.reconcile_once()
    h.clock.advance(6 * MINUTE)
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "routing").action == "route_to_activator"
    reads = metric_reads(h)
    for _ in range(5):
        h.clock.advance(MINUTE)
        report = await h.controller.reconcile_once()
        assert report.results["demo"] == "success"
        assert report.decision("demo", "idle").reason == (
            "asleep; its requests reach the activator, which wakes it"
        )
    assert metric_reads(h) == reads
