"""The AWS SDK made lighter: its endpoint table is kept for the services the controller calls
only (5 MB of memory less), a service left out still resolves to its regional endpoint, and an
ECS service is parsed for what the controller reads of it only (not its events)."""

from __future__ import annotations

from typing import Any

from controller.core.aws import ENDPOINT_SERVICES, AwsClients
from reconcilers.services import ServiceObserver, _EcsService


def resolver(clients: AwsClients) -> Any:
    return clients._session._get_internal_component("endpoint_resolver")


def test_the_endpoint_table_holds_the_services_the_controller_calls_only() -> None:
    table = resolver(AwsClients("eu-west-3"))._endpoint_data
    aws = next(p for p in table["partitions"] if p["partition"] == "aws")
    assert set(aws["services"]) == ENDPOINT_SERVICES
    assert {p["partition"] for p in table["partitions"]} >= {"aws", "aws-cn", "aws-us-gov"}


def test_every_service_still_resolves_kept_or_not() -> None:
    endpoints = resolver(AwsClients("eu-west-3"))
    assert endpoints.construct_endpoint("ecs", "eu-west-3")["hostname"] == (
        "ecs.eu-west-3.amazonaws.com"
    )
    assert endpoints.construct_endpoint("logs", "eu-west-3")["hostname"] == (
        "logs.eu-west-3.amazonaws.com"
    )
    assert endpoints.construct_endpoint("ecs", "cn-north-1")["hostname"] == (
        "ecs.cn-north-1.amazonaws.com.cn"
    )


async def test_an_ecs_client_parses_only_what_the_service_observer_reads_of_a_service() -> None:
    clients = AwsClients("eu-west-3")
    ServiceObserver(clients)
    try:
        ecs = await clients.client("ecs", None)
        members = set(ecs.meta.service_model.shape_for("Service").members)
    finally:
        await clients.close()
    assert members == set(_EcsService.model_fields)
    assert {"taskDefinition", "loadBalancers", "desiredCount"} <= members
    assert not members & {"events", "deployments"}


async def test_another_pool_parses_whole_services() -> None:
    ServiceObserver(AwsClients("eu-west-3"))
    clients = AwsClients("eu-west-3")
    try:
        ecs = await clients.client("ecs", None)
        assert "events" in ecs.meta.service_model.shape_for("Service").members
    finally:
        await clients.close()
