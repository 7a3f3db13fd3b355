"""The routing policy's I/O: the listeners and rules of the services' load balancers, the
health of their targets, and the switch of routes to the activator and back.

Per region and pass: DescribeListeners once per load balancer and DescribeRules once per
listener, shared by every environment behind them (for environments that use the activator,
or whose routes are still switched); DescribeTargetHealth only while a wake is under way or
routes wait to be switched back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from controller.core.aws import Answer, AwsClients, AwsError
from controller.core.clock import utc_iso
from reconcilers.interface import (
    ActOutcome,
    EnvironmentContext,
    Event,
    RecordWriter,
    Unobserved,
)
from reconcilers.routing.decision import (
    Route,
    RoutingDecision,
    RoutingObservation,
    decide_in_context,
    needs,
)

MAX_PAGES = 20  # 400 listeners or rules a page at most: more is not an answer to trust


class _Listener(Answer):
    ListenerArn: str
    DefaultActions: list[dict[str, Any]]


class _DescribeListeners(Answer):
    Listeners: list[_Listener]
    NextMarker: str | None = None


class _Condition(Answer):
    Field: str | None = None
    Values: list[str] = []
    HostHeaderConfig: dict[str, list[str]] | None = None


class _Rule(Answer):
    RuleArn: str
    IsDefault: bool = False
    Actions: list[dict[str, Any]]
    Conditions: list[_Condition] = []


class _DescribeRules(Answer):
    Rules: list[_Rule]
    NextMarker: str | None = None


class _TargetHealthState(Answer):
    State: str


class _TargetHealth(Answer):
    TargetHealth: _TargetHealthState


class _DescribeTargetHealth(Answer):
    TargetHealthDescriptions: list[_TargetHealth]


class RoutingReconciler:
    name = "routing"

    def __init__(
        self, aws: AwsClients, writer: RecordWriter, activator_target_group: str | None
    ) -> None:
        self._aws = aws
        self._writer = writer
        self.activator = activator_target_group

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, RoutingObservation]:
        wanted: dict[str, tuple[bool, bool]] = {}
        by_region: dict[str, list[EnvironmentContext]] = defaultdict(list)
        users: dict[str, set[str]] = defaultdict(set)  # load balancer -> environments
        for context in contexts:
            service = context.facts.service
            for balancer in service.load_balancer_arns if service is not None else ():
                users[balancer].add(context.name)
        for context in contexts:
            routes, health = needs(context, self.activator)
            if routes or health:
                wanted[context.name] = (routes, health)
                by_region[context.region].append(context)
        answers = await asyncio.gather(
            *(self._observe_region(region, group, wanted) for region, group in by_region.items())
        )
        observations: dict[str, RoutingObservation] = {
            c.name: RoutingObservation() for c in contexts
        }
        for answer in answers:
            observations.update(answer)
        for context in contexts:
            service = context.facts.service
            balancers = service.load_balancer_arns if service is not None else ()
            sole = bool(balancers) and all(users[b] == {context.name} for b in balancers)
            observations[context.name] = replace(observations[context.name], sole_on_balancers=sole)
        return observations

    async def _observe_region(
        self,
        region: str,
        contexts: list[EnvironmentContext],
        wanted: Mapping[str, tuple[bool, bool]],
    ) -> dict[str, RoutingObservation]:
        balancers = sorted(
            {
                lb
                for c in contexts
                if wanted[c.name][0] and c.facts.service is not None
                for lb in c.facts.service.load_balancer_arns
            }
        )
        groups = sorted(
            {
                tg
                for c in contexts
                if wanted[c.name][1] and c.facts.service is not None
                for tg in c.facts.service.target_group_arns
            }
        )
        routes_by_lb, health_by_tg = await asyncio.gather(
            self._gather(balancers, lambda lb: self._routes(region, lb)),
            self._gather(groups, lambda tg: self._healthy(region, tg)),
        )
        result: dict[str, RoutingObservation] = {}
        for context in contexts:
            service = context.facts.service
            assert service is not None
            routes: tuple[Route, ...] | None = None
            healthy: int | None = None
            errors: list[str] = []
            if wanted[context.name][0]:
                found = [routes_by_lb[lb] for lb in service.load_balancer_arns]
                errors += [r for r in found if isinstance(r, str)]
                if not errors:
                    routes = tuple(route for r in found if not isinstance(r, str) for route in r)
            if wanted[context.name][1]:
                counts = [health_by_tg[tg] for tg in service.target_group_arns]
                errors += [c for c in counts if isinstance(c, str)]
                if not any(isinstance(c, str) for c in counts):
                    healthy = sum(c for c in counts if isinstance(c, int))
            result[context.name] = RoutingObservation(
                routes=routes, healthy_targets=healthy, error="; ".join(errors) or None
            )
        return result

    @staticmethod
    async def _gather(keys: Sequence[str], read: Any) -> dict[str, Any]:
        """Each key's answer, or the error text (a failure stays with the key's environments)."""

        async def one(key: str) -> Any:
            try:
                return await read(key)
            except AwsError as exc:
                return str(exc)

        return dict(zip(keys, await asyncio.gather(*(one(k) for k in keys)), strict=True))

    async def _routes(self, region: str, balancer: str) -> tuple[Route, ...]:
        routes: list[Route] = []
        listeners: list[_Listener] = []
        params: dict[str, Any] = {"LoadBalancerArn": balancer}
        for _ in range(MAX_PAGES):
            page = await self._aws.read(
                _DescribeListeners, "elbv2", "DescribeListeners", region, **params
            )
            listeners += page.Listeners
            if not page.NextMarker:
                break
            params["Marker"] = page.NextMarker
        else:
            raise AwsError("elbv2", "DescribeListeners", "MalformedAnswer", "too many pages")
        for listener in listeners:
            routes.append(Route(listener.ListenerArn, None, tuple(listener.DefaultActions)))
            routes += await self._rules(region, listener.ListenerArn)
        return tuple(routes)

    async def _rules(self, region: str, listener: str) -> list[Route]:
        routes: list[Route] = []
        params: dict[str, Any] = {"ListenerArn": listener}
        for _ in range(MAX_PAGES):
            page = await self._aws.read(_DescribeRules, "elbv2", "DescribeRules", region, **params)
            for rule in page.Rules:
                if rule.IsDefault:  # the listener's default action, read above
                    continue
                routes.append(Route(listener, rule.RuleArn, tuple(rule.Actions), _hosts(rule)))
            if not page.NextMarker:
                return routes
            params["Marker"] = page.NextMarker
        raise AwsError("elbv2", "DescribeRules", "MalformedAnswer", "too many pages")

    async def _healthy(self, region: str, target_group: str) -> int:
        answer = await self._aws.read(
            _DescribeTargetHealth,
            "elbv2",
            "DescribeTargetHealth",
            region,
            TargetGroupArn=target_group,
        )
        return sum(1 for t in answer.TargetHealthDescriptions if t.TargetHealth.State == "healthy")

    def decide(
        self,
        context: EnvironmentContext,
        observation: RoutingObservation | Unobserved,
        now: datetime,
    ) -> RoutingDecision:
        if isinstance(observation, Unobserved):
            observation = RoutingObservation(error=observation.reason)
        return decide_in_context(context, observation, self.activator, now)

    async def act(
        self, context: EnvironmentContext, decision: RoutingDecision, now: datetime
    ) -> ActOutcome:
        """Switch the routes. To the activator: recorded first (with what they were), so that
        a crash halfway is finished, or undone, by a later pass."""
        record = context.record
        if decision.action == "route_to_activator":
            routes = replace(record.routes, switched_at=record.routes.switched_at or now)
            record = await self._writer.put(context.name, replace(record, routes=routes))
        for write in decision.writes:
            if write.rule_arn is None:
                await self._aws.call(
                    "elbv2",
                    "ModifyListener",
                    context.region,
                    ListenerArn=write.listener_arn,
                    DefaultActions=list(write.actions),
                )
            else:
                await self._aws.call(
                    "elbv2",
                    "ModifyRule",
                    context.region,
                    RuleArn=write.rule_arn,
                    Actions=list(write.actions),
                )
        to = "activator" if decision.action == "route_to_activator" else "service"
        return ActOutcome(
            record=record,
            events=(
                Event(
                    "traffic_switched",
                    decision.reason,
                    to_state=to,
                    attributes={"routes": len(decision.writes)},
                ),
            ),
            last_action={
                "action": decision.action,
                "reason": decision.reason,
                "routes": len(decision.writes),
                "at": utc_iso(now),
            },
        )

    async def close(self, grace_seconds: float) -> None:
        """Nothing runs between passes."""


def _hosts(rule: _Rule) -> tuple[str, ...]:
    hosts: list[str] = []
    for condition in rule.Conditions:
        if condition.Field != "host-header":
            continue
        config = condition.HostHeaderConfig or {}
        hosts += config.get("Values", []) or condition.Values
    return tuple(sorted({h.lower() for h in hosts}))
