"""Shared fixtures: one local AWS emulator (moto server on 127.0.0.1) for the session, reset
before every test that uses it, and a factory for controllers with a manual clock."""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.aws import AwsClients
from controller.clock import ManualClock
from controller.emulator import LocalAws
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.settings import Settings
from controller.sources import DesiredStateSource, FileSource
from controller.state_store import FileStateStore
from reconcilers.idle import IdleReconciler

REGION = "eu-west-3"


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
    clients = AwsClients(ControllerMetrics(), REGION)
    yield clients
    await clients.close()


def write_desired_state(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


@dataclass
class Harness:
    controller: Controller
    clock: ManualClock
    aws: AwsClients
    desired_path: Path
    state_path: Path

    def write(self, body: str) -> None:
        write_desired_state(self.desired_path, body)

    def calls(self, operation: str) -> float:
        total = 0.0
        for metric in self.controller.metrics.registry.collect():
            for sample in metric.samples:
                if (
                    sample.name == "infra_controller_aws_api_calls_total"
                    and sample.labels["operation"] == operation
                ):
                    total += sample.value
        return total


@pytest.fixture
async def make_controller(tmp_path: Path) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(
        desired: str,
        max_attempts: int = 2,
        source: DesiredStateSource | None = None,
        **settings: Any,
    ) -> Harness:
        desired_path = write_desired_state(tmp_path / "desired_state.yaml", desired)
        state_path = tmp_path / "state.json"
        metrics = ControllerMetrics()
        aws = AwsClients(metrics, REGION, max_attempts=max_attempts)
        clock = ManualClock()
        config = Settings(
            desired_state=str(desired_path),
            state_store=f"file://{state_path}",
            **{"interval": "60s", "runs_dir": str(tmp_path / "runs"), **settings},
        )
        controller = Controller(
            settings=config,
            source=source or FileSource(str(desired_path)),
            aws=aws,
            store=FileStateStore(str(state_path)),
            clock=clock,
            metrics=metrics,
            idle=IdleReconciler(aws),
        )
        harness = Harness(controller, clock, aws, desired_path, state_path)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.controller.power.close(grace_seconds=5)
        await harness.aws.close()


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
