"""The ``prometheusremotewrite`` exporter: Prometheus remote write 1.0 on the shared sending queue.

Built from :class:`~otel_monitoring.sidecar.config.PrometheusRemoteWriteExporterConfig`. ``export`` converts
cumulative SDK ``MetricsData`` to Prometheus series (the names and labels of the OpenTelemetry-to-Prometheus
translation), encodes them as snappy-compressed ``WriteRequest`` bodies, one per shard of series, and offers them
to a :class:`~otel_monitoring.sidecar.sending_queue.SendingQueue`, whose consumers POST them with retries (and
keep them on disk with ``remote_write_queue.storage``). docs/sidecar-remote-write.md has the decisions and their
reasons. From Python::

    config = PrometheusRemoteWriteExporterConfig(endpoint="http://127.0.0.1:9090/api/v1/write")
    exporter = RemoteWriteExporter(config)
    exporter.start()
    exporter.export(metrics_data)  # True: queued; False: refused (queue full), counted in stats().dropped
    exporter.shutdown(timeout=5.0)  # sends what it can within 5 s
    exporter.stats()  # RemoteWriteStats(sent=12, failed=0, dropped=0, unsupported=0, queued=0, ...)

Specifications: https://prometheus.io/docs/specs/remote_write_spec/ (the protocol) and
https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/ (names and labels).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import cramjam
import httpx
from opentelemetry.exporter.prometheus._mapping import sanitize_attribute
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource

from otel_monitoring.sidecar._remote_write_proto import encode_label_set, encode_time_series, encode_write_request
from otel_monitoring.sidecar.config import PrometheusRemoteWriteExporterConfig
from otel_monitoring.sidecar.prometheus_exporter import label_value, prometheus_metric_name
from otel_monitoring.sidecar.sending_queue import (
    Batch,
    PermanentError,
    QueuedExporter,
    QueuedExporterStats,
    QueueFiles,
    RetryableError,
    make_http_client,
    retry_after_seconds,
    user_agent,
)

__all__ = [
    "Conversion",
    "RemoteWriteConverter",
    "RemoteWriteExporter",
    "RemoteWriteStats",
    "Series",
    "encode_series",
    "format_bound",
    "merge_series",
]

_logger = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name, ``__name__`` included."""

_RESOURCE_IDENTITY: Final = frozenset({"service.name", "service.namespace", "service.instance.id"})
_HEADERS: Final = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
_MAX_LOGGED_BODY: Final = 512


def format_bound(bound: float) -> str:
    """A histogram bound as an ``le`` value, as the sidecar's scrape exporter writes it: Python's ``repr`` of the
    float, the form prometheus_client renders and Prometheus 3 normalises scraped ``le`` values to (``1.0``, not
    Go's ``1``), so one bucket has one label value whichever exporter wrote it.

    >>> [format_bound(b) for b in (0.005, 1.0, 2.5, 100.0, float("inf"))]
    ['0.005', '1.0', '2.5', '100.0', '+Inf']
    """
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    if math.isnan(bound):
        return "NaN"
    return repr(float(bound))


