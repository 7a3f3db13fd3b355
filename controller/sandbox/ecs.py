"""A stand-in for ECS running the demo service's task: the emulator keeps services as records
and never starts a task, so nothing would ever register in the service's target group.

While the service's desiredCount is above 0, its "task" (the local demo app) registers in the
service's target group `start_seconds` after the count went up, as a Fargate task does once
started (at once for a service already running when the stand-in starts); when the count goes
back to 0 it is deregistered at once. The load balancer stand-in then forwards to it, and the
controller sees a healthy target as it would on AWS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from controller.core.aws import AwsClients, arn_resource

log = structlog.get_logger("infra_controller.sandbox.ecs")

DEFAULT_START_SECONDS = 5.0  # a real Fargate task takes 30 s to a few minutes
POLL_SECONDS = 0.25


class TaskStandIn:
    def __init__(
        self,
        aws: AwsClients,
        region: str,
        cluster: str,
        service: str,
        address: tuple[str, int],
        start_seconds: float = DEFAULT_START_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aws, self._region = aws, region
        self._cluster, self._service = cluster, service
        self._target = {"Id": address[0], "Port": address[1]}
        self.start_seconds = start_seconds
        self._monotonic = monotonic
        self._starting_since: float | None = None
        self._first_look = True  # a service found running then has its task started already
        self.serving: frozenset[str] = frozenset()  # target groups the task is registered in

    async def run(self, poll_seconds: float = POLL_SECONDS) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the emulator restarting must not end the demo
                log.warning("task stand-in error; resuming", error=str(exc))
            await asyncio.sleep(poll_seconds)

    async def step(self) -> None:
        """One look at the service, and the registration it calls for."""
        answer = await self._aws.call(
            "ecs",
            "DescribeServices",
            self._region,
            cluster=self._cluster,
            services=[self._service],
        )
        found = [s for s in answer.get("services", []) if s.get("status") == "ACTIVE"]
        if not found or not found[0].get("loadBalancers"):
            self._starting_since, self.serving = None, frozenset()  # powered off
            self._first_look = False
            return
        service = found[0]
        first_look, self._first_look = self._first_look, False
        groups = [lb["targetGroupArn"] for lb in service["loadBalancers"]]
        registered = {g for g in groups if await self._registered(g)}
        self.serving = frozenset(registered)
        if service["desiredCount"] > 0:
            missing = [g for g in groups if g not in registered]
            if not missing:
                self._starting_since = None
                return
            if self._starting_since is None:
                self._starting_since = self._monotonic()
            started = self._monotonic() - self._starting_since >= self.start_seconds
            if not (started or first_look):
                return
            for group in missing:
                await self._aws.call(
                    "elbv2",
                    "RegisterTargets",
                    self._region,
                    TargetGroupArn=group,
                    Targets=[self._target],
                )
            self._starting_since = None
            self.serving = frozenset(groups)
            log.info(
                "task started: the demo app is registered in its target group",
                target_group=", ".join(arn_resource(g, "targetgroup") for g in missing),
            )
            return
        self._starting_since = None
        for group in registered:
            await self._aws.call(
                "elbv2",
                "DeregisterTargets",
                self._region,
                TargetGroupArn=group,
                Targets=[self._target],
            )
        if registered:
            self.serving = frozenset()
            log.info(
                "task stopped: the demo app left its target group",
                target_group=", ".join(arn_resource(g, "targetgroup") for g in registered),
            )

    async def _registered(self, group: str) -> bool:
        answer = await self._aws.call(
            "elbv2", "DescribeTargetHealth", self._region, TargetGroupArn=group
        )
        return any(
            t["Target"]["Id"] == self._target["Id"] and t["Target"]["Port"] == self._target["Port"]
            for t in answer["TargetHealthDescriptions"]
        )
