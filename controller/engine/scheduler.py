"""The scheduler: a pass every interval +-5 % (Flux's jitter), or at once when triggered, until
shutdown. Triggers that arrive during a pass are merged into the next one."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import structlog

from controller.core.clock import Clock
from controller.engine.passes import PassRequest

log = structlog.get_logger("infra_controller")

JITTER = 0.05
# on SIGTERM the current pass gets this long to finish (the contract allows 10 s in all)
SHUTDOWN_GRACE_SECONDS = 5.0


class Scheduler:
    def __init__(
        self,
        run_pass: Callable[[PassRequest], Coroutine[Any, Any, object]],
        clock: Clock,
        interval: timedelta,
        rng: random.Random | None = None,
    ) -> None:
        self._run_pass = run_pass
        self._clock = clock
        self._interval = interval
        self._rng = rng or random.Random()
        self._pending = PassRequest()
        self._trigger = asyncio.Event()

    def request(self, request: PassRequest) -> None:
        """Run a pass now (or right after the current one), with `request` merged in."""
        self._pending = self._pending.merge(request)
        self._trigger.set()

    async def run(
        self, stop: asyncio.Event, watch: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Pass, wait, repeat until `stop` is set. `watch` runs beside, until shutdown."""
        stop_wait = asyncio.create_task(stop.wait())
        watcher = asyncio.create_task(watch())
        try:
            while not stop.is_set():
                request, self._pending = self._pending, PassRequest()
                self._trigger.clear()
                if not await self._one_pass(request, stop_wait):
                    break
                delay = self._interval.total_seconds() * self._rng.uniform(1 - JITTER, 1 + JITTER)
                await self._wait(delay, stop_wait)
        finally:
            stop_wait.cancel()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _one_pass(self, request: PassRequest, stop_wait: asyncio.Task[Any]) -> bool:
        """Run one pass; False when shutdown came first (the pass got its grace period)."""
        pass_task = asyncio.create_task(self._run_pass(request))
        await asyncio.wait({pass_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not pass_task.done():
            # shutting down: let the current action finish, within the grace period
            done, _ = await asyncio.wait({pass_task}, timeout=SHUTDOWN_GRACE_SECONDS)
            if not done:
                pass_task.cancel()
                log.warning("pass cut short by shutdown")
            await asyncio.gather(pass_task, return_exceptions=True)
            return False
        if exc := pass_task.exception():
            log.error("pass failed", error=repr(exc))
        return True

    async def _wait(self, delay: float, stop_wait: asyncio.Task[Any]) -> None:
        sleeper = asyncio.create_task(self._clock.sleep(delay))
        trigger = asyncio.create_task(self._trigger.wait())
        try:
            await asyncio.wait({sleeper, trigger, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            trigger.cancel()
