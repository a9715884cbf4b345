"""The bridge from our recording cells into the OpenTelemetry SDK's metric readers.

The SDK gives a reader its data through one callback, installed by the ``MeterProvider`` with
``MetricReader._set_collect_callback``. ``attach`` wraps that callback: every collection (a scrape of
the Prometheus reader, a tick of the OTLP exporter's periodic reader) first runs the SDK's own
collection, then adds one ``ScopeMetrics`` built from the cells, with the reader's temporality, under
the provider's resource, and finally runs the export-time processing hook. Readers, exporters and the
SDK's instruments stay stock; only the source of the facade's data points differs. The SDK is pinned
(pyproject.toml) and tests/unit/test_bridge.py pins this seam.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from opentelemetry.sdk.metrics._internal.instrument import _Counter, _Histogram, _UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring._instruments import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    MetricsRegistry,
    UpDownCounterFamily,
)

__all__ = ["MetricsProcessor", "RecordingBridge", "reader_temporality"]

_logger = logging.getLogger(__name__)

MetricsProcessor = Callable[[MetricsData], MetricsData]
"""Export-time processing: a pure ``MetricsData -> MetricsData`` step run before a reader sees the data."""

_SDKCollect = Callable[..., MetricsData | None]
_CUMULATIVE = AggregationTemporality.CUMULATIVE
_DELTA = AggregationTemporality.DELTA


def reader_temporality(reader: MetricReader) -> dict[str, AggregationTemporality]:
    """The temporality a reader asked the SDK for, per kind of facade metric."""
    # The SDK keeps the preference keyed by its private instrument classes; reading it here keeps one
    # source of truth instead of asking every caller to repeat what it told the reader.
    preferences = reader._instrument_class_temporality
    return {
        "counter": preferences.get(_Counter, _CUMULATIVE),
        "updowncounter": preferences.get(_UpDownCounter, _CUMULATIVE),
        "histogram": preferences.get(_Histogram, _CUMULATIVE),
    }


class _DeltaState:
    """What one delta reader saw last time, to send only the change since then."""

    def __init__(self) -> None:
        self.previous: dict[tuple[str, tuple[Any, ...]], tuple[int, Any]] = {}
        self.last_collection_ns: dict[tuple[str, tuple[Any, ...]], int] = {}


class RecordingBridge:
    """Feeds a registry's cells into SDK readers at collection time.

    ``process`` is the export-time processing hook (sanitizing, cardinality limits); it sees the
    SDK's data and the facade's together, so one pipeline guards everything a reader exports.
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        resource: Resource,
        scope: InstrumentationScope,
        *,
        process: MetricsProcessor | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._registry = registry
        self._resource = resource
        self._scope = scope
        self._process = process
        self._clock = clock
        self._reader_locks: list[list[threading.Lock]] = []

    def set_resource(self, resource: Resource) -> None:
        self._resource = resource

    def locks(self) -> list[threading.Lock]:
        """The per-reader collection locks, in the order a collection takes them (before the SDK's)."""
        return [holder[0] for holder in self._reader_locks]

    def reset_locks(self) -> None:
        """New locks after ``fork``: a parent thread may have held one."""
        for holder in self._reader_locks:
            holder[0] = threading.Lock()

    def attach(self, reader: MetricReader, *, process: MetricsProcessor | None = None) -> None:
        """Wrap a reader that a ``MeterProvider`` already registered, so its collections include the cells.

        ``process`` (default: the bridge's) is this reader's own processing: processors keep state across
        batches, so each reader needs its own pipeline, fed only its own collections.
        """
        sdk_collect = cast(_SDKCollect | None, reader._collect)
        if sdk_collect is None:
            raise ValueError(f"{type(reader).__name__} is not registered with a MeterProvider yet")
        temporality = reader_temporality(reader)
        delta = _DeltaState() if _DELTA in temporality.values() else None
        steps = process if process is not None else self._process
        lock_holder = [threading.Lock()]
        self._reader_locks.append(lock_holder)

        def collect(metric_reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData:
            # One collection at a time per reader (two scrapes may overlap): the delta state and the
            # pipeline's state belong to this reader and see its batches in order.
            with lock_holder[0]:
                return self._collect(sdk_collect, metric_reader, timeout_millis, temporality, delta, steps)

        reader._set_collect_callback(collect)

    def _collect(
        self,
        sdk_collect: _SDKCollect,
        reader: MetricReader,
        timeout_millis: float,
        temporality: dict[str, AggregationTemporality],
        delta: _DeltaState | None,
        process: MetricsProcessor | None,
    ) -> MetricsData:
        sdk_data = sdk_collect(reader, timeout_millis=timeout_millis)
        ours = self.collect_metrics(temporality, delta)
        data = _merge(sdk_data, self._resource, ScopeMetrics(self._scope, ours, ""))
        if process is None:
            return data
        try:
            return process(data)
        except Exception:
            # Fail closed: a batch the pipeline could not clean is not exported, and the host keeps running.
            _logger.exception("processing failed; this collection of %s exports nothing", type(reader).__name__)
            return MetricsData([])

    def collect_metrics(
        self, temporality: dict[str, AggregationTemporality] | None = None, delta: _DeltaState | None = None
    ) -> list[Metric]:
        """The registry's current data as OpenTelemetry metrics (cumulative unless told otherwise)."""
        temporality = temporality or {}
        now = self._clock()
        metrics: list[Metric] = []
        for family in self._registry.families():
            data = _family_data(family, now, temporality.get(family.kind, _CUMULATIVE), delta)
            if data is not None:
                metrics.append(Metric(family.name, family.description, _otel_unit(family.unit), data))
        return metrics


def _family_data(
    family: Family, now: int, temporality: AggregationTemporality, delta: _DeltaState | None
) -> Sum | Gauge | HistogramData | None:
    delta = delta if temporality is _DELTA else None
    if isinstance(family, GaugeFamily):
        gauge_points = [NumberDataPoint(s.attributes, s.cell.start_time_ns, now, s.cell.get()) for s in family.series()]
        return Gauge(gauge_points) if gauge_points else None
    if isinstance(family, HistogramFamily):
        histogram_points = _histogram_points(family, now, delta)
        return HistogramData(histogram_points, temporality) if histogram_points else None
    sum_points = _sum_points(family, now, delta)
    return Sum(sum_points, temporality, is_monotonic=isinstance(family, CounterFamily)) if sum_points else None


def _sum_points(
    family: CounterFamily | UpDownCounterFamily, now: int, delta: _DeltaState | None
) -> list[NumberDataPoint]:
    points = []
    for s in family.series():
        value = s.cell.get()
        start = s.cell.start_time_ns
        if delta is not None:
            change = _delta_since(delta, family.name, s.label_values, start, now, value, lambda new, old: new - old)
            if change is None:
                continue
            start, value = change
        points.append(NumberDataPoint(s.attributes, start, now, value))
    return points


def _histogram_points(family: HistogramFamily, now: int, delta: _DeltaState | None) -> list[HistogramDataPoint]:
    points = []
    bounds = list(family.buckets)
    for s in family.series():
        counts, total, minimum, maximum = s.cell.snapshot()
        start = s.cell.start_time_ns
        if delta is not None:
            current = (counts, total)
            change = _delta_since(delta, family.name, s.label_values, start, now, current, _histogram_difference)
            minimum, maximum = s.cell.take_interval_extremes()  # one delta reader per process is the norm
            if change is None:
                continue
            start, (counts, total) = change
        count = sum(counts)
        if count == 0:
            minimum = maximum = 0.0
        points.append(HistogramDataPoint(s.attributes, start, now, count, total, counts, bounds, minimum, maximum))
    return points


def _delta_since(
    state: _DeltaState,
    name: str,
    label_values: tuple[Any, ...],
    cell_start: int,
    now: int,
    current: Any,
    difference: Callable[[Any, Any], Any],
) -> tuple[int, Any] | None:
    """Start time and change since the last collection, or None when nothing changed."""
    key = (name, label_values)
    previous = state.previous.get(key)
    state.previous[key] = (cell_start, current)
    last = state.last_collection_ns.get(key, cell_start)
    state.last_collection_ns[key] = now
    if previous is None or previous[0] != cell_start:  # first sight, or the series was removed and re-created
        return cell_start, current
    change = difference(current, previous[1])
    if not _changed(change):
        return None
    return last, change


def _histogram_difference(
    current: tuple[list[int], float], previous: tuple[list[int], float]
) -> tuple[list[int], float]:
    counts = [now - before for now, before in zip(current[0], previous[0], strict=True)]
    return counts, current[1] - previous[1]


def _changed(change: Any) -> bool:
    if isinstance(change, tuple):
        return any(change[0])
    return bool(change)


def _merge(sdk_data: MetricsData | None, resource: Resource, ours: ScopeMetrics) -> MetricsData:
    if not ours.metrics:
        return sdk_data if sdk_data is not None else MetricsData([])
    if sdk_data is None or not sdk_data.resource_metrics:
        return MetricsData([ResourceMetrics(resource, [ours], "")])
    first, *rest = sdk_data.resource_metrics
    merged_first = ResourceMetrics(first.resource, [*first.scope_metrics, ours], first.schema_url)
    return MetricsData([merged_first, *rest])


# UCUM codes for the Prometheus-style unit words people pass to prometheus_client, so OTLP carries
# the code (https://ucum.org) and the Prometheus exporter maps it back to the same suffix.
_UCUM = {"seconds": "s", "milliseconds": "ms", "bytes": "By", "ratio": "1", "percent": "%", "meters": "m"}


def _otel_unit(unit: str) -> str:
    return _UCUM.get(unit, unit)
