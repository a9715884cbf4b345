"""aggregate: attributes removed, colliding series merged into valid cumulative series across many batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from processors.aggregate import FACTORY, AggregateConfig, AggregateProcessor
from processors.component import ProcessorContext

SECOND = 1_000_000_000
CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
BOUNDS = [1.0, 5.0, 10.0]


class FakeClock:
    """Unix nanoseconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * SECOND

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def make_processor(raw: Mapping[str, Any] | None, clock: FakeClock | None = None) -> AggregateProcessor:
    context = ProcessorContext(registry=MetricsRegistry(), clock=clock or FakeClock(), component_id="aggregate")
    processor = FACTORY.create_from(dict(raw) if raw is not None else None, context)
    assert isinstance(processor, AggregateProcessor)
    return processor


def batch_of(*metrics: Metric, resource: Mapping[str, Any] | None = None) -> MetricsData:
    scope = ScopeMetrics(InstrumentationScope("app"), list(metrics), "")
    return MetricsData([ResourceMetrics(Resource(dict(resource or {"service.name": "api"})), [scope], "")])


def only_metric(data: MetricsData) -> Metric:
    (resource_metrics,) = data.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    (metric,) = scope_metrics.metrics
    return metric


def number_points(metric: Metric) -> dict[frozenset[tuple[str, Any]], float]:
    """Output value by attribute set; fails if one attribute set appears twice."""
    assert isinstance(metric.data, Sum | Gauge)
    result = {frozenset((point.attributes or {}).items()): point.value for point in metric.data.data_points}
    assert len(result) == len(metric.data.data_points), "one attribute set emitted twice"
    return result


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(attributes.items())


def cumulative_sum(points: Sequence[tuple[Mapping[str, Any], int, float]], name: str = "http.requests") -> Metric:
    """Points are (attributes, start time, value)."""
    data_points = [NumberDataPoint(dict(a), start, start + SECOND, value) for a, start, value in points]
    return Metric(name, "", "1", Sum(data_points, CUMULATIVE, True))


RULE = {"rules": [{"metrics": ["http.*"], "remove": ["user"]}]}


# --- config -------------------------------------------------------------------------------------------------


