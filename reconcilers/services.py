"""The ECS service observer: the service fact every policy relies on, read in batches.

Per region and pass: DescribeServices (10 services a call, per cluster), then one
DescribeTargetGroups (20 a call) for the target groups in front of the services, and
DescribeLoadBalancers only for load balancers not seen before (their DNS name never changes).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from controller.core.aws import AwsClients, AwsError, arn_resource, chunks
from reconcilers.interface import EnvironmentContext, EnvironmentFacts, ServiceState

DESCRIBE_SERVICES_BATCH = 10
DESCRIBE_TARGET_GROUPS_BATCH = 20
DESCRIBE_LOAD_BALANCERS_BATCH = 20


@dataclass
class _Seen:
    service: ServiceState | None = None
    target_group_arns: tuple[str, ...] = ()
    error: str | None = None  # DescribeServices failed: the service is unknown
    load_balancer_error: str | None = None  # its target groups could not be read
    endpoint: str | None = None


class ServiceObserver:
    name = "service"

    def __init__(self, aws: AwsClients) -> None:
        self._aws = aws
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
            *(self._observe_region(region, group, seen) for region, group in by_region.items())
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
                answer = await self._aws.call(
                    "ecs", "DescribeServices", region, cluster=cluster, services=names
                )
            except AwsError as exc:
                for c in batch:
                    seen[c.name].error = str(exc)
                return
            found = {svc["serviceName"]: svc for svc in answer.get("services", [])}
            for c in batch:
                assert c.spec.service is not None
                _record_service(seen[c.name], found.get(c.spec.service.name))

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
                answer = await self._aws.call(
                    "elbv2", "DescribeTargetGroups", region, TargetGroupArns=list(batch)
                )
            except AwsError as exc:
                failed.update({arn: str(exc) for arn in batch})
                continue
            for group in answer.get("TargetGroups", []):
                info[group["TargetGroupArn"]] = (
                    arn_resource(group["TargetGroupArn"], "targetgroup"),
                    tuple(group.get("LoadBalancerArns", [])),
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
                answer = await self._aws.call(
                    "elbv2", "DescribeLoadBalancers", region, LoadBalancerArns=list(batch)
                )
            except AwsError:
                continue  # the endpoint is only reported; no decision needs it
            for lb in answer.get("LoadBalancers", []):
                self._dns_names[lb["LoadBalancerArn"]] = lb["DNSName"]


def _exists(service: ServiceState | None) -> bool:
    return service is not None and service.exists


def _record_service(seen: _Seen, service: dict[str, Any] | None) -> None:
    if service is None:
        seen.service = ServiceState(status="MISSING")
        return
    seen.service = ServiceState(
        status=str(service.get("status", "ACTIVE")),
        desired_count=int(service.get("desiredCount", 0)),
        running_count=int(service.get("runningCount", 0)),
        pending_count=int(service.get("pendingCount", 0)),
    )
    seen.target_group_arns = tuple(
        sorted(
            {
                lb["targetGroupArn"]
                for lb in service.get("loadBalancers", [])
                if lb.get("targetGroupArn")
            }
        )
    )
