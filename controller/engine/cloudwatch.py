"""The custom CloudWatch metrics the earlier Lambda system published, kept for its dashboards:
`ServiceDesiredCount` and `ServiceStatus` (0 idle / 1 active), dimensions Service and Cluster."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.core.aws import AwsClients, chunks

PUT_METRIC_DATA_BATCH = 1000


@dataclass(frozen=True)
class ServiceCount:
    region: str
    cluster: str
    service: str
    desired_count: int


class ServiceMetricsPublisher:
    def __init__(self, aws: AwsClients, namespace: str) -> None:
        self._aws = aws
        self.namespace = namespace

    async def publish(self, counts: Sequence[ServiceCount], now: datetime) -> None:
        """PutMetricData, batched per region."""
        by_region: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for c in counts:
            dims = [
                {"Name": "Service", "Value": c.service},
                {"Name": "Cluster", "Value": c.cluster},
            ]
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
                await self._aws.call(
                    "cloudwatch",
                    "PutMetricData",
                    region,
                    Namespace=self.namespace,
                    MetricData=list(batch),
                )
