"""AWS access through aiobotocore: one client per (service, region), reused across passes.

The SDK resolves credentials and endpoints itself (so `AWS_ENDPOINT_URL` and
`AWS_ENDPOINT_URL_<SERVICE>` work); retries use the adaptive mode. Every call goes through
`call`, which reports it to a counter (the engine's `infra_controller_aws_api_calls_total`),
bounds it in time (retries included), and turns every failure into an `AwsError`: a throttled
or refused call, a hang, a broken connection, an answer the SDK could not parse (an HTML page
from a proxy, a truncated body). Callers then read answers through `parse_answer`, so that an
answer missing what they rely on is an error too, never an empty list. Batching and ARN helpers
used by every AWS caller live here too.
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
from botocore.exceptions import ClientError
from botocore.regions import EndpointResolver
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T")
AnswerT = TypeVar("AnswerT", bound="Answer")
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

    def __init__(
        self, service: str, operation: str, code: str, message: str, status: int | None = None
    ) -> None:
        super().__init__(f"{service} {operation} failed: {code}: {_one_line(message)}")
        self.service = service
        self.operation = operation
        self.code = code
        self.status = status  # the HTTP status of AWS's answer, when there was one

    @property
    def refused(self) -> bool:
        """AWS answered and refused the request (4xx): it was not carried out. Otherwise (a
        timeout, a 5xx, a broken connection, an unreadable answer) it may have been."""
        return self.status is not None and 400 <= self.status < 500


def _one_line(text: str, limit: int = 300) -> str:
    """An error message fit for one log line: no newlines, no page of HTML."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class Answer(BaseModel):
    """The part of an AWS answer a caller relies on; what it does not name is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def parse_answer(shape: type[AnswerT], answer: Any, service: str, operation: str) -> AnswerT:
    """`answer` as `shape`, or AwsError if it lacks or garbles what `shape` requires."""
    try:
        return shape.model_validate(answer)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(answer)"
        raise AwsError(service, operation, "MalformedAnswer", f"{where}: {first['msg']}") from None


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


# The test suite collects every operation the controller calls, to check the deployment's IAM
# policy against them (tests/deploy/test_iam.py): with this variable naming a file, each call
# counted for the controller's metrics is also appended there, as `service operation`.
CALL_LOG_VARIABLE = "INFRA_CONTROLLER_AWS_CALL_LOG"


def _logged(count: CallCounter) -> CallCounter:
    path = os.environ.get(CALL_LOG_VARIABLE)
    if not path or count is _ignore:
        return count

    def count_and_log(service: str, operation: str, outcome: str) -> None:
        count(service, operation, outcome)
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{service} {operation}\n")

    return count_and_log


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


# The SDK keeps its endpoint table whole in memory (endpoints.json: 1.2 MB of JSON, 5 MB read)
# for the hundreds of services AWS has. The controller calls these (by endpoint prefix): only
# their entries are kept. Another service still resolves, from its partition's defaults.
ENDPOINT_SERVICES = frozenset(
    {"ecs", "elasticloadbalancing", "monitoring", "dynamodb", "codebuild", "sns", "sts", "ec2"}
)


def compact_endpoint_table(session: Any) -> None:
    """Have `session` read its endpoint table (when it first needs it) for `ENDPOINT_SERVICES`
    only; an SDK laid out otherwise keeps its own, whole."""
    components = getattr(session, "_internal_components", None)
    if components is None:
        return

    def create() -> EndpointResolver:
        loader = session.get_component("data_loader")
        try:
            base, data = next(
                (base, found)
                for base in loader.search_paths
                if (found := loader.file_loader.load_file(os.path.join(base, "endpoints")))
            )
            for partition in data["partitions"]:
                services = partition["services"]
                partition["services"] = {k: services[k] for k in ENDPOINT_SERVICES & set(services)}
        except Exception:  # not the layout expected: the SDK's own way
            data, base = loader.load_data_with_path("endpoints")
        return EndpointResolver(data, uses_builtin_data=loader.is_builtin_path(base))

    components.lazy_register_component("endpoint_resolver", create)


class AwsClients:
    def __init__(
        self,
        default_region: str | None = None,
        count: CallCounter = _ignore,
        max_attempts: int = 5,
        read_timeout: float = 10.0,
        call_timeout: float = 20.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._count = _logged(count)
        # one call, retries included, never takes longer: a hang fails that call's group only
        self._call_timeout = call_timeout
        self._session: Any = get_session()
        compact_endpoint_table(self._session)
        # Fargate and Lambda set AWS_REGION, which botocore alone does not read.
        self._default_region = (
            default_region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or self._session.get_config_variable("region")
        )
        self._config = AioConfig(
            retries={"mode": "adaptive", "max_attempts": max_attempts},
            # the controller's own requests, tested: AWS checks them anyway, and checking the
            # thousands of datapoints of one PutMetricData here took milliseconds each pass
            parameter_validation=False,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=20,
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()

    def parse_only(self, service: str, shape: str, members: Iterable[str]) -> None:
        """Have this pool's `service` clients, made from now on, parse only `members` of
        `shape` in AWS's answers (the others are left unread). An ECS service comes with its
        deployments and its last hundred events: parsing them took more CPU than the rest of a
        pass at a thousand services, for nothing read. An SDK laid out otherwise parses all."""
        loader = self._session.get_component("data_loader")
        try:
            # the loader keeps the model it loads, by its arguments: the clients made later ask
            # for it with these, and get this one
            model = loader.load_service_model(service, "service-2", api_version=None)
            members_of = model["shapes"][shape]["members"]
            wanted = set(members)
            model["shapes"][shape]["members"] = {
                name: member for name, member in members_of.items() if name in wanted
            }
        except (KeyError, TypeError, ValueError):
            return

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
        result = await self._invoke(service, operation, region, params)
        self._count(service, operation, "success")
        return result

    async def read(
        self,
        shape: type[AnswerT],
        service: str,
        operation: str,
        region: str | None,
        /,
        **params: Any,
    ) -> AnswerT:
        """`call`, then the answer as `shape`: an answer lacking what `shape` requires is an
        AwsError, counted as a failed call."""
        result = await self._invoke(service, operation, region, params)
        try:
            parsed = parse_answer(shape, result, service, operation)
        except AwsError:
            self._count(service, operation, "error")
            raise
        self._count(service, operation, "success")
        return parsed

    async def _invoke(
        self, service: str, operation: str, region: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        """The SDK call, bounded in time; every failure is counted and becomes an AwsError."""
        client = await self.client(service, region)
        method = getattr(client, xform_name(operation))
        try:
            async with asyncio.timeout(self._call_timeout):
                result = await method(**params)
        except ClientError as exc:
            code = error_code(exc)
            outcome = "throttled" if code in _THROTTLING_CODES else "error"
            self._count(service, operation, outcome)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise AwsError(service, operation, code, message, status) from exc
        except TimeoutError as exc:
            self._count(service, operation, "error")
            message = f"no complete answer within {self._call_timeout:g}s"
            raise AwsError(service, operation, "Timeout", message) from exc
        except Exception as exc:  # a broken connection, an answer the SDK could not parse
            self._count(service, operation, "error")
            raise AwsError(service, operation, type(exc).__name__, str(exc)) from exc
        if not isinstance(result, dict):
            self._count(service, operation, "error")
            raise AwsError(service, operation, "MalformedAnswer", "not a structure")
        return cast(dict[str, Any], result)

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
