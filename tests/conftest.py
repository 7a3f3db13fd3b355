"""Shared fixtures: one local AWS emulator (moto server on 127.0.0.1) for the session, reset
before every test that uses it, and a factory for controllers with a manual clock, built by the
same `build_controller` the CLI uses."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from controller.core.aws import AwsClients
from controller.core.clock import ManualClock
from controller.core.settings import Settings
from controller.desired.source import DesiredStateSource
from controller.engine.controller import Controller
from controller.engine.passes import PassReport
from controller.http_api import bound_port, start_http_server
from controller.logging_setup import configure_logging
from controller.sandbox.demo_stack import DemoStack, create_demo_stack
from controller.sandbox.emulator import LocalAws
from controller.status_view import controller_status
from controller.wiring import build_controller
from tests.fault_proxy import FaultProxy

REGION = "eu-west-3"
pytest_plugins = ["tests.alb"]  # the `alb` fixture


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Whatever a test configures, logging is left as it was found."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The controller's JSON log lines, captured."""
    with logging_restored():
        buffer = io.StringIO()
        configure_logging("json", stream=buffer)
        yield buffer


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    emulator = LocalAws()
    emulator.start()
    saved = {k: os.environ.get(k) for k in emulator.environ(REGION)}
    os.environ.update(emulator.environ(REGION))
    yield emulator
    emulator.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def aws_env(local_aws: LocalAws) -> LocalAws:
    local_aws.reset()
    return local_aws


@pytest.fixture
async def seed_aws(aws_env: LocalAws) -> AsyncIterator[AwsClients]:
    """A client pool for test set-up, counted apart from the controller's own."""
    clients = AwsClients(REGION)
    yield clients
    await clients.close()


async def create_state_table(aws: AwsClients, table: str = "infra-controller") -> None:
    """The DynamoDB table of a `dynamodb://` state store, as the README creates it."""
    await aws.call(
        "dynamodb",
        "CreateTable",
        REGION,
        TableName=table,
        KeySchema=[{"AttributeName": "environment", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "environment", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def write_desired_state(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


@dataclass
class Harness:
    controller: Controller
    clock: ManualClock
    desired_path: Path
    state_path: Path

    def write(self, body: str) -> None:
        write_desired_state(self.desired_path, body)

    def status(self) -> dict[str, Any]:
        """What `GET /status` answers now."""
        return controller_status(self.controller.snapshot(), self.clock.now())

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the controller's registry (0 when the series does not exist yet)."""
        value = self.controller.metrics.registry.get_sample_value(name, labels)
        return value if value is not None else 0.0

    def calls(self, operation: str) -> float:
        return sum(
            sample.value
            for metric in self.controller.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "infra_controller_aws_api_calls_total"
            and sample.labels["operation"] == operation
        )


# make_controller(desired_yaml, max_attempts=2, source=None, **settings) -> Harness
MakeController = Callable[..., Harness]


@pytest.fixture
async def make_controller(tmp_path: Path) -> AsyncIterator[MakeController]:
    made: list[Harness] = []

    def make(
        desired: str,
        max_attempts: int = 2,
        source: DesiredStateSource | None = None,
        **settings: Any,
    ) -> Harness:
        desired_path = write_desired_state(tmp_path / "desired_state.yaml", desired)
        state_path = tmp_path / "state.json"
        clock = ManualClock()
        config = Settings(
            desired_state=str(desired_path),
            **{
                "interval": "60s",
                "runs_dir": str(tmp_path / "runs"),
                "state_store": f"file://{state_path}",
                "aws_region": REGION,
                **settings,
            },
        )
        controller = build_controller(
            config, clock=clock, source=source, aws_max_attempts=max_attempts
        )
        harness = Harness(controller, clock, desired_path, state_path)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.controller.close(stop_runs=True)


FAKE_TERRAFORM = Path(__file__).parent / "fake_terraform.py"


@pytest.fixture
def fake_terraform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `terraform` on PATH that speaks the -json format; returns its working directory."""
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("terraform", "tofu"):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\n" + FAKE_TERRAFORM.read_text())
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    workdir = tmp_path / "infra"
    workdir.mkdir()
    return workdir


def fake_terraform_behaviour(workdir: Path, **operations: dict[str, Any]) -> None:
    import json

    (workdir / "fake-terraform.json").write_text(json.dumps(operations))


class Api:
    def __init__(self, harness: Harness, base: str, session: aiohttp.ClientSession) -> None:
        self.h = harness
        self.base = base
        self.session = session

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body

    async def post(self, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.base + path, headers=headers, **kw) as r:
            return r.status, await r.json()


ApiFactory = Callable[..., Awaitable[Api]]  # api_factory(desired_yaml, **settings) -> Api


@pytest.fixture
async def api_factory(make_controller: MakeController) -> AsyncIterator[ApiFactory]:
    runners: list[Any] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(body: str, **settings: Any) -> Api:
        harness = make_controller(body, **settings)
        runner = await start_http_server(harness.controller, "127.0.0.1", 0)
        runners.append(runner)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Api(harness, f"http://127.0.0.1:{bound_port(runner)}", session)

    yield make
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


async def desired_count(aws: AwsClients, stack: DemoStack) -> int:
    """The demo service's desiredCount, as ECS reports it now."""
    answer = await aws.call(
        "ecs", "DescribeServices", stack.region, cluster=stack.cluster, services=[stack.service]
    )
    return int(answer["services"][0]["desiredCount"])


@pytest.fixture
async def proxy(
    aws_env: LocalAws, seed_aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FaultProxy]:
    """The controllers made after this fixture reach the emulator through a fault proxy."""
    fault_proxy = FaultProxy(aws_env.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", await fault_proxy.start())
    yield fault_proxy
    await fault_proxy.stop()


@pytest.fixture
async def stack(seed_aws: AwsClients) -> DemoStack:
    """The demo stack (one ALB, cluster and service) in the emulator."""
    (demo,) = await create_demo_stack(seed_aws, REGION)
    return demo


async def pass_until(
    h: Harness, condition: Callable[[PassReport], bool], limit: float = 15
) -> PassReport:
    """Run passes (as the loop would, each interval) until the condition holds."""
    async with asyncio.timeout(limit):
        # a subprocess finishes in real time: passes are repeated until it has
        while not condition(report := await h.controller.reconcile_once()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return report


@pytest.fixture
def quick_terraform(fake_terraform: Path) -> Path:
    """The stand-in `terraform`, applying and destroying in 0.2 s."""
    fake_terraform_behaviour(fake_terraform, apply={"seconds": 0.2}, destroy={"seconds": 0.2})
    return fake_terraform
