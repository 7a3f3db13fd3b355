"""The power reconciler's I/O: poll the runs in flight, start a run (recorded first), report.

Never two runs for one environment: a run is written to the state store (a conditional write)
*before* the runner starts it, with an idempotency token. A controller that crashed between the
two finds the record on restart and asks the runner again with the same token, which returns
the same run instead of starting another.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from controller.desired_state import Environment
from controller.state_store import EnvironmentRecord, StateStore
from reconcilers.power_decision import (
    PowerDecision,
    PowerRecord,
    RunInfo,
    RunResult,
    RunStatus,
    retry_delay,
)
from reconcilers.terraform_runner import RunnerError, RunToPoll, TerraformRunner

log = structlog.get_logger("infra_controller.power")


@dataclass(frozen=True)
class PowerTarget:
    name: str
    spec: Environment
    region: str
    record: EnvironmentRecord


@dataclass(frozen=True)
class PolledRun:
    status: RunStatus | None
    error: str | None = None
    run: RunInfo | None = None  # the run as now known (its id filled in after a recovery)


class PowerReconciler:
    def __init__(self, runners: dict[str, TerraformRunner], store: StateStore) -> None:
        self.runners = runners
        self.store = store

    def _runner(self, name: str) -> TerraformRunner:
        runner = self.runners.get(name)
        if runner is None:
            raise RunnerError(f"no runner named {name!r}")
        return runner

    async def poll(
        self, targets: Sequence[PowerTarget], recover: bool = True
    ) -> dict[str, PolledRun]:
        """The status of every run in flight, batched per runner. `recover=False` (plan,
        dry-run) never asks a runner to resume an unconfirmed start: that could start a run."""
        results: dict[str, PolledRun] = {}
        by_runner: dict[str, list[RunToPoll]] = defaultdict(list)
        for target in targets:
            run = target.record.power.run
            if run is None:
                continue
            spec = target.spec.terraform
            if spec is None:
                results[target.name] = PolledRun(None, "the terraform block was removed mid-run")
                continue
            if run.run_id is None:
                if not recover:
                    results[target.name] = PolledRun(None, "a recorded run start is unconfirmed")
                    continue
                run = await self._recover_start(target, run)
                if run is None:
                    results[target.name] = PolledRun(None, "the recorded run could not be found")
                    continue
            by_runner[run.runner].append(RunToPoll(target.name, run, spec, target.region))
        for runner_name, items in by_runner.items():
            try:
                statuses = await self._runner(runner_name).poll(items)
            except RunnerError as exc:
                statuses = {}
                error = str(exc)
            else:
                error = "no answer for the run"
            for item in items:
                status = statuses.get(item.environment)
                results[item.environment] = PolledRun(status, None if status else error, item.run)
        return results

    async def _recover_start(self, target: PowerTarget, run: RunInfo) -> RunInfo | None:
        """A start recorded but not confirmed (the controller stopped in between): the same
        token finds the run if it was started, or starts it once if it was not."""
        spec = target.spec.terraform
        assert spec is not None
        log.warning(
            "resuming a recorded run start",
            environment=target.name,
            token=run.token,
            operation=run.operation,
        )
        try:
            started = await self._runner(run.runner).start(
                target.name, spec, target.region, run.operation, run.token
            )
        except RunnerError as exc:
            log.error("cannot resume the recorded run", environment=target.name, error=str(exc))
            return None
        return replace(run, run_id=started.run_id, logs_url=started.logs_url)

    async def start(
        self, target: PowerTarget, decision: PowerDecision, now: datetime
    ) -> EnvironmentRecord:
        """Record the run, then start it; returns the stored record. Raises StoreConflict if
        another controller changed the record first (then nothing is started)."""
        spec = target.spec.terraform
        operation = decision.operation
        assert spec is not None and operation is not None
        intent = RunInfo(
            runner=spec.runner, operation=operation, token=uuid.uuid4().hex, started_at=now
        )
        recorded = await self.store.put(
            target.name, replace(target.record, power=replace(decision.record, run=intent))
        )
        try:
            started = await self._runner(spec.runner).start(
                target.name, spec, target.region, operation, intent.token
            )
        except RunnerError as exc:
            failures = decision.record.failures + 1
            failed = replace(
                decision.record,
                run=None,
                state="ERROR",
                changed_at=now,
                failures=failures,
                retry_at=now + retry_delay(failures),
                last_result=RunResult(operation, False, now, 0.0, f"could not start: {exc}"),
            )
            return await self.store.put(target.name, replace(recorded, power=failed))
        run = replace(intent, run_id=started.run_id, logs_url=started.logs_url)
        return await self.store.put(
            target.name, replace(recorded, power=replace(recorded.power, run=run))
        )

    async def close(self, grace_seconds: float) -> None:
        for runner in self.runners.values():
            await runner.close(grace_seconds)


def with_polled_run(record: PowerRecord, polled: PolledRun | None) -> PowerRecord:
    """The record with the run as the poll now knows it (a recovered run id)."""
    if polled is None or polled.run is None or record.run == polled.run:
        return record
    return replace(record, run=polled.run)
