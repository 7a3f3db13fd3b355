"""The idle reconciler's I/O: batched observation of ECS, ELBv2 and CloudWatch, and its actions.

Per region and pass: DescribeServices (10 services a call, per cluster), one DescribeTargetGroups,
and one GetMetricData for every environment's query (500 a call). Each environment reads only the
metric its decision needs: RequestCount while awake, HTTPCode_ELB_503_Count while asleep.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from controller.aws import AwsClients, AwsError
from controller.desired_state import Environment
from reconcilers.idle_decision import (
    Activity,
    IdleDecision,
    IdleObservation,
    ServiceState,
    Wakefulness,
    needs_activity,
)

DESCRIBE_SERVICES_BATCH = 10
GET_METRIC_DATA_BATCH = 500
DESCRIBE_TARGET_GROUPS_BATCH = 20
DESCRIBE_LOAD_BALANCERS_BATCH = 20
PUT_METRIC_DATA_BATCH = 1000
ALB_NAMESPACE = "AWS/ApplicationELB"

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def arn_resource(arn: str, marker: str) -> str:
    """`...:targetgroup/n/id` -> `targetgroup/n/id`; `...:loadbalancer/app/n/id` -> `app/n/id`."""
    resource = arn.split(":", 5)[-1]
    return resource.removeprefix("loadbalancer/") if marker == "loadbalancer" else resource


@dataclass(frozen=True)
class IdleTarget:
    """One environment the idle reconciler looks at in this pass."""

    name: str
    spec: Environment
    region: str
    wakefulness: Wakefulness = field(default_factory=Wakefulness)
    wake_requested: bool = False


@dataclass
class _Seen:
    service: ServiceState | None = None
    target_group_arns: tuple[str, ...] = ()
    activity: Activity | None = None
    error: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class ObservedEnvironment:
    observation: IdleObservation
    endpoint: str | None  # http://DNS of the service's load balancer, when known


class IdleReconciler:
    def __init__(
        self,
        aws: AwsClients,
        metric_period: timedelta = timedelta(minutes=1),
        lookback_margin: timedelta = timedelta(minutes=10),
    ) -> None:
        self._aws = aws
        self.metric_period = metric_period
        self.lookback_margin = lookback_margin
        # a load balancer's DNS name never changes for its ARN: safe to keep
        self._dns_names: dict[str, str] = {}

    async def observe(
        self, targets: Sequence[IdleTarget], now: datetime
    ) -> dict[str, ObservedEnvironment]:
        by_region: dict[str, list[IdleTarget]] = defaultdict(list)
        for target in targets:
            if target.spec.service is not None:
                by_region[target.region].append(target)
        seen: dict[str, _Seen] = {t.name: _Seen() for t in targets}
        await asyncio.gather(
            *(self._observe_region(region, group, now, seen) for region, group in by_region.items())
        )
        result: dict[str, ObservedEnvironment] = {}
        for target in targets:
            s = seen[target.name]
            wakefulness = (
                target.wakefulness.observe(s.service, now) if s.service else target.wakefulness
            )
            result[target.name] = ObservedEnvironment(
                IdleObservation(
                    service=s.service,
                    activity=s.activity,
                    wakefulness=wakefulness,
                    wake_requested=target.wake_requested,
                    error=s.error,
                ),
                s.endpoint,
            )
        return result

    async def _observe_region(
        self, region: str, targets: list[IdleTarget], now: datetime, seen: dict[str, _Seen]
    ) -> None:
        await self._describe_services(region, targets, seen)
        described = [t for t in targets if seen[t.name].service is not None]
        tg_info = await self._describe_target_groups(region, described, seen)
        for target in described:
            s = seen[target.name]
            assert s.service is not None
            if s.error is None:
                lbs = sorted({lb for arn in s.target_group_arns for lb in tg_info[arn][1]})
                s.service = replace(
                    s.service,
                    load_balancers=tuple(arn_resource(lb, "loadbalancer") for lb in lbs),
                    target_groups=tuple(tg_info[arn][0] for arn in s.target_group_arns),
                )
                dns = [self._dns_names[lb] for lb in lbs if lb in self._dns_names]
                s.endpoint = f"http://{dns[0]}" if dns else None
        await self._read_activity(region, described, now, seen)

    async def _describe_services(
        self, region: str, targets: list[IdleTarget], seen: dict[str, _Seen]
    ) -> None:
        by_cluster: dict[str, list[IdleTarget]] = defaultdict(list)
        for target in targets:
            assert target.spec.service is not None
            by_cluster[target.spec.service.cluster].append(target)

        async def describe(cluster: str, batch: Sequence[IdleTarget]) -> None:
            names = sorted({t.spec.service.name for t in batch if t.spec.service})
            try:
                answer = await self._aws.call(
                    "ecs", "DescribeServices", region, cluster=cluster, services=names
                )
            except AwsError as exc:
                for t in batch:
                    seen[t.name].error = str(exc)
                return
            found = {svc["serviceName"]: svc for svc in answer.get("services", [])}
            for t in batch:
                assert t.spec.service is not None
                svc = found.get(t.spec.service.name)
                if svc is None:
                    seen[t.name].service = ServiceState(status="MISSING")
                    continue
                seen[t.name].service = ServiceState(
                    status=str(svc.get("status", "ACTIVE")),
                    desired_count=int(svc.get("desiredCount", 0)),
                    running_count=int(svc.get("runningCount", 0)),
                    pending_count=int(svc.get("pendingCount", 0)),
                )
                seen[t.name].target_group_arns = tuple(
                    sorted(
                        {
                            lb["targetGroupArn"]
                            for lb in svc.get("loadBalancers", [])
                            if lb.get("targetGroupArn")
                        }
                    )
                )

        await asyncio.gather(
            *(
                describe(cluster, batch)
                for cluster, group in by_cluster.items()
                for batch in chunks(group, DESCRIBE_SERVICES_BATCH)
            )
        )

    async def _describe_target_groups(
        self, region: str, targets: list[IdleTarget], seen: dict[str, _Seen]
    ) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Target group ARN -> (TargetGroup dimension, load balancer ARNs)."""
        wanted = sorted({arn for t in targets for arn in seen[t.name].target_group_arns})
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
        for t in targets:
            for arn in seen[t.name].target_group_arns:
                if arn in failed:
                    seen[t.name].error = failed[arn]
                elif arn not in info:
                    seen[t.name].error = f"target group {arn} not found"
        unknown_lbs = sorted(
            {lb for _, lbs in info.values() for lb in lbs if lb not in self._dns_names}
        )
        for batch in chunks(unknown_lbs, DESCRIBE_LOAD_BALANCERS_BATCH):
            try:
                answer = await self._aws.call(
                    "elbv2", "DescribeLoadBalancers", region, LoadBalancerArns=list(batch)
                )
            except AwsError:
                continue  # the endpoint is only reported; the decision does not need it
            for lb in answer.get("LoadBalancers", []):
                self._dns_names[lb["LoadBalancerArn"]] = lb["DNSName"]
        return info

    def _window_start(self, spec: Environment, now: datetime) -> datetime:
        assert spec.idle is not None
        start = now - spec.idle.after - self.lookback_margin
        period = self.metric_period.total_seconds()
        return datetime.fromtimestamp(start.timestamp() // period * period, tz=now.tzinfo)

    async def _read_activity(
        self, region: str, targets: list[IdleTarget], now: datetime, seen: dict[str, _Seen]
    ) -> None:
        # (query id, environment name, metric kind, query)
        queries: list[tuple[str, str, str, dict[str, Any]]] = []
        starts: dict[str, datetime] = {}
        for target in targets:
            s = seen[target.name]
            if s.error is not None or s.service is None:
                continue
            kind = needs_activity(target.spec, s.service)
            if kind is None:
                continue
            if not s.service.load_balancers:
                s.error = "the service has no load balancer: its activity cannot be observed"
                continue
            starts[target.name] = self._window_start(target.spec, now)
            if kind == "requests":
                for tg_arn in s.target_group_arns:
                    tg = arn_resource(tg_arn, "targetgroup")
                    for lb in s.service.load_balancers:
                        dims = [
                            {"Name": "LoadBalancer", "Value": lb},
                            {"Name": "TargetGroup", "Value": tg},
                        ]
                        queries.append(
                            (
                                f"q{len(queries)}",
                                target.name,
                                kind,
                                self._stat("RequestCount", dims),
                            )
                        )
            else:
                for lb in s.service.load_balancers:
                    dims = [{"Name": "LoadBalancer", "Value": lb}]
                    queries.append(
                        (
                            f"q{len(queries)}",
                            target.name,
                            kind,
                            self._stat("HTTPCode_ELB_503_Count", dims),
                        )
                    )
        if not queries:
            return
        start = min(starts.values())
        series: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
        failed: dict[str, str] = {}
        for batch in chunks(queries, GET_METRIC_DATA_BATCH):
            try:
                results = await self._metric_data(region, batch, start, now)
            except AwsError as exc:
                failed.update({name: str(exc) for _, name, _, _ in batch})
                continue
            for query_id, name, _, _ in batch:
                result = results.get(query_id)
                if result is None or result.get("StatusCode") not in ("Complete", None):
                    failed[name] = (
                        f"GetMetricData {query_id}: {result and result.get('StatusCode')}"
                    )
                    continue
                for ts, value in zip(
                    result.get("Timestamps", []), result.get("Values", []), strict=False
                ):
                    series[name][ts] += float(value)
        kinds: dict[str, str] = {name: kind for _, name, kind, _ in queries}
        for name, metric_kind in kinds.items():
            if name in failed:
                seen[name].error = failed[name]
                continue
            points = tuple(sorted((ts, v) for ts, v in series[name].items() if ts >= starts[name]))
            seen[name].activity = Activity(
                window_start=starts[name],
                period=self.metric_period,
                requests=points if metric_kind == "requests" else None,
                rejected=points if metric_kind == "rejected" else None,
            )

    def _stat(self, metric: str, dimensions: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "MetricStat": {
                "Metric": {
                    "Namespace": ALB_NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": dimensions,
                },
                "Period": int(self.metric_period.total_seconds()),
                "Stat": "Sum",
            },
            "ReturnData": True,
        }

    async def _metric_data(
        self,
        region: str,
        batch: Sequence[tuple[str, str, str, dict[str, Any]]],
        start: datetime,
        end: datetime,
    ) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {
            "MetricDataQueries": [{"Id": qid, **query} for qid, _, _, query in batch],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        while True:
            answer = await self._aws.call("cloudwatch", "GetMetricData", region, **params)
            for result in answer.get("MetricDataResults", []):
                entry = merged.setdefault(
                    result["Id"], {"Timestamps": [], "Values": [], "StatusCode": "Complete"}
                )
                entry["Timestamps"] += result.get("Timestamps", [])
                entry["Values"] += result.get("Values", [])
                if result.get("StatusCode") not in ("Complete", "PartialData"):
                    entry["StatusCode"] = result.get("StatusCode")
            token = answer.get("NextToken")
            if not token:
                return merged
            params["NextToken"] = token

    async def act(self, target: IdleTarget, decision: IdleDecision) -> None:
        """Set the service's desiredCount (idempotent: setting the same count twice is harmless)."""
        assert target.spec.service is not None and decision.desired_count is not None
        await self._aws.call(
            "ecs",
            "UpdateService",
            target.region,
            cluster=target.spec.service.cluster,
            service=target.spec.service.name,
            desiredCount=decision.desired_count,
        )


@dataclass(frozen=True)
class ServiceCount:
    """One datum of the published custom metrics (as the earlier Lambda published them)."""

    region: str
    cluster: str
    service: str
    desired_count: int


async def publish_service_metrics(
    aws: AwsClients, namespace: str, counts: Sequence[ServiceCount], now: datetime
) -> None:
    """PutMetricData ServiceDesiredCount and ServiceStatus, batched per region."""
    by_region: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in counts:
        dims = [{"Name": "Service", "Value": c.service}, {"Name": "Cluster", "Value": c.cluster}]
        by_region[c.region] += [
            {
                "MetricName": "ServiceDesiredCount",
                "Dimensions": dims,
                "Value": c.desired_count,
                "Timestamp": now,
                "Unit": "Count",
            },
            {
                "MetricName": "ServiceStatus",
                "Dimensions": dims,
                "Value": 1 if c.desired_count else 0,
                "Timestamp": now,
                "Unit": "None",
            },
        ]
    for region, data in by_region.items():
        for batch in chunks(data, PUT_METRIC_DATA_BATCH):
            await aws.call(
                "cloudwatch", "PutMetricData", region, Namespace=namespace, MetricData=list(batch)
            )
