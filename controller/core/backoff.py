"""Capped exponential backoff: the one rule for every retry in the controller.

A failing environment (an AWS error), an unreachable desired-state source and a failed
Terraform run all wait `base * 2**(failures-1)`, capped, before the next attempt. Jitter spreads
the retries of many controllers or environments; a pure decision (Terraform) uses none, so the
same inputs always give the same answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

_MAX_DOUBLINGS = 20  # 2**20 * any base is beyond every cap: no overflow on long outages


@dataclass(frozen=True)
class Backoff:
    base: timedelta
    cap: timedelta
    jitter: float = 0.0  # +-fraction of the delay, e.g. 0.1 for +-10 %

    def delay(self, failures: int, rng: random.Random | None = None) -> timedelta:
        """The wait after `failures` consecutive failures (0 failures: no wait)."""
        if failures <= 0:
            return timedelta(0)
        delay: timedelta = min(self.base * 2 ** min(failures - 1, _MAX_DOUBLINGS), self.cap)
        if self.jitter and rng is not None:
            delay *= rng.uniform(1 - self.jitter, 1 + self.jitter)
        return delay


# an environment whose observation or action failed; an unreachable desired-state source
# (Flux's requeue: seconds at first, a quarter of an hour at most)
ENVIRONMENT_BACKOFF = Backoff(timedelta(seconds=5), timedelta(minutes=15), jitter=0.1)
SOURCE_BACKOFF = ENVIRONMENT_BACKOFF
# a failed Terraform run: an apply takes ~15 minutes, so retries are minutes apart
TERRAFORM_RETRY = Backoff(timedelta(minutes=1), timedelta(hours=1))
