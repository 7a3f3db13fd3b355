"""When the idle policy reads the ALB metrics (CloudWatch bills each metric asked for): an awake
service only once its idle window could close, an asleep one behind the activator never; and
what it decides on a pass that did not read them: never a scale to zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controller.core.desired_state import Environment
from controller.core.records import EnvironmentRecord, IdleRecord, RoutesRecord, SwitchedRoute
from reconcilers.idle.decision import (
    ActivityReading,
    IdleObservation,
    decide,
    decide_in_context,
    what_to_read,
)
from reconcilers.interface import EnvironmentContext, EnvironmentFacts, ServiceState

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
AWAKE = ServiceState(
    status="ACTIVE",
    desired_count=1,
    running_count=1,
    load_balancers=("app/a/1",),
    target_groups=("targetgroup/t/1",),
)
ASLEEP = ServiceState(status="ACTIVE", desired_count=0, load_balancers=("app/a/1",))
SWITCHED = RoutesRecord((SwitchedRoute("listener", None, "[]", "[]"),), NOW - MINUTE, "tg")


def env(**overrides: object) -> Environment:
    data: dict[str, object] = {
        "power": "on",
        "service": {"cluster": "c", "name": "s"},
        "idle": {"after": "5m", "wake": "on-request"},
    }
    data.update(overrides)
    return Environment.model_validate(data)


def context(
    idle: IdleRecord,
    spec: Environment | None = None,
    routes: RoutesRecord | None = None,
    woken: datetime | None = None,
    service: ServiceState = AWAKE,
) -> EnvironmentContext:
    return EnvironmentContext(
        name="demo",
        spec=spec or env(),
        region="eu-west-3",
        record=EnvironmentRecord(idle=idle, routes=routes or RoutesRecord()),
        facts=EnvironmentFacts(service=service),
        woken_outside_pass=woken,
    )


def quiet_since(minutes: float, awake_for: float = 60) -> IdleRecord:
    return IdleRecord(
        awake_since=NOW - timedelta(minutes=awake_for),
        last_request_at=NOW - timedelta(minutes=minutes),
    )


def test_an_awake_service_is_not_read_before_its_last_request_is_idle_after_ago() -> None:
    plan = what_to_read(context(quiet_since(2)), AWAKE, NOW)
    assert plan == ActivityReading(not_idle_before=NOW + 3 * MINUTE)


def test_an_awake_service_is_read_once_its_idle_window_could_close() -> None:
    assert what_to_read(context(quiet_since(5)), AWAKE, NOW) == "requests"
    assert what_to_read(context(quiet_since(40)), AWAKE, NOW) == "requests"


def test_a_service_woken_less_than_idle_after_ago_is_not_read() -> None:
    plan = what_to_read(context(quiet_since(40, awake_for=1)), AWAKE, NOW)
    assert plan == ActivityReading(not_idle_before=NOW + 4 * MINUTE)


def test_a_service_first_seen_awake_is_not_read_before_idle_after() -> None:
    record = IdleRecord(last_request_at=NOW - timedelta(hours=1))  # asleep until now
    assert what_to_read(context(record), AWAKE, NOW) == ActivityReading(
        not_idle_before=NOW + 5 * MINUTE
    )


def test_a_service_whose_requests_were_never_read_is_read_at_once() -> None:
    record = IdleRecord(awake_since=NOW - MINUTE)  # a lost store, a new service
    assert what_to_read(context(record), AWAKE, NOW) == "requests"


def test_a_waking_service_or_one_kept_awake_is_not_read() -> None:
    keep = {"timezone": "UTC", "periods": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}]}
    waking = IdleRecord(awake_since=NOW - timedelta(hours=1), wake_started_at=NOW - MINUTE)
    cases = [
        context(waking),
        context(quiet_since(40), woken=NOW - MINUTE),
        context(quiet_since(40), routes=SWITCHED),
        context(quiet_since(40), spec=env(idle={"after": "5m", "keep_awake": keep})),
    ]
    assert [what_to_read(c, AWAKE, NOW) for c in cases] == [ActivityReading()] * 4


def test_an_asleep_service_behind_the_activator_is_never_read() -> None:
    asleep = IdleRecord(asleep_since=NOW - timedelta(hours=2))
    behind = context(asleep, routes=SWITCHED, service=ASLEEP)
    assert what_to_read(behind, ASLEEP, NOW) == ActivityReading()
    assert what_to_read(context(asleep, service=ASLEEP), ASLEEP, NOW) == "rejected"
    manual = env(idle={"after": "5m", "wake": "manual"})
    assert what_to_read(context(asleep, spec=manual, service=ASLEEP), ASLEEP, NOW) == (
        ActivityReading()
    )


def test_a_pass_that_did_not_read_says_what_a_read_would_and_does_nothing() -> None:
    plan = what_to_read(context(quiet_since(2)), AWAKE, NOW)
    assert isinstance(plan, ActivityReading)
    decision = decide_in_context(context(quiet_since(2)), plan, NOW)
    assert (decision.action, decision.unknown) == ("none", False)
    assert decision.reason == "last request 2m ago"
    early = context(quiet_since(40, awake_for=1))
    plan = what_to_read(early, AWAKE, NOW)
    assert isinstance(plan, ActivityReading)
    decision = decide_in_context(early, plan, NOW)
    assert decision.reason == "awake for 1m, less than idle.after 5m"


def test_metrics_not_read_once_the_window_could_close_are_unknown_never_idle() -> None:
    observation = IdleObservation(
        service=AWAKE,
        activity=None,
        wakefulness=quiet_since(10),
        not_idle_before=NOW - MINUTE,  # a stale plan: the window could have closed since
    )
    decision = decide(env(), observation, NOW)
    assert (decision.action, decision.unknown) == ("none", True)
    assert "unknown is never idle" in decision.reason


def test_an_asleep_service_behind_the_activator_waits_for_it_without_a_read() -> None:
    observation = IdleObservation(
        service=ASLEEP,
        activity=None,
        wakefulness=IdleRecord(asleep_since=NOW - timedelta(hours=1)),
        traffic_at_activator=True,
    )
    decision = decide(env(), observation, NOW)
    assert (decision.action, decision.unknown) == ("none", False)
    assert decision.reason == "asleep; its requests reach the activator, which wakes it"


@given(
    last_request=st.integers(min_value=0, max_value=600),
    awake_for=st.integers(min_value=0, max_value=600),
    pass_at=st.integers(min_value=-600, max_value=600),
)
def test_a_pass_without_a_metric_read_never_scales_to_zero(
    last_request: int, awake_for: int, pass_at: int
) -> None:
    record = quiet_since(last_request / 60, awake_for / 60)
    plan = what_to_read(context(record), AWAKE, NOW)
    reading = plan if isinstance(plan, ActivityReading) else ActivityReading()
    later = NOW + timedelta(seconds=pass_at)  # decided at any moment, the plan's or another
    decision = decide_in_context(context(record), reading, later)
    assert decision.action != "scale_to_zero"
