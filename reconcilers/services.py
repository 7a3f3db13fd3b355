"""The ECS service observer: the service fact every policy relies on, read in batches.

Per region and pass: DescribeServices (10 services a call, per cluster), then one
DescribeTargetGroups (20 a call) for the target groups in front of the services, and
DescribeLoadBalancers only for load balancers not seen before (their DNS name never changes).

Answers are read strictly: a service is missing only when ECS lists it among its failures as
MISSING; a service an answer does not mention, or an answer without its lists, is unknown.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from controller.core.aws import Answer, AwsClients, AwsError, arn_resource, chunks
from reconcilers.interface import EnvironmentContext, EnvironmentFacts, ServiceState

DESCRIBE_SERVICES_BATCH = 10
DESCRIBE_TARGET_GROUPS_BATCH = 20
DESCRIBE_LOAD_BALANCERS_BATCH = 20


class _TargetGroupRef(Answer):
    targetGroupArn: str | None = None


class _EcsService(Answer):
    serviceName: str
    status: str
    desiredCount: int
    runningCount: int
    pendingCount: int = 0
    taskDefinition: str | None = None
    loadBalancers: list[_TargetGroupRef] = []


class _EcsFailure(Answer):
    arn: str | None = None
    reason: str | None = None


class _DescribeServices(Answer):
    services: list[_EcsService]
    failures: list[_EcsFailure]


class _TargetGroup(Answer):
    TargetGroupArn: str
    LoadBalancerArns: list[str] = []


class _DescribeTargetGroups(Answer):
    TargetGroups: list[_TargetGroup]


class _LoadBalancer(Answer):
    LoadBalancerArn: str
    DNSName: str


class _DescribeLoadBalancers(Answer):
    LoadBalancers: list[_LoadBalancer]


@dataclass
class _Seen:
    service: ServiceState | None = None
    target_group_arns: tuple[str, ...] = ()
    error: str | None = None  # DescribeServices failed: the service is unknown
    load_balancer_error: str | None = None  # its target groups could not be read
    endpoint: str | None = None


class ServiceObserver:
    name = "service"

    def __init__(self, aws: AwsClients, region_budget: float = 15.0) -> None:
        self._aws = aws
        self.region_budget = region_budget  # seconds for one region's reads
        self._dns_names: dict[str, str] = {}  # load balancer ARN -> DNS name

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, EnvironmentFacts]:
        by_region: dict[str, list[EnvironmentContext]] = defaultdict(list)
        for context in contexts:
            if context.spec.service is not None:
                by_region[context.region].append(context)
        seen = {c.name: _Seen() for c in contexts if c.spec.service is not None}
        await asyncio.gather(
            *(
                self._observe_region_in_time(region, group, seen)
                for region, group in by_region.items()
            )
        )
        facts: dict[str, EnvironmentFacts] = {}
        for context in contexts:
            s = seen.get(context.name)
            if s is None:
                continue
            facts[context.name] = replace(
                context.facts,
                service=s.service if s.error is None else None,
                service_error=s.error,
                load_balancer_error=s.load_balancer_error,
                endpoint=s.endpoint,
            )
        return facts

    def unobserved(self, context: EnvironmentContext, reason: str) -> EnvironmentFacts:
        if context.spec.service is None:
            return context.facts
        return replace(context.facts, service=None, service_error=reason, endpoint=None)

    async def _observe_region_in_time(
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen]
    ) -> None:
        """One region's reads, bounded on their own: a slow region never holds back another.
        What it read completely stands; the rest of it is unknown."""
        try:
            async with asyncio.timeout(self.region_budget):
                await self._observe_region(region, contexts, seen)
        except TimeoutError:
            late = f"{region} not read within {self.region_budget:g}s"
            for context in contexts:
                s = seen[context.name]
                if s.service is None and s.error is None:
                    s.error = late
                elif s.error is None and s.load_balancer_error is None:
                    s.load_balancer_error = late

    async def _observe_region(
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen]
    ) -> None:
        await self._describe_services(region, contexts, seen)
        # a deleted (INACTIVE, DRAINING) service's target groups may be gone with it
        existing = [c for c in contexts if _exists(seen[c.name].service)]
        groups = await self._describe_target_groups(region, existing, seen)
        for context in existing:
            s = seen[context.name]
            if s.load_balancer_error is not None or s.service is None:
                continue
            lbs = sorted({lb for arn in s.target_group_arns for lb in groups[arn][1]})
            s.service = replace(
                s.service,
                load_balancers=tuple(arn_resource(lb, "loadbalancer") for lb in lbs),
                target_groups=tuple(groups[arn][0] for arn in s.target_group_arns),
                load_balancer_arns=tuple(lbs),
                target_group_arns=s.target_group_arns,
            )
            dns = [self._dns_names[lb] for lb in lbs if lb in self._dns_names]
            s.endpoint = f"http://{dns[0]}" if dns else None

    async def _describe_services(
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen]
    ) -> None:
        by_cluster: dict[str, list[EnvironmentContext]] = defaultdict(list)
        for context in contexts:
            assert context.spec.service is not None
            by_cluster[context.spec.service.cluster].append(context)

        async def describe(cluster: str, batch: Sequence[EnvironmentContext]) -> None:
            names = sorted({c.spec.service.name for c in batch if c.spec.service})
            try:
                answer = await self._aws.read(
                    _DescribeServices,
                    "ecs",
                    "DescribeServices",
                    region,
                    cluster=cluster,
                    services=names,
                )
            except AwsError as exc:
                for c in batch:
                    seen[c.name].error = str(exc)
                return
            found = {svc.serviceName: svc for svc in answer.services}
            missing = {
                f.arn.rsplit("/", 1)[-1]: f.reason for f in answer.failures if f.arn is not None
            }
            for c in batch:
                assert c.spec.service is not None
                name = c.spec.service.name
                _record_service(seen[c.name], name, found.get(name), missing)

        await asyncio.gather(
            *(
                describe(cluster, batch)
                for cluster, group in by_cluster.items()
                for batch in chunks(group, DESCRIBE_SERVICES_BATCH)
            )
        )

    async def _describe_target_groups(
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen]
    ) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Target group ARN -> (TargetGroup dimension, load balancer ARNs)."""
        wanted = sorted({arn for c in contexts for arn in seen[c.name].target_group_arns})
        info: dict[str, tuple[str, tuple[str, ...]]] = {}
        failed: dict[str, str] = {}
        for batch in chunks(wanted, DESCRIBE_TARGET_GROUPS_BATCH):
            try:
                answer = await self._aws.read(
                    _DescribeTargetGroups,
                    "elbv2",
                    "DescribeTargetGroups",
                    region,
                    TargetGroupArns=list(batch),
                )
            except AwsError as exc:
                failed.update({arn: str(exc) for arn in batch})
                continue
            for group in answer.TargetGroups:
                info[group.TargetGroupArn] = (
                    arn_resource(group.TargetGroupArn, "targetgroup"),
                    tuple(group.LoadBalancerArns),
                )
        for c in contexts:
            for arn in seen[c.name].target_group_arns:
                if arn in failed:
                    seen[c.name].load_balancer_error = failed[arn]
                elif arn not in info:
                    seen[c.name].load_balancer_error = f"target group {arn} not found"
        await self._learn_dns_names(region, info)
        return info

    async def _learn_dns_names(
        self, region: str, groups: dict[str, tuple[str, tuple[str, ...]]]
    ) -> None:
        unknown = sorted({lb for _, lbs in groups.values() for lb in lbs} - set(self._dns_names))
        for batch in chunks(unknown, DESCRIBE_LOAD_BALANCERS_BATCH):
            try:
                answer = await self._aws.read(
                    _DescribeLoadBalancers,
                    "elbv2",
                    "DescribeLoadBalancers",
                    region,
                    LoadBalancerArns=list(batch),
                )
            except AwsError:
                continue  # the endpoint is only reported; no decision needs it
            for lb in answer.LoadBalancers:
                self._dns_names[lb.LoadBalancerArn] = lb.DNSName


def _exists(service: ServiceState | None) -> bool:
    return service is not None and service.exists


def _record_service(
    seen: _Seen, name: str, service: _EcsService | None, missing: dict[str, str | None]
) -> None:
    if service is None:
        reason = missing.get(name, "not mentioned")
        if reason == "MISSING":
            seen.service = ServiceState(status="MISSING")
        else:  # absent from an answer that should name it: unknown, never "gone"
            seen.error = f"ecs DescribeServices: {name}: {reason}"
        return
    seen.service = ServiceState(
        status=service.status,
        desired_count=service.desiredCount,
        running_count=service.runningCount,
        pending_count=service.pendingCount,
        task_definition=service.taskDefinition,
    )
    seen.target_group_arns = tuple(
        sorted({lb.targetGroupArn for lb in service.loadBalancers if lb.targetGroupArn})
    )
