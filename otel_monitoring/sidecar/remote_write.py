"""The ``prometheusremotewrite`` exporter: Prometheus remote write 1.0 with a bounded queue and retries.

Built from :class:`~otel_monitoring.sidecar.config.PrometheusRemoteWriteExporterConfig`. ``export`` converts
cumulative SDK ``MetricsData`` to Prometheus series (the names and labels of the OpenTelemetry-to-Prometheus
translation), encodes them as a snappy-compressed ``WriteRequest`` and queues it; sender threads POST the queued
requests with retries. docs/sidecar-remote-write.md has the decisions and their reasons.

>>> from otel_monitoring.sidecar.config import PrometheusRemoteWriteExporterConfig
>>> config = PrometheusRemoteWriteExporterConfig(endpoint="http://127.0.0.1:9090/api/v1/write")
>>> exporter = RemoteWriteExporter(config)
>>> exporter.start()
>>> exporter.export(metrics_data)  # True: queued; False: refused (queue full), counted in stats().dropped
True
>>> exporter.shutdown(timeout=5.0)  # sends what it can within 5 s
>>> exporter.stats()
RemoteWriteStats(sent=12, failed=0, dropped=0, unsupported=0, queued=0, queued_requests=0, retries=0)

Specifications: https://prometheus.io/docs/specs/remote_write_spec/ (the protocol) and
https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/ (names and labels).
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
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
from otel_monitoring.sidecar.config import PrometheusRemoteWriteExporterConfig, RetryConfig
from otel_monitoring.sidecar.prometheus_exporter import label_value, prometheus_metric_name

__all__ = [
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


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("otel-monitoring")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "unknown"
    return f"otel-monitoring/{version}"


def format_bound(bound: float) -> str:
    """A histogram bound as an ``le`` value, as Go's ``strconv.FormatFloat(b, 'f', -1, 64)`` writes it.

    This is the OpenTelemetry Collector's remote-write form and the one Prometheus 3 normalises scraped ``le``
    values to, so the same bucket has one label value whatever path it took.

    >>> [format_bound(b) for b in (0.005, 1.0, 2.5, 100.0, float("inf"))]
    ['0.005', '1', '2.5', '100', '+Inf']
    """
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    if math.isnan(bound):
        return "NaN"
    return format(Decimal(repr(bound)).normalize(), "f")


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
class _Conversion:
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

    >>> converter = RemoteWriteConverter(PrometheusRemoteWriteExporterConfig(endpoint="http://p:9090/api/v1/write"))
    >>> [s.labels[0] for s in converter.series(metrics_data)]
    [('__name__', 'http_server_request_duration_seconds_bucket'), ...]
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
        return merge_series(point.samples for point in self._convert(data).points)

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

    def _convert(self, data: MetricsData) -> _Conversion:
        result = _Conversion()
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
class RemoteWriteStats:
    """Counts in data points (a histogram point counts once, whatever its bucket count), for the sidecar's metrics.

    ``sent``: accepted by the backend (2xx). ``failed``: given up after sending (a 4xx other than 429, retries
    exhausted, or still failing when shutdown's time ran out). ``dropped``: never sent, because the queue was
    full or shutdown found them still queued. ``unsupported``: refused by conversion (delta, exponential).
    ``queued``: waiting now, in ``queued_requests`` requests. ``retries``: attempts repeated after a failure.
    """

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    unsupported: int = 0
    queued: int = 0
    queued_requests: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class _Request:
    body: bytes
    points: int


class _Outcome:
    SENT: Final = "sent"
    RETRY: Final = "retry"
    FAILED: Final = "failed"


class RemoteWriteExporter:
    """Writes cumulative metrics to a Prometheus remote-write endpoint, in order per series, without blocking.

    Each exported batch is converted, split by series over ``num_consumers`` shards and queued as one request per
    shard; one sender thread per shard posts its requests in order, so a series' samples always reach the
    backend in time order (Prometheus refuses out-of-order samples with 400). Retries: exponential backoff
    with jitter on network errors, 429 and 5xx, honouring ``Retry-After``, until ``max_elapsed_time``.

    ``clock``, ``sleep`` and ``jitter`` (uniform in [0, 1)) are injectable so tests need no real waiting;
    ``auth_header`` returns an ``Authorization`` value (the runtime's ``bearertokenauth``) for every request.

    >>> exporter = RemoteWriteExporter(config, clock=fake.now, sleep=fake.sleep)
    >>> exporter.start(); exporter.export(data); exporter.shutdown(timeout=1.0)
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
    ) -> None:
        queue = config.remote_write_queue
        if queue.storage is not None:
            # Failing fast beats silently keeping in memory what the operator asked to survive a restart.
            raise ValueError(
                f"exporters.{name}.remote_write_queue.storage: the file-backed queue is not available yet; "
                "remove the key to queue in memory"
            )
        self._config = config
        self._name = name
        self._url = str(config.endpoint)
        self._retry: RetryConfig = config.retry_on_failure
        self._queued = queue.enabled
        self._shard_count = queue.num_consumers if queue.enabled else 1
        # queue_size counts requests over all shards; each shard keeps its share, at least one.
        self._shard_capacity = max(1, -(-queue.queue_size // self._shard_count))
        self._converter = RemoteWriteConverter(config, self._shard_count)
        self._clock = clock
        self._abort = threading.Event()
        self._sleep = sleep if sleep is not None else self._abort.wait
        self._jitter = jitter
        self._auth_header = auth_header
        self._own_client = client is None
        self._client = client if client is not None else self._make_client(config)
        self._headers = {**_HEADERS, "User-Agent": _user_agent()}
        self._headers.update({key: value.get_secret_value() for key, value in config.headers.items()})
        self._lock = threading.Condition()
        self._shards: list[deque[_Request]] = [deque() for _ in range(self._shard_count)]
        self._busy = [False] * self._shard_count
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._closed = False
        self._deadline = math.inf
        self._counts = {"sent": 0, "failed": 0, "dropped": 0, "unsupported": 0, "retries": 0}
        self._logged: set[str] = set()

    @staticmethod
    def _make_client(config: PrometheusRemoteWriteExporterConfig) -> httpx.Client:
        verify: Any = True
        cert: Any = None
        if config.tls is not None:
            verify = False if config.tls.insecure_skip_verify else (config.tls.ca_file or True)
            if config.tls.cert_file and config.tls.key_file:
                cert = (config.tls.cert_file, config.tls.key_file)
        limits = httpx.Limits(max_connections=config.remote_write_queue.num_consumers)
        return httpx.Client(timeout=config.timeout, verify=verify, cert=cert, limits=limits)

    # --- lifecycle ---

    def start(self) -> None:
        """Start the sender threads (one per consumer). Idempotent; nothing is sent before this."""
        with self._lock:
            if self._threads or self._closing or not self._queued:
                return
            for shard in range(self._shard_count):
                thread = threading.Thread(
                    target=self._run, args=(shard,), name=f"{self._name}-sender-{shard}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop taking data, send what is queued for up to ``timeout`` seconds, then drop the rest. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = self._clock() + timeout
            self._lock.notify_all()
            threads = list(self._threads)
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        # Whatever is still waiting (or being retried) is given up now.
        self._abort.set()
        for thread in threads:
            thread.join(1.0)
        with self._lock:
            for queue in self._shards:
                while queue:
                    self._counts["dropped"] += queue.popleft().points
            self._closed = True
        if self._own_client:
            self._client.close()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued request has been sent or given up; False if that took longer than ``timeout``."""
        end = time.monotonic() + timeout
        with self._lock:
            while any(self._shards) or any(self._busy):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))
        return True

    # --- the pipeline side ---

    def export(self, data: MetricsData) -> bool:
        """Queue ``data``; False when any part was refused (queue full, or shut down) or sending failed.

        A refused part is counted in ``dropped`` and not retried here: the pipeline can refuse the batch
        upstream (the receiver answers 503) so that senders retry, which is what keeps accepted data lossless.
        Without a queue (``remote_write_queue.enabled: false``) the write happens in the caller's thread.
        """
        conversion = self._converter._convert(data)
        by_shard: dict[int, list[_Point]] = {}
        for point in conversion.points:
            by_shard.setdefault(point.shard_key, []).append(point)
        requests = {
            shard: _Request(encode_series(merge_series(p.samples for p in points)), len(points))
            for shard, points in by_shard.items()
        }
        with self._lock:
            self._counts["unsupported"] += conversion.unsupported
        if conversion.unsupported:
            self._log_once(
                "unsupported",
                "%s: %d data points are delta, exponential histograms or summaries, which remote write does not "
                "carry here; they are dropped (put a cumulative pipeline in front)",
                self._name,
                conversion.unsupported,
            )
        if not self._queued:
            ok = True
            for request in requests.values():
                ok = self._deliver(request) and ok
            return ok
        accepted = True
        with self._lock:
            for shard, request in requests.items():
                queue = self._shards[shard]
                if self._closing or len(queue) >= self._shard_capacity:
                    self._counts["dropped"] += request.points
                    accepted = False
                    continue
                queue.append(request)
            self._lock.notify_all()
        if not accepted:
            self._log_once(
                "full",
                "%s: the sending queue is full or closed (%d requests per consumer); new data is refused and "
                "counted as dropped until the endpoint catches up",
                self._name,
                self._shard_capacity,
            )
        return accepted

    def stats(self) -> RemoteWriteStats:
        """A snapshot of the counters (see :class:`RemoteWriteStats`)."""
        with self._lock:
            queued_requests = sum(len(q) for q in self._shards)
            queued = sum(r.points for q in self._shards for r in q)
            return RemoteWriteStats(queued=queued, queued_requests=queued_requests, **self._counts)

    # --- the sender side ---

    def _run(self, shard: int) -> None:
        queue = self._shards[shard]
        while True:
            with self._lock:
                while not queue and not self._closing:
                    self._lock.wait()
                if not queue or self._abort.is_set():
                    return
                # The head stays queued (and counted) until it is sent or given up: order is kept on retries.
                request = queue[0]
                self._busy[shard] = True
            try:
                self._deliver(request)
            finally:
                with self._lock:
                    if queue and queue[0] is request:
                        queue.popleft()
                    self._busy[shard] = False
                    self._lock.notify_all()

    def _deliver(self, request: _Request) -> bool:
        """Send one request with retries; count it as sent or failed. True when the backend accepted it."""
        started = self._clock()
        interval = self._retry.initial_interval
        while True:
            outcome, retry_after = self._attempt(request)
            if outcome == _Outcome.SENT:
                self._count("sent", request.points)
                return True
            if outcome == _Outcome.FAILED or not self._retry.enabled:
                self._count("failed", request.points)
                return False
            delay = interval * (1 + self._retry.randomization_factor * (2 * self._jitter() - 1))
            if retry_after is not None:
                delay = max(delay, retry_after)
            interval = min(interval * self._retry.multiplier, self._retry.max_interval)
            now = self._clock()
            limit = self._retry.max_elapsed_time
            with self._lock:
                deadline = self._deadline
            if (limit and now + delay - started > limit) or now + delay > deadline or self._abort.is_set():
                self._log_once("gave_up", "%s: gave up on a write after %.1fs of retries", self._name, now - started)
                self._count("failed", request.points)
                return False
            self._count("retries", 1)
            self._sleep(delay)

    def _attempt(self, request: _Request) -> tuple[str, float | None]:
        headers = self._headers
        if self._auth_header is not None:
            headers = {**headers, "Authorization": self._auth_header()}
        try:
            response = self._client.post(self._url, content=request.body, headers=headers)
        except httpx.TransportError as error:
            self._log_once("network", "%s: cannot reach the endpoint (%s); retrying", self._name, type(error).__name__)
            return _Outcome.RETRY, None
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome.SENT, None
        # The spec: retry 5xx, may retry 429, never other 4xx (the same request would fail again).
        if status == 429 or status >= 500:
            self._log_once("retry_status", "%s: the endpoint answered %d; retrying", self._name, status)
            return _Outcome.RETRY, _retry_after(response.headers.get("retry-after"))
        self._log_once(
            f"status_{status}",
            "%s: the endpoint refused a write with %d, not retried: %s",
            self._name,
            status,
            response.text[:_MAX_LOGGED_BODY].strip(),
        )
        return _Outcome.FAILED, None

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    def _log_once(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        # One line per kind of trouble: an endpoint that is down for an hour must not flood the log.
        with self._lock:
            first = key not in self._logged
            self._logged.add(key)
        _logger.log(level if first else logging.DEBUG, message, *args)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
