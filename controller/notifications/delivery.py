"""Delivery of notifications: never in the way of a pass.

`publish` only queues (a bounded queue per entry of `notifications`) and returns; one worker per
entry sends its messages in order. A message that fails for a reason worth retrying (5xx, 429,
no connection) is tried again after 2 s, 4 s, ... up to 5 minutes apart, until it is an hour
old: then it is dropped and counted. A message the provider refuses (4xx) or that cannot be
sent as configured (no URL) is not retried. Problems are logged once per entry, revision and
problem, not at every message; `infra_controller_notifications_total{name,outcome}` counts
every message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from controller.core.clock import Clock
from controller.core.desired_state import DesiredState, Notification
from controller.core.events import StampedEvent
from controller.notifications.messages import Message, compose, wanted
from controller.notifications.senders import DeliveryError, Senders

log = structlog.get_logger("infra_controller.notifications")

QUEUE_SIZE = 500  # messages waiting per entry; more are dropped (and counted)
MAX_AGE = timedelta(hours=1)
FIRST_RETRY_SECONDS = 2.0
LONGEST_RETRY_SECONDS = 300.0

Count = Callable[[str, str], None]  # (entry name, outcome)


@dataclass(frozen=True)
class _Queued:
    entry: Notification
    message: Message
    revision: str | None
    queued_at: datetime


class Notifier:
    def __init__(
        self,
        senders: Senders,
        clock: Clock,
        count: Count,
        *,
        queue_size: int = QUEUE_SIZE,
        max_age: timedelta = MAX_AGE,
        first_retry: float = FIRST_RETRY_SECONDS,
        longest_retry: float = LONGEST_RETRY_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self._senders = senders
        self._clock = clock
        self._count = count
        self._queue_size = queue_size
        self._max_age = max_age
        self._first_retry = first_retry
        self._longest_retry = longest_retry
        self._rng = rng or random.Random()
        self._queues: dict[str, asyncio.Queue[_Queued]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._reported: set[tuple[str, str | None, str]] = set()
        self._sending: set[str] = set()  # entries with a message being sent or retried

    def publish(
        self,
        events: Sequence[StampedEvent],
        desired: DesiredState | None,
        revision: str | None,
    ) -> None:
        """Queue the messages for `events` (those of one pass) under the notifications of the
        desired state in force; returns at once."""
        if not events or desired is None:
            return
        now = self._clock.now()
        for entry in desired.notifications:
            for message in compose([e for e in events if wanted(entry, e)]):
                self._queue(_Queued(entry, message, revision, now))

    def _queue(self, queued: _Queued) -> None:
        name = queued.entry.name
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = asyncio.Queue(self._queue_size)
            self._workers[name] = asyncio.get_running_loop().create_task(
                self._work(queue), name=f"notifications {name}"
            )
        try:
            queue.put_nowait(queued)
        except asyncio.QueueFull:
            self._count(name, "dropped")
            self._report_once(queued, "queue full: messages dropped", "warning")

    async def _work(self, queue: asyncio.Queue[_Queued]) -> None:
        while True:
            queued = await queue.get()
            self._sending.add(queued.entry.name)
            try:
                await self._deliver(queued)
            except Exception as exc:  # a worker that dies would silently drop all that follows
                self._count(queued.entry.name, "failed")
                self._report_once(queued, f"not sent: {type(exc).__name__}", "error")
            finally:
                self._sending.discard(queued.entry.name)
                queue.task_done()

    async def _deliver(self, queued: _Queued) -> None:
        name = queued.entry.name
        delay = self._first_retry
        while True:
            now = self._clock.now()
            try:
                await self._senders.send(queued.entry, queued.message, str(int(now.timestamp())))
            except DeliveryError as exc:
                self._count(name, exc.outcome)
                if not exc.retry:
                    self._report_once(queued, exc.problem, "error")
                    return
                wait = delay * self._rng.uniform(0.8, 1.2)
                if now + timedelta(seconds=wait) - queued.queued_at > self._max_age:
                    self._count(name, "dropped")
                    log.warning(
                        "notification dropped after an hour of retries",
                        notification=name,
                        problem=exc.problem,
                        message=queued.message.subject,
                    )
                    return
                self._report_once(queued, exc.problem, "warning", retrying=True)
                await self._clock.sleep(wait)
                delay = min(delay * 2, self._longest_retry)
            else:
                self._count(name, "sent")
                return

    def _report_once(
        self, queued: _Queued, problem: str, level: str, retrying: bool = False
    ) -> None:
        key = (queued.entry.name, queued.revision, problem)
        if key in self._reported:
            return
        if len(self._reported) >= 1000:  # problems quoting AWS's words could be many
            self._reported.clear()
        self._reported.add(key)
        emit = log.error if level == "error" else log.warning
        emit(
            "notification not delivered" + ("; retrying" if retrying else ""),
            notification=queued.entry.name,
            type=queued.entry.type,
            problem=problem,
            revision=queued.revision,
        )

    async def close(self, grace: float = 5.0) -> None:
        """Give the queued messages `grace` seconds to go out (a one-shot run's included), then
        stop; what is left is dropped and counted."""
        waiting = [asyncio.ensure_future(q.join()) for q in self._queues.values()]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=grace)
            for future in pending:
                future.cancel()
        for name, worker in self._workers.items():
            worker.cancel()
            left = self._queues[name].qsize() + (name in self._sending)
            for _ in range(left):
                self._count(name, "dropped")
            if left:
                log.warning("notifications not sent at shutdown", notification=name, left=left)
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()
        await self._senders.close()
