"""Simulated visitors for the sandbox: ALB metrics written into the local emulator.

Like a real ALB: a request to an awake service counts in `RequestCount` (LoadBalancer and
TargetGroup dimensions); a request while the service is at zero is answered 503 and counts only
in `HTTPCode_ELB_503_Count` (LoadBalancer dimension). While the demo stack is powered off there
is no ALB at all, and no visitor.

While the service is at zero, visitors keep coming now and then, as real ones would: the
controller may ignore a 503 (`suspend: true` observes only), and it reads 503s over a window of
a few minutes only, so without a later visitor a service woken by nothing would stay asleep,
and the visitors with it, for good.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

import structlog

from controller.core.aws import AwsClients
from controller.core.clock import Clock
from controller.sandbox.demo_stack import DemoStack, find_demo_stack

log = structlog.get_logger("infra_controller.sandbox.traffic")


async def _awake(aws: AwsClients, stack: DemoStack) -> bool:
    services = await aws.call(
        "ecs", "DescribeServices", stack.region, cluster=stack.cluster, services=[stack.service]
    )
    return bool(services["services"]) and services["services"][0]["desiredCount"] > 0


async def send_requests(aws: AwsClients, stack: DemoStack, count: int, at: datetime) -> bool:
    """Record `count` requests at `at`; returns True if served, False if answered 503."""
    awake = await _awake(aws, stack)
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
    region: str,
    cluster: str,
    service: str,
    clock: Clock,
    busy_seconds: float = 20.0,
    tick_seconds: float = 5.0,
    rng: random.Random | None = None,
    revisit_seconds: float = 30.0,
) -> None:
    """Cycle: a busy spell, silence until the controller scales the service to zero, then one
    visitor who gets a 503 (the wake signal), another every `revisit_seconds` while the service
    stays at zero, then busy again once the service is back."""
    rng = rng or random.Random()
    powered_off_reported = False
    while True:
        stack = await find_demo_stack(aws, region, cluster, service)
        if stack is None:
            if not powered_off_reported:
                log.info("the demo stack does not exist (powered off): no visitors")
                powered_off_reported = True
            await clock.sleep(tick_seconds)
            continue
        powered_off_reported = False
        log.info("visitors arrive", for_seconds=round(busy_seconds))
        elapsed = 0.0
        while elapsed < busy_seconds:
            count = rng.randint(2, 9)
            served = await send_requests(aws, stack, count, clock.now())
            log.info("traffic", requests=count, answered="200" if served else "503")
            await clock.sleep(tick_seconds)
            elapsed += tick_seconds
        log.info("visitors leave: no traffic until the service is scaled to zero")
        while await find_demo_stack(aws, region, cluster, service) == stack and await _awake(
            aws, stack
        ):
            await clock.sleep(tick_seconds)
        if await find_demo_stack(aws, region, cluster, service) != stack:
            continue  # powered off (or recreated) meanwhile
        await clock.sleep(tick_seconds * 2)
        await _visit_while_asleep(
            aws, stack, clock, "a visitor arrives while the service is at zero"
        )
        waited = 0.0
        while await find_demo_stack(aws, region, cluster, service) == stack and not await _awake(
            aws, stack
        ):
            await clock.sleep(tick_seconds)
            waited += tick_seconds
            if waited >= revisit_seconds:
                waited = 0.0
                await _visit_while_asleep(aws, stack, clock, "another visitor tries the service")
        await clock.sleep(tick_seconds)


async def _visit_while_asleep(aws: AwsClients, stack: DemoStack, clock: Clock, what: str) -> None:
    log.info(what)
    if await send_requests(aws, stack, 1, clock.now()):
        log.info("traffic", requests=1, answered="200")  # woken meanwhile
    else:
        log.info("traffic", requests=1, answered="503 (service asleep: the wake signal)")


async def run_simulator(
    aws: AwsClients, region: str, cluster: str, service: str, clock: Clock
) -> None:
    while True:
        try:
            await simulate_visitors(aws, region, cluster, service, clock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the demo's traffic must not take the controller down
            log.warning("traffic simulator error; resuming", error=str(exc))
            await clock.sleep(5)
