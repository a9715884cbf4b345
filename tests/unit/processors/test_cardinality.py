"""cardinality: a per-metric limit on attribute sets, one overflow series past it, memory bounded by expiry."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from pydantic import ValidationError

from otel_monitoring.metrics import MetricsRegistry
from processors.cardinality import FACTORY, OVERFLOW_ATTRIBUTES, CardinalityConfig, CardinalityProcessor
from processors.component import ProcessorContext

SECOND = 1_000_000_000
CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
OVERFLOW = frozenset(OVERFLOW_ATTRIBUTES.items())


class FakeClock:
    """Unix nanoseconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * SECOND

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


class Harness:
    """A processor with its own registry and clock."""

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        self.clock = FakeClock()
        self.registry = MetricsRegistry()
        context = ProcessorContext(registry=self.registry, clock=self.clock, component_id="cardinality")
        processor = FACTORY.create_from(dict(raw) if raw is not None else None, context)
        assert isinstance(processor, CardinalityProcessor)
        self.processor = processor

    def process(self, *metrics: Metric) -> list[Metric]:
        out = self.processor.process(batch_of(*metrics))
        return list(out.resource_metrics[0].scope_metrics[0].metrics)

    def counted(self, name: str, metric: str) -> float:
        family = self.registry.get(name)
        assert family is not None
        return float(family.labels(metric=metric).get())  # type: ignore[union-attr]


def batch_of(*metrics: Metric, resource: Mapping[str, Any] | None = None) -> MetricsData:
    scope = ScopeMetrics(InstrumentationScope("app"), list(metrics), "")
    return MetricsData([ResourceMetrics(Resource(dict(resource or {"service.name": "api"})), [scope], "")])


def counter(
    points: Sequence[tuple[Mapping[str, Any], float]], name: str = "requests", temporality: Any = CUMULATIVE
) -> Metric:
    """A sum whose points all started at time 1; points are (attributes, value)."""
    return Metric(name, "", "1", Sum([NumberDataPoint(dict(a), 1, 2, value) for a, value in points], temporality, True))


def by_attributes(metric: Metric) -> dict[frozenset[tuple[str, Any]], Any]:
    """Points by attribute set; fails if one attribute set appears twice."""
    assert isinstance(metric.data, Sum | Gauge | Histogram)
    points = {frozenset((point.attributes or {}).items()): point for point in metric.data.data_points}
    assert len(points) == len(metric.data.data_points), "one attribute set emitted twice"
    return points


def users(count: int, first: int = 0, value: float = 1.0) -> list[tuple[dict[str, str], float]]:
    return [({"user": f"u{i}"}, value) for i in range(first, first + count)]


# --- config -------------------------------------------------------------------------------------------------


def test_default_config_is_valid() -> None:
    config = CardinalityConfig()
    assert (config.limit, config.limits, config.expiry_seconds) == (2000, {}, 600.0)
    harness = Harness()
    data = batch_of(counter(users(2000)))
    assert harness.processor.process(data) is data


def test_rejects_a_per_metric_limit_below_one_naming_the_entry() -> None:
    with pytest.raises(ValidationError) as raised:
        CardinalityConfig.model_validate({"limits": {"http.*": 0}})
    (error,) = raised.value.errors()
    assert error["loc"] == ("limits",)
    assert error["msg"] == "Value error, the limit for 'http.*' must be at least 1 (got 0)"


