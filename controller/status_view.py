"""What `/status` and `/environments/NAME/status` show, rendered from the published snapshot."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.core.clock import utc_iso
from controller.engine.activator_wakes import DEFAULT_WAKE
from controller.engine.overrides import power_in_force, suspension
from controller.engine.passes import summarise
from controller.engine.snapshot import EnvironmentSnapshot, Snapshot

_RECONCILED_REASONS = {"success": "Succeeded", "error": "Failed", "skipped": "BackingOff"}


def controller_status(snapshot: Snapshot, now: datetime) -> dict[str, Any]:
    desired = snapshot.desired
    return {
        "revision": desired.revision,
        "attempted_revision": desired.attempted_revision,
        "desired_state_valid": bool(desired.valid),
        "desired_state_errors": [str(p) for p in desired.problems],
        "source": desired.source,
        "source_error": desired.source_error,
        "last_fetch_at": utc_iso(desired.last_fetch_at),
        "dry_run": snapshot.dry_run,
        "leader": snapshot.leader,
        "shard": snapshot.shard,
        "last_pass_completed_at": utc_iso(snapshot.last_pass_completed_at),
        "state_store": {
            "location": snapshot.state_store,
            "problem": snapshot.state_store_problem,
        },
        "environments": {
            name: environment_status(env, now) for name, env in snapshot.environments.items()
        },
    }


def seed_status(env: EnvironmentSnapshot, now: datetime) -> dict[str, Any]:
    """The earlier infrastructure manager's shape first, then the controller's fields."""
    detail = environment_status(env, now)
    return {
        "status": detail["power"],
        "endpoint": detail["endpoint"],
        "lastUpdate": detail["power_detail"]["changed_at"] or detail["last_reconciled_at"],
        **detail,
    }


def environment_status(env: EnvironmentSnapshot, now: datetime) -> dict[str, Any]:
    power = _power(env, now)
    action, reason = summarise(env.decisions)
    return {
        # as decided in the last pass (reported even when not recorded), else as recorded
        "power": env.facts.power_state or env.record.power.state,
        "desired_power": env.spec.power,
        **_power_source(env, now),
        "power_detail": power,
        "current_run": power["current_run"],
        "run_started_at": power["current_run"]["started_at"] if power["current_run"] else None,
        "estimated_seconds_left": (
            power["current_run"]["estimated_seconds_left"] if power["current_run"] else None
        ),
        "service": _service(env, now),
        "last_decision": {"action": action, "reason": reason} if env.decisions else None,
        "decisions": {
            reconciler: {"action": d.action, "reason": d.reason} for reconciler, d in env.decisions
        },
        "last_action": dict(env.last_action) if env.last_action else None,
        "suspended": _suspended(env),
        "traffic": _traffic(env),
        "cost": _cost(env),
        "conditions": _conditions(env),
        "endpoint": env.facts.endpoint,
        "last_reconciled_at": utc_iso(env.last_update),
        "wake_pending": env.wake_pending,
    }


def _power_source(env: EnvironmentSnapshot, now: datetime) -> dict[str, Any]:
    """Where the power in force comes from, the override, and the schedule's next change."""
    in_force = power_in_force(env.spec, env.record, now)
    override = in_force.override
    return {
        "power_in_force": in_force.power,
        "power_source": in_force.source,
        "override": None
        if override is None
        else {
            "power": override.power,
            "reason": override.reason,
            "set_at": utc_iso(override.set_at),
            "expires_at": utc_iso(override.expires_at),
        },
        "next_change": utc_iso(in_force.next_change),
    }


def _cost(env: EnvironmentSnapshot) -> dict[str, Any]:
    """This month, as observed: hours powered on and awake, and what each lever saved."""
    cost = env.record.cost
    return {
        "month": cost.month,
        "hours_on": round(cost.powered_on_seconds / 3600, 2),
        "hours_awake": round(cost.awake_seconds / 3600, 2),
        "estimated_savings_dollars": {
            "power": round(cost.power_savings, 2) if env.spec.cost else None,
            "idle": round(cost.idle_savings, 2) if env.spec.idle else None,
        },
    }


