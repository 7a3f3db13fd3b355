"""How fast a sleeping service wakes on a request, with the activator and with the ALB's 503
metric alone (the baseline), measured in the same run in the sandbox's setting: the local
emulator, the real controller (interval 5 s, as in the sandbox), the load balancer stand-in,
the task stand-in and the demo app, all in this process.

For each wake: the controller scales the service to zero by itself (its routes go to the
activator when it is on), then a visitor asks for a page through the load balancer stand-in
and asks again every 0.1 s. Measured from that first request: until the controller's
UpdateService (`infra_controller_actions_total{action="scale_up"}`), and until the demo app
answers 200. Each task starts 4 to 6 s after its UpdateService (a Fargate task takes 30 s or
more); without the activator the visitor arrives at a random moment of the interval, as a
real one would.

    .venv/bin/python bench/activator.py [--wakes 4] [--interval 5]

What the emulator cannot show: its CloudWatch has a 503 the moment the load balancer answers
it, while an ALB's metric reaches CloudWatch 1 to 3 minutes later, and a real interval is 60 s.
The figures are printed, never checked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.activator_server import activator_running
from controller.core.aws import AwsClients
from controller.core.settings import Settings
from controller.engine.activator_wakes import FOLLOW_EVERY_SECONDS
from controller.engine.controller import Controller
from controller.engine.passes import PassRequest
from controller.http_api import bound_port
from controller.logging_setup import configure_logging
from controller.sandbox.alb import (
    ListenerReader,
    LoadBalancer,
    forward_target_group,
    routing_action,
    start_load_balancer,
)
from controller.sandbox.demo_app import start_demo_app
from controller.sandbox.demo_stack import (
    DemoStack,
    create_activator_target_group,
    create_demo_stack,
)
from controller.sandbox.ecs import TaskStandIn
from controller.sandbox.emulator import LocalAws, free_port
from controller.sandbox.traffic import Answer, visit
from controller.wiring import IdleTuning, build_controller

REGION = "eu-west-3"
# idle.after while the bench waits for the controller to put the service to sleep (at once),
# and while it measures a wake: long, so that the wake is not cut short by the idle policy
# (which scales down a service awake for idle.after whose requests still go to the activator)
SLEEP_AFTER, WAKE_AFTER = "1s", "10m"
POLL = 0.1  # how often the visitor asks again, and so the resolution of "to 200"
DESIRED = """\
version: 1
environments:
  demo:
    power: on
    service: {{cluster: {cluster}, name: {service}}}
    idle: {{after: {idle_after}, wake: on-request, hosts: [127.0.0.1]}}
