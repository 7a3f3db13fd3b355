"""AWS access through aiobotocore: one client per (service, region), reused across passes.

The SDK resolves credentials and endpoints itself (so `AWS_ENDPOINT_URL` and
`AWS_ENDPOINT_URL_<SERVICE>` work); retries use the adaptive mode. Every call goes through
`call`, which counts it in `infra_controller_aws_api_calls_total`.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from typing import Any, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from controller.metrics import ControllerMetrics

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


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


class AwsClients:
    def __init__(
        self,
        metrics: ControllerMetrics,
        default_region: str | None = None,
        max_attempts: int = 5,
        read_timeout: float = 20.0,
    ) -> None:
        self._metrics = metrics
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
            self._metrics.aws_api_calls_total.labels(service, operation, outcome).inc()
            message = str(exc.response.get("Error", {}).get("Message", ""))
            raise AwsError(service, operation, code, message) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            self._metrics.aws_api_calls_total.labels(service, operation, "error").inc()
            raise AwsError(service, operation, type(exc).__name__, str(exc)) from exc
        self._metrics.aws_api_calls_total.labels(service, operation, "success").inc()
        return cast(dict[str, Any], result)

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
