"""The per-environment series render exactly as prometheus_client's own metrics do (without
`_created`), so that dashboards and alerts read them unchanged."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.engine import metrics as _metrics  # noqa: F401 - turns `_created` off
from controller.engine.series import EnvironmentCounter, EnvironmentGauge, EnvironmentHistogram

BUCKETS = (5, 10, 60)


def exercise(gauge: object, counter: object, histogram: object) -> None:
    for name in ("b", "a"):
        gauge.labels(name, "RUNNING").set(1)  # type: ignore[attr-defined]
        counter.labels(name).inc()  # type: ignore[attr-defined]
        counter.labels(name).inc(2.5)  # type: ignore[attr-defined]
    for value in (3, 5, 7, 100):
        histogram.labels("a").observe(value)  # type: ignore[attr-defined]
    gauge.labels("b", "RUNNING").set(0)  # type: ignore[attr-defined]
    gauge.remove("a", "RUNNING")  # type: ignore[attr-defined]


def test_environment_series_render_as_prometheus_client_s_own() -> None:
    light, reference = CollectorRegistry(), CollectorRegistry()
    exercise(
        EnvironmentGauge("x_state", "State.", ["environment", "state"], light),
        EnvironmentCounter("x_actions", "Actions.", ["environment"], light),
        EnvironmentHistogram("x_lag_seconds", "Lag.", ["environment"], light, BUCKETS),
    )
    exercise(
        Gauge("x_state", "State.", ["environment", "state"], registry=reference),
        Counter("x_actions", "Actions.", ["environment"], registry=reference),
        Histogram("x_lag_seconds", "Lag.", ["environment"], registry=reference, buckets=BUCKETS),
    )
    assert generate_latest(light) == generate_latest(reference)
    assert light.get_sample_value("x_lag_seconds_bucket", {"environment": "a", "le": "5.0"}) == 2


def test_a_series_removed_is_gone_and_removing_it_again_is_a_key_error() -> None:
    registry = CollectorRegistry()
    gauge = EnvironmentGauge("y", "Y.", ["environment"], registry)
    gauge.labels("a").set(3)
    gauge.remove("a")
    assert registry.get_sample_value("y", {"environment": "a"}) is None
    with pytest.raises(KeyError):
        gauge.remove("a")


def test_a_series_needs_every_label_as_text() -> None:
    counter = EnvironmentCounter("z", "Z.", ["environment", "action"], CollectorRegistry())
    with pytest.raises(ValueError, match="expected the labels"):
        counter.labels("a")
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("a", "b").inc(-1)