def _sanitized(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Attributes as Prometheus labels; keys that collide after sanitizing join their values with ``;``.

    The compatibility specification orders the joined values by the original keys.
    """
    labels: dict[str, str] = {}
    for key in sorted(attributes):
        value = label_value(attributes[key])
        name = sanitize_attribute(key)
        labels[name] = f"{labels[name]};{value}" if name in labels else value
    return labels


@dataclass(frozen=True, slots=True)
class Series:
    """One Prometheus series of a write request: sorted labels and ``(value, timestamp_ms)`` samples in time order."""

    labels: Labels
    samples: tuple[tuple[float, int], ...]


@dataclass(slots=True)
class _Point:
    """The samples one data point (or one target_info) becomes; they always travel in one request."""

    shard_key: int
    samples: list[tuple[Labels, float, int]]


@dataclass(slots=True)
class Conversion:
    """What :meth:`RemoteWriteConverter.convert` makes of a batch: its points' samples, and the points refused."""

    points: list[_Point] = field(default_factory=list)
    unsupported: int = 0


@dataclass(frozen=True, slots=True)
class _ResourceLabels:
    attributes: dict[str, str]  # every resource attribute with resource_to_telemetry_conversion; else empty
    identity: dict[str, str]  # job and instance, which win over point attributes of the same name
    target_info: dict[str, str] | None  # labels of target_info, None when it is off or there is nothing to say


class RemoteWriteConverter:
    """Cumulative SDK ``MetricsData`` to Prometheus series, by the OpenTelemetry compatibility specification.

    - Names: sanitized, prefixed with ``namespace``; with ``add_metric_suffixes`` the unit suffix
      (``_seconds``, ``_bytes``) and ``_total`` on monotonic sums, exactly as the OpenTelemetry Prometheus
      exporter names them. Histograms give ``_bucket{le}`` (cumulative), ``_sum`` and ``_count``.
    - Labels: the point's attributes; ``job`` (``service.namespace/service.name``) and ``instance``
      (``service.instance.id``) from the resource, which win over attributes of the same name; then
      ``external_labels`` where the series has no such label (Prometheus' rule for external labels).
      Empty values are left out (Prometheus reads an empty label as an absent one; the spec forbids them).
    - ``target_info`` per resource carries the other resource attributes, unless ``target_info.enabled`` is false.
    - Delta sums and histograms, exponential histograms and anything else are refused and counted: the pipeline
      upstream is cumulative, and summing deltas here would need per-series state the sidecar keeps elsewhere.

    >>> from opentelemetry.sdk.metrics.export import Metric, ResourceMetrics, ScopeMetrics
    >>> from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    >>> point = NumberDataPoint({"queue": "mail"}, 0, 1_700_000_000_000_000_000, 5)
    >>> scope = ScopeMetrics(InstrumentationScope("app"), [Metric("queue.depth", "", "1", Gauge([point]))], "")
    >>> data = MetricsData([ResourceMetrics(Resource({"service.name": "api"}), [scope], "")])
    >>> converter = RemoteWriteConverter(PrometheusRemoteWriteExporterConfig(endpoint="http://p:9090/api/v1/write"))
    >>> converter.series(data)
    [Series(labels=(('__name__', 'queue_depth'), ('job', 'api'), ('queue', 'mail')), samples=((5.0, 1700000000000),))]
    """

    def __init__(self, config: PrometheusRemoteWriteExporterConfig, shards: int = 1) -> None:
        self._prefix = f"{config.namespace}_" if config.namespace else ""
        self._suffixes = config.add_metric_suffixes
        self._resource_to_labels = config.resource_to_telemetry_conversion.enabled
        self._target_info = config.target_info.enabled
        self._external = {name: value for name, value in config.external_labels.items() if value}
        self._shards = max(1, shards)

    def series(self, data: MetricsData) -> list[Series]:
        """Every series in ``data``, merged by label set (one request's worth)."""
        return merge_series(point.samples for point in self.convert(data).points)

    def _metric_name(self, name: str, unit: str | None, counter: bool) -> str:
        # The scrape exporter's translation, so both paths give one name.
        kind = "counter" if counter else "gauge"
        return prometheus_metric_name(self._prefix + name, unit or "", kind, add_suffixes=self._suffixes)

    def _resource_labels(self, resource: Resource) -> _ResourceLabels:
        attributes = resource.attributes
        identity: dict[str, str] = {}
        name = attributes.get("service.name")
        if name:
            namespace = attributes.get("service.namespace")
            identity["job"] = f"{namespace}/{name}" if namespace else str(name)
        instance = attributes.get("service.instance.id")
        if instance:
            identity["instance"] = str(instance)
        as_labels = _sanitized(attributes) if self._resource_to_labels else {}
        target_info = None
        if self._target_info:
            others = _sanitized({k: v for k, v in attributes.items() if k not in _RESOURCE_IDENTITY})
            if others:
                target_info = {**others, **identity}
        return _ResourceLabels(as_labels, identity, target_info)

    def _finish(self, labels: dict[str, str], name: str) -> Labels:
        for key, value in self._external.items():
            labels.setdefault(key, value)
        labels["__name__"] = name
        # Byte order, as the spec requires ("sorted lexicographically"); Python's str order is code-point order.
        return tuple(sorted((k, v) for k, v in labels.items() if v))

    def convert(self, data: MetricsData) -> Conversion:
        """``data``'s samples grouped by the data point they come from, each with its shard, and how many points
        were refused (delta, exponential): what the exporter splits into one request per shard."""
        result = Conversion()
        shards = self._shards
        for resource_metrics in data.resource_metrics:
            resource = self._resource_labels(resource_metrics.resource)
            latest_ms = 0
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    metric_data = metric.data
                    points = metric_data.data_points
                    if isinstance(metric_data, Sum | Histogram) and (
                        metric_data.aggregation_temporality != AggregationTemporality.CUMULATIVE
                    ):
                        result.unsupported += len(points)
                        continue
                    counter = isinstance(metric_data, Sum) and metric_data.is_monotonic
                    if isinstance(metric_data, Gauge | Sum):
                        name = self._metric_name(metric.name, metric.unit, counter)
                        for point in points:
                            if not isinstance(point, NumberDataPoint):  # pragma: no cover - SDK invariant
                                result.unsupported += 1
                                continue
                            attrs = {**resource.attributes, **_sanitized(point.attributes or {}), **resource.identity}
                            timestamp = point.time_unix_nano // 1_000_000
                            latest_ms = max(latest_ms, timestamp)
                            labels = self._finish(attrs, name)
                            key = hash((name, labels)) % shards
                            result.points.append(_Point(key, [(labels, float(point.value), timestamp)]))
                    elif isinstance(metric_data, Histogram):
                        name = self._metric_name(metric.name, metric.unit, counter=False)
                        for point in points:
                            if not isinstance(point, HistogramDataPoint):  # pragma: no cover - SDK invariant
                                result.unsupported += 1
                                continue
                            result.points.append(self._histogram(point, name, resource, shards))
                            latest_ms = max(latest_ms, point.time_unix_nano // 1_000_000)
                    else:
                        # Exponential histograms would be native histograms, which Prometheus 2.42 accepts over
                        # remote write only behind a feature flag; refused and counted rather than half-sent.
                        result.unsupported += len(points)
            if resource.target_info is not None and latest_ms:
                labels = self._finish(dict(resource.target_info), self._prefix + "target_info")
                result.points.append(_Point(hash(labels) % shards, [(labels, 1.0, latest_ms)]))
        return result

    def _histogram(self, point: HistogramDataPoint, name: str, resource: _ResourceLabels, shards: int) -> _Point:
        attrs = {**resource.attributes, **_sanitized(point.attributes or {}), **resource.identity}
        timestamp = point.time_unix_nano // 1_000_000
        samples: list[tuple[Labels, float, int]] = []
        cumulative = 0
        bounds = [*point.explicit_bounds, math.inf]
        for bound, count in zip(bounds, point.bucket_counts, strict=False):
            cumulative += count
            labels = self._finish({**attrs, "le": format_bound(bound)}, name + "_bucket")
            samples.append((labels, float(cumulative), timestamp))
        samples.append((self._finish(dict(attrs), name + "_sum"), float(point.sum), timestamp))
        samples.append((self._finish(dict(attrs), name + "_count"), float(point.count), timestamp))
        return _Point(hash((name, samples[-1][0])) % shards, samples)


def merge_series(groups: Iterable[list[tuple[Labels, float, int]]]) -> list[Series]:
    """Samples grouped into series; within one series, time order, and the last sample wins a timestamp."""
    by_labels: dict[Labels, dict[int, float]] = {}
    for samples in groups:
        for labels, value, timestamp in samples:
            by_labels.setdefault(labels, {})[timestamp] = value
    return [Series(labels, tuple((v, t) for t, v in sorted(points.items()))) for labels, points in by_labels.items()]


def encode_series(series: Iterable[Series]) -> bytes:
    """A snappy-compressed (block format, as remote write 1.0 requires) ``WriteRequest`` body."""
    body = encode_write_request(encode_time_series(encode_label_set(s.labels), s.samples) for s in series)
    return bytes(cramjam.snappy.compress_raw(body))


# --- Delivery ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteWriteStats(QueuedExporterStats):
    """The queued exporters' counts (:class:`~otel_monitoring.sidecar.sending_queue.QueuedExporterStats`, in data
    points: a histogram point counts once, whatever its bucket count) and ``unsupported``: points refused by
    conversion (delta, exponential). ``rejected`` stays 0: remote write 1.0 has no partial success."""

    unsupported: int = 0


class RemoteWriteExporter(QueuedExporter):
    """Writes cumulative metrics to a Prometheus remote-write endpoint, in order per series, without blocking.

    Each exported batch is converted, split by series over ``num_consumers`` shards and offered to the sending
    queue as one request per shard; the queue's consumer for a shard posts that shard's requests in order, so a
    series' samples always reach the backend in time order (Prometheus refuses out-of-order samples with 400).
    Retries: exponential backoff with jitter on network errors, 429 and 5xx, honouring ``Retry-After``, until
    ``max_elapsed_time``.

    ``storage`` keeps the queue on disk (the sidecar passes the ``file_storage`` extension named by
    ``remote_write_queue.storage``). ``clock``, ``sleep`` and ``jitter`` (uniform in [0, 1)) are injectable so
    tests need no real waiting; ``auth_header`` returns an ``Authorization`` value (the runtime's
    ``bearertokenauth``) for every request.

    >>> config = PrometheusRemoteWriteExporterConfig(endpoint="http://127.0.0.1:9/api/v1/write")
    >>> exporter = RemoteWriteExporter(config)
    >>> exporter.start()
    >>> exporter.export(MetricsData([]))  # nothing to send
    True
    >>> exporter.shutdown(timeout=1.0)
    >>> exporter.stats().capacity
    10000
    """

    def __init__(
        self,
        config: PrometheusRemoteWriteExporterConfig,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
        auth_header: Callable[[], str] | None = None,
        name: str = "prometheusremotewrite",
        storage: QueueFiles | None = None,
    ) -> None:
        queue = config.remote_write_queue
        shards = queue.num_consumers if queue.enabled else 1
        super().__init__(
            self._send,
            queue,
            config.retry_on_failure,
            storage,
            name=name,
            config_key="remote_write_queue",
            batches_per_offer=shards,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
            logger=_logger,
        )
        self._config = config
        self._url = str(config.endpoint)
        self._converter = RemoteWriteConverter(config, shards)
        self._auth_header = auth_header
        self._own_client = client is None
        self._client = client if client is not None else make_http_client(config.timeout, config.tls, shards)
        self._headers = {**_HEADERS, "User-Agent": user_agent()}
        self._headers.update({key: value.get_secret_value() for key, value in config.headers.items()})
        self._unsupported_lock = threading.Lock()  # several pipelines export from their worker threads
        self._unsupported = 0
        self._logged_unsupported = False

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        """Queue ``data``; False when it was refused (queue full, or shut down) or sending failed.

        A refused batch is counted in ``dropped`` and not retried here: the pipeline holds a :meth:`reserve`
        (``reserved``) before it accepts data upstream, or refuses with 503 so that senders retry, which is what
        keeps accepted data lossless. Without a queue (``remote_write_queue.enabled: false``) the write happens in
        the caller's thread.
        """
        conversion = self._converter.convert(data)
        by_shard: dict[int, list[_Point]] = {}
        for point in conversion.points:
            by_shard.setdefault(point.shard_key, []).append(point)
        batches = [
            Batch(encode_series(merge_series(p.samples for p in points)), len(points), shard)
            for shard, points in sorted(by_shard.items())
        ]
        if conversion.unsupported:
            with self._unsupported_lock:
                self._unsupported += conversion.unsupported
                first, self._logged_unsupported = not self._logged_unsupported, True
            _logger.log(
                logging.WARNING if first else logging.DEBUG,
                "%s: %d data points are delta, exponential histograms or summaries, which remote write does not "
                "carry here; they are dropped (put a cumulative pipeline in front)",
                self.name,
                conversion.unsupported,
            )
        return self.queue.offer(batches, reserved=reserved)

    def stats(self) -> RemoteWriteStats:
        """A snapshot of the counters (see :class:`RemoteWriteStats`)."""
        with self._unsupported_lock:
            unsupported = self._unsupported
        return RemoteWriteStats(**dataclasses.asdict(super().stats()), unsupported=unsupported)

    # --- the sender side ---

    def _send(self, batch: Batch) -> None:
        headers = self._headers
        if self._auth_header is not None:
            headers = {**headers, "Authorization": self._auth_header()}
        try:
            response = self._client.post(self._url, content=batch.body, headers=headers)
        except httpx.TransportError as error:
            raise RetryableError(f"cannot reach the endpoint ({type(error).__name__})", key="network") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        # The spec: retry 5xx, may retry 429, never other 4xx (the same request would fail again).
        if status == 429 or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise RetryableError(f"the endpoint answered {status}", retry_after=retry_after, key="retry_status")
        body = response.text[:_MAX_LOGGED_BODY].strip()
        raise PermanentError(f"the endpoint refused a write with {status}: {body}", key=f"status_{status}")
