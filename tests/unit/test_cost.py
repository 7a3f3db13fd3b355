"""Cost accounting, one step per pass: what is counted, what is not, and the month's turn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from controller.core.cost import MAX_STEP, account
from controller.core.records import CostRecord

START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_the_first_step_only_starts_the_clock() -> None:
    record, step = account(CostRecord(), START, True, True, 0.12)
    assert (record.month, record.accounted_at) == ("2026-11", START)
    assert step.powered_on_seconds == step.awake_seconds == step.power_savings == 0


def test_time_is_counted_in_the_state_observed_and_off_time_saves_the_hourly_cost() -> None:
    record, _ = account(CostRecord(), START, True, True, 0.12)
    record, on = account(record, START + timedelta(minutes=1), True, False, 0.12)
    assert (on.powered_on_seconds, on.awake_seconds, on.power_savings) == (60, 0, 0)
    record, off = account(record, START + timedelta(minutes=7), False, False, 0.12)
    assert off.powered_on_seconds == 0
    assert round(off.power_savings, 6) == round(360 / 3600 * 0.12, 6)
    assert record.powered_on_seconds == 60


def test_unknown_is_never_counted_and_a_long_gap_counts_at_most_max_step() -> None:
    record, _ = account(CostRecord(), START, False, False, 1.0)
    record, unknown = account(record, START + timedelta(minutes=1), None, None, 1.0)
    assert unknown.power_savings == unknown.powered_on_seconds == 0
    _, after_downtime = account(record, START + timedelta(hours=5), False, False, 1.0)
    assert after_downtime.power_savings == MAX_STEP.total_seconds() / 3600


def test_a_new_month_starts_from_zero() -> None:
    record, _ = account(CostRecord(), START, True, True, None)
    record, _ = account(record, START + timedelta(minutes=5), True, True, None)
    turn = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    record, step = account(replace_at(record, turn - timedelta(minutes=2)), turn, True, True, None)
    assert record.month == "2026-12" and record.powered_on_seconds == step.powered_on_seconds


def replace_at(record: CostRecord, at: datetime) -> CostRecord:
    return CostRecord(record.month, record.powered_on_seconds, record.awake_seconds, 0.0, at)


@given(st.lists(st.tuples(st.integers(0, 3600), st.booleans(), st.booleans()), max_size=30))
def test_the_month_s_totals_are_the_sum_of_the_steps_and_never_exceed_the_time(
    steps: list[tuple[int, bool, bool]],
) -> None:
    record, _ = account(CostRecord(), START, True, True, 0.5)
    at, total_on, total_saved = START, 0.0, 0.0
    for seconds, on, awake in steps:
        at += timedelta(seconds=seconds)
        record, step = account(record, at, on, awake, 0.5)
        total_on += step.powered_on_seconds
        total_saved += step.power_savings
    assert record.powered_on_seconds == total_on <= (at - START).total_seconds()
    assert abs(record.power_savings - total_saved) < 1e-9


def test_the_idle_lever_saves_only_while_powered_on_and_asleep() -> None:
    record, _ = account(CostRecord(), START, True, True, 1.0, 0.06)
    record, awake = account(record, START + timedelta(minutes=10), True, True, 1.0, 0.06)
    assert awake.idle_savings == 0
    record, asleep = account(record, START + timedelta(minutes=20), True, False, 1.0, 0.06)
    assert round(asleep.idle_savings, 9) == round(600 / 3600 * 0.06, 9)
    assert asleep.power_savings == 0
    record, off = account(record, START + timedelta(minutes=30), False, False, 1.0, 0.06)
    assert off.idle_savings == 0 and off.power_savings > 0  # powered off: the power lever's
    _, unpriced = account(record, START + timedelta(minutes=40), True, False, 1.0, None)
    assert unpriced.idle_savings == 0  # no price known: nothing claimed


@given(
    st.lists(
        st.tuples(st.integers(0, 3600), st.sampled_from([True, False, None]), st.booleans()),
        max_size=30,
    ),
    st.floats(0, 100),
)
def test_idle_savings_are_the_sum_of_the_steps_and_at_most_the_price_of_the_time(
    steps: list[tuple[int, bool | None, bool]], hourly: float
) -> None:
    record, _ = account(CostRecord(), START, True, True, None, hourly)
    at, total = START, 0.0
    for seconds, on, awake in steps:
        at += timedelta(seconds=seconds)
        record, step = account(record, at, on, awake, None, hourly)
        assert step.idle_savings >= 0
        assert step.idle_savings == 0 or (on is True and awake is False)
        total += step.idle_savings
    assert abs(record.idle_savings - total) < 1e-6
    assert record.idle_savings <= (at - START).total_seconds() / 3600 * hourly + 1e-6
