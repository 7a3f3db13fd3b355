"""On ECS, the activator registers its task's address in its target group at start and leaves
it at shutdown, so the load balancer reaches it without anything else to set up. Elsewhere (or
to manage the target in Terraform) nothing is registered.

The task's address comes from the ECS task metadata endpoint (`ECS_CONTAINER_METADATA_URI_V4`,
a link-local address the agent serves inside the task).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp
import structlog

from controller.core.aws import AwsClients, AwsError

log = structlog.get_logger("infra_controller.activator")

METADATA_TIMEOUT = aiohttp.ClientTimeout(total=3)
METADATA_MAX_BYTES = 256 * 1024


class RegistrationError(RuntimeError):
    """The activator could not register (the reason is in the message)."""


@dataclass(frozen=True)
class ActivatorTarget:
    target_group: str
    address: str
    port: int

    @property
    def region(self) -> str:
        return self.target_group.split(":")[3]

    @property
    def target(self) -> dict[str, object]:
        return {"Id": self.address, "Port": self.port}


async def task_address(metadata_uri: str) -> str:
    """The task's first IPv4 address, from `{metadata_uri}/task`."""
    try:
        async with (
            aiohttp.ClientSession(timeout=METADATA_TIMEOUT) as session,
            session.get(f"{metadata_uri.rstrip('/')}/task") as response,
        ):
            if response.status != 200:
                raise RegistrationError(f"task metadata answered {response.status}")
            body = await response.content.read(METADATA_MAX_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RegistrationError(f"task metadata unreachable: {exc}") from exc
    if len(body) > METADATA_MAX_BYTES:
        raise RegistrationError("task metadata larger than 256 KiB")
    try:
        task = json.loads(body)
        for container in task.get("Containers", []):
            for network in container.get("Networks", []):
                for address in network.get("IPv4Addresses", []):
                    if isinstance(address, str) and address:
                        return address
    except (ValueError, AttributeError, TypeError) as exc:
        raise RegistrationError(f"task metadata unreadable: {exc}") from exc
    raise RegistrationError("task metadata names no IPv4 address")


async def register(aws: AwsClients, target: ActivatorTarget) -> None:
    try:
        await _targets(aws, target, "RegisterTargets", "the load balancer must reach the activator")
    except AwsError as exc:
        raise RegistrationError(str(exc)) from exc


async def deregister(aws: AwsClients, target: ActivatorTarget) -> None:
    """Best effort: a task that stops is deregistered by ECS health checks anyway."""
    try:
        await _targets(aws, target, "DeregisterTargets", "the activator stops")
    except AwsError as exc:
        log.warning("activator not deregistered", error=str(exc))


async def _targets(aws: AwsClients, target: ActivatorTarget, operation: str, reason: str) -> None:
    log.info(
        "aws change",
        operation=f"elasticloadbalancing:{operation}",
        target_group=target.target_group,
        address=f"{target.address}:{target.port}",
        reason=reason,
    )
    await aws.call(
        "elbv2",
        operation,
        target.region,
        TargetGroupArn=target.target_group,
        Targets=[target.target],
    )
