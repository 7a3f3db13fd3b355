"""The power state machine, decided purely: every branch, and its safety properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controller.core.backoff import TERRAFORM_RETRY
from controller.core.desired_state import Environment
from controller.core.records import Operation, PowerRecord, PowerState, RunInfo, RunResult
from reconcilers.power.decision import PowerObservation, decide_power
from reconcilers.terraform.runner import RunStatus

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
TF = {"runner": "codebuild", "project": "tf"}


def env(power: str = "on", service: bool = True, **extra: object) -> Environment:
    data: dict[str, object] = {"power": power, "terraform": TF, **extra}
    if service:
        data["service"] = {"cluster": "c", "name": "s"}
    return Environment.model_validate(data)


def run(operation: Operation = "apply", minutes_ago: int = 3) -> RunInfo:
    return RunInfo(
        runner="codebuild",
        operation=operation,
        token="t",
        started_at=NOW - timedelta(minutes=minutes_ago),
        run_id="tf:1",
    )


def obs(
    record: PowerRecord | None = None,
    status: RunStatus | None = None,
    exists: bool | None = True,
    poll_error: str | None = None,
    service_error: str | None = None,
) -> PowerObservation:
    return PowerObservation(
        record=record or PowerRecord(),
        run_status=status,
        service_exists=exists,
        poll_error=poll_error,
        service_error=service_error,
    )


def test_power_on_and_stopped_starts_one_apply() -> None:
    decision = decide_power(env(), obs(PowerRecord(state="STOPPED"), exists=False), NOW)
    assert (decision.action, decision.state) == ("terraform_apply", "STARTING")
    assert decision.reason == "power on and the environment is STOPPED"


def test_power_off_and_running_starts_one_destroy() -> None:
    decision = decide_power(env("off"), obs(PowerRecord(state="RUNNING")), NOW)
    assert (decision.action, decision.state) == ("terraform_destroy", "STOPPING")


def test_converged_on_starts_nothing() -> None:
    decision = decide_power(env(), obs(PowerRecord(state="RUNNING")), NOW)
    assert (decision.action, decision.state) == ("none", "RUNNING")


def test_converged_off_starts_nothing() -> None:
    decision = decide_power(env("off"), obs(PowerRecord(state="STOPPED"), exists=False), NOW)
    assert (decision.action, decision.state) == ("none", "STOPPED")


def test_first_sight_of_an_existing_service_is_adopted_without_a_run() -> None:
    assert decide_power(env(), obs(exists=True), NOW).action == "none"
    assert decide_power(env("off"), obs(exists=False), NOW).action == "none"


def test_environment_without_service_is_applied_once_then_converged() -> None:
    first = decide_power(env(service=False), obs(exists=None), NOW)
    assert first.action == "terraform_apply"
    done = decide_power(env(service=False), obs(PowerRecord(state="RUNNING"), exists=None), NOW)
    assert done.action == "none"


def test_service_gone_while_running_is_applied_again() -> None:
    decision = decide_power(env(), obs(PowerRecord(state="RUNNING"), exists=False), NOW)
    assert decision.action == "terraform_apply"


def test_service_still_there_after_a_destroy_is_destroyed_again() -> None:
    decision = decide_power(env("off"), obs(PowerRecord(state="STOPPED"), exists=True), NOW)
    assert decision.action == "terraform_destroy"


def test_unknown_service_state_starts_no_run() -> None:
    decision = decide_power(
        env("off"), obs(PowerRecord(state="RUNNING"), exists=None, service_error="throttled"), NOW
    )
    assert (decision.action, decision.unknown) == ("none", True)
    assert "throttled" in decision.reason


def test_run_in_progress_reports_starting_with_time_left() -> None:
    record = PowerRecord(state="STARTING", run=run())
    decision = decide_power(env(), obs(record, RunStatus("IN_PROGRESS"), exists=False), NOW)
    assert (decision.action, decision.state) == ("none", "STARTING")
    assert decision.reason == "apply running for 3m, about 12m left"


def test_flip_during_a_run_waits_for_it_to_finish() -> None:
    record = PowerRecord(state="STARTING", run=run())
    decision = decide_power(env("off"), obs(record, RunStatus("IN_PROGRESS")), NOW)
    assert decision.action == "none"
    assert "the destroy follows once it finishes" in decision.reason


def test_finished_apply_then_flip_converges_to_the_latest_in_the_same_pass() -> None:
    record = PowerRecord(state="STARTING", run=run())
    decision = decide_power(env("off"), obs(record, RunStatus("SUCCEEDED")), NOW)
    assert decision.completed is not None and decision.completed.succeeded
    assert decision.action == "terraform_destroy"
    assert decision.power_record.run is None
    assert decision.power_record.durations["apply"] == (180.0,)


def test_successful_apply_becomes_running_and_resets_failures() -> None:
    record = PowerRecord(state="STARTING", run=run(), failures=3)
    decision = decide_power(env(), obs(record, RunStatus("SUCCEEDED")), NOW)
    assert (decision.action, decision.state) == ("none", "RUNNING")
    assert decision.power_record.failures == 0
    assert decision.reason.startswith("apply succeeded after 3m")


def test_successful_destroy_becomes_stopped() -> None:
    record = PowerRecord(state="STOPPING", run=run("destroy"))
    decision = decide_power(env("off"), obs(record, RunStatus("SUCCEEDED"), exists=False), NOW)
    assert (decision.action, decision.state) == ("none", "STOPPED")


def test_failed_run_is_error_and_retried_after_a_backoff_in_minutes() -> None:
    record = PowerRecord(state="STARTING", run=run())
    failed = decide_power(
        env(), obs(record, RunStatus("FAILED", "build FAILED"), exists=False), NOW
    )
    assert (failed.action, failed.state) == ("none", "ERROR")
    assert failed.power_record.failures == 1
    assert failed.power_record.retry_at == NOW + timedelta(minutes=1)
    assert "retry in 1m" in failed.reason
    later = decide_power(env(), obs(failed.power_record, exists=False), NOW + timedelta(seconds=61))
    assert later.action == "terraform_apply"


def test_post_reconcile_retries_a_failed_run_at_once() -> None:
    record = PowerRecord(
        state="ERROR",
        failures=2,
        retry_at=NOW + timedelta(minutes=2),
        last_result=RunResult("apply", False, NOW, 60, "FAILED"),
    )
    assert decide_power(env(), obs(record, exists=False), NOW).action == "none"
    assert (
        decide_power(env(), obs(record, exists=False), NOW, retry_now=True).action
        == "terraform_apply"
    )


def test_a_new_desired_operation_after_a_failure_does_not_wait_for_the_backoff() -> None:
    record = PowerRecord(
        state="ERROR",
        failures=1,
        retry_at=NOW + timedelta(minutes=1),
        last_result=RunResult("apply", False, NOW, 60, "FAILED"),
    )
    assert decide_power(env("off"), obs(record), NOW).action == "terraform_destroy"


def test_unknown_run_status_starts_nothing_and_is_an_error() -> None:
    record = PowerRecord(state="STARTING", run=run())
    decision = decide_power(env("off"), obs(record, None, poll_error="timeout"), NOW)
    assert (decision.action, decision.state, decision.unknown) == ("none", "STARTING", True)


def test_suspended_environment_starts_no_run_and_says_which_it_would_start() -> None:
    decision = decide_power(env("off", suspend=True), obs(PowerRecord(state="RUNNING")), NOW)
    assert (decision.action, decision.state) == ("none", "RUNNING")
    assert decision.reason.startswith("suspended: would terraform_destroy (")


def test_suspended_environment_already_converged_says_it_is_only_observing() -> None:
    decision = decide_power(env("on", suspend=True), obs(PowerRecord(state="RUNNING")), NOW)
    assert decision.action == "none"
    assert decision.reason.startswith("suspended: observing only (")


def test_without_terraform_power_is_only_reported() -> None:
    plain = Environment.model_validate({"power": "off", "service": {"cluster": "c", "name": "s"}})
    decision = decide_power(plain, obs(exists=True), NOW)
    assert (decision.action, decision.state) == ("none", "RUNNING")


def test_retry_delay_doubles_from_a_minute_and_caps_at_an_hour() -> None:
    delays = [TERRAFORM_RETRY.delay(n).total_seconds() / 60 for n in (1, 2, 3, 7, 20)]
    assert delays == [1, 2, 4, 60, 60]


def test_time_left_comes_from_past_runs_once_there_are_some() -> None:
    assert PowerRecord().estimated_duration("destroy") == timedelta(minutes=10)
    record = PowerRecord(durations={"apply": (600.0, 660.0, 700.0)})
    assert record.estimated_duration("apply") == timedelta(seconds=660)


# ---- properties ----

states = st.sampled_from([None, "STOPPED", "STARTING", "RUNNING", "STOPPING", "ERROR"])
statuses = st.sampled_from(
    [None, RunStatus("IN_PROGRESS"), RunStatus("SUCCEEDED"), RunStatus("FAILED")]
)


@given(
    state=states,
    power=st.sampled_from(["on", "off"]),
    exists=st.sampled_from([None, True, False]),
    op=st.sampled_from(["apply", "destroy"]),
    minutes=st.integers(0, 120),
)
def test_never_starts_a_run_while_one_is_in_flight_and_unfinished(
    state: PowerState | None, power: str, exists: bool | None, op: Operation, minutes: int
) -> None:
    record = PowerRecord(state=state, run=run(op, minutes))
    for status in (None, RunStatus("IN_PROGRESS")):
        decision = decide_power(env(power), obs(record, status, exists=exists), NOW)
        assert decision.action == "none"
        assert decision.power_record.run == record.run


@given(power=st.sampled_from(["on", "off"]), service=st.booleans(), retry_now=st.booleans())
def test_a_converged_environment_starts_nothing(power: str, service: bool, retry_now: bool) -> None:
    state: PowerState = "RUNNING" if power == "on" else "STOPPED"
    exists = (power == "on") if service else None
    decision = decide_power(
        env(power, service=service), obs(PowerRecord(state=state), exists=exists), NOW, retry_now
    )
    assert decision.action == "none"


@given(
    state=states,
    power=st.sampled_from(["on", "off"]),
    exists=st.sampled_from([None, True, False]),
    status=statuses,
)
def test_the_decision_is_pure_and_never_destroys_when_power_is_on(
    state: PowerState | None, power: str, exists: bool | None, status: RunStatus | None
) -> None:
    record = PowerRecord(state=state, run=run() if status else None)
    first = decide_power(env(power), obs(record, status, exists=exists), NOW)
    assert first == decide_power(env(power), obs(record, status, exists=exists), NOW)
    if power == "on":
        assert first.action != "terraform_destroy"
    else:
        assert first.action != "terraform_apply"


def test_an_unknown_service_on_an_empty_record_reports_unknown_and_records_nothing() -> None:
    decision = decide_power(env(), obs(PowerRecord(), exists=None, service_error="no creds"), NOW)
    assert (decision.action, decision.state, decision.unknown) == ("none", None, True)
    assert decision.power_record == PowerRecord()


def test_an_unknown_service_keeps_the_recorded_state_untouched() -> None:
    record = PowerRecord(state="RUNNING", changed_at=NOW - timedelta(days=1))
    decision = decide_power(env("off"), obs(record, exists=None), NOW)
    assert (decision.action, decision.state) == ("none", "RUNNING")
    assert decision.power_record == record


def test_a_guessed_state_is_reported_but_never_recorded() -> None:
    suspended = decide_power(env(suspend=True, service=False), obs(PowerRecord()), NOW)
    assert (suspended.state, suspended.power_record.state) == ("RUNNING", None)
    # with a declared service whose state is unknown, nothing is guessed: unknown
    blind = decide_power(env(suspend=True), obs(PowerRecord(), exists=None), NOW)
    assert (blind.state, blind.power_record.state) == (None, None)
    plain = Environment.model_validate({"power": "on"})
    reported = decide_power(plain, obs(PowerRecord(), exists=None), NOW)
    assert (reported.state, reported.power_record.state) == ("RUNNING", None)
    seen = decide_power(plain.model_copy(update={"power": "off"}), obs(exists=False), NOW)
    assert (seen.state, seen.power_record.state) == ("STOPPED", "STOPPED")  # observed: recorded


def test_without_terraform_a_failed_service_read_fails_the_environment() -> None:
    plain = Environment.model_validate({"power": "on", "service": {"cluster": "c", "name": "s"}})
    decision = decide_power(plain, obs(exists=None, service_error="AccessDenied"), NOW)
    assert (decision.state, decision.unknown) == (None, True)
    assert decision.reason == "service state unknown (AccessDenied): power not known"
