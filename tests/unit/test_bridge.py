"""The bridge hands the facade's cells to stock SDK readers, with the reader's temporality."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    NumberDataPoint,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring._bridge import RecordingBridge
from otel_monitoring.metrics import MetricsRegistry

SCOPE = InstrumentationScope("otel_monitoring", "test")
RESOURCE = Resource({"service.name": "checkout"})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def attach(registry: MetricsRegistry, reader: InMemoryMetricReader, clock: Clock, **kwargs) -> MeterProvider:
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    RecordingBridge(registry, RESOURCE, SCOPE, clock=clock, **kwargs).attach(reader)
    return provider


def metrics_by_name(data: MetricsData | None) -> dict[str, Metric]:
    assert data is not None
    return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def points(metric: Metric) -> Iterator[NumberDataPoint | HistogramDataPoint]:
    yield from metric.data.data_points  # type: ignore[misc]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_facade_metrics_reach_a_stock_reader_with_resource_and_scope(clock: Clock) -> None:
    registry = MetricsRegistry(clock=clock)
    reader = InMemoryMetricReader()
    provider = attach(registry, reader, clock)
    registry.counter("orders_total", "Orders", ("status",)).labels(status="paid").inc(3)
    provider.get_meter("sdk-side").create_counter("sdk.calls").add(2)

    data = reader.get_metrics_data()

    assert data is not None
    [resource_metrics] = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "checkout"
    scopes = {sm.scope.name: sm for sm in resource_metrics.scope_metrics}
    assert set(scopes) == {"sdk-side", "otel_monitoring"}
    [orders] = scopes["otel_monitoring"].metrics
    assert orders.name == "orders_total"
    assert orders.data.is_monotonic and orders.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    [point] = orders.data.data_points
    assert (point.attributes, point.value, point.start_time_unix_nano) == ({"status": "paid"}, 3, 1_000)


def test_histogram_points_carry_buckets_sum_count_min_max(clock: Clock) -> None:
    registry = MetricsRegistry(clock=clock)
    reader = InMemoryMetricReader()
    attach(registry, reader, clock)
    latency = registry.histogram("latency_seconds", "Latency", buckets=[0.1, 1.0])
    for value in (0.05, 0.5, 3.0):
        latency.observe(value)

    [point] = points(metrics_by_name(reader.get_metrics_data())["latency_seconds"])

    assert isinstance(point, HistogramDataPoint)
    assert list(point.bucket_counts) == [1, 1, 1]
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert (point.count, point.sum, point.min, point.max) == (3, pytest.approx(3.55), 0.05, 3.0)


def test_delta_reader_gets_changes_since_its_last_collection(clock: Clock) -> None:
    registry = MetricsRegistry(clock=clock)
    delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    delta_reader = InMemoryMetricReader(preferred_temporality=delta)
    cumulative_reader = InMemoryMetricReader()
    MeterProvider(resource=RESOURCE, metric_readers=[delta_reader, cumulative_reader])
    bridge = RecordingBridge(registry, RESOURCE, SCOPE, clock=clock)
    bridge.attach(delta_reader)
    bridge.attach(cumulative_reader)
    counter = registry.counter("jobs_total", "Jobs", ("queue",))
    histogram = registry.histogram("job_seconds", "Job time", buckets=[1.0])

    counter.labels("a").inc(5)
    histogram.observe(100.0)
    clock.now = 2_000
    first = metrics_by_name(delta_reader.get_metrics_data())
    counter.labels("a").inc(2)
    histogram.observe(2.0)
    clock.now = 3_000
    second = metrics_by_name(delta_reader.get_metrics_data())
    clock.now = 4_000
    third = metrics_by_name(delta_reader.get_metrics_data())
    cumulative = metrics_by_name(cumulative_reader.get_metrics_data())

    [first_point] = points(first["jobs_total"])
    [second_point] = points(second["jobs_total"])
    assert second["jobs_total"].data.aggregation_temporality is AggregationTemporality.DELTA
    assert (first_point.value, first_point.start_time_unix_nano) == (5, 1_000)
    assert (second_point.value, second_point.start_time_unix_nano, second_point.time_unix_nano) == (2, 2_000, 3_000)
    [histogram_delta] = points(second["job_seconds"])
    assert list(histogram_delta.bucket_counts) == [0, 1] and histogram_delta.count == 1
    assert (histogram_delta.min, histogram_delta.max) == (2.0, 2.0)  # this interval's extremes, not the lifetime's
    assert "jobs_total" not in third  # nothing changed: no point, as the SDK does for delta
    [cumulative_point] = points(cumulative["jobs_total"])
    assert cumulative_point.value == 7


def test_gauges_export_last_value_and_updowncounters_a_non_monotonic_sum(clock: Clock) -> None:
    registry = MetricsRegistry(clock=clock)
    reader = InMemoryMetricReader()
    attach(registry, reader, clock)
    registry.gauge("queue_depth", "Depth").set(7)
    active = registry.semconv_updowncounter(
        "http.server.active_requests", "Active", ("http.request.method",), "{request}"
    )
    active.add(2, {"http.request.method": "GET"})
    active.add(-1, {"http.request.method": "GET"})

    metrics = metrics_by_name(reader.get_metrics_data())

    assert [p.value for p in points(metrics["queue_depth"])] == [7]
    assert not metrics["http.server.active_requests"].data.is_monotonic
    assert [p.value for p in points(metrics["http.server.active_requests"])] == [1]


def test_processor_hook_sees_sdk_and_facade_data_before_the_reader(clock: Clock) -> None:
    registry = MetricsRegistry(clock=clock)
    reader = InMemoryMetricReader()
    seen: list[set[str]] = []

    def drop_secret_metrics(data: MetricsData) -> MetricsData:
        seen.append(set(metrics_by_name(data)))
        return MetricsData([])

    provider = attach(registry, reader, clock, process=drop_secret_metrics)
    registry.counter("ours_total", "Ours").inc()
    provider.get_meter("sdk").create_counter("theirs").add(1)

    assert reader.get_metrics_data() == MetricsData([])
    assert seen == [{"ours_total", "theirs"}]


def test_attach_refuses_a_reader_no_provider_registered() -> None:
    with pytest.raises(ValueError, match="not registered with a MeterProvider"):
        RecordingBridge(MetricsRegistry(), RESOURCE, SCOPE).attach(InMemoryMetricReader())
