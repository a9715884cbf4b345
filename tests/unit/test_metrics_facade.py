"""The facade's contract: prometheus_client's shape, exact names, conflicts refused, exact under threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from otel_monitoring import metrics
from otel_monitoring.metrics import MetricConflictError, MetricsRegistry


@pytest.fixture
def registry() -> MetricsRegistry:
    return MetricsRegistry(clock=lambda: 1_000)


def test_redeclaring_the_same_metric_returns_the_same_object(registry: MetricsRegistry) -> None:
    first = metrics.counter("jobs_total", "Jobs", labelnames=("queue",), registry=registry)
    second = metrics.counter("jobs_total", "Jobs", labelnames=("queue",), registry=registry)
    assert first is second


@pytest.mark.parametrize(
    ("second", "difference"),
    [
        (lambda r: r.gauge("jobs_total", "Jobs", ("queue",)), "type 'counter' != 'gauge'"),
        (lambda r: r.counter("jobs_total", "Jobs", ("queue", "host")), "labelnames ('queue',) != ('queue', 'host')"),
    ],
)
def test_conflicting_declaration_says_what_differs(registry: MetricsRegistry, second, difference: str) -> None:
    registry.counter("jobs_total", "Jobs", ("queue",))
    with pytest.raises(MetricConflictError, match=r"metric 'jobs_total' is already declared differently") as raised:
        second(registry)
    assert difference in str(raised.value)


def test_histogram_redeclared_with_other_buckets_is_refused(registry: MetricsRegistry) -> None:
    registry.histogram("latency_seconds", "Latency", buckets=[0.1, 1])
    with pytest.raises(MetricConflictError, match=r"buckets \(0\.1, 1\.0\) != \(0\.5, 1\.0\)"):
        registry.histogram("latency_seconds", "Latency", buckets=[0.5, 1])


def test_metrics_exposing_the_same_sample_name_are_refused(registry: MetricsRegistry) -> None:
    registry.counter("requests", "Requests")  # exposed as requests_total
    with pytest.raises(MetricConflictError, match="'requests_total', which metric 'requests' already exposes"):
        registry.gauge("requests_total", "Also requests")


@pytest.mark.parametrize("name", ["http-requests", "9lives", "http.requests", "", "métrica"])
def test_names_prometheus_would_reject_are_refused(registry: MetricsRegistry, name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.counter(name, "x")


@pytest.mark.parametrize("label", ["__reserved", "with-dash", "1st"])
def test_label_names_prometheus_would_reject_are_refused(registry: MetricsRegistry, label: str) -> None:
    with pytest.raises(ValueError, match="invalid label name"):
        registry.counter("ok_total", "x", (label,))


def test_histogram_refuses_le_label_and_unsorted_buckets(registry: MetricsRegistry) -> None:
    with pytest.raises(ValueError, match="'le' is reserved"):
        registry.histogram("a_seconds", "x", ("le",))
    with pytest.raises(ValueError, match="strictly increasing"):
        registry.histogram("b_seconds", "x", buckets=[1, 0.5])


def test_unit_must_match_the_name_suffix(registry: MetricsRegistry) -> None:
    with pytest.raises(ValueError, match="name the metric 'request_latency_seconds'"):
        registry.histogram("request_latency", "x", unit="s")
    assert registry.histogram("request_latency_seconds", "x", unit="s").unit == "s"


def test_counter_rejects_negative_increments(registry: MetricsRegistry) -> None:
    counter = registry.counter("jobs_total", "Jobs")
    with pytest.raises(ValueError, match="negative"):
        counter.inc(-1)
    assert counter.labels().get() == 0


def test_labels_by_position_by_name_and_attributes_share_one_series(registry: MetricsRegistry) -> None:
    counter = registry.counter("http_requests_total", "Requests", ("method", "code"))
    counter.labels("GET", "200").inc()
    counter.labels(method="GET", code=200).inc(2)
    counter.inc(3, {"code": "200", "method": "GET"})
    [series] = counter.series()
    assert series.label_values == ("GET", "200")
    assert series.cell.get() == 6


def test_wrong_label_names_are_refused_with_the_expected_ones(registry: MetricsRegistry) -> None:
    counter = registry.counter("http_requests_total", "Requests", ("method",))
    with pytest.raises(ValueError, match=r"label names must be \['method'\] \(got \['verb'\]\)"):
        counter.labels(verb="GET")
    with pytest.raises(ValueError, match="has labels"):
        counter.inc()


def test_remove_drops_a_series_and_recording_again_starts_from_zero(registry: MetricsRegistry) -> None:
    counter = registry.counter("jobs_total", "Jobs", ("queue",))
    counter.labels(queue=1).inc(5)
    counter.remove("1")
    assert counter.series() == []
    counter.labels(queue="1").inc()
    assert [s.cell.get() for s in counter.series()] == [1]


def test_gauge_inc_dec_set_and_track_inprogress(registry: MetricsRegistry) -> None:
    active = registry.gauge("jobs_active", "Jobs running")
    active.inc()
    active.inc(2)
    active.dec()
    assert active.labels().get() == 2
    active.set(10)
    with active.track_inprogress():
        assert active.labels().get() == 11
    assert active.labels().get() == 10

    @active.track_inprogress()
    def work() -> float:
        return active.labels().get()

    assert work() == 11


def test_histogram_time_observes_seconds_as_context_manager_and_decorator(registry: MetricsRegistry) -> None:
    latency = registry.histogram("job_duration_seconds", "Duration", buckets=[0.5, 1.0])
    with latency.time():
        pass

    @latency.time()
    def sync_job() -> str:
        return "done"

    @latency.time()
    async def async_job() -> str:
        await asyncio.sleep(0)
        return "done"

    assert sync_job() == "done"
    assert asyncio.run(async_job()) == "done"
    counts, total, minimum, maximum = latency.labels().snapshot()
    assert counts == [3, 0, 0]  # three fast calls, all in le=0.5
    assert 0 <= minimum <= maximum < 0.5
    assert total < 1.5


def test_histogram_bucket_bounds_are_inclusive_upper_bounds(registry: MetricsRegistry) -> None:
    latency = registry.histogram("x_seconds", "x", buckets=[0.1, 0.5, 1.0])
    for value in (0.1, 0.10001, 0.5, 2.0):
        latency.observe(value)
    counts, total, _, _ = latency.labels().snapshot()
    assert counts == [1, 2, 0, 1]
    assert total == pytest.approx(2.70001)


def test_counter_is_exact_under_concurrent_threads(registry: MetricsRegistry) -> None:
    counter = registry.counter("hits_total", "Hits", ("shard",))
    histogram = registry.histogram("sizes_bytes", "Sizes", unit="bytes", buckets=[10, 100])
    per_thread, threads = 50_000, 4

    def hammer() -> None:
        child = counter.labels("a")
        for _ in range(per_thread):
            child.inc()
            counter.labels("b").inc(0.5)
            histogram.observe(50)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    values = {s.label_values: s.cell.get() for s in counter.series()}
    assert values == {("a",): per_thread * threads, ("b",): per_thread * threads / 2}
    counts, total, _, _ = histogram.labels().snapshot()
    assert counts == [0, per_thread * threads, 0]
    assert total == 50 * per_thread * threads


def test_label_sets_past_the_limit_share_one_overflow_series_and_are_not_remembered() -> None:
    registry = MetricsRegistry(cardinality_limit=10)
    counter = registry.counter("signups_total", "Signups", ("campaign",))
    for campaign in range(1_000):
        counter.labels(campaign=f"c{campaign}").inc()
    counter.labels(campaign="c3").inc(5)  # an admitted series keeps counting after the overflow

    series = {s.label_values: s for s in counter.series()}
    assert len(series) == 11  # the limit plus one overflow series
    overflow = series.pop(("\x00overflow",))
    assert overflow.attributes == {"otel.metric.overflow": True}
    assert overflow.cell.get() == 990
    assert series[("c3",)].cell.get() == 6
    assert len(counter._lookup) == 10  # overflowed keys are not cached, so memory stays bounded


def test_cardinality_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cardinality_limit must be at least 1"):
        MetricsRegistry(cardinality_limit=0)


def test_names_the_exporter_would_rewrite_or_reserves_are_refused(registry: MetricsRegistry) -> None:
    with pytest.raises(ValueError, match="'jobs__done_total' would be exposed as 'jobs_done_total'"):
        registry.counter("jobs__done_total", "x")
    with pytest.raises(ValueError, match="label name 'user__id' would be exposed as 'user_id'"):
        registry.counter("ok_total", "x", ("user__id",))
    with pytest.raises(MetricConflictError, match="'target_info', which the exposition reserves"):
        registry.gauge("target_info", "x")


def test_values_equal_as_keys_but_not_as_labels_stay_separate_series(registry: MetricsRegistry) -> None:
    counter = registry.counter("flags_total", "Flags", ("value",))
    counter.labels(True).inc()
    counter.labels("1").inc()
    counter.labels(1).inc()
    counter.labels(1.0).inc()
    assert {s.label_values: s.cell.get() for s in counter.series()} == {("True",): 1, ("1",): 2, ("1.0",): 1}