"""


@dataclass(frozen=True)
class Wake:
    first: Answer  # what the first visitor got
    to_update: float  # seconds from the first request to UpdateService
    to_served: float  # to the first 200


@dataclass
class Demo:
    aws: AwsClients
    stack: DemoStack
    activator_group: str
    reader: ListenerReader
    task: TaskStandIn
    url: str
    desired: Path | None = None

    def set_idle_after(self, value: str) -> None:
        assert self.desired is not None
        self.desired.write_text(
            DESIRED.format(cluster=self.stack.cluster, service=self.stack.service, idle_after=value)
        )


def scale_ups(controller: Controller) -> float:
    value = controller.metrics.registry.get_sample_value(
        "infra_controller_actions_total", {"environment": "demo", "action": "scale_up"}
    )
    return value or 0.0


async def desired_count(demo: Demo) -> int:
    answer = await demo.aws.call(
        "ecs", "DescribeServices", REGION, cluster=demo.stack.cluster, services=[demo.stack.service]
    )
    return int(answer["services"][0]["desiredCount"])


async def routed_to(demo: Demo) -> str | None:
    config = await demo.reader.config(refresh=True)
    action = routing_action(config, "127.0.0.1", "/") if config else None
    return forward_target_group(action, random.Random()) if action else None


async def fall_asleep(controller: Controller, demo: Demo, activator: bool) -> None:
    """Passes until the controller has scaled the service to zero (no request for idle.after),
    its task has stopped, and the load balancer routes as the controller left it; then the
    long idle.after for the wake, in force."""
    demo.set_idle_after(SLEEP_AFTER)
    # polled: the controller, the task stand-in and the emulator signal nothing
    async with asyncio.timeout(60):
        while await desired_count(demo) > 0:
            await asyncio.sleep(0.25)
            controller.request_pass(PassRequest(due_now=frozenset({"demo"})))
        while demo.task.serving:  # noqa: ASYNC110
            await asyncio.sleep(POLL)
        if activator:
            while await routed_to(demo) != demo.activator_group:  # noqa: ASYNC110
                await asyncio.sleep(POLL)
        revision = controller.snapshot().revision
        demo.set_idle_after(WAKE_AFTER)
        controller.request_pass(PassRequest(due_now=frozenset({"demo"})))
        while controller.snapshot().revision == revision:  # noqa: ASYNC110
            await asyncio.sleep(POLL)


async def one_wake(
    controller: Controller,
    demo: Demo,
    session: aiohttp.ClientSession,
    activator: bool,
    interval: float,
    rng: random.Random,
) -> Wake:
    while True:
        await fall_asleep(controller, demo, activator)
        demo.task.start_seconds = rng.uniform(4.0, 6.0)
        if not activator:  # the next pass is what wakes it: arrive anywhere in the interval
            await asyncio.sleep(rng.uniform(0, interval))
        before = scale_ups(controller)
        # the last wake's 503s, in the emulator's metric buckets, may wake it again by
        # themselves: then this sample would measure nothing, and the sleep starts over
        if await desired_count(demo) == 0:
            break
    start = time.monotonic()
    updated: list[float] = []

    async def watch() -> None:
        while scale_ups(controller) == before:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        updated.append(time.monotonic() - start)

    watcher = asyncio.create_task(watch())
    first = answer = await visit(session, demo.url)
    async with asyncio.timeout(120):
        while answer.status != 200:
            await asyncio.sleep(POLL)
            answer = await visit(session, demo.url)
        served = time.monotonic() - start
        await watcher
    if activator:
        # the activator forgets a wake at its next follow-up pass; put to sleep before, the
        # service would be taken for still waking, and the next request would wake nothing
        await asyncio.sleep(FOLLOW_EVERY_SECONDS)
    return Wake(first, updated[0], served)


@asynccontextmanager
async def running(
    demo: Demo, workdir: Path, activator: bool, interval: float
) -> AsyncIterator[Controller]:
    demo.desired = workdir / f"desired-{activator}.yaml"
    demo.set_idle_after(SLEEP_AFTER)
    settings = Settings(
        desired_state=str(demo.desired),
        state_store=f"file://{workdir / f'state-{activator}.json'}",
        runs_dir=str(workdir / "runs"),
        interval=f"{round(interval)}s",
        aws_region=REGION,
        activator_addr=f"127.0.0.1:{free_port()}" if activator else None,
        activator_target_group=demo.activator_group if activator else None,
    )
    idle = IdleTuning(metric_period=timedelta(seconds=1), lookback_margin=timedelta(minutes=1))
    controller = build_controller(settings, idle=idle)
    stop = asyncio.Event()
    try:
        async with activator_running(controller, None) as runner:
            if runner is not None:  # as the sandbox does: on ECS it registers itself
                await demo.aws.call(
                    "elbv2",
                    "RegisterTargets",
                    REGION,
                    TargetGroupArn=demo.activator_group,
                    Targets=[{"Id": "127.0.0.1", "Port": bound_port(runner)}],
                )
            loop = asyncio.create_task(controller.run(stop))
            try:
                yield controller
            finally:
                stop.set()
                await loop
    finally:
        await controller.close()


def row(mode: str, label: str, first: str, update: float, served: float) -> str:
    return f"{mode:<10} {label:>5}  {first:<38} {update:>9.3f}  {served:>7.2f}"


async def main(wakes: int, interval: float, seed: int) -> None:
    emulator = LocalAws()
    emulator.start()
    os.environ.update(emulator.environ(REGION))
    aws = AwsClients(REGION)
    app = await start_demo_app()
    rng = random.Random(seed)
    try:
        (stack,) = await create_demo_stack(aws, REGION, running=True)
        reader = ListenerReader(aws, REGION, "demo-alb")
        balancer = LoadBalancer(aws, REGION, reader)
        alb = await start_load_balancer(balancer, "127.0.0.1", 0)
        task = TaskStandIn(
            aws, REGION, stack.cluster, stack.service, ("127.0.0.1", bound_port(app))
        )
        ecs = asyncio.create_task(task.run())
        demo = Demo(
            aws,
            stack,
            await create_activator_target_group(aws, REGION),
            reader,
            task,
            f"http://127.0.0.1:{bound_port(alb)}/",
        )
        print(
            f"{wakes} wakes each; interval {interval:g} s; a task starts 4-6 s after its "
            "UpdateService; seconds from the first request"
        )
        print(f"{'mode':<10} {'wake':>5}  {'first answer':<38} {'to update':>9}  {'to 200':>7}")
        means: dict[str, tuple[float, float]] = {}
        try:
            async with aiohttp.ClientSession() as session:
                for mode in ("activator", "metric"):
                    results = []
                    with tempfile.TemporaryDirectory() as tmp:
                        async with running(demo, Path(tmp), mode == "activator", interval) as c:
                            for index in range(wakes):
                                wake = await one_wake(
                                    c, demo, session, mode == "activator", interval, rng
                                )
                                results.append(wake)
                                print(
                                    row(
                                        mode,
                                        str(index + 1),
                                        wake.first.describe(),
                                        wake.to_update,
                                        wake.to_served,
                                    ),
                                    flush=True,
                                )
                    means[mode] = (
                        statistics.mean(w.to_update for w in results),
                        statistics.mean(w.to_served for w in results),
                    )
                    print(row(mode, "mean", "", *means[mode]))
        finally:
            ecs.cancel()
            await asyncio.gather(ecs, return_exceptions=True)
            await alb.cleanup()
            await balancer.close()
        (act_update, act_served), (met_update, met_served) = means["activator"], means["metric"]
        print(
            f"ratio metric / activator: to update {met_update / act_update:.0f}x, "
            f"to 200 {met_served / act_served:.2f}x"
        )
        print(
            "On AWS the metric path's update waits for the 503 to reach CloudWatch (1-3 min) "
            "and for the next pass (interval 60 s by default): 1 to 4 minutes, which the "
            "emulator, with its metrics at once, cannot show; the activator's does not depend "
            "on either. Its 200 also waits for the controller's next follow-up pass (every 5 s) "
            "to switch the routes back."
        )
    finally:
        await app.cleanup()
        await aws.close()
        emulator.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wakes", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5.0, help="the controller's (s)")
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()
    with open(os.devnull, "w") as quiet:
        configure_logging("json", stream=quiet)  # the benchmark prints figures, not logs
        asyncio.run(main(options.wakes, options.interval, options.seed))
