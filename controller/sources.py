"""Where the desired state comes from. Each fetch returns a snapshot tagged with its revision."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from controller.desired_state_loader import (
    InvalidDesiredState,
    LoadedDesiredState,
    Problem,
    parse_desired_state,
)
from controller.settings import Settings


@dataclass(frozen=True)
class SourceSnapshot:
    revision: str
    loaded: LoadedDesiredState | None  # None when the document did not validate
    problems: list[Problem] = field(default_factory=list)


class SourceUnavailable(Exception):
    """The source could not be read (an unreachable remote, a timeout); says nothing of validity.

    Its message is safe to log: sources redact credentials before raising it.
    """


class DesiredStateSource(Protocol):
    description: str  # safe to log: no credentials

    async def fetch(self) -> SourceSnapshot:
        """The current desired state; raises SourceUnavailable when it cannot be read."""
        ...

    async def watch(self, notify: Callable[[], None]) -> None:
        """Call `notify` whenever the source changes (runs until cancelled)."""
        ...

    def close(self) -> None: ...


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


def open_source(location: str, settings: Settings | None = None) -> DesiredStateSource:
    """A file path, or a `git+...` URL (raises ValueError for a malformed one)."""
    if not location.startswith("git+"):
        return FileSource(location)
    from controller.git_source import GitCredentials, GitSource, parse_git_location

    settings = settings or Settings()
    credentials = GitCredentials(
        token=settings.git_token.get_secret_value() if settings.git_token else None,
        username=settings.git_username,
        ssh_key=settings.git_ssh_key,
        known_hosts=settings.git_known_hosts,
    )
    return GitSource(
        parse_git_location(location), credentials, timeout=settings.git_timeout.total_seconds()
    )