@pytest.mark.parametrize("raw", [{"limit": 0}, {"expiry_seconds": -1}, {"limt": 5}, {"overflow_tracking_limit": -1}])
def test_rejects_bad_values_and_unknown_keys(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CardinalityConfig.model_validate(raw)


def test_the_most_specific_per_metric_limit_wins() -> None:
    harness = Harness(
        {"limit": 50, "limits": {"http.*": 10, "http.server.*": 20, "http.server.request.duration": 30, "*.size": 40}}
    )
    limit_for = harness.processor.limit_for
    assert limit_for("http.server.request.duration") == 30  # exact name beats every glob
    assert limit_for("http.server.active_requests") == 20  # more literal characters than http.*
    assert limit_for("http.client.request.duration") == 10
    assert limit_for("http.server.size") == 20  # "http.server." outweighs ".size"
    assert limit_for("db.client.operation.duration") == 50


def test_per_metric_limits_apply_to_the_output() -> None:
    harness = Harness({"limit": 100, "limits": {"http.*": 3}})
    http, db = harness.process(counter(users(10), "http.requests"), counter(users(10), "db.queries"))
    assert len(by_attributes(http)) == 3 + 1
    assert by_attributes(http)[OVERFLOW].value == 7
    assert len(by_attributes(db)) == 10


# --- admitting and overflowing ------------------------------------------------------------------------------


def test_series_within_the_limit_pass_as_the_same_objects() -> None:
    harness = Harness({"limit": 5})
    metric = counter(users(5))
    data = batch_of(metric)
    assert harness.processor.process(data) is data
    data = batch_of(counter(users(5, value=2)))
    assert harness.processor.process(data) is data  # the same sets again: still admitted


def test_sets_past_the_limit_go_to_one_overflow_series_while_admitted_points_stay_the_same_objects() -> None:
    harness = Harness({"limit": 3})
    metric = counter([({"user": f"u{i}"}, float(i)) for i in range(10)])
    (out,) = harness.process(metric)
    assert isinstance(out.data, Sum) and isinstance(metric.data, Sum)
    assert out.data.data_points[:3] == metric.data.data_points[:3]
    assert all(a is b for a, b in zip(out.data.data_points[:3], metric.data.data_points[:3], strict=True))
    (overflow,) = out.data.data_points[3:]
    assert overflow.attributes == {"otel.metric.overflow": True}
    assert overflow.value == sum(range(3, 10))
    assert (out.name, out.unit, out.data.is_monotonic, out.data.aggregation_temporality) == (
        "requests",
        "1",
        True,
        CUMULATIVE,
    )
    assert harness.counted("otel_monitoring_cardinality_overflow_points_total", "requests") == 7


def test_existing_series_keep_counting_after_overflow() -> None:
    harness = Harness({"limit": 2})
    for step in range(1, 6):
        (out,) = harness.process(counter([({"user": f"u{i}"}, float(step * 10 + i)) for i in range(5)]))
        points = by_attributes(out)
        assert {k: p.value for k, p in points.items() if k != OVERFLOW} == {
            frozenset({("user", "u0")}): step * 10,
            frozenset({("user", "u1")}): step * 10 + 1,
        }
        assert points[OVERFLOW].value == 3 * step * 10 + 2 + 3 + 4  # u2..u4: their current totals


def test_an_overflowed_cumulative_set_stays_in_the_overflow_when_slots_free_up() -> None:
    # Moving it to its own series would count its past twice: once in the overflow, once on its own.
    harness = Harness({"limit": 1, "expiry_seconds": 60})
    harness.process(counter([({"user": "a"}, 1), ({"user": "b"}, 10)]))
    harness.clock.advance(40)
    harness.process(counter([({"user": "b"}, 12)]))
    harness.clock.advance(30)  # "a" unseen for 70 s: expired, its slot is free; "b" was seen 30 s ago
    (out,) = harness.process(counter([({"user": "b"}, 15)]))
    assert {k: p.value for k, p in by_attributes(out).items()} == {OVERFLOW: 15}
    (out,) = harness.process(counter([({"user": "c"}, 4)]))  # the free slot goes to a set never overflowed
    assert {k: p.value for k, p in by_attributes(out).items()} == {frozenset({("user", "c")}): 4}


@pytest.mark.parametrize("temporality", [CUMULATIVE, DELTA])
def test_overflowed_histograms_merge_bucket_by_bucket(temporality: Any) -> None:
    harness = Harness({"limit": 1})
    bounds = [1.0, 10.0]
    points = [
        HistogramDataPoint({"user": "a"}, 1, 2, 1, 0.5, [1, 0, 0], bounds, 0.5, 0.5),
        HistogramDataPoint({"user": "b"}, 1, 2, 3, 16.0, [1, 1, 1], bounds, 0.5, 12.0),
        HistogramDataPoint({"user": "c"}, 1, 2, 2, 25.0, [0, 1, 1], bounds, 5.0, 20.0),
    ]
    (out,) = harness.process(Metric("latency", "", "s", Histogram(points, temporality)))
    overflow = by_attributes(out)[OVERFLOW]
    assert (overflow.count, list(overflow.bucket_counts), overflow.sum) == (5, [1, 2, 2], 41.0)
    assert (overflow.min, overflow.max) == (0.5, 20.0)


def test_overflowed_delta_sums_are_summed_per_batch_and_gauges_keep_the_latest() -> None:
    harness = Harness({"limit": 1})
    gauge = Metric(
        "queue.depth", "", "1", Gauge([NumberDataPoint({"q": str(i)}, 0, 10 - i, float(i)) for i in range(4)])
    )
    deltas, gauges = harness.process(counter(users(4, value=2), "bytes", DELTA), gauge)
    assert by_attributes(deltas)[OVERFLOW].value == 6
    assert by_attributes(gauges)[OVERFLOW].value == 1.0  # q=1 has the latest time of q1..q3
    assert harness.processor.series_count() == 2  # two admitted sets; deltas and gauges need no memory


def test_exponential_histogram_points_past_the_limit_are_dropped_and_counted() -> None:
    harness = Harness({"limit": 1})
    points = [
        ExponentialHistogramDataPoint(
            {"user": str(i)}, 1, 2, 1, 1.0, 0, 0, Buckets(0, [1]), Buckets(0, [0]), 0, 1.0, 1.0
        )
        for i in range(3)
    ]
    (out,) = harness.process(Metric("sizes", "", "By", ExponentialHistogram(points, CUMULATIVE)))
    assert [p.attributes for p in out.data.data_points] == [{"user": "0"}]
    assert harness.counted("otel_monitoring_cardinality_dropped_points_total", "sizes") == 2


def test_each_resource_gets_its_own_overflow_series() -> None:
    harness = Harness({"limit": 1})
    data = MetricsData(
        [
            ResourceMetrics(
                Resource({"service.instance.id": worker}),
                [ScopeMetrics(InstrumentationScope("app"), [counter(users(3, value=value))], "")],
                "",
            )
            for worker, value in (("w1", 1.0), ("w2", 5.0))
        ]
    )
    out = harness.processor.process(data)
    for resource_metrics, value in zip(out.resource_metrics, (1.0, 5.0), strict=True):
        points = by_attributes(resource_metrics.scope_metrics[0].metrics[0])
        assert {k: p.value for k, p in points.items()} == {frozenset({("user", "u0")}): value, OVERFLOW: 2 * value}


def test_warns_once_per_metric_when_it_first_overflows(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness({"limit": 1})
    with caplog.at_level(logging.WARNING, logger="processors.cardinality"):
        harness.process(counter(users(3)))
        harness.process(counter(users(3)))
    assert [r.getMessage() for r in caplog.records] == [
        "metric requests passed its cardinality limit of 1 attribute sets; new sets go to the overflow series"
    ]


# --- overflow stays a valid cumulative series ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(["absent", "grow", "grow", "reset"]), st.integers(0, 5)), min_size=8, max_size=8
        ),
        min_size=50,
        max_size=60,
    )
)
def test_overflow_of_inputs_that_start_stop_and_reset_is_monotonic_and_equals_their_true_total(
    scenario: list[list[tuple[str, int]]],
) -> None:
    harness = Harness({"limit": 3, "expiry_seconds": 3600})
    starts, values = [0] * 8, [0] * 8
    admitted: set[str] = set()
    overflow_truth, last_overflow = 0, 0
    for actions in scenario:
        harness.clock.advance(10)
        points: list[NumberDataPoint] = []
        users_reported: list[str] = []
        for user, (action, amount) in enumerate(actions):
            if action == "absent":
                continue
            if action == "reset" or not starts[user]:
                starts[user], values[user] = harness.clock.now, 0
            values[user] += amount
            points.append(NumberDataPoint({"user": str(user)}, starts[user], harness.clock.now, values[user]))
            users_reported.append(str(user))
        if not points:
            continue
        (out,) = harness.process(Metric("requests", "", "1", Sum(points, CUMULATIVE, True)))
        emitted = by_attributes(out)
        for user_name, point in zip(users_reported, points, strict=True):
            if frozenset({("user", user_name)}) in emitted:
                admitted.add(user_name)
                assert emitted[frozenset({("user", user_name)})] is point
        assert len(admitted) <= 3
        overflowed_now = [user_name for user_name in users_reported if user_name not in admitted]
        # The truth for the overflow: every increase of every overflowed input, resets counted from zero.
        for user, (action, amount) in enumerate(actions):
            if action != "absent" and str(user) not in admitted:
                overflow_truth += amount
        if overflowed_now:
            assert emitted[OVERFLOW].value == overflow_truth
            assert emitted[OVERFLOW].value >= last_overflow
            last_overflow = emitted[OVERFLOW].value
        else:
            assert OVERFLOW not in emitted


