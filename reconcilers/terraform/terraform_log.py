"""Terraform's machine-readable output (`-json`), one line at a time, as the controller's own
log events: diagnostics, the change summary, and a progress heartbeat during a long apply."""

from __future__ import annotations

import json
import time

import structlog

log = structlog.get_logger("infra_controller.terraform")
PROGRESS_LOG_EVERY = 30.0


def log_terraform_line(line: str, last_progress_log: float) -> float:
    """Log one line of output; returns when progress was last logged (at most every 30 s)."""
    if not line:
        return last_progress_log
    try:
        message = json.loads(line)
    except ValueError:
        log.info("terraform output", line=line[:2000])
        return last_progress_log
    if not isinstance(message, dict):
        return last_progress_log
    kind = message.get("type")
    hook = message.get("hook") or {}
    resource = (hook.get("resource") or {}).get("addr")
    if kind == "diagnostic":
        diagnostic = message.get("diagnostic") or {}
        severity = diagnostic.get("severity", "error")
        emit = log.error if severity == "error" else log.warning
        emit(
            "terraform diagnostic",
            severity=severity,
            summary=diagnostic.get("summary"),
            detail=diagnostic.get("detail"),
            address=diagnostic.get("address"),
        )
    elif kind == "change_summary":
        changes = message.get("changes") or {}
        log.info(
            "terraform change summary",
            add=changes.get("add"),
            change=changes.get("change"),
            remove=changes.get("remove"),
            summary=message.get("@message"),
        )
    elif kind == "apply_progress":
        now = time.monotonic()  # the heartbeat of a long apply, not every line of it
        if now - last_progress_log >= PROGRESS_LOG_EVERY:
            log.info(
                "terraform progress",
                resource=resource,
                action=hook.get("action"),
                elapsed_seconds=hook.get("elapsed_seconds"),
            )
            return now
    elif kind in ("apply_complete", "apply_errored"):
        # Terraform names these hooks "apply" in a destroy too: the run's operation is bound to
        # every line, so the event says what happened to the resource, not which command
        emit = log.info if kind == "apply_complete" else log.error
        emit(
            "terraform resource done" if kind == "apply_complete" else "terraform resource failed",
            resource=resource,
            action=hook.get("action"),
            elapsed_seconds=hook.get("elapsed_seconds"),
        )
    elif message.get("@level") in ("error", "warn"):
        log.warning("terraform message", message=message.get("@message"))
    return last_progress_log
