"""Writing the state file so that a crash never loses it, and writing it fast.

`write_atomically`: a temporary file in the same directory, flushed to the disk (fsync), then
renamed over the old one, then the directory flushed: at every instant the path holds either
the previous content or the new one, whole. A write cut short (a crash, a full disk) leaves
the previous content and removes its temporary file.

`encode_state`: the store's JSON, one environment (and one event) a line. Each line goes
through the C encoder: `json.dump(..., indent=2)` takes the pure-Python one, several times
slower on a thousand records, for a file people read with `jq` anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

ONE_A_LINE = ("environments", "events")  # the keys whose entries get a line each


def encode_state(data: dict[str, Any]) -> str:
    """`data` as JSON, keys sorted, each entry of `environments` and `events` on its own line."""
    parts = []
    for key in sorted(data):
        value = data[key]
        if key in ONE_A_LINE and isinstance(value, dict) and value:
            lines = ",\n".join(
                f"  {json.dumps(name)}: {json.dumps(value[name], sort_keys=True)}"
                for name in sorted(value)
            )
            parts.append(f"{json.dumps(key)}: {{\n{lines}\n}}")
        elif key in ONE_A_LINE and isinstance(value, list) and value:
            lines = ",\n".join(f"  {json.dumps(item, sort_keys=True)}" for item in value)
            parts.append(f"{json.dumps(key)}: [\n{lines}\n]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_atomically(path: str, text: str, prefix: str = ".state-") -> None:
    """Replace the content of `path` with `text`, whole or not at all. Raises OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """The rename itself reaches the disk (where the filesystem lets a directory be synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
