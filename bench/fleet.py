"""A fleet of N environments in the local emulator, for the benchmarks: each its own Fargate
service behind its own target group, as AWS allows them (a listener holds 100 rules, so one
ALB per 100 services; a cluster per 1,000 services), and its desired-state document.

Also the emulator the benchmarks start (`bench/emulator.py`: moto, without the datapoints of
the metrics the controller publishes for dashboards).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from controller.core.aws import AwsClients, arn_resource
from controller.sandbox.emulator import FAKE_CREDENTIALS, LocalAws

REGION = "eu-west-3"
SERVICES_PER_ALB = 100
SERVICES_PER_CLUSTER = 1000
CONCURRENCY = 16  # requests in flight while building the fleet
EMULATOR = Path(__file__).resolve().parent / "emulator.py"


class BenchAws(LocalAws):
    """`LocalAws`, started from `bench/emulator.py`."""

    def start(self, timeout: float = 30.0) -> None:
        env, port = {**os.environ, **FAKE_CREDENTIALS}, str(self.port)
        self._process = subprocess.Popen(
            [sys.executable, str(EMULATOR), str(os.getpid()), "-H", "127.0.0.1", "-p", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the benchmark's emulator did not answer on {self.endpoint}")


@dataclass(frozen=True)
class FleetService:
    cluster: str
    service: str
    load_balancer: str  # the `app/NAME/ID` dimension value
    target_group: str  # the `targetgroup/NAME/ID` dimension value


async def create_fleet(aws: AwsClients, size: int) -> list[FleetService]:
    """`size` services, each behind its own target group; built `CONCURRENCY` calls at a time."""
    vpc = (await aws.call("ec2", "CreateVpc", REGION, CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
    subnets = [
        (
            await aws.call(
                "ec2",
                "CreateSubnet",
                REGION,
                VpcId=vpc,
                CidrBlock=f"10.0.{i}.0/24",
                AvailabilityZone=f"{REGION}{zone}",
            )
        )["Subnet"]["SubnetId"]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    group = (
        await aws.call(
            "ec2", "CreateSecurityGroup", REGION, GroupName="fleet", Description="f", VpcId=vpc
        )
    )["GroupId"]
    clusters = [f"fleet-{c}" for c in range(-(-size // SERVICES_PER_CLUSTER))]
    for cluster in clusters:
        await aws.call("ecs", "CreateCluster", REGION, clusterName=cluster)
    await aws.call(
        "ecs",
        "RegisterTaskDefinition",
        REGION,
        family="fleet-task",
        containerDefinitions=[{"name": "web", "image": "nginx", "memory": 512}],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
    )
    gate = asyncio.Semaphore(CONCURRENCY)
    albs = range(-(-size // SERVICES_PER_ALB))
    groups = await asyncio.gather(*(_alb(aws, a, size, vpc, subnets, gate) for a in albs))
    fleet = [service for alb in groups for service in alb]

    async def service(member: FleetService, target_group: str) -> None:
        async with gate:
            await aws.call(
                "ecs",
                "CreateService",
                REGION,
                cluster=member.cluster,
                serviceName=member.service,
                taskDefinition="fleet-task",
                desiredCount=1,
                launchType="FARGATE",
                loadBalancers=[
                    {"targetGroupArn": target_group, "containerName": "web", "containerPort": 80}
                ],
                networkConfiguration={
                    "awsvpcConfiguration": {"subnets": subnets, "securityGroups": [group]}
                },
            )

    await asyncio.gather(*(service(member, arn) for member, arn in fleet))
    return [member for member, _ in fleet]


async def _alb(
    aws: AwsClients, index: int, size: int, vpc: str, subnets: list[str], gate: asyncio.Semaphore
) -> list[tuple[FleetService, str]]:
    """One ALB, its listener, and its (up to 100) services' target groups and rules."""
    async with gate:
        lb = (
            await aws.call(
                "elbv2", "CreateLoadBalancer", REGION, Name=f"fleet-{index}", Subnets=subnets
            )
        )["LoadBalancers"][0]
    first = index * SERVICES_PER_ALB
    members = range(first, min(size, first + SERVICES_PER_ALB))

    async def target_group(number: int) -> str:
        async with gate:
            answer = await aws.call(
                "elbv2",
                "CreateTargetGroup",
                REGION,
                Name=f"fleet-tg-{number}",
                Protocol="HTTP",
                Port=80,
                VpcId=vpc,
                TargetType="ip",
            )
        return str(answer["TargetGroups"][0]["TargetGroupArn"])

    arns = await asyncio.gather(*(target_group(n) for n in members))
    async with gate:
        listener = (
            await aws.call(
                "elbv2",
                "CreateListener",
                REGION,
                LoadBalancerArn=lb["LoadBalancerArn"],
                Protocol="HTTP",
                Port=80,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": arns[0]}],
            )
        )["Listeners"][0]["ListenerArn"]

    async def rule(priority: int, arn: str) -> None:
        async with gate:
            await aws.call(
                "elbv2",
                "CreateRule",
                REGION,
                ListenerArn=listener,
                Priority=priority,
                Conditions=[{"Field": "path-pattern", "Values": [f"/{priority}/*"]}],
                Actions=[{"Type": "forward", "TargetGroupArn": arn}],
            )

    await asyncio.gather(*(rule(p, arn) for p, arn in enumerate(arns[1:], start=1)))
    balancer = arn_resource(lb["LoadBalancerArn"], "loadbalancer")
    return [
        (
            FleetService(
                cluster=f"fleet-{number // SERVICES_PER_CLUSTER}",
                service=f"svc-{number}",
                load_balancer=balancer,
                target_group=arn_resource(arn, "targetgroup"),
            ),
            arn,
        )
        for number, arn in zip(members, arns, strict=True)
    ]


def desired_state(fleet: list[FleetService], busy: int) -> str:
    """The document: the first `busy` environments get visitors every minute and sleep after
    5 minutes without; the others have had none for a while and sleep after an hour (so that no
    pass of the benchmark scales a thousand services at once: a steady state)."""
    lines = ["version: 1", "environments:"]
    for index, member in enumerate(fleet):
        after = "5m" if index < busy else "1h"
        lines += [
            f"  env-{index}:",
            "    power: on",
            f"    service: {{cluster: {member.cluster}, name: {member.service}}}",
            f"    idle: {{after: {after}}}",
        ]
    return "\n".join(lines) + "\n"
