"""The power policy's I/O: poll the runs in flight, start a run (recorded first), stop runners.

Never two runs for one environment: a run is written to the state store (a conditional write)
*before* the runner starts it, with an idempotency token. A controller that crashed between the
two finds the record on restart and asks the runner again with the same token, which returns
the same run instead of starting another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from controller.core.backoff import TERRAFORM_RETRY
from controller.core.clock import utc_iso
from controller.core.records import EnvironmentRecord, RunInfo, RunResult
from reconcilers.interface import (
    ActOutcome,
    EnvironmentContext,
    Event,
    RecordWriter,
    Unobserved,
)
from reconcilers.power.decision import PowerDecision, PowerObservation, decide_in_context
from reconcilers.terraform.runner import RunnerError, RunStatus, RunToPoll, TerraformRunner

log = structlog.get_logger("infra_controller.power")


@dataclass(frozen=True)
class PolledRun:
    status: RunStatus | None  # None: no run in flight, or its status is unknown (see error)
    error: str | None = None
    run: RunInfo | None = None  # the run as now known (its id filled in after a recovery)
    # no record, and whether a run is in flight could not be told: nothing may start
    unknown_memory: str | None = None


class PowerReconciler:
    name = "power"

    def __init__(self, runners: Mapping[str, TerraformRunner], writer: RecordWriter) -> None:
        self.runners = runners
        self._writer = writer

    def _runner(self, name: str) -> TerraformRunner:
        runner = self.runners.get(name)
        if runner is None:
            raise RunnerError(f"no runner named {name!r}")
        return runner

    async def observe(
        self, contexts: Sequence[EnvironmentContext], now: datetime
    ) -> Mapping[str, PolledRun]:
        """The status of every run in flight, batched per runner. In a dry run (plan) an
        unconfirmed start is never resumed: resuming it could start a run."""
        results: dict[str, PolledRun] = {c.name: PolledRun(None) for c in contexts}
        by_runner: dict[str, list[RunToPoll]] = defaultdict(list)
        discovered = dict(
            zip(
                [c.name for c in contexts],
                await asyncio.gather(*(self._discover(c, now) for c in contexts)),
                strict=True,
            )
        )
        for context in contexts:
            run = context.record.power.run
            if run is None:
                found = discovered[context.name]
                if isinstance(found, PolledRun):
                    results[context.name] = found
                    continue
                run = found
            if run is None:
                continue
            spec = context.spec.terraform
            if spec is None:
                results[context.name] = PolledRun(None, "the terraform block was removed mid-run")
                continue
            if run.run_id is None:
                if context.dry_run:
                    results[context.name] = PolledRun(None, "a recorded run start is unconfirmed")
                    continue
                recovered = await self._recover_start(context, run, now)
                if isinstance(recovered, PolledRun):
                    results[context.name] = recovered
                    continue
                run = recovered
            by_runner[run.runner].append(RunToPoll(context.name, run, spec, context.region))
        for runner_name, items in by_runner.items():
            try:
                statuses = await self._runner(runner_name).poll(items)
            except RunnerError as exc:
                statuses, error = {}, str(exc)
            else:
                error = "no answer for the run"
            for item in items:
                status = statuses.get(item.environment)
                results[item.environment] = PolledRun(status, None if status else error, item.run)
        return results

    async def _discover(
        self, context: EnvironmentContext, now: datetime
    ) -> RunInfo | PolledRun | None:
        """For an environment with no record at all (new, or its record was lost): a run its
        runner still has in flight is adopted, never started again beside it."""
        spec = context.spec.terraform
        record = context.record.power
        if spec is None or record.state is not None or record.run is not None:
            return None
        try:
            found = await self._runner(spec.runner).in_flight(context.name, spec, context.region)
        except RunnerError as exc:
            return PolledRun(None, unknown_memory=f"runs in flight unknown ({exc})")
        if found is None:
            return None
        log.warning(
            "adopting a run in flight found without a record",
            environment=context.name,
            run_id=found.run_id,
            operation=found.operation,
        )
        return RunInfo(
            runner=spec.runner,
            operation=found.operation,
            token=found.token,
            started_at=found.started_at or now,
            run_id=found.run_id,
            logs_url=found.logs_url,
        )

    async def _recover_start(
        self, context: EnvironmentContext, run: RunInfo, now: datetime
    ) -> RunInfo | PolledRun:
        """A start recorded but not confirmed (the controller stopped in between, or the start's
        answer was lost): the same token finds the run if it was started, or starts it once if
        it was not. A refusal proves it never started: that run is over, failed. Past the
        runner's token window a repeated start could start a second run: the run is looked
        up instead, and one not found never started."""
        spec = context.spec.terraform
        assert spec is not None
        runner = self._runner(run.runner)
        expired = runner.token_window is not None and now - run.started_at >= runner.token_window
        log.warning(
            "resuming a recorded run start",
            environment=context.name,
            token=run.token,
            operation=run.operation,
            how="looked up by its token" if expired else "repeated with its token",
        )
        try:
            if expired:
                found = await runner.find(context.name, spec, context.region, run.token)
                if found is None:
                    detail = "never started: no run carries its token"
                    return PolledRun(RunStatus("FAILED", detail), run=run)
                started = found
            else:
                started = await runner.start(
                    context.name, spec, context.region, run.operation, run.token
                )
        except RunnerError as exc:
            log.error("cannot resume the recorded run", environment=context.name, error=str(exc))
            if exc.maybe_started:
                return PolledRun(None, f"the recorded run is unconfirmed ({exc})")
            return PolledRun(RunStatus("FAILED", f"could not start: {exc}"), run=run)
        return replace(run, run_id=started.run_id, logs_url=started.logs_url)

    def decide(
        self, context: EnvironmentContext, observation: PolledRun | Unobserved, now: datetime
    ) -> PowerDecision:
        record = context.record.power
        if isinstance(observation, Unobserved):
            observed = PowerObservation(record, poll_error=observation.reason)
        else:
            if observation.run is not None and record.run != observation.run:
                record = replace(record, run=observation.run)  # a recovered run id
            observed = PowerObservation(
                record,
                observation.status,
                observation.error,
                runs_unknown=observation.unknown_memory,
            )
        service = context.facts.service
        if context.spec.service is not None and service is not None:
            observed = replace(observed, service_exists=service.exists)
        observed = replace(observed, service_error=context.facts.service_error)
        return decide_in_context(context, observed, now)

    async def act(
        self, context: EnvironmentContext, decision: PowerDecision, now: datetime
    ) -> ActOutcome:
        """Record the run, then start it. Raises StoreConflict if another controller changed
        the record first (then nothing is started)."""
        spec, operation = context.spec.terraform, decision.operation
        assert spec is not None and operation is not None
        intent = RunInfo(
            runner=spec.runner, operation=operation, token=uuid.uuid4().hex, started_at=now
        )
        recorded = await self._writer.put(
            context.name,
            replace(context.record, power=replace(decision.power_record, run=intent)),
        )
        try:
            started = await self._runner(spec.runner).start(
                context.name, spec, context.region, operation, intent.token
            )
        except RunnerError as exc:
            if exc.maybe_started:  # kept as recorded: the next pass confirms it by its token
                return self._unconfirmed(recorded, decision, str(exc))
            return await self._not_started(context, decision, recorded, now, str(exc))
        run = replace(intent, run_id=started.run_id, logs_url=started.logs_url)
        stored = await self._writer.put(
            context.name, replace(recorded, power=replace(recorded.power, run=run))
        )
        return ActOutcome(
            record=stored,
            events=(
                Event(
                    "run_started",
                    decision.reason,
                    attributes={
                        "operation": operation,
                        "run_id": run.run_id,
                        "logs_url": run.logs_url,
                    },
                ),
            ),
            last_action={
                "action": decision.action,
                "reason": decision.reason,
                "run_id": run.run_id,
                "logs_url": run.logs_url,
                "at": utc_iso(now),
            },
        )

    def _unconfirmed(
        self, recorded: EnvironmentRecord, decision: PowerDecision, error: str
    ) -> ActOutcome:
        operation = decision.operation
        return ActOutcome(
            record=recorded,
            events=(
                Event(
                    "run_unconfirmed",
                    f"the start of the {operation} may have happened ({error}); it is confirmed "
                    "with its token in the next pass, never started twice",
                    severity="warning",
                    attributes={"operation": operation, "error": error},
                ),
            ),
            performed=False,
        )

    async def _not_started(
        self,
        context: EnvironmentContext,
        decision: PowerDecision,
        recorded: EnvironmentRecord,
        now: datetime,
        error: str,
    ) -> ActOutcome:
        operation = decision.operation
        assert operation is not None
        failures = decision.power_record.failures + 1
        failed = replace(
            decision.power_record,
            run=None,
            state="ERROR",
            changed_at=now,
            failures=failures,
            retry_at=now + TERRAFORM_RETRY.delay(failures),
            last_result=RunResult(operation, False, now, 0.0, f"could not start: {error}"),
        )
        stored = await self._writer.put(context.name, replace(recorded, power=failed))
        events = [
            Event(
                "run_not_started",
                error,
                severity="error",
                attributes={"operation": operation, "error": error},
            )
        ]
        if decision.state != "ERROR":
            events.append(Event("power_state_changed", error, decision.state, "ERROR"))
        return ActOutcome(
            record=stored,
            facts=replace(context.facts, power_state="ERROR"),
            events=tuple(events),
            performed=False,
        )

    async def close(self, grace_seconds: float) -> None:
        for runner in self.runners.values():
            await runner.close(grace_seconds)
