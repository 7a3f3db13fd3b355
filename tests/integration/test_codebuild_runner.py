"""The CodeBuild runner through the controller, against moto's CodeBuild over HTTP.

moto marks every build SUCCEEDED on the first BatchGetBuilds and ignores idempotency tokens;
real CodeBuild does neither. So this module runs moto in-process and drives its CodeBuild the
way the tests need (a build's status, the same build for the same token). The controller's own
code is untouched: it reaches this emulator through `AWS_ENDPOINT_URL_CODEBUILD`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto.codebuild import models as codebuild_models
from moto.codebuild import responses as codebuild_responses
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from controller.core.aws import AwsClients
from controller.core.records import EnvironmentRecord, PowerRecord, RunInfo
from controller.core.state_store import FileStateStore
from controller.engine.passes import PassReport, PassRequest
from controller.sandbox.emulator import LocalAws, free_port
from reconcilers.terraform.codebuild_runner import build_status
from tests.conftest import REGION, Harness, MakeController
from tests.fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.integration
PROJECT = "tf-staging"
DESIRED = f"""
version: 1
environments:
  staging:
    power: on
    region: {REGION}
    terraform: {{runner: codebuild, project: {PROJECT}, timeout: 45m}}
"""


@dataclass
class CodeBuildEmulator:
    endpoint: str
    starts: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # build id -> buildStatus
    # build id -> the statuses BatchGetBuilds lists it with (several: a contradictory answer)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    by_token: dict[str, dict[str, Any]] = field(default_factory=dict)

    def build_ids(self) -> list[str]:
        return [start["build_id"] for start in self.starts if start["new"]]


@pytest.fixture
def codebuild(monkeypatch: pytest.MonkeyPatch, aws_env: Any) -> Iterator[CodeBuildEmulator]:
    port = free_port()
    emulator = CodeBuildEmulator(endpoint=f"http://127.0.0.1:{port}")

    def start_build(self: Any) -> Any:
        token = self._get_param("idempotencyToken")
        params = {
            k: self._get_param(k)
            for k in (
                "projectName",
                "environmentVariablesOverride",
                "timeoutInMinutesOverride",
                "idempotencyToken",
            )
        }
        known = emulator.by_token.get(token) if token else None
        build = known or self.codebuild_backend.start_build(self._get_param("projectName"))
        # moto drops the overrides; CodeBuild keeps them in the build's environment
        overrides = params["environmentVariablesOverride"] or []
        build.setdefault("environment", {})["environmentVariables"] = overrides
        if token:
            emulator.by_token[token] = build
        emulator.starts.append({**params, "build_id": build["id"], "new": known is None})
        return codebuild_responses.ActionResult({"build": build})  # type: ignore[attr-defined]

    def batch_get_builds(self: Any, ids: list[str]) -> list[dict[str, Any]]:
        builds = []
        for history in self.build_metadata_history.values():
            for build in history:
                if build["id"] in ids:
                    build["buildStatus"] = emulator.statuses.get(build["id"], "IN_PROGRESS")
                    builds.append(build)
                    for status in emulator.duplicates.get(build["id"], []):
                        builds.append({**build, "buildStatus": status})
        return builds

    monkeypatch.setattr(codebuild_responses.CodeBuildResponse, "start_build", start_build)
    monkeypatch.setattr(codebuild_models.CodeBuildBackend, "batch_get_builds", batch_get_builds)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    LocalAws(port).reset()  # in-process backends outlive a test: start each one empty
    monkeypatch.setenv("AWS_ENDPOINT_URL_CODEBUILD", emulator.endpoint)
    yield emulator
    server.stop()


@pytest.fixture
async def proxy(
    codebuild: CodeBuildEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FaultProxy]:
    """The controllers made after this fixture reach CodeBuild through a fault proxy."""
    fault_proxy = FaultProxy(codebuild.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CODEBUILD", await fault_proxy.start())
    yield fault_proxy
    await fault_proxy.stop()


@pytest.fixture
async def project(codebuild: CodeBuildEmulator) -> str:
    clients = AwsClients(REGION)
    await clients.call(
        "codebuild",
        "CreateProject",
        REGION,
        name=PROJECT,
        source={"type": "S3", "location": "infra-bucket/terraform.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "hashicorp/terraform",
            "computeType": "BUILD_GENERAL1_SMALL",
        },
        serviceRole="arn:aws:iam::123456789012:role/terraform",
    )
    await clients.close()
    return PROJECT


def power(report: PassReport) -> tuple[str | None, str]:
    return (
        report.environments["staging"].facts.power_state,
        report.decision("staging", "power").action,
    )


async def test_a_build_is_started_with_the_action_the_timeout_and_a_token_then_followed(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str
) -> None:
    h: Harness = make_controller(DESIRED)
    assert power(await h.controller.reconcile_once()) == ("STARTING", "terraform_apply")
    (start,) = codebuild.starts
    assert start["projectName"] == PROJECT
    assert {v["name"]: v["value"] for v in start["environmentVariablesOverride"]} == {
        "TF_ACTION": "apply",
        "TF_ENVIRONMENT": "staging",
        "TF_RUN_TOKEN": start["idempotencyToken"],
    }
    assert start["timeoutInMinutesOverride"] == 45
    assert start["idempotencyToken"]
    status = h.status()["environments"]["staging"]
    assert status["current_run"]["run_id"] == start["build_id"]
    assert status["current_run"]["logs_url"]
    assert power(await h.controller.reconcile_once()) == ("STARTING", "none")
    codebuild.statuses[start["build_id"]] = "SUCCEEDED"
    assert power(await h.controller.reconcile_once()) == ("RUNNING", "none")
    assert power(await h.controller.reconcile_once()) == ("RUNNING", "none")
    assert len(codebuild.build_ids()) == 1
    assert h.calls("BatchGetBuilds") == 2


@pytest.mark.parametrize("outcome", ["STOPPED", "FAILED", "FAULT", "TIMED_OUT"])
async def test_a_stopped_or_failed_build_is_an_error(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str, outcome: str
) -> None:
    h: Harness = make_controller(DESIRED)
    await h.controller.reconcile_once()
    codebuild.statuses[codebuild.build_ids()[0]] = outcome
    report = await h.controller.reconcile_once()
    assert power(report) == ("ERROR", "none")
    assert f"build {outcome}" in report.decision("staging", "power").reason


async def test_a_restart_while_a_build_is_in_flight_follows_it(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str
) -> None:
    first: Harness = make_controller(DESIRED)
    await first.controller.reconcile_once()
    restarted: Harness = make_controller(DESIRED)  # same state store, nothing in memory
    assert power(await restarted.controller.reconcile_once()) == ("STARTING", "none")
    codebuild.statuses[codebuild.build_ids()[0]] = "SUCCEEDED"
    assert power(await restarted.controller.reconcile_once()) == ("RUNNING", "none")
    assert len(codebuild.starts) == 1


async def test_a_start_recorded_but_not_confirmed_finds_the_same_build_by_its_token(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str, tmp_path: Any
) -> None:
    # the controller recorded the run and called StartBuild, then died before saving the id
    clients = AwsClients(REGION)
    await clients.call(
        "codebuild", "StartBuild", REGION, projectName=PROJECT, idempotencyToken="tok-1"
    )
    await clients.close()
    intent = RunInfo(
        runner="codebuild", operation="apply", token="tok-1", started_at=datetime.now(UTC)
    )
    await FileStateStore(str(tmp_path / "state.json")).put(
        "staging", EnvironmentRecord(power=PowerRecord(state="STARTING", run=intent))
    )
    h: Harness = make_controller(DESIRED)
    assert power(await h.controller.reconcile_once()) == ("STARTING", "none")
    assert len(codebuild.build_ids()) == 1
    assert codebuild.starts[-1]["idempotencyToken"] == "tok-1"
    codebuild.statuses[codebuild.build_ids()[0]] = "SUCCEEDED"
    assert power(await h.controller.reconcile_once()) == ("RUNNING", "none")


def test_build_statuses_map_to_run_outcomes() -> None:
    assert build_status("IN_PROGRESS").state == "IN_PROGRESS"
    assert build_status("SUCCEEDED").state == "SUCCEEDED"
    for failed in ("FAILED", "FAULT", "TIMED_OUT", "STOPPED"):
        status = build_status(failed, "BUILD")
        assert (status.state, status.detail) == ("FAILED", f"build {failed} in phase BUILD")


async def test_plan_never_resumes_an_unconfirmed_start(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str, tmp_path: Any
) -> None:
    intent = RunInfo(
        runner="codebuild", operation="apply", token="tok-2", started_at=datetime.now(UTC)
    )
    await FileStateStore(str(tmp_path / "state.json")).put(
        "staging", EnvironmentRecord(power=PowerRecord(state="STARTING", run=intent))
    )
    h: Harness = make_controller(DESIRED)
    report = await h.controller.reconcile_once(act=False, persist=False)
    assert report.decision("staging", "power").unknown
    assert codebuild.starts == []


async def test_a_start_whose_answer_is_lost_is_confirmed_by_its_token_never_started_twice(
    make_controller: MakeController,
    codebuild: CodeBuildEmulator,
    project: str,
    proxy: FaultProxy,
) -> None:
    # CodeBuild creates the build, then its answer arrives cut short
    proxy.set(Fault("truncate", "StartBuild", times=1))
    h: Harness = make_controller(DESIRED, max_attempts=1)
    first = await h.controller.reconcile_once()
    assert power(first) == ("STARTING", "terraform_apply")
    assert h.status()["environments"]["staging"]["current_run"]["run_id"] is None
    second = await h.controller.reconcile_once(PassRequest(due_now=frozenset({"staging"})))
    assert power(second) == ("STARTING", "none")
    assert len(codebuild.build_ids()) == 1  # the same token found the same build
    assert [s["idempotencyToken"] for s in codebuild.starts] == [
        codebuild.starts[0]["idempotencyToken"]
    ] * 2
    codebuild.statuses[codebuild.build_ids()[0]] = "SUCCEEDED"
    assert power(await h.controller.reconcile_once()) == ("RUNNING", "none")


@pytest.mark.parametrize("started", [True, False])
async def test_a_start_recorded_longer_ago_than_the_token_lives_is_found_never_repeated(
    make_controller: MakeController,
    codebuild: CodeBuildEmulator,
    project: str,
    tmp_path: Path,
    started: bool,
) -> None:
    # a build started with the token 10 minutes ago (or not at all), its start never confirmed
    if started:
        clients = AwsClients(REGION)
        await clients.call(
            "codebuild",
            "StartBuild",
            REGION,
            projectName=PROJECT,
            idempotencyToken="tok-old",
            environmentVariablesOverride=[{"name": "TF_RUN_TOKEN", "value": "tok-old"}],
        )
        await clients.close()
    h: Harness = make_controller(DESIRED)
    intent = RunInfo(
        runner="codebuild",
        operation="apply",
        token="tok-old",
        started_at=h.clock.now() - timedelta(minutes=10),
    )
    await FileStateStore(str(tmp_path / "state.json")).put(
        "staging", EnvironmentRecord(power=PowerRecord(state="STARTING", run=intent))
    )
    report = await h.controller.reconcile_once()
    starts_with_old_token = [s for s in codebuild.starts if s["idempotencyToken"] == "tok-old"]
    assert len(starts_with_old_token) == (1 if started else 0)  # never sent again
    if started:
        assert power(report) == ("STARTING", "none")
        assert h.status()["environments"]["staging"]["current_run"]["run_id"]
    else:
        assert power(report) == ("ERROR", "none")
        assert "no run carries its token" in report.decision("staging", "power").reason
    assert len(codebuild.build_ids()) == (1 if started else 0)


async def test_a_build_listed_twice_with_different_statuses_is_unknown(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str
) -> None:
    h: Harness = make_controller(DESIRED)
    await h.controller.reconcile_once()
    (build,) = codebuild.build_ids()
    codebuild.duplicates[build] = ["FAILED"]  # IN_PROGRESS and FAILED in one answer
    report = await h.controller.reconcile_once()
    assert power(report) == ("STARTING", "none")  # not ERROR: never a retry beside it
    assert report.decision("staging", "power").unknown
    assert len(codebuild.build_ids()) == 1


async def start_build_elsewhere(action: str = "apply") -> None:
    """A build started for staging by a controller whose state store is now lost."""
    clients = AwsClients(REGION)
    await clients.call(
        "codebuild",
        "StartBuild",
        REGION,
        projectName=PROJECT,
        idempotencyToken="lost-token",
        environmentVariablesOverride=[
            {"name": "TF_ACTION", "value": action},
            {"name": "TF_ENVIRONMENT", "value": "staging"},
            {"name": "TF_RUN_TOKEN", "value": "lost-token"},
        ],
    )
    await clients.close()


async def test_a_build_in_flight_is_adopted_when_the_state_store_has_no_record_of_it(
    make_controller: MakeController, codebuild: CodeBuildEmulator, project: str
) -> None:
    await start_build_elsewhere()
    h: Harness = make_controller(DESIRED)  # an empty state store
    report = await h.controller.reconcile_once()
    assert power(report) == ("STARTING", "none")
    assert len(codebuild.build_ids()) == 1  # followed, not started again
    codebuild.statuses[codebuild.build_ids()[0]] = "SUCCEEDED"
    assert power(await h.controller.reconcile_once()) == ("RUNNING", "none")


async def test_no_run_starts_without_a_record_while_builds_cannot_be_listed(
    make_controller: MakeController,
    codebuild: CodeBuildEmulator,
    project: str,
    proxy: FaultProxy,
) -> None:
    proxy.set(Fault("error500", "ListBuildsForProject"))
    h: Harness = make_controller(DESIRED, max_attempts=1)
    report = await h.controller.reconcile_once()
    assert report.decision("staging", "power").action == "none"
    assert report.decision("staging", "power").unknown
    assert codebuild.starts == []
    proxy.clear()
    report = await h.controller.reconcile_once(PassRequest(due_now=frozenset({"staging"})))
    assert power(report) == ("STARTING", "terraform_apply")  # nothing in flight: now it may