def _traffic(env: EnvironmentSnapshot) -> dict[str, Any] | None:
    """Where the load balancer sends the service's traffic, for an environment the activator
    can wake (None otherwise)."""
    idle = env.spec.idle
    routes = env.record.routes
    if (idle is None or idle.wake != "on-request") and not routes.switched:
        return None
    wake = env.record.idle
    return {
        "to": "activator" if routes.switched else "service",
        "switched_routes": len(routes.switched),
        "switched_at": utc_iso(routes.switched_at),
        "hosts": sorted({*(idle.hosts if idle else ()), *env.facts.hosts}),
        "wake_started_at": utc_iso(wake.wake_started_at),
        "wake_source": wake.wake_source,
        "expected_wake_seconds": round(wake.expected_wake(DEFAULT_WAKE).total_seconds()),
    }


def _suspended(env: EnvironmentSnapshot) -> dict[str, Any] | None:
    in_force = suspension(env.spec, env.record)
    if in_force is None:
        return None
    return {"by": in_force.by, "reason": in_force.reason, "since": utc_iso(in_force.since)}


def _service(env: EnvironmentSnapshot, now: datetime) -> dict[str, Any] | None:
    """The service as the last pass observed it: present (with its counts), absent (the cloud
    reports it gone), or unknown (the read failed: `error` says why)."""
    if env.spec.service is None:
        return None
    service, idle = env.facts.service, env.record.idle
    present = service is not None and service.exists
    last_request = env.facts.last_request_at or idle.last_request_at
    return {
        "cluster": env.spec.service.cluster,
        "name": env.spec.service.name,
        "observed": "unknown" if service is None else ("present" if present else "absent"),
        "error": env.facts.service_error,
        "desired": service.desired_count if service and present else None,
        "running": service.running_count if service and present else None,
        "active": (service.awake and present) if service else None,
        # the latest moment a request may have come can lie in the current minute: never < 0
        "seconds_since_last_request": (
            max(0, round((now - last_request).total_seconds())) if last_request else None
        ),
        "awake_since": utc_iso(idle.awake_since),
        "asleep_since": utc_iso(idle.asleep_since),
        "observed_at": utc_iso(env.last_update),
    }


def _power(env: EnvironmentSnapshot, now: datetime) -> dict[str, Any]:
    record = env.record.power
    run, last = record.run, record.last_result
    current_run = None
    if run is not None:
        left = record.estimated_duration(run.operation) - (now - run.started_at)
        current_run = {
            "operation": run.operation,
            "runner": run.runner,
            "run_id": run.run_id,
            "logs_url": run.logs_url,
            "started_at": utc_iso(run.started_at),
            "estimated_seconds_left": max(0, round(left.total_seconds())),
            # the median of this environment's last runs of that operation, once there are
            # some; until then the earlier system's figure (15 min apply, 10 min destroy)
            "estimate_from": "past runs" if record.has_history(run.operation) else "default",
        }
    decision = dict(env.decisions).get("power")
    return {
        "state": record.state,
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
        "reason": decision.reason if decision else None,
        "changed_at": utc_iso(record.changed_at),
    }


def _conditions(env: EnvironmentSnapshot) -> list[dict[str, Any]]:
    _, reason = summarise(env.decisions)
    conditions: list[dict[str, Any]] = [
        {
            "type": "Reconciled",
            "status": env.result == "success",
            "reason": _RECONCILED_REASONS.get(env.result or "", "Pending"),
            "message": env.error or (reason if env.decisions else "not reconciled yet"),
            "last_transition_time": utc_iso(env.result_changed_at),
        }
    ]
    if env.retry_at is not None:
        conditions.append(
            {
                "type": "BackingOff",
                "status": True,
                "reason": "RepeatedFailures",
                "message": f"{env.failures} failure(s); next attempt at {utc_iso(env.retry_at)}",
                "last_transition_time": utc_iso(env.last_update),
            }
        )
    in_force = suspension(env.spec, env.record)
    if in_force is not None:
        conditions.append(
            {
                "type": "Suspended",
                "status": True,
                "reason": "SuspendedInDesiredState"
                if in_force.by == "desired_state"
                else "SuspendedThroughAPI",
                "message": in_force.reason,
                "last_transition_time": utc_iso(in_force.since),
            }
        )
    for _, decision in env.decisions:
        conditions += [
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "last_transition_time": utc_iso(env.last_update),
            }
            for c in decision.conditions
        ]
    return conditions