# --- a burst of a million attribute sets --------------------------------------------------------------------


def test_a_million_distinct_sets_stay_within_the_limit_plus_one_in_output_and_state() -> None:
    # Cumulative counters, the hard case: overflowed inputs must be remembered to add up their increases.
    # 10,000 new sets every 40 s; the ones not seen for 60 s are forgotten, so slots and tracking free up.
    limit, batch_size = 2000, 10_000
    harness = Harness({"limit": limit, "expiry_seconds": 60, "overflow_tracking_limit": 20_000})
    pushed_total = passed_through_total = 0.0
    largest_state = 0
    for batch_number in range(100):
        first = batch_number * batch_size
        points = [
            NumberDataPoint({"route": "/items", "user": f"u{i}"}, 1, 2, float(i % 7 + 1))
            for i in range(first, first + batch_size)
        ]
        pushed_total += sum(point.value for point in points)
        (out,) = harness.process(Metric("requests", "", "1", Sum(points, CUMULATIVE, True)))
        emitted = by_attributes(out)
        assert len(emitted) <= limit + 1
        overflow = emitted.pop(OVERFLOW)
        passed_through_total += sum(point.value for point in emitted.values())
        # Every point either came out as itself or went into the overflow: nothing lost, nothing counted twice.
        assert overflow.value == pushed_total - passed_through_total
        largest_state = max(largest_state, harness.processor.series_count())
        harness.clock.advance(40)
    assert pushed_total == sum(i % 7 + 1 for i in range(1_000_000))
    assert harness.counted("otel_monitoring_cardinality_dropped_points_total", "requests") == 0
    # Remembered: at most `limit` admitted sets, and the overflowed inputs of the last 60 s (two batches, once
    # in the processor and once in its merger): bounded by the rate of new sets, not by the million.
    assert largest_state <= limit + 2 * 2 * batch_size + 1


