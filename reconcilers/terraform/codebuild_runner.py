"""The production Terraform runner: one CodeBuild build per run.

The build gets `TF_ACTION=apply|destroy` and `TF_ENVIRONMENT=<name>`, the environment's
`terraform.timeout`, and an idempotency token, so a start repeated after a crash finds the same
build. Builds are polled with one BatchGetBuilds per region (100 ids a call).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from controller.core.aws import AwsClients, AwsError, chunks
from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation
from reconcilers.terraform.runner import RunnerError, RunStatus, RunToPoll, StartedRun

BATCH_GET_BUILDS = 100
FAILED_STATUSES = {"FAILED", "FAULT", "TIMED_OUT", "STOPPED"}


class CodeBuildRunner:
    name = "codebuild"

    def __init__(self, aws: AwsClients) -> None:
        self._aws = aws

    async def start(
        self, environment: str, spec: TerraformSpec, region: str, operation: Operation, token: str
    ) -> StartedRun:
        assert spec.project is not None
        minutes = min(2160, max(5, math.ceil(spec.timeout.total_seconds() / 60)))
        try:
            answer = await self._aws.call(
                "codebuild",
                "StartBuild",
                region,
                projectName=spec.project,
                environmentVariablesOverride=[
                    {"name": "TF_ACTION", "value": operation, "type": "PLAINTEXT"},
                    {"name": "TF_ENVIRONMENT", "value": environment, "type": "PLAINTEXT"},
                ],
                timeoutInMinutesOverride=minutes,
                idempotencyToken=token,
            )
        except AwsError as exc:
            raise RunnerError(str(exc)) from exc
        build = answer["build"]
        return StartedRun(run_id=build["id"], logs_url=(build.get("logs") or {}).get("deepLink"))

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
                    answer = await self._aws.call("codebuild", "BatchGetBuilds", region, ids=ids)
                except AwsError:
                    continue  # unknown: the next pass polls again
                builds = {build["id"]: build for build in answer.get("builds", [])}
                for item in batch:
                    build = builds.get(item.run.run_id or "")
                    if build is None:
                        statuses[item.environment] = RunStatus("FAILED", "build not found")
                    else:
                        statuses[item.environment] = build_status(build)
        return statuses

    async def cancel(self, run: RunToPoll) -> None:
        if run.run.run_id:
            await self._aws.call("codebuild", "StopBuild", run.region, id=run.run.run_id)

    async def close(self, grace_seconds: float) -> None:
        """Builds run in CodeBuild: they go on while the controller restarts."""


def build_status(build: dict[str, object]) -> RunStatus:
    status = str(build.get("buildStatus", "IN_PROGRESS"))
    if status == "SUCCEEDED":
        return RunStatus("SUCCEEDED", "build SUCCEEDED")
    if status in FAILED_STATUSES:
        phase = build.get("currentPhase")
        return RunStatus("FAILED", f"build {status}" + (f" in phase {phase}" if phase else ""))
    return RunStatus("IN_PROGRESS", f"build {status}")
