"""The idle lever's savings against the emulator: the sleeping service's task definition read
once, priced at the region's Fargate rate, counted while it sleeps."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.sandbox.demo_stack import DemoStack
from tests.conftest import Harness, MakeController

pytestmark = pytest.mark.integration


def desired(stack: DemoStack, idle: str) -> str:
    return (
        "version: 1\nenvironments:\n  demo:\n    power: on\n"
        f"    service: {{cluster: {stack.cluster}, name: {stack.service}}}\n"
        f"    idle: {idle}\n"
    )


async def asleep_for_ten_minutes(h: Harness) -> None:
    """A pass awake, one that scales to zero, one ten minutes later (asleep)."""
    await h.controller.reconcile_once()
    h.clock.advance(timedelta(minutes=6))
    report = await h.controller.reconcile_once()
    assert report.decision("demo", "idle").action == "scale_to_zero"
    assert h.calls("DescribeTaskDefinition") == 0  # awake until now: nothing to price
    h.clock.advance(timedelta(minutes=10))
    await h.controller.reconcile_once()


async def test_a_sleeping_service_saves_its_tasks_fargate_price_read_once(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h = make_controller(
        desired(stack, "{after: 5m, active_count: 2}"),
        # the demo's task is 256 CPU units (0.25 vCPU) and 512 MiB, x86: 7 USD an hour for two
        fargate_prices={"eu-west-3": {"x86": {"vcpu_hour": 10.0, "gb_hour": 2.0}}},
    )
    await asleep_for_ten_minutes(h)
    h.clock.advance(timedelta(minutes=1))
    await h.controller.reconcile_once()
    saved = h.status()["environments"]["demo"]["cost"]["estimated_savings_dollars"]
    assert saved == {"power": None, "idle": round(11 / 60 * 7, 2)}
    assert h.metric(
        "infra_controller_estimated_savings_dollars_total", environment="demo", lever="idle"
    ) == pytest.approx(11 / 60 * 7)
    assert h.calls("DescribeTaskDefinition") == 1  # a revision is read once


async def test_an_override_for_another_architecture_leaves_the_table_s_price_in_force(
    make_controller: MakeController, stack: DemoStack
) -> None:
    h = make_controller(
        desired(stack, "{after: 5m}"),
        fargate_prices={"eu-west-3": {"arm": {"vcpu_hour": 10.0, "gb_hour": 2.0}}},
    )
    await asleep_for_ten_minutes(h)
    # x86 at the table's eu-west-3 price: 0.25 vCPU and 0.5 GB for 10 minutes
    expected = 10 / 60 * (0.25 * 0.04656 + 0.5 * 0.00511)
    assert h.metric(
        "infra_controller_estimated_savings_dollars_total", environment="demo", lever="idle"
    ) == pytest.approx(expected)
