"""Waiting for something the system under test reaches by itself: bounded, never a timing assert."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        # polls state owned by a subprocess or the controller: there is no event to await
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
