"""Terraform's machine-readable UI (`terraform apply -json`): one JSON object per line.

The sandbox's stand-in terraform and the tests' fake terraform both speak it through this
module, so the controller's cli runner reads exactly what the real binary prints.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

VERSION = "1.9.8"


def emit(
    kind: str, message: str, level: str = "info", out: TextIO | None = None, **fields: Any
) -> None:
    record = {
        "@level": level,
        "@message": message,
        "@module": "terraform.ui",
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        "type": kind,
        **fields,
    }
    print(json.dumps(record), file=out or sys.stdout, flush=True)


def version(note: str = "") -> None:
    emit("version", f"Terraform {VERSION}{note}", terraform=VERSION, ui="1.2")


def change_summary(operation: str, add: int, change: int, remove: int) -> None:
    """The plan's summary (operation `plan`) or the apply's/destroy's closing line."""
    if operation == "plan":
        message = f"Plan: {add} to add, {change} to change, {remove} to destroy."
    else:
        verb = "Apply" if operation == "apply" else "Destroy"
        message = f"{verb} complete! Resources: {add} added, {change} changed, {remove} destroyed."
    emit(
        "change_summary",
        message,
        changes={
            "add": add,
            "change": change,
            "import": 0,
            "remove": remove,
            "operation": operation,
        },
    )


def hook(kind: str, message: str, resource: dict[str, str], action: str, **extra: Any) -> None:
    """A resource's apply_start / apply_progress / apply_complete / apply_errored line."""
    level = "error" if kind == "apply_errored" else "info"
    emit(kind, message, level=level, hook={"resource": resource, "action": action, **extra})


def diagnostic(summary: str, detail: str = "", address: str | None = None) -> None:
    body: dict[str, Any] = {"severity": "error", "summary": summary, "detail": detail}
    if address is not None:
        body["address"] = address
    emit("diagnostic", f"Error: {summary}", level="error", diagnostic=body)
