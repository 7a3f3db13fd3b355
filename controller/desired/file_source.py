"""A desired state in a local file; its revision is a hash of its content."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable

from controller.core.desired_state import DEFAULT_MAX_DESIRED_STATE_BYTES
from controller.desired.loader import (
    InvalidDesiredState,
    LoadedDesiredState,
    Problem,
    parse_desired_state,
    too_large,
)
from controller.desired.source import SourceSnapshot


def _read_bytes(path: str, max_bytes: int) -> bytes:
    """At most `max_bytes + 1` bytes: enough to tell an oversized file without holding it."""
    try:
        with open(path, "rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidDesiredState([Problem(path, 1, 1, f"cannot read: {exc.strerror}")]) from None


def parse_desired_state_bytes(data: bytes, path: str, max_bytes: int) -> LoadedDesiredState:
    """Validate a document read as bytes (at most `max_bytes + 1` of them)."""
    if len(data) > max_bytes:
        # checked before decoding: the read may have cut a multi-byte character in two
        raise too_large(path, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidDesiredState([Problem(path, 1, 1, "not UTF-8 text")]) from None
    return parse_desired_state(text, path, max_bytes=max_bytes)


def read_desired_state_file(
    path: str, max_bytes: int = DEFAULT_MAX_DESIRED_STATE_BYTES
) -> LoadedDesiredState:
    """Read and validate a file (blocking: call it from a thread inside the event loop)."""
    return parse_desired_state_bytes(_read_bytes(path, max_bytes), path, max_bytes)


def _snapshot(path: str, max_bytes: int, last: SourceSnapshot | None = None) -> SourceSnapshot:
    """The file as it is now; `last` again, unparsed, when its content has not changed."""
    try:
        data = _read_bytes(path, max_bytes)
    except InvalidDesiredState as exc:
        return SourceSnapshot(revision="unreadable", loaded=None, problems=exc.problems)
    # of what was read: an oversized file is hashed on its first max_bytes + 1 bytes only
    revision = "sha256:" + hashlib.sha256(data).hexdigest()[:12]
    if last is not None and last.revision == revision:
        return last  # the same revision: parsed once (a thousand environments take 0.4 s)
    try:
        loaded = parse_desired_state_bytes(data, path, max_bytes)
    except InvalidDesiredState as exc:
        return SourceSnapshot(revision=revision, loaded=None, problems=exc.problems)
    return SourceSnapshot(revision=revision, loaded=loaded)


class FileSource:
    """A local file; its revision is a hash of its content."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_MAX_DESIRED_STATE_BYTES) -> None:
        self.path = path
        self.description = path
        self.max_bytes = max_bytes
        self._last: SourceSnapshot | None = None

    async def fetch(self) -> SourceSnapshot:
        # reading and parsing both block: a thread keeps the loop (and /healthz) answering
        self._last = await asyncio.to_thread(_snapshot, self.path, self.max_bytes, self._last)
        return self._last

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
