"""Stateful re-aggregation: many input series into fewer output series that stay valid.

Used wherever attributes are removed or rewritten (``aggregate``, ``sanitize`` when two values become
the same marker, ``cardinality`` when new sets go to the overflow series). Summing the current
cumulative values of the inputs is wrong as soon as an input stops, restarts or resets: the sum
drops and Prometheus reads a counter reset, or two points come out for one series (the failure of
opentelemetry-collector-contrib issue 40808). Instead the merger remembers each input's last value,
adds each input's *increase* since the previous batch to its output, and so emits one monotonic
cumulative series per output whose value is the true total.

Rules, per input series (one attribute set of one metric):
- first sight, a new start time, or (monotonic data) a value below the last one: the input (re)started,
  so its whole current value is its increase;
- otherwise the increase is the difference from the last value;
- an input not seen for ``expiry`` is forgotten; for a non-monotonic sum (UpDownCounter) its last value
  is taken out of its output, since what it counted is gone. For the same reason a non-monotonic input that
  restarts replaces its contribution instead of adding to it;
- an input that moves to another output (a rule or a limit changed) leaves its past where it was and
  brings only its later increases (a non-monotonic input takes its level with it).
Inputs are told apart by their attributes *and* their origin (the caller's key for the resource and
scope the metric came from): two workers reporting equal attributes are two inputs. A caller that merges
points from several sources into one call (one origin) tells them apart with an input tag, an optional third
element of each regrouped item (e.g. the instrumentation scope): equal attributes with two tags are two inputs.
Delta inputs need no memory: their points are summed per output within the batch. Gauges are combined
within the batch by the chosen function.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal, NoReturn

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

__all__ = ["AttributeSet", "GaugeFunction", "SeriesMerger", "attributes_key", "origin_of"]

GaugeFunction = Literal["sum", "avg", "min", "max", "last"]
AttributesKey = frozenset[tuple[str, Hashable]]
Point = NumberDataPoint | HistogramDataPoint
# (point, new attributes) or (point, new attributes, input tag): see ``SeriesMerger.merge``.
Regrouped = Iterable[tuple[Point, Mapping[str, Any]] | tuple[Point, Mapping[str, Any], Hashable]]


def origin_of(resource_metrics: ResourceMetrics, scope_metrics: ScopeMetrics) -> Hashable:
    """Where a metric came from, for ``merge(origin=...)``: equal attributes from two workers are two inputs."""
    scope = scope_metrics.scope
    return (
        attributes_key(resource_metrics.resource.attributes),
        scope.name,
        scope.version or "",
        scope.schema_url or "",
    )


def attributes_key(attributes: Mapping[str, Any]) -> AttributesKey:
    """A hashable identity for an attribute set, whatever the order of its keys."""
    if type(attributes) is AttributeSet:
        return attributes.key()
    try:
        return frozenset(attributes.items())
    except TypeError:  # sequence values (OpenTelemetry allows them) are lists
        return frozenset((key, tuple(value) if isinstance(value, list) else value) for key, value in attributes.items())


_TOKENS = itertools.count(1)


class AttributeSet(dict[str, Any]):
    """An attribute dict that stays as it is, shared by every point of one series, carrying a ``token``.

    The sidecar's decoder makes one per distinct attribute set and hands the same object to every point of
    that series, request after request. Processors and exporters then do their per-set work once and find it
    again by ``token`` (an int never given to another set in this process, so a cached result can never be
    mistaken for another set's, even once this object is gone), which is what lets the sidecar reach its
    throughput target (issue 5: caches keyed by attribute set). Any other mapping still works everywhere; it
    just takes the slower path. Mutating methods raise ``TypeError``: a cached result must stay true.

    >>> attributes = AttributeSet({"route": "/"})
    >>> attributes == {"route": "/"}, attributes.token != AttributeSet({"route": "/"}).token
    (True, True)
    >>> attributes.key() == attributes_key({"route": "/"})
    True
    """

    __slots__ = ("_key", "token")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        dict.__init__(self, *args, **kwargs)
        self.token = next(_TOKENS)
        self._key: AttributesKey | None = None

    def key(self) -> AttributesKey:
        """``attributes_key(self)``, computed once."""
        key = self._key
        if key is None:
            try:
                key = frozenset(dict.items(self))
            except TypeError:
                key = frozenset((k, tuple(v) if isinstance(v, list) else v) for k, v in dict.items(self))
            self._key = key
        return key

    def __reduce__(self) -> tuple[Any, ...]:
        # copy, deepcopy and pickle rebuild through __init__ (the default would set items one by one).
        return (AttributeSet, (dict(self),))

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("an AttributeSet cannot be changed: make a new dict (dict(attributes)) instead")

    __setitem__ = __delitem__ = __ior__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable


class _Input:
    __slots__ = ("counts", "last_seen", "output", "start", "sum", "value")

    def __init__(self, start: int, output: Hashable) -> None:
        self.start = start
        self.output = output
        self.value: float = 0
        self.counts: list[int] = []
        self.sum: float = 0
        self.last_seen = 0


class _Output:
    __slots__ = ("attributes", "bounds", "counts", "last_seen", "max", "min", "start", "sum", "value")

    def __init__(self, attributes: Mapping[str, Any], start: int, bounds: Sequence[float] = ()) -> None:
        self.attributes = dict(attributes)
        self.start = start
        self.value: float = 0
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(bounds) + 1) if bounds else []
        self.sum: float = 0
        self.min = float("inf")
        self.max = float("-inf")
        self.last_seen = 0


class _MetricState:
    __slots__ = ("inputs", "outputs")

    def __init__(self) -> None:
        self.inputs: dict[Hashable, _Input] = {}
        self.outputs: dict[Hashable, _Output] = {}


class SeriesMerger:
    """Merges the points of a metric by new attribute sets, remembering inputs across batches.

    ``clock`` gives Unix nanoseconds; ``expiry_seconds`` bounds memory: series not seen for that long
    are forgotten.
    """

    def __init__(self, *, clock: Callable[[], int], expiry_seconds: float = 300.0) -> None:
        self._clock = clock
        self._expiry_ns = int(expiry_seconds * 1e9)
        self._metrics: dict[tuple[Hashable, str, str, type], _MetricState] = {}
        self._last_sweep = 0

    def tracks(self, metric: Metric, origin: Hashable = None) -> bool:
        """Whether earlier batches of this metric went through the merger (later ones must too)."""
        return _metric_key(metric, origin) in self._metrics

    def series_count(self) -> int:
        """Input and output series remembered, over all metrics."""
        return sum(len(state.inputs) + len(state.outputs) for state in self._metrics.values())

    def expire(self) -> None:
        """Forget series not seen for ``expiry_seconds``; ``merge`` does this too, but a caller whose merges
        stop (a metric that no longer overflows) calls this so that the state does not outlive its use."""
        self._sweep(self._clock())

    def merge(
        self, metric: Metric, regrouped: Regrouped, gauge_function: GaugeFunction = "last", origin: Hashable = None
    ) -> Metric | None:
        """The metric with its points merged by their new attributes; None when no point is left.

        ``origin`` identifies where the metric came from (resource and instrumentation scope): the same
        metric with the same attributes from two origins is two inputs, not one whose value jumps.
        Each item of ``regrouped`` is ``(point, new attributes)`` or ``(point, new attributes, input tag)``:
        the tag (any hashable; None when absent) tells apart inputs with equal attributes in one call, such as
        points of two instrumentation scopes merged under one origin. Only cumulative sums and histograms,
        which remember their inputs, use it.
        """
        now = self._clock()
        self._sweep(now)
        data = metric.data
        if isinstance(data, Gauge):
            gauge_points = _combine_gauges(regrouped, gauge_function)
            return _with_data(metric, Gauge(gauge_points)) if gauge_points else None
        if isinstance(data, Sum):
            if data.aggregation_temporality is AggregationTemporality.DELTA:
                sum_points = _sum_deltas(regrouped)
            else:
                sum_points = self._merge_cumulative_sums(metric, origin, regrouped, data.is_monotonic, now)
            if not sum_points:
                return None
            return _with_data(metric, Sum(sum_points, data.aggregation_temporality, data.is_monotonic))
        if isinstance(data, Histogram):
            if data.aggregation_temporality is AggregationTemporality.DELTA:
                histogram_points = _sum_histogram_deltas(regrouped)
            else:
                histogram_points = self._merge_cumulative_histograms(metric, origin, regrouped, now)
            return (
                _with_data(metric, Histogram(histogram_points, data.aggregation_temporality))
                if histogram_points
                else None
            )
        return metric  # exponential histograms and future types pass through untouched

    def _state(self, metric: Metric, origin: Hashable) -> _MetricState:
        key = _metric_key(metric, origin)
        state = self._metrics.get(key)
        if state is None:
            state = self._metrics[key] = _MetricState()
        return state

    def _merge_cumulative_sums(
        self, metric: Metric, origin: Hashable, regrouped: Regrouped, monotonic: bool, now: int
    ) -> list[NumberDataPoint]:
        state = self._state(metric, origin)
        touched: dict[Hashable, int] = {}
        for point, attributes, tag in _tagged(regrouped):
            assert isinstance(point, NumberDataPoint)  # a Sum holds only number points
            output_key = attributes_key(attributes)
            source = state.inputs.get(input_key := (tag, attributes_key(point.attributes or {})))
            restarted = (
                source is None
                or source.start != point.start_time_unix_nano
                or (monotonic and point.value < source.value)
            )
            if source is None:
                source = state.inputs[input_key] = _Input(point.start_time_unix_nano, output_key)
            elif not monotonic:
                # An up-down count is a level, not a total: the output holds the sum of its inputs' current
                # levels, so a restarted input's old level goes (a restarted worker has 0 requests in flight)
                # and a moved input takes its level along.
                old_output = state.outputs.get(source.output)
                if old_output is not None:
                    old_output.value -= source.value
                source.output = output_key
                restarted = True
            elif source.output != output_key:
                # The input now maps elsewhere (a limit was raised, a rule changed): its past stays where it
                # was and only its later increases go to the new output.
                source.output = output_key
            increase = point.value if restarted else point.value - source.value
            source.start, source.value, source.last_seen = point.start_time_unix_nano, point.value, now
            output = state.outputs.get(output_key)
            if output is None:
                output = state.outputs[output_key] = _Output(attributes, point.start_time_unix_nano)
            output.value += increase
            output.last_seen = now
            touched[output_key] = max(touched.get(output_key, 0), point.time_unix_nano)
        return [
            NumberDataPoint(state.outputs[key].attributes, state.outputs[key].start, time, state.outputs[key].value)
            for key, time in touched.items()
        ]

    def _merge_cumulative_histograms(
        self, metric: Metric, origin: Hashable, regrouped: Regrouped, now: int
    ) -> list[HistogramDataPoint]:
        state = self._state(metric, origin)
        touched: dict[Hashable, int] = {}
        for point, attributes, tag in _tagged(regrouped):
            assert isinstance(point, HistogramDataPoint)  # a Histogram holds only histogram points
            bounds = tuple(point.explicit_bounds)
            output_key = (attributes_key(attributes), bounds)  # only equal bounds merge bucket by bucket
            source = state.inputs.get(input_key := (tag, attributes_key(point.attributes or {}), bounds))
            restarted = source is None or source.start != point.start_time_unix_nano or point.count < source.value
            if source is None:
                source = state.inputs[input_key] = _Input(point.start_time_unix_nano, output_key)
            elif source.output != output_key:
                source.output = output_key  # as for sums: the past stays, later increases move
            counts = list(point.bucket_counts)
            if restarted:
                count_increase, bucket_increases, sum_increase = point.count, counts, point.sum
            else:
                count_increase = point.count - int(source.value)
                bucket_increases = [now_count - before for now_count, before in zip(counts, source.counts, strict=True)]
                sum_increase = point.sum - source.sum
            source.start, source.value, source.counts, source.sum = (
                point.start_time_unix_nano,
                point.count,
                counts,
                point.sum,
            )
            source.last_seen = now
            output = state.outputs.get(output_key)
            if output is None:
                output = state.outputs[output_key] = _Output(attributes, point.start_time_unix_nano, bounds)
            output.value += count_increase
            output.counts = [total + more for total, more in zip(output.counts, bucket_increases, strict=True)]
            output.sum += sum_increase
            if point.count:
                output.min = min(output.min, point.min)
                output.max = max(output.max, point.max)
            output.last_seen = now
            touched[output_key] = max(touched.get(output_key, 0), point.time_unix_nano)
        points = []
        for key, time in touched.items():
            out = state.outputs[key]
            minimum, maximum = (out.min, out.max) if out.value else (0.0, 0.0)
            points.append(
                HistogramDataPoint(
                    out.attributes,
                    out.start,
                    time,
                    int(out.value),
                    out.sum,
                    list(out.counts),
                    list(out.bounds),
                    minimum,
                    maximum,
                )
            )
        return points

    def _sweep(self, now: int) -> None:
        if now - self._last_sweep < self._expiry_ns // 4:
            return
        self._last_sweep = now
        horizon = now - self._expiry_ns
        for metric_key, state in list(self._metrics.items()):
            non_monotonic = metric_key[3] is _NON_MONOTONIC_SUM
            for input_key, source in list(state.inputs.items()):
                if source.last_seen < horizon:
                    del state.inputs[input_key]
                    output = state.outputs.get(source.output)
                    if non_monotonic and output is not None:
                        output.value -= source.value  # an up-down count from a vanished source no longer holds
            for output_key, output in list(state.outputs.items()):
                if output.last_seen < horizon:
                    del state.outputs[output_key]
            if not state.inputs and not state.outputs:
                del self._metrics[metric_key]


class _NonMonotonicSum:
    """Marker type in metric keys: expiry treats UpDownCounters differently."""


_NON_MONOTONIC_SUM = _NonMonotonicSum


def _metric_key(metric: Metric, origin: Hashable) -> tuple[Hashable, str, str, type]:
    data = metric.data
    kind: type = type(data)
    if isinstance(data, Sum) and not data.is_monotonic:
        kind = _NON_MONOTONIC_SUM
    return origin, metric.name, metric.unit or "", kind


def _tagged(regrouped: Regrouped) -> Iterable[tuple[Point, Mapping[str, Any], Hashable]]:
    """Each regrouped item as (point, new attributes, input tag), the tag None when the caller gave none."""
    for item in regrouped:
        if len(item) == 2:
            yield item[0], item[1], None
        else:
            yield item


def _with_data(metric: Metric, data: Sum | Gauge | Histogram) -> Metric:
    return Metric(metric.name, metric.description, metric.unit, data)


def _sum_deltas(regrouped: Regrouped) -> list[NumberDataPoint]:
    merged: dict[Hashable, list[Any]] = {}
    for point, attributes, _ in _tagged(regrouped):
        assert isinstance(point, NumberDataPoint)
        key = attributes_key(attributes)
        entry = merged.get(key)
        if entry is None:
            merged[key] = [attributes, point.start_time_unix_nano, point.time_unix_nano, point.value]
        else:
            entry[1] = min(entry[1], point.start_time_unix_nano)
            entry[2] = max(entry[2], point.time_unix_nano)
            entry[3] += point.value
    return [NumberDataPoint(dict(a), start, time, value) for a, start, time, value in merged.values()]


def _sum_histogram_deltas(regrouped: Regrouped) -> list[HistogramDataPoint]:
    merged: dict[Hashable, HistogramDataPoint] = {}
    for point, attributes, _ in _tagged(regrouped):
        assert isinstance(point, HistogramDataPoint)
        key = (attributes_key(attributes), tuple(point.explicit_bounds))
        earlier = merged.get(key)
        if earlier is None:
            merged[key] = HistogramDataPoint(
                dict(attributes),
                point.start_time_unix_nano,
                point.time_unix_nano,
                point.count,
                point.sum,
                list(point.bucket_counts),
                list(point.explicit_bounds),
                point.min,
                point.max,
            )
            continue
        merged[key] = HistogramDataPoint(
            earlier.attributes,
            min(earlier.start_time_unix_nano, point.start_time_unix_nano),
            max(earlier.time_unix_nano, point.time_unix_nano),
            earlier.count + point.count,
            earlier.sum + point.sum,
            [a + b for a, b in zip(earlier.bucket_counts, point.bucket_counts, strict=True)],
            list(point.explicit_bounds),
            min(earlier.min, point.min),
            max(earlier.max, point.max),
        )
    return list(merged.values())


def _combine_gauges(regrouped: Regrouped, function: GaugeFunction) -> list[NumberDataPoint]:
    groups: dict[Hashable, tuple[Mapping[str, Any], list[NumberDataPoint]]] = {}
    for point, attributes, _ in _tagged(regrouped):
        assert isinstance(point, NumberDataPoint)
        key = attributes_key(attributes)
        if key not in groups:
            groups[key] = (attributes, [])
        groups[key][1].append(point)
    result = []
    for attributes, points in groups.values():
        values = [p.value for p in points]
        if function == "sum":
            value: float = sum(values)
        elif function == "avg":
            value = sum(values) / len(values)
        elif function == "min":
            value = min(values)
        elif function == "max":
            value = max(values)
        else:
            value = max(points, key=lambda p: p.time_unix_nano).value
        start = min(p.start_time_unix_nano for p in points)
        time = max(p.time_unix_nano for p in points)
        result.append(NumberDataPoint(dict(attributes), start, time, value))
    return result
