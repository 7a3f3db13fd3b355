"""Wakes asked by requests at the activator: which environment a host name belongs to, one
scale-up per wake made at once (not at the next pass), and quick passes until the service
serves again and its routes are switched back.

Called for every request the activator receives, so it never waits on AWS: the first request
of a wake starts the scale-up in the background; the thousands after it only read memory.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import structlog

from controller.core.clock import Clock
from controller.core.desired_state import Environment
from controller.engine.overrides import effective
from controller.engine.pass_engine import PassEngine
from controller.engine.passes import PassRequest
from controller.engine.snapshot import EnvironmentSnapshot, Snapshot
from reconcilers.interface import Decision

log = structlog.get_logger("infra_controller.activator")

DEFAULT_WAKE = timedelta(seconds=60)  # a Fargate task's start, before this environment has history
FOLLOW_EVERY_SECONDS = 5.0  # passes for a waking environment, until its routes come back
WAKE_GIVE_UP = timedelta(minutes=10)  # a wake not done by then may be asked again
RETRY_AFTER_FAILURE = timedelta(seconds=5)  # a failed scale-up is tried again after this


@dataclass(frozen=True)
class WaitingAnswer:
    """What the activator tells a visitor of `environment`."""

    environment: str
    waking: bool  # False: it will not wake (`reason` says why)
    reason: str
    expected_seconds: int  # how long a wake of this environment takes
    waited_seconds: int  # since this wake began


@dataclass
class _Wake:
    started_at: datetime
    failed_at: datetime | None = None
    scaling: bool = False  # its scale-up was started (by this process)
    follow: asyncio.Task[None] | None = field(default=None, repr=False)


class ActivatorWakes:
    def __init__(
        self,
        engine: PassEngine,
        clock: Clock,
        snapshot: Callable[[], Snapshot],
        request_pass: Callable[[PassRequest], None],
        refusal: Callable[[Environment], str | None],
        wake: Callable[[Environment, str], Decision | None],
        dry_run: bool,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._snapshot = snapshot
        self._request_pass = request_pass
        self._refusal = refusal
        self._wake_decision = wake
        self._dry_run = dry_run
        self._wakes: dict[str, _Wake] = {}
        self._hosts: tuple[Snapshot, Mapping[str, str], tuple[tuple[str, str], ...]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = False

    # ---- host names ----

    def environment_for(self, host: str) -> str | None:
        """The environment a `Host` header names: its `idle.hosts`, the host conditions of its
        routes, or its load balancer's DNS name (when no other environment shares it)."""
        exact, patterns = self._host_map()
        name = exact.get(host)
        if name is None:
            name = next(
                (env for pattern, env in patterns if fnmatch.fnmatchcase(host, pattern)), None
            )
        return name

    def _host_map(self) -> tuple[Mapping[str, str], tuple[tuple[str, str], ...]]:
        snapshot = self._snapshot()
        if self._hosts is not None and self._hosts[0] is snapshot:
            return self._hosts[1], self._hosts[2]
        declared: dict[str, str] = {}
        routed: dict[str, set[str]] = {}
        for name, env in snapshot.environments.items():
            idle = env.spec.idle
            if idle is None or idle.wake != "on-request":
                continue
            for host in idle.hosts:
                declared[host] = name
            found = set(env.facts.hosts)
            if env.facts.endpoint:
                found.add((urlsplit(env.facts.endpoint).hostname or "").lower())
            for host in found - {""}:
                routed.setdefault(host, set()).add(name)
        # a name shared by several environments (one ALB, many services) points at none
        exact = {h: next(iter(n)) for h, n in routed.items() if len(n) == 1 and "*" not in h}
        exact.update(declared)  # what the desired state says wins
        patterns = tuple(
            sorted((h, next(iter(n))) for h, n in routed.items() if len(n) == 1 and "*" in h)
        )
        self._hosts = (snapshot, exact, patterns)
        return exact, patterns

    # ---- wakes ----

    def request(self, name: str, host: str) -> WaitingAnswer:
        """A request for `name` reached the activator: wake it if no wake is under way."""
        now = self._clock.now()
        env = self._snapshot().environments.get(name)
        if env is None:
            return WaitingAnswer(name, False, "unknown environment", 0, 0)
        expected = round(env.record.idle.expected_wake(DEFAULT_WAKE).total_seconds())
        refusal = self._refused(env)
        if refusal is not None:
            return WaitingAnswer(name, False, refusal, expected, 0)
        wake = self._wakes.get(name)
        if wake is not None and self._done(env, wake, now):
            self._forget(name)
            wake = None
        if wake is None:
            if not self._handled_here(env):
                # unknown, or awake with nothing switched: never a reason to act (nor to run
                # passes for whoever sends requests); the page reloads, the passes tell
                return WaitingAnswer(name, True, "waking", expected, 0)
            wake = self._wakes[name] = _Wake(started_at=now)
            self._start(name, env, host, wake)
        elif wake.failed_at is not None and now - wake.failed_at >= RETRY_AFTER_FAILURE:
            wake.failed_at = None
            self._start(name, env, host, wake)
        waited = round((now - wake.started_at).total_seconds())
        return WaitingAnswer(name, True, "waking", expected, waited)

    @staticmethod
    def _handled_here(env: EnvironmentSnapshot) -> bool:
        """Known asleep (a wake to make), or awake with its routes still at the activator
        (a switch back to hasten)."""
        service = env.facts.service
        if service is None or not service.exists:
            return False
        return not service.awake or bool(env.record.routes.switched)

    def _refused(self, env: EnvironmentSnapshot) -> str | None:
        if self.stopping:
            return "the controller is restarting"
        spec = effective(env.spec, env.record, self._clock.now())
        refusal = self._refusal(spec)
        if refusal is not None:
            return refusal
        if env.facts.power_state not in (None, "RUNNING"):
            return f"the environment is {env.facts.power_state}"
        service = env.facts.service
        if service is not None and not service.exists:
            return "the service does not exist"
        return None

    def _done(self, env: EnvironmentSnapshot, wake: _Wake, now: datetime) -> bool:
        """Over: its routes came back (a new request is a new wake), or it took too long."""
        service = env.facts.service
        served = service is not None and service.awake and not env.record.routes.switched
        return (served and wake.failed_at is None) or now - wake.started_at > WAKE_GIVE_UP

    def _start(self, name: str, env: EnvironmentSnapshot, host: str, wake: _Wake) -> None:
        service = env.facts.service
        if service is not None and service.awake:  # woken already: only its routes lag
            self._follow(name, wake, host)
            return
        wake.scaling = True
        task = asyncio.create_task(self._scale_up(name, env, host, wake))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _scale_up(self, name: str, env: EnvironmentSnapshot, host: str, wake: _Wake) -> None:
        spec = effective(env.spec, env.record, self._clock.now())
        decision = self._wake_decision(spec, f"a request for {host} reached the activator")
        if decision is None:
            self._forget(name)
            return
        if self._dry_run:
            log.info("dry run: a request at the activator would wake", environment=name)
            return
        if not self._engine.may_act():
            # the page asks again in a few seconds; the load balancer may send that to the leader
            log.info("not the leader: a request at the activator waits", environment=name)
            self._forget(name)
            return
        try:
            await self._engine.act_outside_pass(name, spec, "idle", decision)
        except Exception as exc:  # the next request tries again, a few seconds later
            log.error("wake from the activator failed", environment=name, error=str(exc))
            wake.failed_at = self._clock.now()
            wake.scaling = False
            return
        self._follow(name, wake, host)

    def _follow(self, name: str, wake: _Wake, host: str) -> None:
        """Passes for `name` every few seconds while it wakes: its routes come back as soon
        as it serves, not at the next interval."""
        if wake.follow is not None and not wake.follow.done():
            return

        async def follow() -> None:
            while name in self._wakes and not self.stopping:
                self._request_pass(PassRequest(due_now=frozenset({name})))
                await self._clock.sleep(FOLLOW_EVERY_SECONDS)
                env = self._snapshot().environments.get(name)
                if env is None or self._done(env, wake, self._clock.now()):
                    self._forget(name)
                    return
                service = env.facts.service
                asleep = service is not None and service.exists and not service.awake
                if asleep and not wake.scaling:
                    # it looked awake when the request came, in the pass that put it to
                    # sleep: the scale-up is still to make
                    self._start(name, env, host, wake)

        wake.follow = asyncio.create_task(follow())

    def _forget(self, name: str) -> None:
        wake = self._wakes.pop(name, None)
        if (
            wake is not None
            and wake.follow is not None
            and wake.follow is not asyncio.current_task()
        ):
            wake.follow.cancel()

    async def close(self) -> None:
        self.stopping = True
        tasks = [*self._tasks, *(w.follow for w in self._wakes.values() if w.follow)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._wakes.clear()
