"""Simulated visitors for the sandbox: ALB metrics written into the local emulator.

Like a real ALB: a request to an awake service counts in `RequestCount` (LoadBalancer and
TargetGroup dimensions); a request while the service is at zero is answered 503 and counts only
in `HTTPCode_ELB_503_Count` (LoadBalancer dimension).
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

import structlog

from controller.aws import AwsClients
from controller.clock import Clock
from controller.demo_stack import DemoStack

log = structlog.get_logger("infra_controller.sandbox.traffic")


async def send_requests(aws: AwsClients, stack: DemoStack, count: int, at: datetime) -> bool:
    """Record `count` requests at `at`; returns True if served, False if answered 503."""
    services = await aws.call(
        "ecs", "DescribeServices", stack.region, cluster=stack.cluster, services=[stack.service]
    )
    awake = bool(services["services"]) and services["services"][0]["desiredCount"] > 0
    if awake:
        datum = {
            "MetricName": "RequestCount",
            "Dimensions": [
                {"Name": "LoadBalancer", "Value": stack.load_balancer},
                {"Name": "TargetGroup", "Value": stack.target_group},
            ],
        }
    else:
        datum = {
            "MetricName": "HTTPCode_ELB_503_Count",
            "Dimensions": [{"Name": "LoadBalancer", "Value": stack.load_balancer}],
        }
    await aws.call(
        "cloudwatch",
        "PutMetricData",
        stack.region,
        Namespace="AWS/ApplicationELB",
        MetricData=[{**datum, "Value": float(count), "Timestamp": at, "Unit": "Count"}],
    )
    return awake


async def simulate_visitors(
    aws: AwsClients,
    stack: DemoStack,
    clock: Clock,
    busy_seconds: float = 20.0,
    tick_seconds: float = 5.0,
    rng: random.Random | None = None,
) -> None:
    """Cycle: a busy spell, silence until the controller scales the service to zero, then one
    visitor who gets a 503 (the wake signal), then busy again once the service is back."""
    rng = rng or random.Random()
    while True:
        log.info("visitors arrive", seconds=busy_seconds)
        elapsed = 0.0
        while elapsed < busy_seconds:
            count = rng.randint(2, 9)
            served = await send_requests(aws, stack, count, clock.now())
            log.info("traffic", requests=count, answered="200" if served else "503")
            await clock.sleep(tick_seconds)
            elapsed += tick_seconds
        log.info("visitors leave: no traffic until the service is scaled to zero")
        while await _awake(aws, stack):
            await clock.sleep(tick_seconds)
        await clock.sleep(tick_seconds * 2)
        log.info("a visitor arrives while the service is at zero")
        await send_requests(aws, stack, 1, clock.now())
        log.info("traffic", requests=1, answered="503 (service asleep: the wake signal)")
        while not await _awake(aws, stack):
            await clock.sleep(tick_seconds)
        await clock.sleep(tick_seconds)


async def _awake(aws: AwsClients, stack: DemoStack) -> bool:
    services = await aws.call(
        "ecs", "DescribeServices", stack.region, cluster=stack.cluster, services=[stack.service]
    )
    return bool(services["services"]) and services["services"][0]["desiredCount"] > 0


async def run_simulator(aws: AwsClients, stack: DemoStack, clock: Clock) -> None:
    try:
        await simulate_visitors(aws, stack, clock)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the demo's traffic must not take the controller down
        log.error("traffic simulator stopped", error=str(exc))
