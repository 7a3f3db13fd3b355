"""What `/status` and `/environments/NAME/status` show: the controller's view as JSON data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.clock import utc_iso
from controller.environment_runtime import EnvironmentRuntime
from reconcilers.power_decision import estimated_duration

if TYPE_CHECKING:
    from controller.loop import Controller


def environment_status(controller: Controller, name: str) -> dict[str, Any]:
    runtime = controller.environments.get(name) or EnvironmentRuntime()
    spec = (
        controller.desired.environments[name]
        if controller.desired and name in controller.desired.environments
        else None
    )
    service = None
    if spec is not None and spec.service is not None:
        svc = runtime.service
        seconds = (
            round((controller.clock.now() - runtime.last_request_at).total_seconds())
            if runtime.last_request_at
            else None
        )
        service = {
            "cluster": spec.service.cluster,
            "name": spec.service.name,
            "desired": svc.desired_count if svc else None,
            "running": svc.running_count if svc else None,
            "active": svc.awake if svc else None,
            "seconds_since_last_request": seconds,
            "awake_since": utc_iso(runtime.wakefulness.awake_since),
            "asleep_since": utc_iso(runtime.wakefulness.asleep_since),
        }
    conditions = [
        {
            "type": "Reconciled",
            "status": runtime.last_result in ("success",),
            "reason": {"success": "Succeeded", "error": "Failed", "skipped": "BackingOff"}.get(
                runtime.last_result or "", "Pending"
            ),
            "message": runtime.last_error
            or (runtime.last_decision.reason if runtime.last_decision else "not reconciled yet"),
            "last_transition_time": utc_iso(runtime.result_changed_at),
        }
    ]
    if runtime.retry_at is not None:
        conditions.append(
            {
                "type": "BackingOff",
                "status": True,
                "reason": "RepeatedFailures",
                "message": (
                    f"{runtime.failures} failure(s); next attempt at {utc_iso(runtime.retry_at)}"
                ),
                "last_transition_time": utc_iso(runtime.last_update),
            }
        )
    if spec is not None and spec.suspend:
        conditions.append(
            {
                "type": "Suspended",
                "status": True,
                "reason": "Suspended",
                "message": "suspend: true",
                "last_transition_time": None,
            }
        )
    record = runtime.power_record
    run = record.run
    now = controller.clock.now()
    current_run = None
    if run is not None:
        left = estimated_duration(record, run.operation) - (now - run.started_at)
        current_run = {
            "operation": run.operation,
            "runner": run.runner,
            "run_id": run.run_id,
            "logs_url": run.logs_url,
            "started_at": utc_iso(run.started_at),
            "estimated_seconds_left": max(0, round(left.total_seconds())),
        }
    last = record.last_result
    power_detail = {
        "state": runtime.power,
        "current_run": current_run,
        "last_run": None
        if last is None
        else {
            "operation": last.operation,
            "outcome": "succeeded" if last.succeeded else "failed",
            "finished_at": utc_iso(last.finished_at),
            "duration_seconds": round(last.duration_seconds),
            "detail": last.detail,
            "run_id": last.run_id,
        },
        "failures": record.failures,
        "retry_at": utc_iso(record.retry_at),
        "reason": runtime.last_power_decision.reason if runtime.last_power_decision else None,
        "changed_at": utc_iso(record.changed_at),
    }
    return {
        "power": runtime.power,
        "desired_power": spec.power if spec else None,
        "power_detail": power_detail,
        "current_run": current_run,
        "run_started_at": current_run["started_at"] if current_run else None,
        "estimated_seconds_left": (current_run["estimated_seconds_left"] if current_run else None),
        "service": service,
        "last_decision": (
            {"action": runtime.last_decision.action, "reason": runtime.last_decision.reason}
            if runtime.last_decision
            else None
        ),
        "last_action": runtime.last_action,
        "conditions": conditions,
        "endpoint": runtime.endpoint,
        "last_update": utc_iso(runtime.last_update),
        "wake_pending": runtime.wake_requested,
    }


def controller_status(controller: Controller) -> dict[str, Any]:
    names = sorted(controller.desired.environments) if controller.desired else []
    return {
        "revision": controller.revision,
        "attempted_revision": controller.attempted_revision,
        "desired_state_valid": bool(controller.desired_state_valid),
        "desired_state_errors": [str(p) for p in controller.problems],
        "source": controller.source.description,
        "source_error": controller.source_error,
        "last_fetch_at": utc_iso(controller.last_fetch_at),
        "dry_run": controller.settings.dry_run,
        "last_pass_completed_at": utc_iso(controller.last_pass_completed_at),
        "environments": {name: environment_status(controller, name) for name in names},
    }
