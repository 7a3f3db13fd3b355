"""A desired state in a local file; its revision is a hash of its content."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable

from controller.desired.loader import (
    InvalidDesiredState,
    LoadedDesiredState,
    Problem,
    parse_desired_state,
)
from controller.desired.source import SourceSnapshot


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise InvalidDesiredState([Problem(path, 1, 1, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise InvalidDesiredState([Problem(path, 1, 1, "not UTF-8 text")]) from None


def read_desired_state_file(path: str) -> LoadedDesiredState:
    """Read and validate a file (blocking: call it from a thread inside the event loop)."""
    return parse_desired_state(_read_text(path), path)


class FileSource:
    """A local file; its revision is a hash of its content."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = path

    async def fetch(self) -> SourceSnapshot:
        try:
            text = await asyncio.to_thread(_read_text, self.path)
        except InvalidDesiredState as exc:
            return SourceSnapshot(revision="unreadable", loaded=None, problems=exc.problems)
        revision = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12]
        try:
            loaded = parse_desired_state(text, self.path)
        except InvalidDesiredState as exc:
            return SourceSnapshot(revision=revision, loaded=None, problems=exc.problems)
        return SourceSnapshot(revision=revision, loaded=loaded)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    async def watch(self, notify: Callable[[], None], poll_seconds: float = 0.5) -> None:
        """Polls the file's metadata (a `stat` every 0.5 s costs nothing and works on every
        filesystem, mounted volumes included), so an edit reconciles within a second."""
        last = await asyncio.to_thread(self._signature)
        while True:
            await asyncio.sleep(poll_seconds)
            current = await asyncio.to_thread(self._signature)
            if current != last:
                last = current
                notify()

    def close(self) -> None:
        pass
