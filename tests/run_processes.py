"""The cli runner's runs seen from outside, as an operator would: run files, the processes they
name, and what the stand-in terraform logged (its invocations, the SIGINTs it received)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def run_record(run_file: Path) -> dict[str, Any]:
    """The run file, or {} while it does not exist (or is being replaced)."""
    try:
        data = json.loads(run_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def running(pid: int, name: str) -> bool:
    """`pid` still runs and is the program named `name` (not a zombie, not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(name in arg for arg in os.fsdecode(cmdline).split("\0"))


def invocations(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "invocations.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def commands(workdir: Path) -> list[str]:
    return [c["argv"][0] for c in invocations(workdir)]


def overlaps(workdir: Path) -> int:
    """Invocations that started while an earlier one still ran (the stand-in checks)."""
    return sum(len(c["concurrent"]) for c in invocations(workdir))


def sigints(workdir: Path) -> int:
    path = workdir / "sigints.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def processes_naming(path: str) -> list[int]:
    """The pids of the processes whose command line names `path` (zombies name nothing)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and running(int(entry.name), path):
            pids.append(int(entry.name))
    return pids


def environment_names(pid: int) -> set[str]:
    """The names of a running process's environment variables."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return {os.fsdecode(entry.partition(b"=")[0]) for entry in environ if entry}