def test_default_config_is_valid_and_passes_everything_through() -> None:
    assert AggregateConfig().rules == []
    processor = make_processor(None)
    data = batch_of(cumulative_sum([({"user": "a"}, 1, 5)]))
    assert processor.process(data) is data


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"metrics": ["x"], "remove": ["a"], "keep": ["b"]}, "set only one of 'remove' or 'keep', not both"),
        ({"metrics": ["x"]}, "set one of 'remove' (attribute keys to drop) or 'keep' (the only keys to keep)"),
        ({"metrics": [], "remove": ["a"]}, "metrics: list at least one metric name or glob"),
    ],
)
def test_rejects_rules_that_are_not_exactly_one_of_remove_or_keep(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        AggregateConfig.model_validate({"rules": [rule]})
    (error,) = raised.value.errors()
    assert error["loc"] == ("rules", 0)
    assert error["msg"] == f"Value error, {message}"


@pytest.mark.parametrize(
    "raw",
    [
        {"rules": [{"metrics": ["x"], "remove": ["a"], "gauge_function": "median"}]},
        {"rules": [{"metrics": ["x"], "remove": ["a"], "unknown": 1}]},
        {"expiry_seconds": 0},
        {"rulez": []},
    ],
)
def test_rejects_unknown_keys_and_values(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AggregateConfig.model_validate(raw)


# --- pass-through -------------------------------------------------------------------------------------------


def test_metrics_matching_no_rule_are_the_same_objects() -> None:
    processor = make_processor(RULE)
    untouched = cumulative_sum([({"user": "a"}, 1, 5)], name="db.queries")
    matched = cumulative_sum([({"user": "a", "route": "/"}, 1, 5), ({"user": "b", "route": "/"}, 1, 2)])
    data = batch_of(untouched, matched)
    out = processor.process(data)
    assert out is not data
    metrics = out.resource_metrics[0].scope_metrics[0].metrics
    assert metrics[0] is untouched
    assert number_points(metrics[1]) == {key(route="/"): 7}
    assert processor.process(batch_of(untouched)).resource_metrics[0].scope_metrics[0].metrics[0] is untouched


def test_a_matched_metric_without_the_removed_attributes_is_the_same_object() -> None:
    processor = make_processor(RULE)
    data = batch_of(cumulative_sum([({"route": "/a"}, 1, 5), ({"route": "/b"}, 1, 2)]))
    assert processor.process(data) is data


def test_the_first_matching_rule_applies() -> None:
    processor = make_processor(
        {
            "rules": [
                {"metrics": ["http.server.*"], "keep": ["route"]},
                {"metrics": ["http.*"], "remove": ["route"]},
            ]
        }
    )
    points = [({"route": "/", "user": "a"}, 1, 1), ({"route": "/", "user": "b"}, 1, 2)]
    out = processor.process(batch_of(cumulative_sum(points, "http.server.requests"), cumulative_sum(points)))
    first, second = out.resource_metrics[0].scope_metrics[0].metrics
    assert number_points(first) == {key(route="/"): 3}
    assert number_points(second) == {key(user="a"): 1, key(user="b"): 2}


def test_rules_apply_to_many_metric_names_beyond_the_lookup_cache() -> None:
    processor = make_processor(RULE)
    for number in range(5000):  # more names than the rule cache holds: it starts over, answers stay right
        name = f"http.m{number}" if number % 2 else f"db.m{number}"
        metric = cumulative_sum([({"user": "a", "route": "/"}, 1, 1)], name)
        out = only_metric(processor.process(batch_of(metric)))
        assert (out is metric) == (not number % 2)


def test_exponential_histograms_pass_through_untouched() -> None:
    point = ExponentialHistogramDataPoint(
        {"user": "a"}, 1, 2, 1, 1.0, 0, 0, Buckets(0, [1]), Buckets(0, [0]), 0, 1.0, 1.0
    )
    metric = Metric("http.sizes", "", "By", ExponentialHistogram([point], CUMULATIVE))
    data = batch_of(metric)
    assert make_processor(RULE).process(data) is data


# --- merging ------------------------------------------------------------------------------------------------


def test_colliding_series_are_merged_into_one_point_per_output_set() -> None:
    processor = make_processor({"rules": [{"metrics": ["*"], "keep": ["route"]}]})
    points = [({"route": f"/{i % 3}", "user": str(i), "pod": str(i % 2)}, 1, 1) for i in range(30)]
    out = only_metric(processor.process(batch_of(cumulative_sum(points))))
    assert number_points(out) == {key(route="/0"): 10, key(route="/1"): 10, key(route="/2"): 10}


def test_keep_nothing_sums_everything_into_one_series() -> None:
    processor = make_processor({"rules": [{"metrics": ["*"], "keep": []}]})
    out = only_metric(processor.process(batch_of(cumulative_sum([({"a": str(i)}, 1, i) for i in range(10)]))))
    assert number_points(out) == {frozenset(): 45}


def test_sums_delta_points_per_batch_without_keeping_state() -> None:
    processor = make_processor(RULE)
    for step in range(1, 4):
        points = [NumberDataPoint({"user": str(u), "route": "/"}, step, step + 1, step * u) for u in range(4)]
        out = only_metric(processor.process(batch_of(Metric("http.bytes", "", "By", Sum(points, DELTA, True)))))
        assert isinstance(out.data, Sum) and out.data.aggregation_temporality is DELTA
        assert number_points(out) == {key(route="/"): step * 6}
    assert processor.series_count() == 0


def test_sums_delta_histograms_bucket_by_bucket() -> None:
    processor = make_processor(RULE)
    points = [
        HistogramDataPoint({"user": "a"}, 1, 2, 3, 7.0, [1, 2, 0, 0], BOUNDS, 1.0, 4.0),
        HistogramDataPoint({"user": "b"}, 1, 2, 2, 30.0, [0, 0, 1, 1], BOUNDS, 6.0, 24.0),
    ]
    out = only_metric(processor.process(batch_of(Metric("http.latency", "", "s", Histogram(points, DELTA)))))
    assert isinstance(out.data, Histogram)
    (point,) = out.data.data_points
    assert (point.count, list(point.bucket_counts), point.sum, point.min, point.max) == (
        5,
        [1, 2, 1, 1],
        37.0,
        1.0,
        24.0,
    )


@pytest.mark.parametrize(
    ("function", "expected"), [("sum", 12.0), ("avg", 4.0), ("min", 1.0), ("max", 8.0), ("last", 3.0)]
)
def test_combines_gauges_by_the_configured_function(function: str, expected: float) -> None:
    processor = make_processor({"rules": [{"metrics": ["queue.*"], "remove": ["worker"], "gauge_function": function}]})
    readings = [("1", 10, 8.0), ("2", 30, 3.0), ("3", 20, 1.0)]  # (worker, time, value): worker 2 is the latest
    points = [NumberDataPoint({"worker": worker, "queue": "q"}, 0, time, value) for worker, time, value in readings]
    out = only_metric(processor.process(batch_of(Metric("queue.depth", "", "1", Gauge(points)))))
    assert isinstance(out.data, Gauge)
    assert number_points(out) == {key(queue="q"): expected}


def test_workers_reporting_equal_attributes_are_aggregated_separately() -> None:
    # Two resources (two workers behind one sidecar) each report user=a; before the merger told origins
    # apart, their values alternated on one input and every drop was counted as a reset.
    processor = make_processor(RULE)
    for step in range(1, 6):
        data = MetricsData(
            [
                ResourceMetrics(
                    Resource({"service.instance.id": worker}),
                    [
                        ScopeMetrics(
                            InstrumentationScope("app"), [cumulative_sum([({"user": "a"}, 1, rate * step)])], ""
                        )
                    ],
                    "",
                )
                for worker, rate in (("w1", 100), ("w2", 1))
            ]
        )
        out = processor.process(data)
        totals = [number_points(r.scope_metrics[0].metrics[0]) for r in out.resource_metrics]
        assert totals == [{frozenset(): 100 * step}, {frozenset(): step}]


# --- many collection cycles: inputs start, stop and reset ---------------------------------------------------


@dataclass
class SimulatedInput:
    """One input series as a worker's SDK would report it: cumulative since ``start``."""

    attributes: dict[str, str]
    start: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    total_sum: int = 0
    live: bool = False

    @property
    def count(self) -> int:
        return sum(self.counts)


# Per input and batch: 0 absent, 1 report with some increase, 2 reset (new start time, counting from zero
# again) and report. An input that has never reported starts on its first report.
actions = st.lists(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 1, 1, 2]), st.integers(0, 3), st.integers(0, len(BOUNDS))),
        min_size=6,
        max_size=6,
    ),
    min_size=50,
    max_size=70,
)


