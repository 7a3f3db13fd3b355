"""Where the desired state comes from. Each fetch returns a snapshot tagged with its revision."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from controller.desired_state_loader import (
    InvalidDesiredState,
    LoadedDesiredState,
    Problem,
    parse_desired_state,
)


@dataclass(frozen=True)
class SourceSnapshot:
    revision: str
    loaded: LoadedDesiredState | None  # None when the document did not validate
    problems: list[Problem] = field(default_factory=list)


class DesiredStateSource(Protocol):
    description: str

    async def fetch(self) -> SourceSnapshot: ...


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


def open_source(location: str) -> DesiredStateSource:
    if location.startswith("git+"):
        raise ValueError(f"{location}: git sources are not supported by this version; use a path")
    return FileSource(location)
