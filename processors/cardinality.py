"""cardinality: at most ``limit`` distinct attribute sets per metric; the rest go to one overflow series.

This is the OpenTelemetry SDK's cardinality limit
(https://opentelemetry.io/docs/specs/otel/metrics/sdk/#cardinality-limits) applied to exported data, so
it also protects Prometheus from senders whose SDK has none (1.45.1 has none). Per metric name the
processor remembers the attribute sets it admitted and when it last saw each one. Admitted sets flow on
unchanged, as the same point objects. A set first seen when ``limit`` sets are already admitted goes to
one overflow series per metric (and per resource and scope) with the attributes
``{"otel.metric.overflow": True}`` (the SDK's), which Prometheus shows as ``otel_metric_overflow="true"``.
Sets not seen for ``expiry_seconds`` are forgotten, which frees their slots and bounds memory.

The overflow series is built by ``processors._merge.SeriesMerger`` so that it stays a valid series:
delta points and gauges are combined per batch (gauges keep the latest point, as the SDK's overflow
does), cumulative counters and histograms are summed by their increases, bucket by bucket. Increases
need each overflowed cumulative input's last value, so those inputs are remembered too, at most
``overflow_tracking_limit`` per metric: past that, points of further new sets are dropped and counted,
never guessed (guessing would double-count every export of a series the merger could not remember, as the
OpenTelemetry Collector's deltatocumulative processor also concluded for its ``max_streams``). An
overflowed cumulative set stays in the overflow series while it keeps reporting, even once slots free
up, so that its total is never split over two series.

The pipeline's own metrics: ``otel_monitoring_cardinality_overflow_points_total{metric}`` (points merged
into an overflow series), ``otel_monitoring_cardinality_dropped_points_total{metric}`` (points lost because
overflow tracking was full, or exponential-histogram points, which cannot be merged) and
``otel_monitoring_cardinality_tracked_series`` (attribute sets currently remembered). The label is the
metric name, never an attribute value.

>>> from processors.component import ProcessorContext
>>> processor = FACTORY.create_from({"limit": 500, "limits": {"http.*": 100}}, ProcessorContext())
>>> processor.limit_for("http.server.request.duration"), processor.limit_for("db.client.operation.duration")
(100, 500)
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Hashable, Sequence
from itertools import repeat
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
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
from pydantic import Field, field_validator

from otel_monitoring._instruments import OVERFLOW_ATTRIBUTES  # one definition for the facade and the pipeline
from processors._merge import AttributeSet, SeriesMerger, attributes_key, origin_of
from processors.component import ComponentConfig, Processor, ProcessorContext, ProcessorFactory, map_metrics

__all__ = ["FACTORY", "OVERFLOW_ATTRIBUTES", "CardinalityConfig", "CardinalityProcessor"]

_logger = logging.getLogger(__name__)

"""The attributes of every overflow series (the SDK's ``otel.metric.overflow``, as Prometheus names it)."""

AttributesKey = frozenset[tuple[str, Hashable]]

_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_EMPTY_KEY: AttributesKey = frozenset()
_NOTHING: dict[AttributesKey, int] = {}


class CardinalityConfig(ComponentConfig):
    """Limits on distinct attribute sets per metric."""

    limit: int = Field(default=2000, ge=1)
    """Distinct attribute sets admitted per metric name (across resources and scopes); further sets go to
    the overflow series, so a metric emits at most ``limit`` + 1 series per resource and scope."""

    limits: dict[str, int] = Field(default_factory=dict)
    """Per-metric limits by metric name or shell-style glob (``http.server.*``), overriding ``limit``. When
    several entries match, the most specific wins: an exact name first, then the glob with the most
    literal (non-wildcard) characters, then the one listed first."""

    expiry_seconds: float = Field(default=600.0, gt=0)
    """An attribute set not seen for this long is forgotten, freeing its slot; this bounds memory."""

    overflow_tracking_limit: int = Field(default=10_000, ge=0)
    """Overflowed attribute sets of cumulative sums and histograms remembered per metric (about 1 KB each),
    so that the overflow series adds up their increases exactly. Past it, points of new overflowed sets are
    dropped and counted in ``otel_monitoring_cardinality_dropped_points_total``. Delta sums and gauges need
    no memory and are never dropped."""

    @field_validator("limits")
    @classmethod
    def _check_limits(cls, limits: dict[str, int]) -> dict[str, int]:
        for pattern, value in limits.items():
            if value < 1:
                raise ValueError(f"the limit for {pattern!r} must be at least 1 (got {value})")
        return limits


class _MetricState:
    """What the processor remembers about one metric name.

    ``admitted`` maps each admitted attribute set to when it was last seen (Unix ns). ``overflowed`` does
    the same, per origin, for the overflowed sets of cumulative data the merger remembers; ``tracked`` is
    their number. Nested dicts rather than (origin, set) keys: a burst adds one object per set, not two,
    and every object kept alive makes Python's full garbage collections longer.
    """

    __slots__ = ("admitted", "limit", "overflowed", "tracked", "warned")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted: dict[AttributesKey, int] = {}
        self.overflowed: dict[Hashable, dict[AttributesKey, int]] = {}
        self.tracked = 0
        self.warned = False


class CardinalityProcessor(Processor):
    """Admits up to a limit of attribute sets per metric and merges the rest into one overflow series."""

    def __init__(self, config: CardinalityConfig, context: ProcessorContext) -> None:
        self._default_limit = config.limit
        self._exact_limits = {name: value for name, value in config.limits.items() if not _is_glob(name)}
        # Most specific first, so the first glob that matches is the one that wins.
        globs = [(pattern, value) for pattern, value in config.limits.items() if _is_glob(pattern)]
        globs.sort(key=lambda entry: -_literal_length(entry[0]))
        self._glob_limits = [(re.compile(fnmatch.translate(pattern)), value) for pattern, value in globs]
        self._expiry_ns = int(config.expiry_seconds * 1e9)
        self._tracking_limit = config.overflow_tracking_limit
        self._clock = context.clock
        self._merger = SeriesMerger(clock=context.clock, expiry_seconds=config.expiry_seconds)
        self._states: dict[str, _MetricState] = {}
        self._last_sweep = 0
        registry = context.registry
        self._overflow_points = registry.counter(
            "otel_monitoring_cardinality_overflow_points_total",
            "Data points merged into an overflow series because their metric had reached its cardinality limit",
            ["metric"],
        )
        self._dropped_points = registry.counter(
            "otel_monitoring_cardinality_dropped_points_total",
            "Overflowed data points dropped: overflow tracking full, or exponential histograms",
            ["metric"],
        )
        self._tracked_series = registry.gauge(
            "otel_monitoring_cardinality_tracked_series",
            "Attribute sets the cardinality processor remembers (admitted and overflowed)",
        )

    def limit_for(self, name: str) -> int:
        """The limit that applies to a metric name."""
        exact = self._exact_limits.get(name)
        if exact is not None:
            return exact
        for pattern, value in self._glob_limits:
            if pattern.fullmatch(name):
                return value
        return self._default_limit

    def series_count(self) -> int:
        """Attribute sets remembered, admitted and overflowed, plus the overflow merger's series."""
        return self._remembered() + self._merger.series_count()

    def _remembered(self) -> int:
        return sum(len(state.admitted) + state.tracked for state in self._states.values())

    def process(self, data: MetricsData) -> MetricsData:
        now = self._clock()
        if now - self._last_sweep >= self._expiry_ns // 4:
            self._sweep(now)
        result = map_metrics(data, lambda metric, resource, scope: self._limit(metric, now, resource, scope))
        self._tracked_series.set(self._remembered())
        return result

    def _limit(
        self,
        metric: Metric,
        now: int,
        resource_metrics: ResourceMetrics,
        scope_metrics: ScopeMetrics,
    ) -> Metric:
        points: Sequence[NumberDataPoint | HistogramDataPoint | ExponentialHistogramDataPoint] = metric.data.data_points
        state = self._states.get(metric.name)
        if state is None:
            state = self._states[metric.name] = _MetricState(self.limit_for(metric.name))
        admitted = state.admitted
        overflowed = state.overflowed
        limit = state.limit
        origin: Hashable = None  # computed only when an overflowed set has to be recognised or merged
        kept: list[Any] | None = None  # admitted points, from the first overflowed point on
        overflow_points: list[Any] = []
        overflow_keys: list[AttributesKey] = []
        # Hot path, written for speed: one frozenset and one or two dict operations per point, no other
        # allocation; a metric whose sets are all admitted is returned as the same object. Overflowed points
        # and their keys go into two flat lists rather than (point, key) pairs: a burst would otherwise keep
        # one extra object per point alive for the whole batch, and pay for it in garbage collections.
        for index, point in enumerate(points):
            attributes = point.attributes
            key: AttributesKey
            if type(attributes) is AttributeSet:
                key = attributes.key()  # computed once per series, not per point (the sidecar's decoder)
            elif attributes:
                try:
                    key = frozenset(attributes.items())
                except TypeError:  # sequence values are lists
                    key = attributes_key(attributes)
            else:
                key = _EMPTY_KEY
            if key in admitted:
                admitted[key] = now
                if kept is not None:
                    kept.append(point)
                continue
            if len(admitted) < limit:
                # A free slot, but a set already counted in the overflow stays there (see the module docstring).
                if overflowed and origin is None:
                    origin = origin_of(resource_metrics, scope_metrics)
                if not overflowed or key not in overflowed.get(origin, _NOTHING):
                    admitted[key] = now
                    if kept is not None:
                        kept.append(point)
                    continue
            if kept is None:
                kept = list(points[:index])
            overflow_points.append(point)
            overflow_keys.append(key)
        if kept is None:
            return metric
        if origin is None:
            origin = origin_of(resource_metrics, scope_metrics)
        return self._with_overflow(metric, state, kept, overflow_points, overflow_keys, origin, now)

    def _with_overflow(
        self,
        metric: Metric,
        state: _MetricState,
        kept: list[Any],
        overflow_points: list[Any],
        overflow_keys: list[AttributesKey],
        origin: Hashable,
        now: int,
    ) -> Metric:
        if not state.warned:
            state.warned = True
            _logger.warning(
                "metric %s passed its cardinality limit of %d attribute sets; new sets go to the overflow series",
                metric.name,
                state.limit,
            )
        data = metric.data
        to_merge = overflow_points
        dropped = 0
        if isinstance(data, ExponentialHistogram):
            to_merge, dropped = [], len(overflow_points)  # exponential buckets of different scales cannot be added
        elif _is_cumulative(data):
            tracked = state.overflowed.get(origin)
            if tracked is None:
                tracked = state.overflowed[origin] = {}
            to_merge = []
            for point, key in zip(overflow_points, overflow_keys, strict=True):
                if key in tracked:
                    tracked[key] = now
                elif state.tracked < self._tracking_limit:
                    tracked[key] = now
                    state.tracked += 1
                else:
                    dropped += 1
                    continue
                to_merge.append(point)
        if dropped:
            self._dropped_points.labels(metric=metric.name).inc(dropped)
        if to_merge:
            self._overflow_points.labels(metric=metric.name).inc(len(to_merge))
            # zip hands out one pair at a time, each freed as soon as the merger has unpacked it.
            merged = self._merger.merge(metric, zip(to_merge, repeat(OVERFLOW_ATTRIBUTES)), "last", origin=origin)
            if merged is not None:
                kept.extend(merged.data.data_points)
        return Metric(metric.name, metric.description, metric.unit, _with_points(data, kept))

    def _sweep(self, now: int) -> None:
        self._last_sweep = now
        horizon = now - self._expiry_ns
        # Rebuilt rather than deleted from: a dict never shrinks its table, and a burst must not leave one behind.
        for name, state in list(self._states.items()):
            state.admitted = {key: seen for key, seen in state.admitted.items() if seen >= horizon}
            overflowed = {}
            for origin, tracked in state.overflowed.items():
                kept = {key: seen for key, seen in tracked.items() if seen >= horizon}
                if kept:
                    overflowed[origin] = kept
            state.overflowed = overflowed
            state.tracked = sum(len(tracked) for tracked in overflowed.values())
            if not state.admitted and not state.overflowed:
                del self._states[name]
        # The merger also forgets on its own, but only when it merges; a metric may have stopped overflowing.
        self._merger.expire()


def _is_glob(pattern: str) -> bool:
    return _GLOB_CHARACTERS.search(pattern) is not None


def _literal_length(pattern: str) -> int:
    return len(pattern) - sum(pattern.count(character) for character in "*?[]")


def _is_cumulative(data: Any) -> bool:
    return isinstance(data, Sum | Histogram) and data.aggregation_temporality is AggregationTemporality.CUMULATIVE


def _with_points(data: Any, points: list[Any]) -> Any:
    if isinstance(data, Sum):
        return Sum(points, data.aggregation_temporality, data.is_monotonic)
    if isinstance(data, Gauge):
        return Gauge(points)
    if isinstance(data, Histogram):
        return Histogram(points, data.aggregation_temporality)
    return ExponentialHistogram(points, data.aggregation_temporality)


def create_cardinality_processor(config: CardinalityConfig, context: ProcessorContext) -> CardinalityProcessor:
    """Build a ``CardinalityProcessor``; the factory's ``create``."""
    return CardinalityProcessor(config, context)


FACTORY = ProcessorFactory("cardinality", CardinalityConfig, create_cardinality_processor)
