"""Simulated visitors for the sandbox: real HTTP requests to the load balancer stand-in
(`controller.sandbox.alb`), which routes them as the demo ALB is configured and counts them in
CloudWatch as an ALB would. While the demo stack is powered off there is no ALB at all, and no
visitor.

The cycle: a busy spell, silence until the controller scales the service to zero, then one
visitor. With the activator, its page reloads itself (every `Retry-After`) until the demo
service answers again; without it, the load balancer answers a bare 503 (the metric wake
signal), and visitors keep coming now and then, as real ones would: the controller may ignore
a 503 (`suspend: true` observes only), and it reads 503s over a window of a few minutes only,
so without a later visitor a service woken by nothing would stay asleep, and the visitors with
it, for good.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import structlog

from controller.core.aws import AwsClients
from controller.core.clock import Clock
from controller.sandbox.demo_stack import DemoStack, find_demo_stack

log = structlog.get_logger("infra_controller.sandbox.traffic")

PAGES = ("/", "/tours", "/cities/paris", "/cities/lyon", "/about")
TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer at all
    title: str | None  # the page's <title>
    retry_after: float | None  # seconds, when the answer asks to come back

    def describe(self) -> str:
        if self.status == 200 or not self.title:
            return str(self.status) if self.status else f"no answer ({self.title})"
        if self.title.startswith(str(self.status)):
            return self.title  # the load balancer's own page: "503 Service Temporarily ..."
        return f"{self.status} {self.title}"


def summary(answers: Sequence[Answer]) -> str:
    """`200`, or `503 demo is waking up`, or `503 Service ... x2, 200 x3` when they differ."""
    counts = Counter(a.describe() for a in answers)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{what} x{n}" for what, n in counts.items())


async def visit(session: aiohttp.ClientSession, url: str) -> Answer:
    """One page, as a browser asks for it."""
    try:
        async with session.get(url, headers={"Accept": "text/html,*/*;q=0.8"}) as answer:
            text = await answer.text(errors="replace")
            retry = answer.headers.get("Retry-After", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(0, str(exc) or type(exc).__name__, None)
    found = TITLE.search(text)
    return Answer(
        answer.status,
        found.group(1).strip() if found else None,
        float(retry) if retry.isdigit() else None,
    )


async def _awake(aws: AwsClients, stack: DemoStack) -> bool:
    services = await aws.call(
        "ecs", "DescribeServices", stack.region, cluster=stack.cluster, services=[stack.service]
    )
    return bool(services["services"]) and services["services"][0]["desiredCount"] > 0


async def put_alb_metrics(
    aws: AwsClients,
    region: str,
    load_balancer: str,
    target_group: str | None,
    counts: Mapping[str, float],
    at: datetime,
) -> None:
    """ALB metrics as an ALB publishes them: `RequestCount` per load balancer and target group
    (`target_group`: the `targetgroup/NAME/ID` value), the others per load balancer."""
    data = []
    for metric, value in counts.items():
        dimensions = [{"Name": "LoadBalancer", "Value": load_balancer}]
        if metric == "RequestCount" and target_group is not None:
            dimensions.append({"Name": "TargetGroup", "Value": target_group})
        data.append(
            {
                "MetricName": metric,
                "Dimensions": dimensions,
                "Value": float(value),
                "Timestamp": at,
                "Unit": "Count",
            }
        )
    await aws.call(
        "cloudwatch", "PutMetricData", region, Namespace="AWS/ApplicationELB", MetricData=data
    )


async def send_requests(aws: AwsClients, stack: DemoStack, count: int, at: datetime) -> bool:
    """Record `count` requests at `at` straight into CloudWatch, without HTTP (for simulated
    time: the tests and the soak); returns True if served, False if answered 503."""
    awake = await _awake(aws, stack)
    metric = "RequestCount" if awake else "HTTPCode_ELB_503_Count"
    await put_alb_metrics(
        aws, stack.region, stack.load_balancer, stack.target_group, {metric: count}, at
    )
    return awake


class Visitors:
    def __init__(
        self,
        aws: AwsClients,
        region: str,
        cluster: str,
        service: str,
        clock: Clock,
        alb_url: str,
        session: aiohttp.ClientSession,
        rng: random.Random | None = None,
    ) -> None:
        self._aws, self._region = aws, region
        self._cluster, self._service = cluster, service
        self._clock = clock
        self._url = alb_url.rstrip("/")
        self._session = session
        self._rng = rng or random.Random()

    async def _stack(self) -> DemoStack | None:
        return await find_demo_stack(self._aws, self._region, self._cluster, self._service)

    async def _pages(self, count: int) -> list[Answer]:
        return [
            await visit(self._session, self._url + self._rng.choice(PAGES)) for _ in range(count)
        ]

    async def cycle(self, busy_seconds: float, tick_seconds: float, revisit_seconds: float) -> bool:
        """One busy spell, its silence, the visit to the sleeping service and what follows,
        until the service is awake again (or the stack changed); False: no stack to visit."""
        stack = await self._stack()
        if stack is None:
            await self._clock.sleep(tick_seconds)
            return False
        log.info("visitors arrive", for_seconds=round(busy_seconds))
        elapsed = 0.0
        while elapsed < busy_seconds:
            count = self._rng.randint(2, 9)
            log.info("traffic", requests=count, answered=summary(await self._pages(count)))
            await self._clock.sleep(tick_seconds)
            elapsed += tick_seconds
        log.info("visitors leave: no traffic until the service is scaled to zero")
        while await self._stack() == stack and await _awake(self._aws, stack):
            await self._clock.sleep(tick_seconds)
        if await self._stack() != stack:
            return True  # powered off (or recreated) meanwhile
        await self._clock.sleep(tick_seconds * 2)
        woken = await _awake(self._aws, stack)  # by someone else meanwhile: a curl, the API
        answer = await self._visit(
            "a visitor arrives while the service " + ("wakes" if woken else "is at zero")
        )
        waited = 0.0
        while answer.status != 200 and await self._stack() == stack:
            if answer.retry_after is not None:  # the activator's page reloads by itself
                await self._clock.sleep(answer.retry_after)
                answer = await self._visit("the waiting page reloads")
                continue
            if await _awake(self._aws, stack):
                break  # woken by something else (the 503 metric, the API): busy again
            await self._clock.sleep(tick_seconds)
            waited += tick_seconds
            if waited >= revisit_seconds:
                waited = 0.0
                answer = await self._visit("another visitor tries the service")
        await self._clock.sleep(tick_seconds)
        return True

    async def _visit(self, what: str) -> Answer:
        (answer,) = await self._pages(1)
        log.info(what, answered=answer.describe())
        return answer


async def simulate_visitors(
    aws: AwsClients,
    region: str,
    cluster: str,
    service: str,
    clock: Clock,
    alb_url: str,
    busy_seconds: float = 20.0,
    tick_seconds: float = 5.0,
    rng: random.Random | None = None,
    revisit_seconds: float = 30.0,
) -> None:
    """The cycle above, for good."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=70)) as session:
        visitors = Visitors(aws, region, cluster, service, clock, alb_url, session, rng)
        powered_off_reported = False
        while True:
            if await visitors.cycle(busy_seconds, tick_seconds, revisit_seconds):
                powered_off_reported = False
            elif not powered_off_reported:
                log.info("the demo stack does not exist (powered off): no visitors")
                powered_off_reported = True


async def run_simulator(
    aws: AwsClients,
    region: str,
    cluster: str,
    service: str,
    clock: Clock,
    alb_url: str,
    busy_seconds: float = 20.0,
) -> None:
    while True:
        try:
            await simulate_visitors(
                aws, region, cluster, service, clock, alb_url, busy_seconds=busy_seconds
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the demo's traffic must not take the controller down
            log.warning("traffic simulator error; resuming", error=str(exc))
            await clock.sleep(5)
