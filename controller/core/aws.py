"""AWS access through aiobotocore: one client per (service, region), reused across passes.

The SDK resolves credentials and endpoints itself (so `AWS_ENDPOINT_URL` and
`AWS_ENDPOINT_URL_<SERVICE>` work); retries use the adaptive mode. Every call goes through
`call`, which reports it to a counter (the engine's `infra_controller_aws_api_calls_total`).
Batching and ARN helpers used by every AWS caller live here too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

T = TypeVar("T")
# (service, operation, outcome) -> None; outcome is success, throttled or error
CallCounter = Callable[[str, str, str], None]

_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "SlowDown",
    }
)


class NoRegion(Exception):
    """No region for an environment: neither `region:` in the file nor AWS_REGION is set."""


class AwsError(Exception):
    """An AWS call failed (after the SDK's retries); `code` is the AWS error code if any."""

    def __init__(self, service: str, operation: str, code: str, message: str) -> None:
        super().__init__(f"{service} {operation} failed: {code}: {message}")
        self.service = service
        self.operation = operation
        self.code = code


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """`items` in batches of at most `size` (AWS APIs cap how many ids one call takes)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def arn_resource(arn: str, marker: str) -> str:
    """`...:targetgroup/n/id` -> `targetgroup/n/id`; `...:loadbalancer/app/n/id` -> `app/n/id`
    (the values CloudWatch's TargetGroup and LoadBalancer dimensions take)."""
    resource = arn.split(":", 5)[-1]
    return resource.removeprefix("loadbalancer/") if marker == "loadbalancer" else resource


def _ignore(service: str, operation: str, outcome: str) -> None:
    pass


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


class AwsClients:
    def __init__(
        self,
        default_region: str | None = None,
        count: CallCounter = _ignore,
        max_attempts: int = 5,
        read_timeout: float = 20.0,
    ) -> None:
        self._count = count
        self._session: Any = get_session()
        # Fargate and Lambda set AWS_REGION, which botocore alone does not read.
        self._default_region = (
            default_region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or self._session.get_config_variable("region")
        )
        self._config = AioConfig(
            retries={"mode": "adaptive", "max_attempts": max_attempts},
            connect_timeout=5,
            read_timeout=read_timeout,
            max_pool_connections=20,
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()

    def region(self, region: str | None) -> str:
        chosen = region or self._default_region
        if not chosen:
            raise NoRegion("no AWS region: set AWS_REGION or `region:` on the environment")
        return str(chosen)

    async def client(self, service: str, region: str | None) -> Any:
        key = (service, self.region(region))
        client = self._clients.get(key)
        if client is None:
            async with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = await self._stack.enter_async_context(
                        self._session.create_client(
                            service, region_name=key[1], config=self._config
                        )
                    )
                    self._clients[key] = client
        return client

    async def call(
        self, service: str, operation: str, region: str | None, /, **params: Any
    ) -> dict[str, Any]:
        """Call `operation` (its API name, e.g. `DescribeServices`) and count it."""
        client = await self.client(service, region)
        method = getattr(client, xform_name(operation))
        try:
            result = await method(**params)
        except ClientError as exc:
            code = error_code(exc)
            outcome = "throttled" if code in _THROTTLING_CODES else "error"
            self._count(service, operation, outcome)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            raise AwsError(service, operation, code, message) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            self._count(service, operation, "error")
            raise AwsError(service, operation, type(exc).__name__, str(exc)) from exc
        self._count(service, operation, "success")
        return cast(dict[str, Any], result)

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
