"""The size of a sleeping service's tasks, for the idle lever's savings (contract section 14).

A task definition revision never changes, so each is read once (`DescribeTaskDefinition`) and
kept. Only services at zero are read, since savings accrue only while they sleep, and at most
`READS_PER_PASS` a pass, so that a thousand services asleep at start-up cost no burst of calls.
A read that fails is tried again in a later pass; until then there is no estimate, never a
guess.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import structlog

from controller.core.aws import Answer, AwsClients, AwsError
from controller.core.fargate_prices import Architecture, Rate, TaskSize, rate
from reconcilers.interface import EnvironmentContext, EnvironmentFacts

log = structlog.get_logger("infra_controller")

READS_PER_PASS = 20
KEPT = 2000  # task definition revisions remembered


class _RuntimePlatform(Answer):
    cpuArchitecture: str | None = None


class _TaskDefinition(Answer):
    cpu: str | None = None
    memory: str | None = None
    runtimePlatform: _RuntimePlatform | None = None


class _DescribeTaskDefinition(Answer):
    taskDefinition: _TaskDefinition


def task_size(definition: _TaskDefinition) -> TaskSize | None:
    """vCPU and GB from the task-level `cpu` (units) and `memory` (MiB); None without them."""
    try:
        units, mib = int(definition.cpu or ""), int(definition.memory or "")
    except ValueError:
        return None
    if not (0 < units <= 16 * 1024 and 0 < mib <= 120 * 1024):
        return None
    platform = definition.runtimePlatform
    arm = platform is not None and platform.cpuArchitecture == "ARM64"
    return TaskSize(units / 1024, mib / 1024, "arm" if arm else "x86")


class TaskSizeObserver:
    name = "task_size"

    def __init__(
        self,
        aws: AwsClients,
        prices: dict[str, dict[Architecture, Rate]] | None = None,
        reads_per_pass: int = READS_PER_PASS,
    ) -> None:
        self._aws = aws
        self._prices = prices  # CONTROLLER_FARGATE_PRICES, over the table in the package
        self._reads_per_pass = reads_per_pass
        self._sizes: OrderedDict[str, TaskSize | None] = OrderedDict()

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, EnvironmentFacts]:
        wanted: dict[str, str] = {}  # ARN -> region
        for context in contexts:
            arn = _sleeping_task_definition(context)
            if arn is not None and arn not in self._sizes:
                wanted.setdefault(arn, context.region)
        reads = list(wanted.items())[: self._reads_per_pass]
        await asyncio.gather(*(self._read(arn, region) for arn, region in reads))
        facts: dict[str, EnvironmentFacts] = {}
        for context in contexts:
            service = context.facts.service
            arn = service.task_definition if service is not None else None
            size = self._sizes.get(arn) if arn else None
            price = rate(context.region, size.architecture, self._prices) if size else None
            if size is not None and price is not None and context.spec.idle is not None:
                hourly = size.hourly(context.spec.idle.active_count, price)
                facts[context.name] = replace(context.facts, hourly_when_awake=hourly)
        return facts

    async def _read(self, arn: str, region: str) -> None:
        try:
            answer = await self._aws.read(
                _DescribeTaskDefinition, "ecs", "DescribeTaskDefinition", region, taskDefinition=arn
            )
        except AwsError as exc:
            log.warning("task definition not read; no idle savings estimate yet", error=str(exc))
            return
        self._sizes[arn] = task_size(answer.taskDefinition)
        while len(self._sizes) > KEPT:
            self._sizes.popitem(last=False)

    def unobserved(self, context: EnvironmentContext, reason: str) -> EnvironmentFacts:
        return context.facts  # no size: no estimate, nothing else depends on it


def _sleeping_task_definition(context: EnvironmentContext) -> str | None:
    service = context.facts.service
    if context.spec.idle is None or service is None or not service.exists or service.awake:
        return None
    return service.task_definition
