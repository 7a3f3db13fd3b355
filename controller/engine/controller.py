"""The controller: the engine's parts put together, and the one surface the CLI, the HTTP API,
the sandbox and the tests use (triggers, one pass, the daemon loop, the published snapshot).

Each part has one job: the desired-state tracker fetches and keeps the last valid revision, the
pass engine observes, decides and acts, the reporter reports, the scheduler paces the passes,
the state memory persists. This class only sequences them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

import structlog

from controller.core.clock import Clock
from controller.core.desired_state import Environment
from controller.core.durations import format_duration
from controller.core.events import StampedEvent
from controller.core.settings import Settings
from controller.desired.tracker import DesiredStateTracker
from controller.engine.activator_wakes import ActivatorWakes
from controller.engine.api_overrides import ApiOverrides
from controller.engine.leadership import Leadership
from controller.engine.memory import StateMemory
from controller.engine.metrics import ControllerMetrics
from controller.engine.overrides import effective
from controller.engine.pass_engine import PassEngine, PassOptions
from controller.engine.passes import PassReport, PassRequest
from controller.engine.reporter import Reporter
from controller.engine.scheduler import Scheduler
from controller.engine.snapshot import EnvironmentSnapshot, Snapshot
from controller.notifications.delivery import Notifier
from reconcilers.interface import Decision

log = structlog.get_logger("infra_controller")

# on shutdown, Terraform processes get this long to stop after their one SIGINT
RUNNER_STOP_GRACE_SECONDS = 3.0


NOT_LEADER = "this controller is not the leader; ask the leader (see /status)"


class Controller:
    def __init__(
        self,
        settings: Settings,
        tracker: DesiredStateTracker,
        engine: PassEngine,
        memory: StateMemory,
        reporter: Reporter,
        metrics: ControllerMetrics,
        clock: Clock,
        wake_refusal: Callable[[Environment], str | None],
        activator_wake: Callable[[Environment, str], Decision | None] = lambda spec, why: None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        notifier: Notifier | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._tracker = tracker
        self._engine = engine
        self._memory = memory
        self._reporter = reporter
        self._closers = closers
        self._notifier = notifier
        self._leadership = leadership
        if leadership is not None:
            engine.may_act = leadership.leading
            leadership.on_change = self._leadership_changed
        self._wake_refusal = wake_refusal  # the rule of the policy that handles wakes
        self._scheduler = Scheduler(self._scheduled_pass, clock, settings.interval)
        self._pass_lock = asyncio.Lock()
        self._stop: asyncio.Event | None = None
        self._snapshot = Snapshot(
            tracker.view(),
            settings.dry_run,
            clock.now(),
            leader=leadership is None,
            shard=settings.shard,
        )
        # suspend, resume and power overrides through the API
        self.overrides = ApiOverrides(
            clock,
            tracker,
            memory,
            reporter,
            self._pass_lock,
            self._publish,
            self.request_pass,
            self._flush_events,
        )
        # requests at the activator: wakes made at once, outside the passes
        self.activator = ActivatorWakes(
            engine,
            clock,
            self.snapshot,
            self.request_pass,
            wake_refusal,
            activator_wake,
            settings.dry_run,
        )

    # ---- what readers see ----

    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def stopping(self) -> bool:
        """Shutdown has begun: no pass follows, so a wake accepted now would be lost."""
        return self._stop is not None and self._stop.is_set()

    def knows(self, name: str) -> bool:
        return name in self._snapshot.desired.environments

    def healthy(self) -> bool:
        """A pass completed within 3 intervals (or the controller started less than 3 ago)."""
        last = self._snapshot.last_pass_completed_at or self._snapshot.started_at
        return self.clock.now() - last <= 3 * self.settings.interval

    def ready(self) -> str | None:
        """Why the controller is not ready (None: ready): no valid desired state yet, or a
        state store at fault (nothing depending on it is done meanwhile)."""
        if self._snapshot.revision is None:
            return "no valid desired state loaded"
        if not self.leading():
            return "not the leader: this controller observes only"
        return self._snapshot.state_store_problem

    def leading(self) -> bool:
        """This controller may act (always, without leader election)."""
        return self._leadership is None or self._leadership.leading()

    async def lead_for_one_pass(self) -> str | None:
        """A one-shot `run --once` with leader election: take the lease if nobody holds it
        (released at `close`); why not, when another controller does."""
        if self._leadership is None or self.leading():
            return None
        await self._leadership.step()
        if self.leading():
            return None
        return (
            "another controller holds the lease and acts (or held it less than 15 s ago): "
            "ask it with `infra-controller reconcile`"
        )

    def _leadership_changed(self, leading: bool) -> None:
        self._publish()
        if leading:  # what a follower held may be old
            self._reread_what_the_leader_wrote()
            if self._reporter.event_log is not None:
                self._reporter.event_log.take_unannounced()  # told by the previous leader
            self.request_pass(PassRequest(fetch_now=True))

    def _reread_what_the_leader_wrote(self) -> None:
        """The records and the events, read again before their next use."""
        self._memory.reread()
        if self._reporter.event_log is not None:
            self._reporter.event_log.reload()

    # ---- triggers ----

    def request_pass(self, request: PassRequest) -> None:
        self._scheduler.request(request)

    def request_wake(self, name: str) -> str | None:
        """Ask for a wake; returns why it is refused, or None when accepted (202)."""
        desired = self._tracker.desired
        if desired is None or name not in desired.environments:
            return "unknown environment"
        if not self.leading():
            return NOT_LEADER
        refusal = self._wake_refusal(
            effective(desired.environments[name], self._memory.record(name), self.clock.now())
        )
        if refusal is not None:
            return refusal
        self._engine.runtime(name).wakes_requested += 1
        log.info("wake requested", environment=name, revision=self._tracker.revision)
        self._publish()
        self.request_pass(PassRequest(due_now=frozenset({name})))
        return None

    def request_retry(self, name: str | None) -> str | None:
        """`POST /reconcile`: a pass now, failed runs of `name` (or all) retried at once."""
        if name is not None and not self.knows(name):
            return "unknown environment"
        if not self.leading():
            return NOT_LEADER
        log.info("pass requested through the API", target=name or "all environments")
        retry = frozenset({name}) if name else frozenset()
        self.request_pass(PassRequest(fetch_now=True, retry=retry, retry_all=name is None))
        return None

    # ---- passes ----

    async def refresh_desired_state(self) -> Snapshot:
        """Fetch the desired state now (the CLI does before its first pass)."""
        refresh = await self._tracker.refresh(self.clock.now(), force=True)
        self._reporter.desired_state(refresh, self._tracker.view())
        self._publish()
        return self._snapshot

    async def reconcile_once(
        self, request: PassRequest | None = None, act: bool = True, persist: bool = True
    ) -> PassReport:
        """One pass over every environment. `act=False` decides and logs only (plan)."""
        request = request or PassRequest()
        async with self._pass_lock:
            reconcile_id = uuid.uuid4().hex[:12]
            # a pass that keeps nothing (a plan, a follower's) tells nothing either
            self._reporter.recording = persist and self.leading()
            try:
                with (
                    structlog.contextvars.bound_contextvars(
                        reconcile_id=reconcile_id,
                        environment=None,
                        revision=self._tracker.revision,
                    ),
                    self._reporter.timed("pass"),
                ):
                    report = await self._pass(reconcile_id, request, act, persist)
            finally:
                self._reporter.recording = True
            now = self.clock.now()
            self._reporter.pass_completed(report.desired_state_valid and not report.failed, now)
            self._publish(completed=True)
            if persist:
                await self._flush_events()
            return report

    async def _flush_events(self) -> None:
        """Keep the new events, then queue their notifications (sent in the background)."""
        event_log = self._reporter.event_log
        if event_log is None:
            return
        await event_log.flush()
        if self._notifier is not None:
            self._notifier.publish(
                event_log.take_unannounced(), self._tracker.desired, self._tracker.revision
            )

    async def events(
        self,
        environment: str | None = None,
        kinds: Sequence[str] = (),
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[StampedEvent]:
        """The events kept, newest first (`GET /events`)."""
        if self._reporter.event_log is None:
            return []
        return await self._reporter.event_log.query(environment, kinds, since, limit)

    async def _pass(
        self, reconcile_id: str, request: PassRequest, act: bool, persist: bool
    ) -> PassReport:
        refresh = await self._tracker.refresh(self.clock.now(), force=request.fetch_now)
        view = self._tracker.view()
        self._reporter.desired_state(refresh, view)
        structlog.contextvars.bind_contextvars(revision=view.revision)
        desired = self._tracker.desired
        if desired is None:
            return PassReport(reconcile_id, view.revision, bool(view.valid))
        options = PassOptions(
            dry_run=self.settings.dry_run or not act,
            pass_timeout=self.settings.effective_pass_timeout,
            persist=persist,
        )
        outcomes = await self._engine.run(desired, request, options)
        return PassReport(reconcile_id, view.revision, bool(view.valid), outcomes)

    async def _scheduled_pass(self, request: PassRequest) -> None:
        if self.leading():
            await self.reconcile_once(request)
            return
        # a follower observes, for its /status and /events, and changes nothing, not even the
        # records
        self._reread_what_the_leader_wrote()
        await self.reconcile_once(request, act=False, persist=False)

    def _publish(self, completed: bool = False) -> None:
        desired = self._tracker.desired
        environments = {
            name: EnvironmentSnapshot.of(
                spec, self._memory.record(name), self._engine.runtimes.get(name)
            )
            for name, spec in sorted((desired.environments if desired else {}).items())
        }
        previous = self._snapshot
        self._snapshot = replace(
            previous,
            desired=self._tracker.view(),
            environments=MappingProxyType(environments),
            last_pass_completed_at=self.clock.now()
            if completed
            else previous.last_pass_completed_at,
            passes_completed=previous.passes_completed + (1 if completed else 0),
            state_store=self._memory.description,
            state_store_problem=self._memory.problem,
            leader=self.leading(),
        )

    # ---- the daemon ----

    async def run(self, stop: asyncio.Event) -> None:
        """Pass, wait interval +-5 % (or a trigger), repeat, until `stop` is set; then stop the
        Terraform runs this process started (one SIGINT each)."""
        log.info(
            "controller started",
            interval=format_duration(self.settings.interval),
            dry_run=self.settings.dry_run,
            source=self._tracker.source.description,
        )
        self._stop = stop
        election = (
            asyncio.create_task(self._leadership.run(stop))
            if self._leadership is not None
            else None
        )
        try:
            await self._scheduler.run(stop, self._watch_source)
        finally:
            if election is not None:  # the lease is handed over at `close`, once nothing acts
                election.cancel()
                await asyncio.gather(election, return_exceptions=True)
            await self.activator.close()
            await self._engine.close(RUNNER_STOP_GRACE_SECONDS)
        log.info("controller stopped")

    async def _watch_source(self) -> None:
        def changed() -> None:
            log.info("desired state changed", source=self._tracker.source.description)
            self.request_pass(PassRequest(fetch_now=True))

        try:
            await self._tracker.watch(changed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # without a watcher the interval still picks changes up
            log.warning("watching the desired state stopped", error=str(exc))

    async def close(self, stop_runs: bool = False) -> None:
        """Release clients and caches. `stop_runs`: also stop Terraform runs in flight (a
        one-shot command leaves them running: the next pass reads their outcome)."""
        await self.activator.close()
        if self._leadership is not None:  # after the last pass and the runs stopped by `run`
            await self._leadership.release()
        if stop_runs:
            await self._engine.close(RUNNER_STOP_GRACE_SECONDS)
        if self._notifier is not None:  # before the AWS clients its SNS messages use
            await self._notifier.close()
        for closer in self._closers:
            await closer()
        self._tracker.source.close()
