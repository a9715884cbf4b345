"""The metrics facade, as in prometheus_client: ``counter``, ``gauge`` and ``histogram``.

>>> from otel_monitoring import metrics
>>> requests_total = metrics.counter("http_requests_total", "Total HTTP requests", labelnames=("method",))
>>> requests_total.labels(method="GET").inc()
>>> requests_total.inc(1, {"method": "POST"})

Metrics are recorded into fast cells (see docs/recording-core.md) and reach every OpenTelemetry
reader of the process: the ``/metrics`` exposition, the OTLP exporter, the Pushgateway. Names come
out in the Prometheus exposition as written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from otel_monitoring._cells import CounterCell, GaugeCell, HistogramCell
from otel_monitoring._instruments import (
    DEFAULT_BUCKETS,
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    MetricConflictError,
    MetricsRegistry,
)

if TYPE_CHECKING:
    from otel_monitoring.collectors.cache import CacheMetrics

__all__ = [
    "DEFAULT_BUCKETS",
    "CounterCell",
    "CounterFamily",
    "GaugeCell",
    "GaugeFamily",
    "HistogramCell",
    "HistogramFamily",
    "MetricConflictError",
    "MetricsRegistry",
    "cache",
    "counter",
    "default_registry",
    "gauge",
    "histogram",
]

_DEFAULT_REGISTRY = MetricsRegistry()


_pipeline_checked = False


def default_registry() -> MetricsRegistry:
    """The process-wide registry that the module-level functions declare into."""
    return _DEFAULT_REGISTRY


def _registry(registry: MetricsRegistry | None) -> MetricsRegistry:
    global _pipeline_checked
    if registry is not None:
        return registry
    if not _pipeline_checked:
        _pipeline_checked = True
        from otel_monitoring.telemetry import start_if_exporting

        start_if_exporting()
    return _DEFAULT_REGISTRY


def counter(
    name: str,
    description: str = "",
    labelnames: Iterable[str] = (),
    unit: str = "",
    *,
    registry: MetricsRegistry | None = None,
) -> CounterFamily:
    """Declare (or get again) a counter; ``http_requests_total`` is exposed as ``http_requests_total``."""
    return _registry(registry).counter(name, description, labelnames, unit)


def gauge(
    name: str,
    description: str = "",
    labelnames: Iterable[str] = (),
    unit: str = "",
    *,
    registry: MetricsRegistry | None = None,
) -> GaugeFamily:
    """Declare (or get again) a gauge, with ``inc``, ``dec``, ``set`` and ``track_inprogress``."""
    return _registry(registry).gauge(name, description, labelnames, unit)


def histogram(
    name: str,
    description: str = "",
    labelnames: Iterable[str] = (),
    unit: str = "",
    buckets: Iterable[float] = DEFAULT_BUCKETS,
    *,
    registry: MetricsRegistry | None = None,
) -> HistogramFamily:
    """Declare (or get again) a histogram with ``observe`` and ``time``; buckets default to prometheus_client's."""
    return _registry(registry).histogram(name, description, labelnames, unit, buckets)


def cache(name: str, *, registry: MetricsRegistry | None = None) -> CacheMetrics:
    """The hit, miss, set and evict counters and operation latency of one named cache; same name, same object.

    >>> sessions = metrics.cache("sessions")
    >>> sessions.hit(); sessions.miss(); sessions.set(); sessions.evict()
    >>> with sessions.time("get"):
    ...     value = store.get(key)

    Recorded as ``cache.operations`` and ``cache.operation.duration`` (see docs/cache-and-http-client.md).
    """
    from otel_monitoring.collectors.cache import get_cache_metrics  # the collectors import this module

    return get_cache_metrics(name, _registry(registry))
