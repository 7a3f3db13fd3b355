"""The ECS service observer: the service fact every policy relies on, read in batches.

Per region and pass: DescribeServices (10 services a call, per cluster, concurrently). Then
DescribeTargetGroups (20 a call, concurrently) only for the target groups not seen before, or
not for a while (`TARGET_GROUP_TTL`), and DescribeLoadBalancers only for load balancers not
seen before (their DNS name never changes).

Answers are read strictly: a service is missing only when ECS lists it among its failures as
MISSING; a service an answer does not mention, or an answer without its lists, is unknown.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.core.aws import Answer, AwsClients, AwsError, arn_resource, chunks
from reconcilers.interface import (
    EnvironmentContext,
    EnvironmentFacts,
    ServiceState,
    idle_window_closes_by,
)

# A target group's load balancers do not change while it lives: they are read when its ARN is
# first seen, then again now and then (after 15 to 30 min, spread out), in case someone moved
# it to another load balancer; meanwhile, a new ARN (a recreated target group) is read at once.
TARGET_GROUP_TTL = timedelta(minutes=30)
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


@dataclass(frozen=True)
class _Group:
    """A target group as last read: its CloudWatch dimension and its load balancers."""

    dimension: str
    load_balancers: tuple[str, ...]
    until: datetime  # read again from then on


@dataclass
class _Seen:
    service: ServiceState | None = None
    target_group_arns: tuple[str, ...] = ()
    error: str | None = None  # DescribeServices failed: the service is unknown
    load_balancer_error: str | None = None  # its target groups could not be read
    endpoint: str | None = None


class ServiceObserver:
    name = "service"

    def __init__(
        self,
        aws: AwsClients,
        region_budget: float = 15.0,
        target_group_ttl: timedelta = TARGET_GROUP_TTL,
        rng: random.Random | None = None,
    ) -> None:
        self._aws = aws
        # of a service, ECS answers much more than this observer reads: only that is parsed
        aws.parse_only("ecs", "Service", _EcsService.model_fields)
        self.region_budget = region_budget  # seconds for one region's reads
        self.target_group_ttl = target_group_ttl
        self._rng = rng or random.Random()
        self._dns_names: dict[str, str] = {}  # load balancer ARN -> DNS name
        self._groups: dict[str, _Group] = {}  # target group ARN -> what it was found to be

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
                self._observe_region_in_time(region, group, seen, now)
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
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen], now: datetime
    ) -> None:
        """One region's reads, bounded on their own: a slow region never holds back another.
        What it read completely stands; the rest of it is unknown."""
        try:
            async with asyncio.timeout(self.region_budget):
                await self._observe_region(region, contexts, seen, now)
        except TimeoutError:
            late = f"{region} not read within {self.region_budget:g}s"
            for context in contexts:
                s = seen[context.name]
                if s.service is None and s.error is None:
                    s.error = late
                elif s.error is None and s.load_balancer_error is None:
                    s.load_balancer_error = late

    async def _observe_region(
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen], now: datetime
    ) -> None:
        await self._describe_services(region, contexts, seen)
        # a deleted (INACTIVE, DRAINING) service's target groups may be gone with it
        existing = [c for c in contexts if _exists(seen[c.name].service)]
        groups = await self._describe_target_groups(region, existing, seen, now)
        for context in existing:
            s = seen[context.name]
            if s.load_balancer_error is not None or s.service is None:
                continue
            lbs = sorted({lb for arn in s.target_group_arns for lb in groups[arn].load_balancers})
            s.service = replace(
                s.service,
                load_balancers=tuple(arn_resource(lb, "loadbalancer") for lb in lbs),
                target_groups=tuple(groups[arn].dimension for arn in s.target_group_arns),
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
        self, region: str, contexts: list[EnvironmentContext], seen: dict[str, _Seen], now: datetime
    ) -> dict[str, _Group]:
        """Target group ARN -> its dimension and load balancers: from the cache, and read for
        the ARNs not seen before (or not for `target_group_ttl`), 20 a call, concurrently."""
        wanted = sorted({arn for c in contexts for arn in seen[c.name].target_group_arns})
        # a service that may be scaled to zero in this pass: its metrics are read from the
        # load balancer its target group is on now (moved, the old one would show no traffic)
        fresh = {
            arn
            for c in contexts
            if _may_fall_asleep(c, seen[c.name].service, now)
            for arn in seen[c.name].target_group_arns
        }
        due = [
            arn
            for arn in wanted
            if arn in fresh or arn not in self._groups or self._groups[arn].until <= now
        ]
        failed: dict[str, str] = {}
        info = {arn: self._groups[arn] for arn in wanted if arn in self._groups}

        async def describe(batch: Sequence[str]) -> None:
            try:
                answer = await self._aws.read(
                    _DescribeTargetGroups,
                    "elbv2",
                    "DescribeTargetGroups",
                    region,
                    TargetGroupArns=list(batch),
                )
            except AwsError as exc:  # one kept stays in use until it is read again
                failed.update({arn: str(exc) for arn in batch if arn not in info})
                return
            for group in answer.TargetGroups:
                info[group.TargetGroupArn] = self._remember(group, now)

        await asyncio.gather(*(describe(b) for b in chunks(due, DESCRIBE_TARGET_GROUPS_BATCH)))
        for c in contexts:
            for arn in seen[c.name].target_group_arns:
                if arn in failed:
                    seen[c.name].load_balancer_error = failed[arn]
                elif arn not in info:
                    seen[c.name].load_balancer_error = f"target group {arn} not found"
        await self._learn_dns_names(region, info)
        return info

    def _remember(self, group: _TargetGroup, now: datetime) -> _Group:
        """Kept until a spread-out expiry, so that refreshes do not come all at once; a target
        group without a load balancer yet is not kept: it is read again next pass."""
        arn = group.TargetGroupArn
        ttl = self.target_group_ttl * (0.5 + 0.5 * self._rng.random())
        read = _Group(arn_resource(arn, "targetgroup"), tuple(group.LoadBalancerArns), now + ttl)
        if read.load_balancers:
            self._groups[arn] = read
        else:
            self._groups.pop(arn, None)
        return read

    async def _learn_dns_names(self, region: str, groups: dict[str, _Group]) -> None:
        unknown = sorted({lb for g in groups.values() for lb in g.load_balancers})
        unknown = [lb for lb in unknown if lb not in self._dns_names]

        async def describe(batch: Sequence[str]) -> None:
            try:
                answer = await self._aws.read(
                    _DescribeLoadBalancers,
                    "elbv2",
                    "DescribeLoadBalancers",
                    region,
                    LoadBalancerArns=list(batch),
                )
            except AwsError:
                return  # the endpoint is only reported; no decision needs it
            for lb in answer.LoadBalancers:
                self._dns_names[lb.LoadBalancerArn] = lb.DNSName

        await asyncio.gather(*(describe(b) for b in chunks(unknown, DESCRIBE_LOAD_BALANCERS_BATCH)))


def _may_fall_asleep(
    context: EnvironmentContext, service: ServiceState | None, now: datetime
) -> bool:
    closes_by = idle_window_closes_by(context, now)
    return service is not None and service.awake and closes_by is not None and closes_by <= now


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
