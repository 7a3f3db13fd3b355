"""The idle policy's I/O: batched reads of the ALB metrics, and setting the desiredCount.

Per region and pass, one GetMetricData for every environment's query (500 a call, the calls
concurrently). Each environment reads only the metric its decision needs, and only when it
needs it (`what_to_read`): RequestCount while awake, once its idle window could close (a
service whose last request was at T is not idle before T + idle.after: nothing is read before);
HTTPCode_ELB_503_Count while asleep with `wake: on-request` and not behind the activator;
nothing otherwise. CloudWatch bills every metric asked for.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field

from controller.core.aws import Answer, AwsClients, AwsError, chunks
from controller.core.clock import utc_iso
from reconcilers.idle.decision import (
    Activity,
    ActivityReading,
    IdleDecision,
    after_scaling,
    decide_in_context,
    what_to_read,
)
from reconcilers.interface import (
    ActOutcome,
    AttributeValue,
    EnvironmentContext,
    Event,
    Unobserved,
)

GET_METRIC_DATA_BATCH = 500
# a window of minutes fits one page; an answer that keeps asking for more is not to be trusted
MAX_METRIC_PAGES = 5
ALB_NAMESPACE = "AWS/ApplicationELB"
METRICS = {"requests": "RequestCount", "rejected": "HTTPCode_ELB_503_Count"}


# a count of requests: a NaN or a negative value is a garbled answer, never "no request"
RequestSum = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MetricKind = Literal["requests", "rejected"]


class _MetricDataResult(Answer):
    Id: str
    StatusCode: str
    Timestamps: list[AwareDatetime]
    Values: list[RequestSum]


class _GetMetricData(Answer):
    MetricDataResults: list[_MetricDataResult]
    NextToken: str | None = None


@dataclass(frozen=True)
class _Query:
    id: str
    environment: str
    kind: Literal["requests", "rejected"]
    body: dict[str, Any]


class IdleReconciler:
    name = "idle"

    def __init__(
        self,
        aws: AwsClients,
        metric_period: timedelta = timedelta(minutes=1),
        lookback_margin: timedelta = timedelta(minutes=10),
        region_budget: float = 30.0,
    ) -> None:
        self._aws = aws
        self.metric_period = metric_period
        self.lookback_margin = lookback_margin
        self.region_budget = region_budget  # seconds for one region's metric reads

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, ActivityReading]:
        readings: dict[str, ActivityReading] = {}
        by_region: dict[str, list[tuple[EnvironmentContext, MetricKind]]] = defaultdict(list)
        for context in contexts:
            readings[context.name] = ActivityReading()
            service = context.facts.service
            if service is None:
                continue
            kind = what_to_read(context, service, now)
            if isinstance(kind, ActivityReading):  # nothing to read in this pass
                readings[context.name] = kind
                continue
            if context.facts.load_balancer_error is not None:
                readings[context.name] = ActivityReading(error=context.facts.load_balancer_error)
                continue
            if not service.load_balancers:
                readings[context.name] = ActivityReading(
                    error="the service has no load balancer: its activity cannot be observed"
                )
                continue
            by_region[context.region].append((context, kind))
        for answer in await asyncio.gather(
            *(self._read_region_in_time(region, group, now) for region, group in by_region.items())
        ):
            readings.update(answer)
        return readings

    async def _read_region_in_time(
        self, region: str, contexts: list[tuple[EnvironmentContext, MetricKind]], now: datetime
    ) -> dict[str, ActivityReading]:
        """One region's reads, bounded on their own: a slow region never holds back another."""
        try:
            async with asyncio.timeout(self.region_budget):
                return await self._read_region(region, contexts, now)
        except TimeoutError:
            error = f"metrics of {region} not read within {self.region_budget:g}s"
        except AwsError as exc:
            error = str(exc)
        return {c.name: ActivityReading(error=error) for c, _ in contexts}

    def decide(
        self, context: EnvironmentContext, observation: ActivityReading | Unobserved, now: datetime
    ) -> IdleDecision:
        if isinstance(observation, Unobserved):
            observation = ActivityReading(error=observation.reason)
        return decide_in_context(context, observation, now)

    async def act(
        self, context: EnvironmentContext, decision: IdleDecision, now: datetime
    ) -> ActOutcome:
        """Set the service's desiredCount (setting the same count twice is harmless)."""
        service, count = context.spec.service, decision.desired_count
        assert service is not None and count is not None
        await self._aws.call(
            "ecs",
            "UpdateService",
            context.region,
            cluster=service.cluster,
            service=service.name,
            desiredCount=count,
        )
        facts = context.facts
        if facts.service is not None:
            facts = replace(facts, service=replace(facts.service, desired_count=count))
        kind = "scaled_to_zero" if decision.action == "scale_to_zero" else "woken"
        attributes: dict[str, AttributeValue] = {
            "desired_count": count,
            "source": decision.wake_source,
        }
        last_request = context.record.idle.last_request_at
        if kind == "scaled_to_zero" and last_request is not None:
            # how long past the last request the service kept running (and costing)
            attributes["lag_seconds"] = max(0.0, (now - last_request).total_seconds())
        return ActOutcome(
            record=replace(
                context.record,
                idle=after_scaling(context.record.idle, decision.action, now, decision.wake_source),
            ),
            facts=facts,
            events=(Event(kind, decision.reason, attributes=attributes),),
            last_action={
                "action": decision.action,
                "reason": decision.reason,
                "desired_count": count,
                "at": utc_iso(now),
            },
        )

    async def close(self, grace_seconds: float) -> None:
        """Nothing runs between passes."""

    # ---- reading the metrics ----

    def _window_start(self, context: EnvironmentContext, now: datetime) -> datetime:
        assert context.spec.idle is not None
        start = now - context.spec.idle.after - self.lookback_margin
        period = self.metric_period.total_seconds()
        return datetime.fromtimestamp(start.timestamp() // period * period, tz=now.tzinfo)

    def _queries(self, context: EnvironmentContext, kind: MetricKind) -> list[_Query]:
        service = context.facts.service
        assert service is not None
        if kind == "requests":
            dimensions = [
                [{"Name": "LoadBalancer", "Value": lb}, {"Name": "TargetGroup", "Value": tg}]
                for tg in service.target_groups
                for lb in service.load_balancers
            ]
        else:
            dimensions = [[{"Name": "LoadBalancer", "Value": lb}] for lb in service.load_balancers]
        return [
            _Query("", context.name, kind, self._stat(METRICS[kind], dims)) for dims in dimensions
        ]

    async def _read_region(
        self, region: str, contexts: list[tuple[EnvironmentContext, MetricKind]], now: datetime
    ) -> dict[str, ActivityReading]:
        queries = [
            replace(query, id=f"q{index}")
            for index, query in enumerate(q for c, k in contexts for q in self._queries(c, k))
        ]
        starts = {c.name: self._window_start(c, now) for c, _ in contexts}
        series: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
        failed: dict[str, str] = {}

        async def read(batch: Sequence[_Query]) -> None:  # the batches concurrently
            try:
                results = await self._metric_data(region, batch, min(starts.values()), now)
            except AwsError as exc:
                failed.update({q.environment: str(exc) for q in batch})
                return
            for query in batch:
                result = results.get(query.id)
                if result is None or result.get("StatusCode") != "Complete":
                    status = result and result.get("StatusCode")
                    failed[query.environment] = f"GetMetricData {query.id}: {status}"
                    continue
                for ts, value in zip(
                    result.get("Timestamps", []), result.get("Values", []), strict=False
                ):
                    series[query.environment][ts] += float(value)

        await asyncio.gather(*(read(batch) for batch in chunks(queries, GET_METRIC_DATA_BATCH)))
        readings: dict[str, ActivityReading] = {}
        kinds = {q.environment: q.kind for q in queries}
        for name, kind in kinds.items():
            if name in failed:
                readings[name] = ActivityReading(error=failed[name])
                continue
            points = tuple(sorted((t, v) for t, v in series[name].items() if t >= starts[name]))
            readings[name] = ActivityReading(
                Activity(
                    window_start=starts[name],
                    period=self.metric_period,
                    requests=points if kind == "requests" else None,
                    rejected=points if kind == "rejected" else None,
                )
            )
        return readings

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
        self, region: str, batch: Sequence[_Query], start: datetime, end: datetime
    ) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        params: dict[str, Any] = {
            "MetricDataQueries": [{"Id": q.id, **q.body} for q in batch],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        for _ in range(MAX_METRIC_PAGES):
            answer = await self._aws.read(
                _GetMetricData, "cloudwatch", "GetMetricData", region, **params
            )
            for result in answer.MetricDataResults:
                if len(result.Timestamps) != len(result.Values):
                    raise AwsError(
                        "cloudwatch",
                        "GetMetricData",
                        "MalformedAnswer",
                        f"{result.Id}: {len(result.Timestamps)} timestamps for "
                        f"{len(result.Values)} values",
                    )
                entry = merged.setdefault(result.Id, {"Timestamps": [], "Values": []})
                entry["Timestamps"] += result.Timestamps
                entry["Values"] += result.Values
                # the last page's status is the query's: PartialData there means datapoints
                # are missing (the most recent ones, as the scan is oldest first): unknown
                entry["StatusCode"] = result.StatusCode
            if not answer.NextToken:
                return merged
            params["NextToken"] = answer.NextToken
        raise AwsError(
            "cloudwatch",
            "GetMetricData",
            "MalformedAnswer",
            f"still more pages after {MAX_METRIC_PAGES}: not read",
        )
