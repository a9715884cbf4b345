"""SeriesMerger: re-aggregation that keeps outputs valid cumulative series across batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from processors._merge import SeriesMerger, attributes_key

SECOND = 1_000_000_000
CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA


class FakeClock:
    """Unix nanoseconds that only move when a test says so."""

    def __init__(self, start: int = 1_700_000_000 * SECOND) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def counter(points: Sequence[tuple[Mapping[str, Any], int, float]], *, monotonic: bool = True) -> Metric:
    """A cumulative sum; each point is (attributes, start time, value)."""
    data_points = [NumberDataPoint(dict(attributes), start, start + 10, value) for attributes, start, value in points]
    return Metric("requests", "", "1", Sum(data_points, CUMULATIVE, monotonic))


def values(metric: Metric | None) -> dict[frozenset[tuple[str, Any]], float]:
    assert metric is not None
    assert isinstance(metric.data, Sum | Gauge)
    return {attributes_key(point.attributes or {}): point.value for point in metric.data.data_points}


def to(attributes: Mapping[str, Any]) -> frozenset[tuple[str, Any]]:
    return attributes_key(attributes)


def regroup_all(metric: Metric, attributes: Mapping[str, Any]) -> list[tuple[Any, Mapping[str, Any]]]:
    assert isinstance(metric.data, Sum | Gauge | Histogram)
    return [(point, attributes) for point in metric.data.data_points]


def test_attributes_key_ignores_key_order_and_accepts_sequence_values() -> None:
    assert attributes_key({"a": 1, "b": "x"}) == attributes_key({"b": "x", "a": 1})
    assert attributes_key({"tags": ["a", "b"]}) == attributes_key({"tags": ["a", "b"]})


def test_sums_increases_of_inputs_that_start_stop_and_reset() -> None:
    merger = SeriesMerger(clock=FakeClock())
    total: dict[str, Any] = {}
    a, b = {"user": "a"}, {"user": "b"}

    out = merger.merge(counter([(a, 1, 5), (b, 1, 7)]), regroup_all(counter([(a, 1, 5), (b, 1, 7)]), total))
    assert values(out) == {to(total): 12}
    batch = counter([(a, 1, 9)])  # b stopped reporting: its 7 must not be taken back
    assert values(merger.merge(batch, regroup_all(batch, total))) == {to(total): 16}
    batch = counter([(a, 50, 2), (b, 1, 8)])  # a restarted (new start time), b came back
    assert values(merger.merge(batch, regroup_all(batch, total))) == {to(total): 19}
    batch = counter([(a, 50, 1)])  # a value below the last one is a reset even with the same start time
    assert values(merger.merge(batch, regroup_all(batch, total))) == {to(total): 20}


def test_keeps_inputs_from_two_origins_apart_when_their_attributes_are_equal() -> None:
    # Bug fixed in _merge.py: state was keyed by metric name only, so the same metric with the same
    # attributes from two resources (two workers behind one sidecar) was taken for ONE input whose value
    # jumped between the workers' values: every drop looked like a reset and was counted again.
    merger = SeriesMerger(clock=FakeClock())
    worker_1, worker_2 = "worker-1", "worker-2"
    outputs: dict[str, float] = {}
    for step in range(1, 4):
        for origin, value in ((worker_1, 100 * step), (worker_2, 1 * step)):
            batch = counter([({"route": "/a", "user": "u"}, 1, value)])
            out = merger.merge(batch, regroup_all(batch, {"route": "/a"}), origin=origin)
            outputs[origin] = values(out)[to({"route": "/a"})]
    assert outputs == {worker_1: 300, worker_2: 3}
    assert merger.tracks(counter([]), origin=worker_1)
    assert not merger.tracks(counter([]), origin="worker-3")


def test_an_input_tag_keeps_inputs_with_equal_attributes_apart_within_one_merge() -> None:
    # Two scopes (meters) merged in one call under one origin: without a tag their points, with equal
    # attributes and different start times, were one input that restarted at every batch and was counted again.
    merger = SeriesMerger(clock=FakeClock())
    attributes, total = {"route": "/a"}, {"route": "/a"}
    for step in range(1, 5):
        first, second = NumberDataPoint(attributes, 111, 200, 10 * step), NumberDataPoint(attributes, 222, 200, step)
        batch = Metric("requests", "", "1", Sum([first, second], CUMULATIVE, True))
        out = merger.merge(batch, [(first, total, ("facade", "")), (second, total, ("sdk", ""))], origin="resource")
        assert values(out) == {to(total): 11 * step}
    # Tagged and untagged items mix, the untagged ones being one more input (tag None).
    third = NumberDataPoint(attributes, 333, 300, 5)
    batch = Metric("requests", "", "1", Sum([third], CUMULATIVE, True))
    assert values(merger.merge(batch, [(third, total)], origin="resource")) == {to(total): 49}


def test_an_input_tag_keeps_histogram_inputs_apart_and_is_ignored_by_deltas_and_gauges() -> None:
    merger = SeriesMerger(clock=FakeClock())
    for step in range(1, 4):
        points = [
            HistogramDataPoint({"user": "u"}, start, 200, step, float(step), [step, 0], [1.0], 0.5, 0.5)
            for start in (111, 222)
        ]
        batch = Metric("latency", "", "s", Histogram(points, CUMULATIVE))
        out = merger.merge(batch, [(point, {}, tag) for point, tag in zip(points, ("a", "b"), strict=True)])
        assert out is not None and isinstance(out.data, Histogram)
        (point,) = out.data.data_points
        assert (point.count, list(point.bucket_counts), point.sum) == (2 * step, [2 * step, 0], 2.0 * step)
    deltas = [NumberDataPoint({"user": "u"}, 1, 2, value) for value in (3, 4)]
    metric = Metric("requests", "", "1", Sum(deltas, DELTA, True))
    assert values(merger.merge(metric, [(deltas[0], {}, "a"), (deltas[1], {}, "b")])) == {to({}): 7}
    gauges = [NumberDataPoint({"user": "u"}, 0, time, value) for time, value in ((1, 2.0), (2, 4.0))]
    metric = Metric("temperature", "", "1", Gauge(gauges))
    assert values(merger.merge(metric, [(gauges[0], {}, "a"), (gauges[1], {}, "b")], "avg")) == {to({}): 3.0}


def test_an_input_moved_to_another_output_leaves_its_past_where_it_was() -> None:
    # Bug fixed in _merge.py: on a move the input was marked "restarted", so its whole cumulative
    # value was added to the new output while the old output kept it too: counted twice.
    merger = SeriesMerger(clock=FakeClock())
    x, y = {"group": "x"}, {"group": "y"}
    batch = counter([({"user": "a"}, 1, 10)])
    assert values(merger.merge(batch, regroup_all(batch, x))) == {to(x): 10}
    batch = counter([({"user": "a"}, 1, 15)])
    assert values(merger.merge(batch, regroup_all(batch, y))) == {to(y): 5}  # only what came after the move


def test_an_updown_input_that_restarts_replaces_its_contribution() -> None:
    # Bug fixed in _merge.py: a restarted UpDownCounter input (a worker restarting with 0 requests in
    # flight) added its new value on top of its old one, so the output kept the dead worker's level forever.
    merger = SeriesMerger(clock=FakeClock())
    total: dict[str, Any] = {}
    batch = counter([({"worker": "1"}, 1, 5), ({"worker": "2"}, 1, 3)], monotonic=False)
    assert values(merger.merge(batch, regroup_all(batch, total))) == {to(total): 8}
    batch = counter([({"worker": "1"}, 99, 0), ({"worker": "2"}, 1, 3)], monotonic=False)
    assert values(merger.merge(batch, regroup_all(batch, total))) == {to(total): 3}
    batch = counter([({"worker": "1"}, 99, 2), ({"worker": "2"}, 1, 1)], monotonic=False)
    assert values(merger.merge(batch, regroup_all(batch, total))) == {to(total): 3}


def test_an_updown_input_that_moves_takes_its_level_with_it() -> None:
    merger = SeriesMerger(clock=FakeClock())
    x, y = {"group": "x"}, {"group": "y"}
    batch = counter([({"worker": "1"}, 1, 5), ({"worker": "2"}, 1, 3)], monotonic=False)
    assert values(merger.merge(batch, regroup_all(batch, x))) == {to(x): 8}
    first, second = (NumberDataPoint({"worker": worker}, 1, 11, value) for worker, value in (("1", 6), ("2", 3)))
    batch = Metric("requests", "", "1", Sum([first, second], CUMULATIVE, False))
    regrouped: list[tuple[NumberDataPoint | HistogramDataPoint, Mapping[str, Any]]] = [(first, y), (second, x)]
    assert values(merger.merge(batch, regrouped)) == {to(y): 6, to(x): 3}


def test_an_expired_updown_input_is_taken_out_of_its_output() -> None:
    clock = FakeClock()
    merger = SeriesMerger(clock=clock, expiry_seconds=60)
    total: dict[str, Any] = {}
    batch = counter([({"worker": "1"}, 1, 5), ({"worker": "2"}, 1, 3)], monotonic=False)
    merger.merge(batch, regroup_all(batch, total))
    for _ in range(4):  # worker 1 goes away; worker 2 keeps reporting
        clock.advance(30)
        batch = counter([({"worker": "2"}, 1, 3)], monotonic=False)
        out = merger.merge(batch, regroup_all(batch, total))
    assert values(out) == {to(total): 3}


def test_memory_is_bounded_by_expiry() -> None:
    clock = FakeClock()
    merger = SeriesMerger(clock=clock, expiry_seconds=60)
    for batch_number in range(200):
        batch = counter([({"request": f"{batch_number}-{i}"}, 1, 1) for i in range(50)])
        merger.merge(batch, regroup_all(batch, {}))
        clock.advance(10)
        # 60 s of inputs (6 batches of 50) plus at most a quarter expiry before the next sweep, plus the output.
        assert merger.series_count() <= 50 * (6 + 2) + 1
    clock.advance(120)
    merger.merge(Metric("other", "", "1", Gauge([])), [])  # any merge sweeps
    assert merger.series_count() == 0
    assert not merger.tracks(counter([]))


def test_merges_cumulative_histograms_bucket_by_bucket() -> None:
    merger = SeriesMerger(clock=FakeClock())

    def histogram(points: Sequence[tuple[str, int, list[int], float]]) -> Metric:
        data_points = [
            HistogramDataPoint({"user": user}, start, start + 10, sum(counts), total, counts, [1.0, 5.0], 0.5, 9.0)
            for user, start, counts, total in points
        ]
        return Metric("latency", "", "s", Histogram(data_points, CUMULATIVE))

    batch = histogram([("a", 1, [1, 2, 0], 6.0), ("b", 1, [0, 1, 1], 9.0)])
    out = merger.merge(batch, regroup_all(batch, {}))
    assert out is not None and isinstance(out.data, Histogram)
    (point,) = out.data.data_points
    assert (point.count, list(point.bucket_counts), point.sum) == (5, [1, 3, 1], 15.0)
    batch = histogram([("a", 7, [1, 0, 0], 0.5), ("b", 1, [0, 2, 1], 12.0)])  # a restarted, b grew
    out = merger.merge(batch, regroup_all(batch, {}))
    assert out is not None and isinstance(out.data, Histogram)
    (point,) = out.data.data_points
    assert (point.count, list(point.bucket_counts), point.sum) == (7, [2, 4, 1], 18.5)


def test_sums_delta_points_per_output_within_a_batch() -> None:
    merger = SeriesMerger(clock=FakeClock())
    points = [NumberDataPoint({"user": str(i)}, 1, 2, i) for i in range(5)]
    metric = Metric("requests", "", "1", Sum(points, DELTA, True))
    out = merger.merge(metric, regroup_all(metric, {}))
    assert values(out) == {to({}): 10}
    assert not merger.tracks(metric)  # deltas need no memory


@pytest.mark.parametrize(
    ("function", "expected"), [("sum", 9.0), ("avg", 3.0), ("min", 1.0), ("max", 5.0), ("last", 3.0)]
)
def test_combines_gauges_by_the_chosen_function(function: Any, expected: float) -> None:
    merger = SeriesMerger(clock=FakeClock())
    points = [
        NumberDataPoint({"user": str(i)}, 0, time, value) for i, (time, value) in enumerate([(1, 5), (3, 3), (2, 1)])
    ]
    metric = Metric("temperature", "", "1", Gauge(points))
    assert values(merger.merge(metric, regroup_all(metric, {}), function)) == {to({}): expected}


def test_expire_forgets_old_series_even_when_no_merge_comes() -> None:
    # Bug fixed in _merge.py: expiry ran only inside merge(), so a caller whose merges stop (a metric that
    # no longer overflows its cardinality limit) kept the merger's state for ever.
    clock = FakeClock()
    merger = SeriesMerger(clock=clock, expiry_seconds=60)
    batch = counter([({"user": str(i)}, 1, 1) for i in range(100)])
    merger.merge(batch, regroup_all(batch, {}))
    clock.advance(30)
    merger.expire()
    assert merger.series_count() == 101  # seen 30 s ago: kept
    clock.advance(31)
    merger.expire()
    assert merger.series_count() == 0
    assert not merger.tracks(batch)
