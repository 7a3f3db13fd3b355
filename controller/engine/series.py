"""Per-environment Prometheus series, light enough for ten thousand environments.

prometheus_client makes a metric object per label set, with its own lock, dictionaries and
value object: some 600 bytes each, and twenty series per environment, 14 MB at a thousand
environments, and the time to find each again every pass. These families keep one small
slotted object per label set and build prometheus_client's own families when scraped: the
exposition is the same (`generate_latest`, `registry.get_sample_value`), without `_created`.

Their series are updated and read on the event loop only (the passes, the HTTP handlers).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Generic, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString


class GaugeSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class CounterSeries:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class HistogramSeries:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # the upper bounds, +Inf last (shared by the family's series)
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        self.counts[bisect_left(self.bounds, value)] += 1


SeriesT = TypeVar("SeriesT", GaugeSeries, CounterSeries, HistogramSeries)


class _Family(Generic[SeriesT]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], SeriesT] = {}
        registry.register(self)

    def _new(self) -> SeriesT:
        raise NotImplementedError

    def _family(self) -> Metric:
        raise NotImplementedError

    def _add(self, family: Metric, labels: list[str], series: SeriesT) -> None:
        raise NotImplementedError

    def labels(self, *values: str) -> SeriesT:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{self.name}: expected the labels {self.labelnames}, as text")
            series = self._series[values] = self._new()
        return series

    def remove(self, *values: str) -> None:
        """Drop a series; KeyError when there is none (as prometheus_client)."""
        del self._series[values]

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        for labels, series in self._series.items():
            self._add(family, list(labels), series)
        return [family]


class EnvironmentGauge(_Family[GaugeSeries]):
    def _new(self) -> GaugeSeries:
        return GaugeSeries()

    def _family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: list[str], series: GaugeSeries) -> None:
        assert isinstance(family, GaugeMetricFamily)
        family.add_metric(labels, series.value)


class EnvironmentCounter(_Family[CounterSeries]):
    def _new(self) -> CounterSeries:
        return CounterSeries()

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: list[str], series: CounterSeries) -> None:
        assert isinstance(family, CounterMetricFamily)
        family.add_metric(labels, series.value)


class EnvironmentHistogram(_Family[HistogramSeries]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = (*sorted(float(b) for b in buckets if b != math.inf), math.inf)
        super().__init__(name, documentation, labelnames, registry)

    def _new(self) -> HistogramSeries:
        return HistogramSeries(self.bounds)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: list[str], series: HistogramSeries) -> None:
        assert isinstance(family, HistogramMetricFamily)
        cumulative, buckets = 0, []
        for bound, count in zip(self.bounds, series.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
        family.add_metric(labels, buckets, series.sum)