def test_a_million_distinct_delta_sets_need_no_memory_beyond_the_admitted_ones() -> None:
    harness = Harness({"limit": 2000})
    pushed_total = 0.0
    for batch_number in range(100):
        first = batch_number * 10_000
        (out,) = harness.process(counter(users(10_000, first, value=1.0), temporality=DELTA))
        emitted = by_attributes(out)
        assert len(emitted) <= 2001
        pushed_total += 10_000
        if batch_number:
            assert emitted[OVERFLOW].value == 10_000  # every set of this batch is new and past the limit
        assert harness.processor.series_count() == 2000
    assert harness.counted("otel_monitoring_cardinality_overflow_points_total", "requests") == 1_000_000 - 2000


def test_past_the_tracking_limit_new_overflowed_cumulative_sets_are_dropped_and_counted_never_guessed() -> None:
    harness = Harness({"limit": 10, "overflow_tracking_limit": 100})
    (out,) = harness.process(counter(users(1000)))
    assert len(by_attributes(out)) == 11
    assert by_attributes(out)[OVERFLOW].value == 100  # the 100 tracked ones
    assert harness.counted("otel_monitoring_cardinality_dropped_points_total", "requests") == 890
    harness.clock.advance(1)
    (out,) = harness.process(counter(users(1000, value=3.0)))
    assert by_attributes(out)[OVERFLOW].value == 300  # the tracked ones grew by 2 each; the rest stay out
    assert harness.processor.series_count() <= 10 + 2 * 100 + 1


def test_tracked_series_gauge_follows_the_remembered_sets() -> None:
    harness = Harness({"limit": 5, "expiry_seconds": 60})
    harness.process(counter(users(8)))
    gauge = harness.registry.get("otel_monitoring_cardinality_tracked_series")
    assert gauge is not None
    assert gauge.labels().get() == 5 + 3  # type: ignore[union-attr]
    harness.clock.advance(120)
    harness.process()
    assert gauge.labels().get() == 0  # type: ignore[union-attr]


# --- expiry -------------------------------------------------------------------------------------------------


def test_after_expiry_a_metric_at_its_limit_admits_new_sets_again() -> None:
    harness = Harness({"limit": 3, "expiry_seconds": 60})
    (out,) = harness.process(counter(users(3)))
    assert OVERFLOW not in by_attributes(out)
    harness.clock.advance(30)
    (out,) = harness.process(counter(users(3, first=100)))
    assert set(by_attributes(out)) == {OVERFLOW}  # at the limit: new sets overflow
    harness.clock.advance(31)  # the first three sets have not been seen for 61 s; the overflowed ones for 31 s
    (out,) = harness.process(counter(users(3, first=200)))
    assert set(by_attributes(out)) == {frozenset({("user", f"u{i}")}) for i in range(200, 203)}


def test_sets_that_keep_reporting_never_expire() -> None:
    harness = Harness({"limit": 2, "expiry_seconds": 60})
    for _ in range(20):
        (out,) = harness.process(counter(users(2)))
        harness.clock.advance(50)
    (out,) = harness.process(counter(users(1, first=50)))
    assert set(by_attributes(out)) == {OVERFLOW}


def test_memory_is_released_once_everything_expires() -> None:
    harness = Harness({"limit": 100, "expiry_seconds": 60})
    harness.process(counter(users(1000)), counter(users(50), "other"))
    assert harness.processor.series_count() > 1000
    harness.clock.advance(61)
    harness.process()
    harness.clock.advance(61)  # the merger sweeps on its next merge; the processor on its next batch
    harness.process(counter(users(1, first=5000), "third"))
    assert harness.processor.series_count() == 1
