"""Every branch of the idle policy's decision, and its safety properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controller.core.desired_state import Environment
from controller.core.records import IdleRecord
from reconcilers.idle.decision import (
    Activity,
    IdleObservation,
    decide,
    needs_activity,
    observe_wakefulness,
)
from reconcilers.interface import ServiceState

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def env(**overrides: object) -> Environment:
    data: dict[str, object] = {
        "power": "on",
        "service": {"cluster": "c", "name": "s"},
        "idle": {"after": "5m", "active_count": 2, "wake": "on-request"},
    }
    data.update(overrides)
    return Environment.model_validate(data)


def awake(desired: int = 1) -> ServiceState:
    return ServiceState(
        status="ACTIVE",
        desired_count=desired,
        running_count=desired,
        load_balancers=("app/a/1",),
        target_groups=("targetgroup/t/1",),
    )


ASLEEP = ServiceState(status="ACTIVE", desired_count=0, load_balancers=("app/a/1",))


def requests(
    *points: tuple[timedelta, float], window: timedelta = timedelta(minutes=15)
) -> Activity:
    return Activity(
        window_start=NOW - window,
        period=MINUTE,
        requests=tuple((NOW - ago, value) for ago, value in points),
    )


def rejected(*points: tuple[timedelta, float]) -> Activity:
    return Activity(
        window_start=NOW - timedelta(minutes=15),
        period=MINUTE,
        rejected=tuple((NOW - ago, value) for ago, value in points),
    )


def observed(
    service: ServiceState | None = None,
    activity: Activity | None = None,
    awake_since: datetime | None = NOW - timedelta(hours=1),
    asleep_since: datetime | None = None,
    wake: bool = False,
    error: str | None = None,
) -> IdleObservation:
    return IdleObservation(
        service=service,
        activity=activity,
        wakefulness=IdleRecord(awake_since=awake_since, asleep_since=asleep_since),
        wake_requested=wake,
        error=error,
    )


def test_suspended_environment_does_nothing_and_says_what_it_would_do() -> None:
    decision = decide(env(suspend=True), observed(awake(), requests()), NOW)
    assert decision.action == "none"
    assert decision.reason == ("suspended: would scale_to_zero (no requests for at least 15m)")


def test_suspended_environment_with_nothing_to_do_says_it_is_only_observing() -> None:
    decision = decide(
        env(suspend=True), observed(awake(), requests((timedelta(minutes=3), 1))), NOW
    )
    assert decision.action == "none"
    assert decision.reason == "suspended: observing only (last request 2m ago)"


def test_power_off_environment_does_nothing_even_when_idle() -> None:
    decision = decide(env(power="off"), observed(awake(), requests()), NOW)
    assert (decision.action, decision.unknown) == ("none", False)
    assert "power is off" in decision.reason


def test_environment_without_idle_policy_does_nothing() -> None:
    decision = decide(env(idle=None), observed(awake(), requests()), NOW)
    assert decision.reason == "no idle policy"


def test_unknown_service_state_does_nothing_and_is_an_error() -> None:
    decision = decide(env(), observed(None, error="ecs DescribeServices failed"), NOW)
    assert decision.action == "none"
    assert decision.unknown
    assert "ecs DescribeServices failed" in decision.reason


def test_missing_service_does_nothing() -> None:
    decision = decide(env(), observed(ServiceState(status="MISSING")), NOW)
    assert decision.action == "none"
    assert "not found" in decision.reason


def test_idle_service_awake_long_enough_scales_to_zero_with_a_human_reason() -> None:
    decision = decide(env(), observed(awake(), requests((timedelta(minutes=7), 4))), NOW)
    assert decision.action == "scale_to_zero"
    assert decision.desired_count == 0
    # the request came in the bucket starting 7m ago, so it may have come until 6m ago
    assert decision.reason == "no requests for 6m"


def test_no_datapoints_at_all_means_no_requests() -> None:
    decision = decide(env(), observed(awake(), requests()), NOW)
    assert decision.action == "scale_to_zero"
    assert decision.reason == "no requests for at least 15m"


def test_recent_request_keeps_the_service_awake() -> None:
    decision = decide(env(), observed(awake(), requests((timedelta(minutes=3), 1))), NOW)
    assert decision.action == "none"
    assert decision.reason == "last request 2m ago"


def test_a_request_in_the_bucket_ending_exactly_idle_after_ago_allows_scaling() -> None:
    decision = decide(env(), observed(awake(), requests((timedelta(minutes=6), 1))), NOW)
    assert decision.action == "scale_to_zero"


def test_zero_valued_datapoints_are_not_requests() -> None:
    decision = decide(env(), observed(awake(), requests((timedelta(minutes=1), 0))), NOW)
    assert decision.action == "scale_to_zero"


def test_freshly_woken_service_is_not_scaled_down() -> None:
    decision = decide(
        env(), observed(awake(), requests(), awake_since=NOW - timedelta(minutes=2)), NOW
    )
    assert decision.action == "none"
    assert decision.reason == "awake for 2m, less than idle.after 5m"


def test_unknown_wake_time_is_never_idle() -> None:
    decision = decide(env(), observed(awake(), requests(), awake_since=None), NOW)
    assert (decision.action, decision.unknown) == ("none", True)


def test_unread_activity_is_never_idle() -> None:
    decision = decide(env(), observed(awake(), None, error="GetMetricData throttled"), NOW)
    assert (decision.action, decision.unknown) == ("none", True)
    assert "unknown is never idle" in decision.reason


def test_metrics_window_shorter_than_idle_after_is_not_proof_of_idleness() -> None:
    activity = requests(window=timedelta(minutes=3))
    decision = decide(env(), observed(awake(), activity), NOW)
    assert decision.action == "none"


def test_service_scaled_by_someone_else_above_active_count_is_left_alone_while_busy() -> None:
    decision = decide(env(), observed(awake(5), requests((timedelta(minutes=1), 10))), NOW)
    assert decision.action == "none"


def test_on_request_wake_scales_up_on_a_503_while_asleep() -> None:
    decision = decide(env(), observed(ASLEEP, rejected((timedelta(minutes=2), 3))), NOW)
    assert decision.action == "scale_up"
    assert decision.desired_count == 2
    assert "503" in decision.reason


def test_503s_from_before_the_service_fell_asleep_do_not_wake_it() -> None:
    activity = rejected((timedelta(minutes=10), 3))
    decision = decide(
        env(), observed(ASLEEP, activity, asleep_since=NOW - timedelta(minutes=5)), NOW
    )
    assert decision.action == "none"


def test_503_in_the_minute_the_service_fell_asleep_wakes_it() -> None:
    activity = rejected((timedelta(minutes=5, seconds=30), 1))
    decision = decide(
        env(), observed(ASLEEP, activity, asleep_since=NOW - timedelta(minutes=5)), NOW
    )
    assert decision.action == "scale_up"


def test_asleep_without_503_stays_asleep() -> None:
    decision = decide(env(), observed(ASLEEP, rejected()), NOW)
    assert (decision.action, decision.unknown) == ("none", False)


def test_asleep_with_unknown_wake_signal_does_nothing_and_is_an_error() -> None:
    decision = decide(env(), observed(ASLEEP, None, error="timeout"), NOW)
    assert (decision.action, decision.unknown) == ("none", True)


def test_manual_wake_policy_ignores_503s() -> None:
    manual = env(idle={"after": "5m", "wake": "manual"})
    decision = decide(manual, observed(ASLEEP, rejected((timedelta(minutes=1), 9))), NOW)
    assert decision.action == "none"
    assert "manual" in decision.reason


def test_wake_requested_through_the_api_scales_up_to_active_count() -> None:
    manual = env(idle={"after": "5m", "wake": "manual", "active_count": 3})
    decision = decide(manual, observed(ASLEEP, None, wake=True), NOW)
    assert (decision.action, decision.desired_count) == ("scale_up", 3)


def test_wake_requested_for_an_awake_service_does_nothing() -> None:
    decision = decide(env(), observed(awake(), requests(), wake=True), NOW)
    assert decision.action == "none"
    assert "already awake" in decision.reason


def test_observer_reads_only_the_metric_the_decision_needs() -> None:
    assert needs_activity(env(), awake()) == "requests"
    assert needs_activity(env(), ASLEEP) == "rejected"
    assert needs_activity(env(idle={"after": "5m", "wake": "manual"}), ASLEEP) is None
    assert needs_activity(env(power="off"), awake()) is None
    # a suspended environment still reads it, to say what it would do
    assert needs_activity(env(suspend=True), awake()) == "requests"
    assert needs_activity(env(), ServiceState(status="MISSING")) is None


def test_first_sight_of_an_awake_service_counts_as_just_woken() -> None:
    assert observe_wakefulness(IdleRecord(), awake(), NOW).awake_since == NOW
    earlier = NOW - timedelta(hours=2)
    assert observe_wakefulness(IdleRecord(awake_since=earlier), awake(), NOW).awake_since == earlier
    assert observe_wakefulness(IdleRecord(awake_since=earlier), ASLEEP, NOW).awake_since is None


# ---- properties ----

offsets = st.integers(min_value=0, max_value=60 * 60)
series = st.lists(st.tuples(st.integers(0, 30), st.floats(0, 100, allow_nan=False)), max_size=20)


def _activity(points: list[tuple[int, float]]) -> Activity:
    return Activity(
        window_start=NOW - timedelta(minutes=30),
        period=MINUTE,
        requests=tuple((NOW - timedelta(minutes=m), v) for m, v in points),
    )


@given(desired=st.integers(0, 5), wake=st.booleans(), error=st.text(max_size=5))
def test_never_scales_to_zero_on_an_unknown_read(desired: int, wake: bool, error: str) -> None:
    service = ServiceState(status="ACTIVE", desired_count=desired, load_balancers=("app/a/1",))
    for observation in (
        observed(None, None, wake=wake, error=error),
        observed(service, None, wake=wake, error=error),
    ):
        assert decide(env(), observation, NOW).action != "scale_to_zero"


@given(awake_for=st.integers(0, 299), points=series)
def test_never_scales_to_zero_within_idle_after_of_waking(
    awake_for: int, points: list[tuple[int, float]]
) -> None:
    observation = observed(
        awake(), _activity(points), awake_since=NOW - timedelta(seconds=awake_for)
    )
    assert decide(env(), observation, NOW).action == "none"


@given(points=series, awake_for=offsets, wake=st.booleans(), desired=st.integers(0, 3))
def test_decision_is_a_pure_function_of_its_inputs(
    points: list[tuple[int, float]], awake_for: int, wake: bool, desired: int
) -> None:
    service = ServiceState(status="ACTIVE", desired_count=desired, load_balancers=("app/a/1",))
    observation = observed(
        service, _activity(points), awake_since=NOW - timedelta(seconds=awake_for), wake=wake
    )
    assert decide(env(), observation, NOW) == decide(env(), observation, NOW)


@given(points=series)
def test_scales_to_zero_only_when_no_request_in_the_last_idle_after(
    points: list[tuple[int, float]],
) -> None:
    decision = decide(env(), observed(awake(), _activity(points)), NOW)
    recent = any(
        v > 0 and NOW - timedelta(minutes=m) + MINUTE > NOW - timedelta(minutes=5)
        for m, v in points
    )
    assert (decision.action == "scale_to_zero") == (not recent)


def test_a_deleted_service_forgets_its_wake_time() -> None:
    gone = ServiceState(status="INACTIVE", desired_count=1)
    woken = IdleRecord(awake_since=NOW - timedelta(hours=1))
    assert observe_wakefulness(woken, gone, NOW) == IdleRecord()


def test_a_service_is_never_scaled_to_zero_inside_a_keep_awake_period() -> None:
    keep = {
        "timezone": "Europe/Paris",
        "periods": [{"days": "thu", "from": "09:00", "to": "12:00"}],
    }
    spec = env(idle={"after": "5m", "wake": "on-request", "keep_awake": keep})
    inside = decide(spec, observed(awake(), requests()), NOW)  # thursday 11:30 in Paris
    assert (inside.action, inside.reason) == (
        "none",
        "keep_awake: thu 09:00-12:00 Europe/Paris until 12:00 Europe/Paris",
    )
    after = decide(spec, observed(awake(), requests()), NOW + timedelta(hours=1))
    assert after.action == "scale_to_zero"


def test_a_service_is_not_idle_while_its_wake_is_under_way_or_its_traffic_at_the_activator() -> (
    None
):
    quiet = observed(awake(), requests())
    waking = IdleObservation(
        service=awake(),
        activity=quiet.activity,
        wakefulness=IdleRecord(awake_since=NOW - timedelta(hours=1), wake_started_at=NOW),
    )
    switched = IdleObservation(
        service=awake(),
        activity=quiet.activity,
        wakefulness=quiet.wakefulness,
        traffic_at_activator=True,
    )
    for observation in (waking, switched):
        decision = decide(env(), observation, NOW)
        assert (decision.action, decision.reason) == (
            "none",
            "waking: its traffic is not back on the service yet, so not idle",
        )
    assert decide(env(), quiet, NOW).action == "scale_to_zero"