def run_scenario(kind: str, scenario: list[list[tuple[int, int, int]]]) -> None:
    clock = FakeClock()
    processor = make_processor({"rules": [{"metrics": ["*"], "remove": ["user"]}], "expiry_seconds": 3600}, clock)
    inputs = [SimulatedInput({"route": f"/{i % 2}", "user": f"u{i}"}) for i in range(6)]
    # The truth: per output (route), everything ever counted, bucket by bucket.
    true_counts = {route: [0] * (len(BOUNDS) + 1) for route in ("/0", "/1")}
    true_sums = dict.fromkeys(("/0", "/1"), 0)
    last_emitted: dict[str, list[int]] = {}
    for actions_now in scenario:
        clock.advance(10)
        reported: list[SimulatedInput] = []
        for series, (action, amount, bucket) in zip(inputs, actions_now, strict=True):
            if action == 0:
                continue
            if action == 2 or not series.live:
                series.start, series.counts, series.total_sum, series.live = clock.now, [0] * (len(BOUNDS) + 1), 0, True
            series.counts[bucket] += amount
            series.total_sum += amount * (bucket + 1)
            route = series.attributes["route"]
            true_counts[route][bucket] += amount
            true_sums[route] += amount * (bucket + 1)
            reported.append(series)
        if kind == "counter":
            metric = Metric(
                "requests",
                "",
                "1",
                Sum(
                    [NumberDataPoint(dict(s.attributes), s.start, clock.now, s.count) for s in reported],
                    CUMULATIVE,
                    True,
                ),
            )
        else:
            points = [
                HistogramDataPoint(
                    dict(s.attributes), s.start, clock.now, s.count, s.total_sum, list(s.counts), BOUNDS, 0.0, 4.0
                )
                for s in reported
            ]
            metric = Metric("latency", "", "s", Histogram(points, CUMULATIVE))
        if not reported:
            continue
        out = only_metric(processor.process(batch_of(metric)))
        assert isinstance(out.data, Sum | Histogram)
        emitted = [({k: str(v) for k, v in (point.attributes or {}).items()}, point) for point in out.data.data_points]
        routes = [attributes["route"] for attributes, _ in emitted]
        assert len(routes) == len(set(routes)), "one output series emitted twice in a batch"
        assert set(routes) == {s.attributes["route"] for s in reported}
        for attributes, point in emitted:
            route = attributes["route"]
            assert attributes == {"route": route}
            if isinstance(point, NumberDataPoint):
                now = [int(point.value)]
                assert point.value == sum(true_counts[route])
            else:
                now = [int(c) for c in point.bucket_counts]
                assert now == true_counts[route]
                assert point.count == sum(true_counts[route])
                assert point.sum == true_sums[route]
            before = last_emitted.get(route, [0] * len(now))
            assert all(b <= a for a, b in zip(now, before, strict=True)), "output went down: a counter reset"
            last_emitted[route] = now


@settings(max_examples=40, deadline=None)
@given(actions)
def test_cumulative_counter_output_is_monotonic_and_equals_the_true_total(
    scenario: list[list[tuple[int, int, int]]],
) -> None:
    run_scenario("counter", scenario)


@settings(max_examples=40, deadline=None)
@given(actions)
def test_cumulative_histogram_output_is_monotonic_per_bucket_and_equals_the_true_total(
    scenario: list[list[tuple[int, int, int]]],
) -> None:
    run_scenario("histogram", scenario)


def test_memory_is_bounded_by_expiry_while_inputs_churn() -> None:
    clock = FakeClock()
    processor = make_processor({"rules": [{"metrics": ["*"], "remove": ["request"]}], "expiry_seconds": 60}, clock)
    sizes = []
    for step in range(300):  # 100 new inputs every 10 s, each reported once
        points = [({"request": f"{step}-{i}", "route": "/"}, clock.now, 1) for i in range(100)]
        out = only_metric(processor.process(batch_of(cumulative_sum(points))))
        assert number_points(out) == {key(route="/"): 100 * (step + 1)}
        sizes.append(processor.series_count())
        clock.advance(10)
    # About 60 s of inputs (plus up to a quarter of the expiry before a sweep) and the one output.
    assert max(sizes) <= 100 * 9 + 1
    assert max(sizes[-50:]) <= max(sizes[:50])  # flat, not growing with the 30,000 inputs seen
