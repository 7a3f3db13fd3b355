"""The production Terraform runner: one CodeBuild build per run.

The build gets `TF_ACTION=apply|destroy` and `TF_ENVIRONMENT=<name>`, the environment's
`terraform.timeout`, and an idempotency token, so a start repeated after a crash finds the same
build. Builds are polled with one BatchGetBuilds per region (100 ids a call).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

from controller.core.aws import Answer, AwsClients, AwsError, chunks
from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation
from reconcilers.terraform.runner import RunnerError, RunStatus, RunToPoll, StartedRun

BATCH_GET_BUILDS = 100
# CodeBuild honours an idempotency token for 5 minutes; past 4, a start is found, not repeated
TOKEN_WINDOW = timedelta(minutes=4)
# each build carries its run's token, so that it can be found once the token has expired
TOKEN_VARIABLE = "TF_RUN_TOKEN"
FAILED_STATUSES = {"FAILED", "FAULT", "TIMED_OUT", "STOPPED"}


class _Logs(Answer):
    deepLink: str | None = None


class _Variable(Answer):
    name: str
    value: str | None = None


class _BuildEnvironment(Answer):
    environmentVariables: list[_Variable] = []


class _Build(Answer):
    id: str
    buildStatus: str
    currentPhase: str | None = None
    logs: _Logs | None = None
    environment: _BuildEnvironment | None = None

    def carries(self, token: str) -> bool:
        variables = self.environment.environmentVariables if self.environment else []
        return any(v.name == TOKEN_VARIABLE and v.value == token for v in variables)


class _ListBuilds(Answer):
    ids: list[str]


class _StartBuild(Answer):
    build: _Build


class _BatchGetBuilds(Answer):
    builds: list[_Build]
    buildsNotFound: list[str] = []


class CodeBuildRunner:
    name = "codebuild"
    token_window: timedelta | None = TOKEN_WINDOW

    def __init__(self, aws: AwsClients) -> None:
        self._aws = aws

    async def start(
        self, environment: str, spec: TerraformSpec, region: str, operation: Operation, token: str
    ) -> StartedRun:
        assert spec.project is not None
        minutes = min(2160, max(5, math.ceil(spec.timeout.total_seconds() / 60)))
        try:
            answer = await self._aws.read(
                _StartBuild,
                "codebuild",
                "StartBuild",
                region,
                projectName=spec.project,
                environmentVariablesOverride=[
                    {"name": "TF_ACTION", "value": operation, "type": "PLAINTEXT"},
                    {"name": "TF_ENVIRONMENT", "value": environment, "type": "PLAINTEXT"},
                    {"name": TOKEN_VARIABLE, "value": token, "type": "PLAINTEXT"},
                ],
                timeoutInMinutesOverride=minutes,
                idempotencyToken=token,
            )
            build = answer.build
        except AwsError as exc:
            # only a refusal proves no build was started; anything else is confirmed later
            raise RunnerError(str(exc), maybe_started=not exc.refused) from exc
        return StartedRun(run_id=build.id, logs_url=build.logs.deepLink if build.logs else None)

    async def find(
        self, environment: str, spec: TerraformSpec, region: str, token: str
    ) -> StartedRun | None:
        """The project's latest builds (a recorded start is minutes old, not days), looked
        up by the token each build carries."""
        assert spec.project is not None
        try:
            listed = await self._aws.read(
                _ListBuilds,
                "codebuild",
                "ListBuildsForProject",
                region,
                projectName=spec.project,
                sortOrder="DESCENDING",
            )
            ids = listed.ids[:BATCH_GET_BUILDS]
            if not ids:
                return None
            answer = await self._aws.read(
                _BatchGetBuilds, "codebuild", "BatchGetBuilds", region, ids=ids
            )
        except AwsError as exc:
            raise RunnerError(str(exc), maybe_started=True) from exc
        for build in answer.builds:
            if build.carries(token):
                return StartedRun(build.id, build.logs.deepLink if build.logs else None)
        return None

    async def poll(self, runs: Sequence[RunToPoll]) -> dict[str, RunStatus]:
        by_region: dict[str, list[RunToPoll]] = defaultdict(list)
        for item in runs:
            if item.run.run_id:
                by_region[item.region].append(item)
        statuses: dict[str, RunStatus] = {}
        for region, items in by_region.items():
            for batch in chunks(items, BATCH_GET_BUILDS):
                ids = [item.run.run_id for item in batch if item.run.run_id]
                try:
                    answer = await self._aws.read(
                        _BatchGetBuilds, "codebuild", "BatchGetBuilds", region, ids=ids
                    )
                except AwsError:
                    continue  # unknown: the next pass polls again
                builds = {build.id: build for build in answer.builds}
                for item in batch:
                    run_id = item.run.run_id or ""
                    build = builds.get(run_id)
                    if build is not None:
                        statuses[item.environment] = build_status(
                            build.buildStatus, build.currentPhase
                        )
                    elif run_id in answer.buildsNotFound:
                        statuses[item.environment] = RunStatus("FAILED", "build not found")
                    # an id the answer does not mention at all: unknown, polled again
        return statuses

    async def cancel(self, run: RunToPoll) -> None:
        if run.run.run_id:
            await self._aws.call("codebuild", "StopBuild", run.region, id=run.run.run_id)

    async def close(self, grace_seconds: float) -> None:
        """Builds run in CodeBuild: they go on while the controller restarts."""


def build_status(status: str, phase: str | None = None) -> RunStatus:
    if status == "SUCCEEDED":
        return RunStatus("SUCCEEDED", "build SUCCEEDED")
    if status in FAILED_STATUSES:
        return RunStatus("FAILED", f"build {status}" + (f" in phase {phase}" if phase else ""))
    return RunStatus("IN_PROGRESS", f"build {status}")
