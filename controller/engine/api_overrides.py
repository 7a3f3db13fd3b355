"""Overrides set through the API (suspend, resume, power on or off for a while): written to
the state record between passes, before the call returns, so that a restart keeps them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from controller.core.clock import Clock, utc_iso
from controller.core.desired_state import Environment
from controller.core.records import Overrides, PowerOverride, Suspension
from controller.core.state_store import StateStoreError
from controller.desired.tracker import DesiredStateTracker
from controller.engine.memory import StateMemory
from controller.engine.passes import PassRequest
from controller.engine.reporter import Reporter

log = structlog.get_logger("infra_controller")


class UnknownEnvironment(KeyError):
    """The environment is not (or no longer) in the desired state in force."""


class ApiOverrides:
    def __init__(
        self,
        clock: Clock,
        tracker: DesiredStateTracker,
        memory: StateMemory,
        reporter: Reporter,
        pass_lock: asyncio.Lock,
        publish: Callable[[], None],
        request_pass: Callable[[PassRequest], None],
        flush_events: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self._clock = clock
        self._tracker = tracker
        self._memory = memory
        self._reporter = reporter
        self._pass_lock = pass_lock
        self._publish = publish
        self.request_pass = request_pass
        self._flush_events = flush_events

    async def suspend(self, name: str, reason: str, wait: float) -> None:
        """Suspend `name` until `resume`: written to the state store before this returns, so a
        restart keeps it. Raises StateStoreError when it cannot be written (nothing changed),
        TimeoutError when the pass in progress does not end within `wait` seconds."""
        now = self._clock.now()

        def suspended(overrides: Overrides, spec: Environment) -> Overrides:
            kept = overrides.suspension
            since = kept.since if kept is not None else now  # suspended since the first ask
            return replace(overrides, suspension=Suspension(reason, since))

        await self._set(name, suspended, wait)
        log.info("environment suspended through the API", environment=name, reason=reason)
        self._reporter.record(name, "suspended", reason, by="api")
        await self._flush_events()

    async def resume(self, name: str, wait: float) -> bool:
        """Clear a suspension set through the API; False when there was none. Raises as
        `suspend`."""
        resumed = ("environment resumed through the API", "resumed", "resumed through the API")
        return await self._clear(name, "suspension", wait, *resumed)

    async def override_power(
        self,
        name: str,
        power: Literal["on", "off"],
        duration: timedelta | None,
        reason: str,
        wait: float,
    ) -> PowerOverride:
        """Power `name` on or off, ahead of its schedule and git, for `duration`; without one,
        until the schedule's next change (or, without a schedule, until cleared or until a new
        revision changes its `power`). Written before this returns; raises as `suspend`."""
        made: list[PowerOverride] = []

        def overridden(overrides: Overrides, spec: Environment) -> Overrides:
            # from the revision in force when it is written, not one a pass replaced since
            now = self._clock.now()
            if duration is not None:
                expires: datetime | None = now + duration
            elif spec.schedule is not None and spec.power == "on":
                expires = spec.schedule.next_change(now)
            else:
                expires = None
            made.append(PowerOverride(power, reason, now, expires, spec.power))
            return replace(overrides, power=made[-1])

        await self._set(name, overridden, wait)
        override = made[-1]
        expires = override.expires_at
        log.info(
            "power override set",
            environment=name,
            power=power,
            expires_at=utc_iso(expires),
            reason=reason,
        )
        self._reporter.record(
            name, "override_set", reason, to_state=power, expires_at=utc_iso(expires)
        )
        await self._flush_events()
        return override

    async def clear_power_override(self, name: str, wait: float) -> bool:
        """False when there was none. Raises as `suspend`."""
        cleared = ("power override cleared", "override_cleared", "cleared through the API")
        return await self._clear(name, "power", wait, *cleared)

    async def _clear(
        self,
        name: str,
        field: Literal["suspension", "power"],
        wait: float,
        logged: str,
        kind: str,
        why: str,
    ) -> bool:
        """Clear one override; False when there was none (nothing is told then)."""
        before = await self._set(name, lambda o, _: replace(o, **{field: None}), wait)
        if getattr(before, field) is None:
            return False
        log.info(logged, environment=name)
        self._reporter.record(name, kind, why)
        await self._flush_events()
        return True

    async def _set(
        self, name: str, change: Callable[[Overrides, Environment], Overrides], wait: float
    ) -> Overrides:
        """Apply `change` to the overrides of `name` and write them; the overrides before.
        Raises UnknownEnvironment when a new revision removed it meanwhile."""
        # between passes: a pass holds the working records and writes them at its end; only
        # the wait for it is bounded, never the write (half a write must not count as none)
        async with asyncio.timeout(wait):
            await self._pass_lock.acquire()
        try:
            desired = self._tracker.desired
            if desired is None or name not in desired.environments:
                raise UnknownEnvironment(name)
            await self._memory.ensure_loaded()
            reason = self._memory.unreadable(name)
            if reason is not None:
                raise StateStoreError(reason)
            record = self._memory.record(name)
            changed = change(record.overrides, desired.environments[name])
            self._memory.update(name, replace(record, overrides=changed))
            try:
                await self._memory.save(name)
            except BaseException:  # not written (or not known to be): not in force either
                self._memory.update(name, record)
                raise
            self._publish()
        finally:
            self._pass_lock.release()
        if record.overrides != self._memory.record(name).overrides:
            self.request_pass(PassRequest(due_now=frozenset({name})))
        return record.overrides
