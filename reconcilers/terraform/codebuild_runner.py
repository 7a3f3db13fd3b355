"""The production Terraform runner: one CodeBuild build per run.

The build gets `TF_ACTION=apply|destroy` and `TF_ENVIRONMENT=<name>`, the environment's
`terraform.timeout`, and an idempotency token, so a start repeated after a crash finds the same
build. Builds are polled with one BatchGetBuilds per region (100 ids a call).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

from pydantic import AwareDatetime

from controller.core.aws import Answer, AwsClients, AwsError, chunks
from controller.core.desired_state import TerraformSpec
from controller.core.records import Operation
from reconcilers.terraform.runner import (
    FoundRun,
    RunnerError,
    RunStatus,
    RunToPoll,
    StartedRun,
)

BATCH_GET_BUILDS = 100
# CodeBuild honours an idempotency token for 5 minutes; past 3 (a margin for slow passes), a
# start is looked up, not repeated
TOKEN_WINDOW = timedelta(minutes=3)
LISTING_REUSE_SECONDS = 5.0  # one pass's environments share a listing, no longer
# the answers that prove CodeBuild did not start the build (anything else: it may have)
REFUSALS = frozenset(
    {
        "InvalidInputException",
        "ResourceNotFoundException",
        "AccountLimitExceededException",
        "AccessDeniedException",
        "OAuthProviderException",
        "ThrottlingException",
    }
)
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
    startTime: AwareDatetime | None = None

    def variable(self, name: str) -> str | None:
        variables = self.environment.environmentVariables if self.environment else []
        return next((v.value for v in variables if v.name == name), None)

    def carries(self, token: str) -> bool:
        return self.variable(TOKEN_VARIABLE) == token


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
        self._listings: dict[tuple[str, str], asyncio.Future[list[_Build]]] = {}
        self._listed: dict[tuple[str, str], float] = {}

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
            # only CodeBuild's own refusal proves no build was started (a proxy's 4xx page does
            # not): anything else is confirmed later with the token
            refused = exc.refused and exc.code in REFUSALS
            raise RunnerError(str(exc), maybe_started=not refused) from exc
        return StartedRun(run_id=build.id, logs_url=build.logs.deepLink if build.logs else None)

    async def _latest_builds(self, spec: TerraformSpec, region: str) -> list[_Build]:
        """The project's latest builds: a run looked for is minutes old, not days. The
        environments of one pass that look at once share one listing."""
        assert spec.project is not None
        key = (spec.project, region)
        listing = self._listings.get(key)
        stale = (
            listing is not None
            and listing.done()
            and (
                listing.cancelled()
                or listing.exception() is not None  # a failure is never reused
                or time.monotonic() - self._listed[key] > LISTING_REUSE_SECONDS
            )
        )
        if listing is None or stale:
            listing = asyncio.ensure_future(self._list_builds(spec.project, region))
            self._listings[key], self._listed[key] = listing, time.monotonic()
        return await asyncio.shield(listing)

    async def _list_builds(self, project: str, region: str) -> list[_Build]:
        try:
            listed = await self._aws.read(
                _ListBuilds,
                "codebuild",
                "ListBuildsForProject",
                region,
                projectName=project,
                sortOrder="DESCENDING",
            )
            ids = listed.ids[:BATCH_GET_BUILDS]
            if not ids:
                return []
            answer = await self._aws.read(
                _BatchGetBuilds, "codebuild", "BatchGetBuilds", region, ids=ids
            )
        except AwsError as exc:
            raise RunnerError(str(exc), maybe_started=True) from exc
        return answer.builds

    async def find(
        self, environment: str, spec: TerraformSpec, region: str, token: str
    ) -> StartedRun | None:
        for build in await self._latest_builds(spec, region):
            if build.carries(token):
                return StartedRun(build.id, build.logs.deepLink if build.logs else None)
        return None

    async def in_flight(
        self, environment: str, spec: TerraformSpec, region: str
    ) -> FoundRun | None:
        for build in await self._latest_builds(spec, region):
            operation = build.variable("TF_ACTION")
            if (
                build.variable("TF_ENVIRONMENT") == environment
                and operation in ("apply", "destroy")
                and build_status(build.buildStatus).state == "IN_PROGRESS"
            ):
                return FoundRun(
                    build.id,
                    "apply" if operation == "apply" else "destroy",
                    build.variable(TOKEN_VARIABLE) or "",
                    build.startTime,
                    build.logs.deepLink if build.logs else None,
                )
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
                builds = _consistent(answer.builds)
                for item in batch:
                    run_id = item.run.run_id or ""
                    if run_id in builds and builds[run_id] is None:
                        continue  # told two different things about one build: unknown
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


def _consistent(builds: Sequence[_Build]) -> dict[str, _Build | None]:
    """Builds by id; None for an id the answer gives with different statuses."""
    by_id: dict[str, _Build | None] = {}
    for build in builds:
        known = by_id.get(build.id, build)
        by_id[build.id] = (
            build if known is not None and known.buildStatus == build.buildStatus else None
        )
    return by_id


def build_status(status: str, phase: str | None = None) -> RunStatus:
    if status == "SUCCEEDED":
        return RunStatus("SUCCEEDED", "build SUCCEEDED")
    if status in FAILED_STATUSES:
        return RunStatus("FAILED", f"build {status}" + (f" in phase {phase}" if phase else ""))
    return RunStatus("IN_PROGRESS", f"build {status}")
