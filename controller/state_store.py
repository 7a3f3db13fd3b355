"""The controller's own memory across restarts (contract section 3, `CONTROLLER_STATE_STORE`).

It keeps what AWS does not record: when each service was last seen waking and falling asleep.
`file://PATH` writes atomically (temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from datetime import datetime
from typing import Any, Protocol

from reconcilers.idle_decision import Wakefulness


class StateStoreError(Exception):
    pass


class StateStore(Protocol):
    description: str

    async def load(self) -> dict[str, Wakefulness]: ...

    async def save(self, wakefulness: dict[str, Wakefulness]) -> None: ...


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


class FileStateStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"file://{path}"

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateStoreError(f"cannot read state store {self.path}: {exc}") from exc
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise

    async def load(self) -> dict[str, Wakefulness]:
        data = await asyncio.to_thread(self._read)
        result: dict[str, Wakefulness] = {}
        for name, entry in (data.get("environments") or {}).items():
            idle = entry.get("idle") or {}
            result[name] = Wakefulness(
                awake_since=_time(idle.get("awake_since")),
                asleep_since=_time(idle.get("asleep_since")),
            )
        return result

    async def save(self, wakefulness: dict[str, Wakefulness]) -> None:
        def update() -> None:
            data = self._read()
            data["version"] = 1
            data["environments"] = {
                name: {
                    **(data.get("environments") or {}).get(name, {}),
                    "idle": {
                        "awake_since": w.awake_since.isoformat() if w.awake_since else None,
                        "asleep_since": w.asleep_since.isoformat() if w.asleep_since else None,
                    },
                }
                for name, w in sorted(wakefulness.items())
            }
            self._write(data)

        try:
            await asyncio.to_thread(update)
        except OSError as exc:
            raise StateStoreError(f"cannot write state store {self.path}: {exc}") from exc


def open_state_store(url: str) -> StateStore:
    if url.startswith("file://"):
        path = url.removeprefix("file://")
        if not path:
            raise StateStoreError(
                "file:// state store needs a path, e.g. file://.controller-state.json"
            )
        return FileStateStore(path)
    if url.startswith("dynamodb://"):
        raise StateStoreError(
            "dynamodb:// state stores are not supported by this version; use file://PATH"
        )
    raise StateStoreError(f"unknown state store {url!r}: expected file://PATH or dynamodb://TABLE")
