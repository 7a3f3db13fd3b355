"""The sandbox's simulated visitors, on a clock the test moves one sleep at a time, visiting
the demo service through the load balancer stand-in, which counts them in the local emulator
as a real load balancer would."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from controller.core.aws import AwsClients
from controller.http_api import bound_port
from controller.sandbox.alb import ListenerReader, LoadBalancer, start_load_balancer
from controller.sandbox.demo_app import start_demo_app
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.ecs import TaskStandIn
from controller.sandbox.traffic import simulate_visitors
from tests.conftest import REGION
from tests.waiting import until

pytestmark = pytest.mark.integration


class SteppedClock:
    """Time moves only when the test ends the simulator's current sleep (`step`), so every
    step is one of its ticks, however slow the emulator answers."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC).replace(microsecond=0)
        self._deadline = self._now
        self._wake: asyncio.Future[None] | None = None

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self._deadline = self._now + timedelta(seconds=seconds)
        self._wake = asyncio.get_running_loop().create_future()
        await self._wake

    async def step(self) -> None:
        await until(lambda: self._wake is not None and not self._wake.done())
        assert self._wake is not None
        self._now = self._deadline
        self._wake.set_result(None)

    async def run_until(self, moment: datetime) -> None:
        while self._now < moment:
            await self.step()


async def requests(
    aws: AwsClients, stack: DemoStack, metric: str, start: datetime, end: datetime
) -> float:
    """What CloudWatch holds for the ALB metric between `start` and `end`, as the controller
    reads it."""
    dimensions = [{"Name": "LoadBalancer", "Value": stack.load_balancer}]
    if metric == "RequestCount":
        dimensions.append({"Name": "TargetGroup", "Value": stack.target_group})
    answer = await aws.call(
        "cloudwatch",
        "GetMetricStatistics",
        REGION,
        Namespace="AWS/ApplicationELB",
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=start,
        EndTime=end,
        Period=10,
        Statistics=["Sum"],
    )
    return float(sum(point["Sum"] for point in answer["Datapoints"]))


async def set_desired_count(aws: AwsClients, stack: DemoStack, count: int) -> None:
    await aws.call(
        "ecs",
        "UpdateService",
        REGION,
        cluster=stack.cluster,
        service=stack.service,
        desiredCount=count,
    )


async def test_visitors_keep_trying_a_sleeping_service_and_return_when_it_wakes(
    seed_aws: AwsClients,
) -> None:
    """Whoever scales the service to zero, and however long nothing wakes it (`suspend: true`
    observes only), a 503 keeps arriving now and then: the wake signal is never only in the
    past. Once the service serves again, the busy traffic comes back."""
    (stack,) = await create_demo_stack(seed_aws, REGION)
    clock = SteppedClock()
    # the ALB counts on the visitors' clock; the task starts at once, in real time
    balancer = LoadBalancer(seed_aws, REGION, ListenerReader(seed_aws, REGION, "demo-alb"), clock)
    alb = await start_load_balancer(balancer, "127.0.0.1", 0)
    app = await start_demo_app()
    task = TaskStandIn(
        seed_aws, REGION, stack.cluster, stack.service, ("127.0.0.1", bound_port(app)), 0
    )
    ecs = asyncio.create_task(task.run(poll_seconds=0.05))
    visitors = asyncio.create_task(
        simulate_visitors(
            seed_aws,
            REGION,
            stack.cluster,
            stack.service,
            clock,
            f"http://127.0.0.1:{bound_port(alb)}",
            busy_seconds=20,
            tick_seconds=5,
            rng=random.Random(7),
            revisit_seconds=30,
        )
    )
    try:
        await until(lambda: bool(task.serving))
        start = clock.now()
        await clock.run_until(start + timedelta(seconds=40))
        assert await requests(seed_aws, stack, "RequestCount", start, clock.now()) > 0

        await set_desired_count(seed_aws, stack, 0)  # as the controller would
        await until(lambda: not task.serving)  # its task stopped: no target left
        asleep = clock.now()
        await clock.run_until(asleep + timedelta(minutes=4))
        late = (asleep + timedelta(minutes=2), clock.now())
        assert await requests(seed_aws, stack, "HTTPCode_ELB_503_Count", *late) > 0
        assert await requests(seed_aws, stack, "RequestCount", asleep, clock.now()) == 0

        await set_desired_count(seed_aws, stack, 1)  # the wake, once something acts on a 503
        await until(lambda: bool(task.serving))
        woken = clock.now()
        await clock.run_until(woken + timedelta(seconds=30))
        assert await requests(seed_aws, stack, "RequestCount", woken, clock.now()) > 0
        assert await requests(seed_aws, stack, "HTTPCode_ELB_503_Count", woken, clock.now()) == 0
    finally:
        visitors.cancel()
        ecs.cancel()
        await asyncio.gather(visitors, ecs, return_exceptions=True)
        await alb.cleanup()
        await balancer.close()
        await app.cleanup()
