"""Leader election among controllers sharing a state table (contract section 12).

The Kubernetes values: a lease of 15 s, renewed every 10 s, retried every 2 s. Only the leader
acts. A leader that has not renewed for 13 s (the lease less one retry) stops acting, before
any other controller may consider the lease expired (15 s without seeing it move, by that
controller's own clock). A leader paused longer than that (a SIGSTOP, a frozen VM) finds on
waking that it is no longer leading, before it acts again, and any write it had in flight is
refused by the store's fence (the lease's epoch, checked in the same transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable

import structlog

from controller.core.lease import RELEASED, DynamoDbLease, Fence, LeaseError, LeaseRecord

log = structlog.get_logger("infra_controller.leader")

LEASE_SECONDS = 15.0
RENEW_EVERY_SECONDS = 10.0
RETRY_EVERY_SECONDS = 2.0


def identity() -> str:
    """This process, as the lease names it."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Leadership:
    def __init__(
        self,
        lease: DynamoDbLease,
        me: str | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        lease_seconds: float = LEASE_SECONDS,
        renew_every: float = RENEW_EVERY_SECONDS,
        retry_every: float = RETRY_EVERY_SECONDS,
    ) -> None:
        self._lease = lease
        self.me = me or identity()
        self._monotonic = monotonic
        self._lease_seconds = lease_seconds
        self._renew_every = renew_every
        self._retry_every = retry_every
        self._held: LeaseRecord | None = None
        self._renewed_at = 0.0  # when the last successful take or renewal was sent
        self._seen: LeaseRecord | None = None  # the lease as last read by this follower
        self._seen_at: float | None = None  # when it was first seen as it is
        self.on_change: Callable[[bool], None] = lambda leading: None

    @property
    def key(self) -> str:
        return self._lease.key

    def leading(self) -> bool:
        """True only while the lease is surely still this controller's."""
        step_down_after = self._lease_seconds - self._retry_every
        return self._held is not None and self._monotonic() - self._renewed_at < step_down_after

    def fence(self) -> Fence | None:
        """What every state write checks; None when not leading (nothing may be written)."""
        held = self._held
        if held is None or not self.leading():
            return None
        return Fence(self._lease.key, held.holder, held.epoch)

    async def run(self, stop: asyncio.Event) -> None:
        """Take, keep and renew the lease until `stop` (`release` hands it over after)."""
        log.info("leader election started", lease=self._lease.key, me=self.me)
        while not stop.is_set():
            try:
                wait = await self.step()
            except Exception as exc:  # never a silent end: a dead election is a lost leader
                log.exception("leader election failed; retrying", error=str(exc))
                wait = self._retry_every
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def release(self) -> None:
        """Stop leading, then hand the lease over (at shutdown, once no pass runs any more):
        the next candidate need not wait for it to expire."""
        held, leading = self._held, self.leading()
        self._step_down("shutting down")  # before the lease can be someone else's
        if held is None or not leading:
            return
        try:
            await asyncio.wait_for(self._lease.release(held), self._retry_every)
            log.info("lease handed over", lease=self._lease.key)
        except (LeaseError, TimeoutError) as exc:
            log.warning("lease not handed over; it expires by itself", error=str(exc))

    async def step(self) -> float:
        """One round of the election; returns how long to wait before the next."""
        if self._held is not None:
            return await self._renew()
        return await self._campaign()

    async def _renew(self) -> float:
        assert self._held is not None
        started = self._monotonic()
        if not self.leading():
            self._step_down("not renewed in time")
            return 0.0
        if started - self._renewed_at < self._renew_every:
            return self._renew_every - (started - self._renewed_at)
        try:
            renewed = await asyncio.wait_for(self._lease.renew(self._held), self._retry_every)
        except (LeaseError, TimeoutError) as exc:
            log.warning("lease not renewed; retrying", error=str(exc) or "no answer in time")
            return self._retry_every
        if renewed is None:
            self._step_down("another controller holds the lease")
            return self._retry_every
        self._held, self._renewed_at = renewed, started
        return self._renew_every

    async def _campaign(self) -> float:
        started = self._monotonic()
        try:
            seen = await asyncio.wait_for(self._lease.read(), self._retry_every)
        except (LeaseError, TimeoutError):
            return self._retry_every
        if seen != self._seen or self._seen_at is None:
            self._seen, self._seen_at = seen, started
        free = (
            seen is None
            or seen.holder == RELEASED
            or started - self._seen_at >= self._lease_seconds
        )
        if not free:
            return self._retry_every
        try:
            taken = await asyncio.wait_for(self._lease.take(self.me, seen), self._retry_every)
        except (LeaseError, TimeoutError):
            return self._retry_every
        if taken is None:  # another candidate was first
            return self._retry_every
        self._held, self._renewed_at = taken, started
        log.info("became the leader", lease=self._lease.key, epoch=taken.epoch, me=self.me)
        self.on_change(True)
        return self._renew_every

    def _step_down(self, why: str) -> None:
        if self._held is None:
            return
        log.warning("stopped leading", lease=self._lease.key, reason=why)
        self._held = None
        self._seen, self._seen_at = None, None
        self.on_change(False)
