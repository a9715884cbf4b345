"""The sidecar's ``prometheus`` exporter: one scrape target holding the sum over every worker.

Workers send their own series (each resource has its own ``service.instance.id`` and ``process.pid``),
cumulative or delta. The exporter keeps, per input stream (resource + scope + metric + attributes), the last
cumulative value and its start time, and adds each *increase* to an output series keyed without the
per-worker resource attributes. A new start time or a lower value is a restart whose whole value is new, the
rule of ``processors/_merge.py``, so a counter never goes backwards when a worker restarts and no increase
is lost. Delta points are added as they come.

>>> from otel_monitoring.sidecar.config import PrometheusExporterConfig
>>> exporter = PrometheusExporter(PrometheusExporterConfig())
>>> exporter.export(MetricsData(resource_metrics=[]))
>>> exporter.render()
b''

Storage is per metric, not per series: a series is a label tuple in two dicts (its input and its output)
pointing into flat ``array('d')`` rows, so a counter series costs a few hundred bytes and a histogram series
well under a kilobyte (``bench/sidecar_series_memory.py``). docs/sidecar-prometheus-exporter.md has the
decisions (``job``, ``instance``, Gauges, ``target_info``).
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import logging
import math
import threading
import time
from array import array
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping, MutableMapping, Sequence
from typing import Any, Final

from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute, sanitize_full_name
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from otel_monitoring.sidecar._asgi import serve_lifespan
from otel_monitoring.sidecar._auth import load_bearer_token, read_token_file
from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig, PrometheusExporterConfig
from processors._merge import AttributeSet, attributes_key

__all__ = [
    "DEFAULT_SHARED_METRIC_PREFIXES",
    "DEFAULT_WORKER_ATTRIBUTES",
    "PrometheusExporter",
    "label_value",
    "map_unit",
    "prometheus_metric_name",
    "sanitize_label_name",
]

_logger = logging.getLogger(__name__)

DEFAULT_WORKER_ATTRIBUTES: Final[frozenset[str]] = frozenset(
    {
        "service.instance.id",
        "process.pid",
        "process.parent_pid",
        "process.creation.time",
        "process.command",
        "process.command_line",
        "process.command_args",
        "process.executable.path",
    }
)
"""Resource attributes that differ from one worker to the next: left out of every output label and of
``target_info``, so that the series of all workers of a service add up into one."""

DEFAULT_SHARED_METRIC_PREFIXES: Final[tuple[str, ...]] = ("system.", "container.", "k8s.")
"""Metrics every worker of a pod reads from the same host, cgroup or pod (CPU, memory, disks, network, limits):
not added up over workers. A counter is the highest value of the workers still sending (they read it at slightly
different moments, so the highest never steps back); any other kind is the latest value sent. Summed, four workers
would show four times the host's CPU time, and each restarted worker would add the whole host counter again."""

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_MAX_PLANS: Final = 4096
# Label tuples remembered by attribute set (AttributeSet.token) under each set of fixed labels, all sets of fixed
# labels together: past it they are all forgotten and rebuilt, which costs one slow pass per series.
_MAX_CACHED_LABELS: Final = 65536

# --- Names: the OpenTelemetry-to-Prometheus translation --------------------------------------------------------
# https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/#metric-metadata-1
# The embedded mode renders through the SDK's PrometheusMetricReader; the same input must give the same names
# here and over remote write, so the unit table and the sanitizing are the SDK exporter's own (a unit test
# compares the results).


def sanitize_label_name(key: str) -> str:
    """An attribute key as a Prometheus label name: ``"http.route"`` -> ``"http_route"``."""
    return sanitize_attribute(key)


def prometheus_metric_name(name: str, unit: str, kind: str, *, namespace: str = "", add_suffixes: bool = True) -> str:
    """The exposed family name; ``kind`` is ``counter``, ``gauge`` or ``histogram``.

    Counters get ``_total`` (the samples' name; the family is written the same way in the text format).

    >>> prometheus_metric_name("http.server.request.duration", "s", "histogram")
    'http_server_request_duration_seconds'
    >>> prometheus_metric_name("app.requests", "{request}", "counter", namespace="shop")
    'shop_app_requests_total'
    """
    if namespace:
        name = f"{namespace}_{name}"
    name = sanitize_full_name(name)
    if not add_suffixes:
        return name
    suffix = map_unit(unit)
    if kind == "counter" and name.endswith("_total"):
        name = name[:-6]
    if suffix and not name.endswith("_" + suffix):
        name = f"{name}_{suffix}"
    return name + "_total" if kind == "counter" else name


def label_value(value: Any) -> str:
    """An attribute value as a label value; as the SDK reader writes non-string values: JSON (true, 3, [1, 2]).

    >>> [label_value(v) for v in ("a", 200, 1.5, True, float("nan"), (1, "b"))]
    ['a', '200', '1.5', 'true', 'NaN', '[1, "b"]']
    """
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    # json.dumps cost ~3 µs per call, once per status code of every point before the label caches: the exact
    # scalar types are written here as JSON writes them (int's and float's own text); anything else goes to JSON.
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float and value - value == 0.0:  # finite: JSON writes NaN and the infinities its own way
        return float.__repr__(value)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _number(value: float) -> str:
    # The text prometheus_client writes (Go's): repr for ordinary values, an exponent from 1e6 up where Python's
    # repr waits until 1e16, and +Inf, -Inf, NaN. A unit test compares the two.
    if -1e6 < value < 1e6:
        return repr(value)
    if value != value:
        return "NaN"
    if value in (_INF, -_INF):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


_INF = float("inf")


# --- Storage ----------------------------------------------------------------------------------------------------

# How a point changes its output: a cumulative total (restart rules), a delta to add, a level whose output is
# the sum of its inputs' current values (UpDownCounters), or a value to set (Gauges, one series per worker).
_CUMULATIVE, _DELTA, _LEVEL, _SET, _SHARED_MAX = range(5)

Labels = tuple[Any, ...]
"""An output series: ``(label names tuple, value, value, ...)``, names sorted; the names tuple is shared."""


class _Family:
    __slots__ = ("help", "kind", "name", "shared", "tables")

    def __init__(self, name: str, kind: str, help_text: str, shared: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.shared = shared  # one value for every worker (DEFAULT_SHARED_METRIC_PREFIXES), not a sum
        self.tables: dict[tuple[float, ...], _Table] = {}


class _Table:
    """The series of one family with one set of bucket bounds (none for counters and gauges).

    Memory is the point of this layout: no object per series. An output series is its label tuple, a key
    into ``outputs`` whose value is a row number in ``out``; an input stream is that row number (the same int
    object) under its origin in ``inputs``, with a row in ``last`` and one entry in ``start`` and ``seen``. A row is
    ``stride`` floats: the value, or ``count, sum, bucket...`` for histograms.
    """

    __slots__ = ("bounds", "inputs", "last", "oldest", "out", "outputs", "seen", "start", "stride", "updated")

    def __init__(self, bounds: tuple[float, ...], histogram: bool) -> None:
        self.bounds = bounds
        self.stride = len(bounds) + 3 if histogram else 1
        self.outputs: dict[Labels, int] = {}
        self.out = array("d")
        self.inputs: dict[int, dict[int, int]] = {}
        self.last = array("d")
        self.start = array("q")
        self.seen = array("d")
        self.oldest = float("inf")
        self.updated = 0.0

    def output_row(self, labels: Labels) -> int:
        row = self.outputs.get(labels)
        if row is None:
            row = self.outputs[labels] = len(self.out) // self.stride
            self.out.extend(_zeros(self.stride))
        return row

    def take_highest_inputs(self) -> None:
        """Set each output to its highest live input (a shared counter: see DEFAULT_SHARED_METRIC_PREFIXES).

        Live inputs only, so that once the workers of a restarted container have expired, the counter follows
        the new ones down (Prometheus sees one reset) instead of staying at the old value.
        """
        highest: dict[int, float] = {}
        last = self.last
        for streams in self.inputs.values():
            for out_index, row in streams.items():
                value = last[row]
                if value > highest.get(out_index, -math.inf):
                    highest[out_index] = value
        for out_index, value in highest.items():
            self.out[out_index] = value

    def expire(self, horizon: float, level: bool) -> None:
        """Forget inputs not seen since ``horizon``, then every output no live input feeds; compact the arrays."""
        if self.oldest >= horizon:
            return
        stride = self.stride
        old_last, old_out = self.last, self.out
        kept: list[tuple[int, int, int]] = []  # (origin, old output row, old input row)
        alive: set[int] = set()
        for origin, streams in self.inputs.items():
            for out_row, row in streams.items():
                if self.seen[row] < horizon:
                    if level:  # a vanished worker's level (requests in flight) no longer holds
                        old_out[out_row * stride] -= old_last[row * stride]
                    continue
                kept.append((origin, out_row, row))
                alive.add(out_row)
        out = array("d")
        outputs: dict[Labels, int] = {}
        moved: dict[int, int] = {}
        for labels, row in self.outputs.items():
            if row in alive:
                moved[row] = outputs[labels] = len(out) // stride
                out.extend(old_out[row * stride : (row + 1) * stride])
        last, start, seen = array("d"), array("q"), array("d")
        inputs: dict[int, dict[int, int]] = {}
        for origin, out_row, row in kept:
            new_streams = inputs.get(origin)
            if new_streams is None:
                new_streams = inputs[origin] = {}
            new_streams[moved[out_row]] = len(seen)
            last.extend(old_last[row * stride : (row + 1) * stride])
            start.append(self.start[row])
            seen.append(self.seen[row])
        self.oldest = min(seen, default=float("inf"))
        self.inputs, self.last, self.start, self.seen = inputs, last, start, seen
        self.outputs, self.out = outputs, out


_ZEROS: dict[int, array[float]] = {}


def _zeros(stride: int) -> array[float]:
    zeros = _ZEROS.get(stride)
    if zeros is None:
        zeros = _ZEROS[stride] = array("d", [0.0] * stride)
    return zeros


class _Resource:
    __slots__ = ("attributes", "job", "labels", "last_seen", "worker")

    def __init__(self, attributes: Mapping[str, Any], worker_attributes: Collection[str], promote: bool) -> None:
        name = attributes.get("service.name")
        namespace = attributes.get("service.namespace")
        job = str(name) if name is not None else ""
        if namespace:
            job = f"{namespace}/{job}"
        self.job = job
        worker = attributes.get("service.instance.id", attributes.get("process.pid", ""))
        self.worker = label_value(worker) if worker != "" else ""
        shared = {
            k: v
            for k, v in attributes.items()
            if k not in worker_attributes and k not in ("service.name", "service.namespace", "service.instance.id")
        }
        self.attributes = {sanitize_label_name(k): label_value(v) for k, v in shared.items()}
        self.labels: dict[str, str] = dict(self.attributes) if promote else {}
        if job:
            self.labels["job"] = job
        self.last_seen = 0.0


class PrometheusExporter:
    """The ``prometheus`` exporter: ``export(MetricsData)`` from the pipeline, ``render()`` or ASGI for scrapes.

    ``clock`` gives Unix seconds (expiry); ``worker_attributes`` are the resource attributes that tell workers
    apart (never labels). ``bearer_token`` is the ``bearertokenauth`` extension ``config.auth`` names.

    >>> from opentelemetry.sdk.metrics.export import Metric, ResourceMetrics, ScopeMetrics
    >>> from opentelemetry.sdk.resources import Resource
    >>> from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    >>> def batch(pid, value):
    ...     point = NumberDataPoint({"route": "/"}, 1, 2, value)
    ...     metric = Metric("requests", "", "1", Sum([point], AggregationTemporality.CUMULATIVE, True))
    ...     scope = ScopeMetrics(InstrumentationScope("app"), [metric], "")
    ...     resource = Resource({"service.name": "shop", "process.pid": pid})
    ...     return MetricsData([ResourceMetrics(resource, [scope], "")])
    >>> exporter = PrometheusExporter(PrometheusExporterConfig(), clock=lambda: 0.0)
    >>> exporter.export(batch(1, 5))
    >>> exporter.export(batch(2, 7))
    >>> [line for line in exporter.render().decode().splitlines() if line.startswith("requests")]
    ['requests_total{job="shop",otel_scope_name="app",otel_scope_schema_url="",otel_scope_version="",route="/"} 12.0']
    """

    def __init__(
        self,
        config: PrometheusExporterConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        worker_attributes: Collection[str] = DEFAULT_WORKER_ATTRIBUTES,
        shared_metric_prefixes: Sequence[str] = DEFAULT_SHARED_METRIC_PREFIXES,
        bearer_token: BearerTokenAuthExtensionConfig | None = None,
        read_text: Callable[[str], str] = read_token_file,
    ) -> None:
        config = config or PrometheusExporterConfig()
        if config.auth is not None and bearer_token is None:
            raise ValueError(
                f"exporters.prometheus.auth.authenticator: extension {config.auth.authenticator!r} "
                "must be given to the exporter as bearer_token"
            )
        self.config = config
        self._clock = clock
        self._expiry = config.metric_expiration
        self._worker_attributes = frozenset(worker_attributes)
        self._shared_prefixes = tuple(shared_metric_prefixes)
        self._promote = config.resource_to_telemetry_conversion.enabled
        self._const_labels = {sanitize_label_name(k): v for k, v in config.const_labels.items()}
        self._lock = threading.Lock()
        self._families: dict[tuple[str, str], _Family] = {}
        self._resources: dict[Hashable, _Resource] = {}
        self._origins: dict[tuple[Hashable, Hashable], int] = {}
        self._origin_seen: dict[int, float] = {}
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}
        # (fixed labels, attribute keys) -> (label names, order): how a point's values become a label tuple.
        self._plans: dict[tuple[tuple[tuple[str, str], ...], tuple[str, ...]], tuple[tuple[str, ...], list[int]]] = {}
        self._label_names: dict[str, str] = {}
        # fixed labels -> {AttributeSet.token: label tuple}: a series' labels are built once, not per point.
        self._label_caches: dict[tuple[tuple[str, str], ...], dict[int, Labels]] = {}
        self._cached_labels = 0
        self._token: bytes | None = None
        self._scheme = b""
        if bearer_token is not None and config.auth is not None:
            self._token = load_bearer_token(bearer_token, read_text, name=config.auth.authenticator)
            self._scheme = bearer_token.scheme.lower().encode()

    # --- Consuming ----------------------------------------------------------------------------------------------

    def export(self, data: MetricsData) -> None:
        """Add one batch from the pipeline. Exponential histograms are not exposed (as in the SDK reader)."""
        now = self._clock()
        with self._lock:
            for resource_metrics in data.resource_metrics:
                resource_key = attributes_key(resource_metrics.resource.attributes)
                resource = self._resources.get(resource_key)
                if resource is None:
                    resource = self._resources[resource_key] = _Resource(
                        resource_metrics.resource.attributes, self._worker_attributes, self._promote
                    )
                resource.last_seen = now
                for scope_metrics in resource_metrics.scope_metrics:
                    scope = scope_metrics.scope
                    scope_key = (scope.name, scope.version or "", scope.schema_url or "")
                    origin = self._origins.get((resource_key, scope_key))
                    if origin is None:
                        origin = self._origins[(resource_key, scope_key)] = len(self._origins)
                    self._origin_seen[origin] = now
                    fixed = dict(self._const_labels)
                    fixed.update(resource.labels)
                    if not self.config.without_scope_info:
                        fixed["otel_scope_name"] = scope.name or ""
                        fixed["otel_scope_version"] = scope.version or ""
                        fixed["otel_scope_schema_url"] = scope.schema_url or ""
                    for metric in scope_metrics.metrics:
                        self._export_metric(metric, fixed, resource, origin, now)
            self._expire(now)

    def _export_metric(self, metric: Any, fixed: dict[str, str], resource: _Resource, origin: int, now: float) -> None:
        data = metric.data
        shared = metric.name.startswith(self._shared_prefixes)
        if isinstance(data, Sum):
            delta = data.aggregation_temporality is AggregationTemporality.DELTA
            kind = "counter" if data.is_monotonic else "gauge"
            mode = _DELTA if delta else (_CUMULATIVE if data.is_monotonic else _LEVEL)
        elif isinstance(data, Gauge):
            kind, mode = "gauge", _SET
            if resource.worker and not shared:
                fixed = {**fixed, "worker": resource.worker}
        elif isinstance(data, Histogram):
            kind = "histogram"
            mode = _DELTA if data.aggregation_temporality is AggregationTemporality.DELTA else _CUMULATIVE
        else:
            _logger.debug("prometheus exporter: %s of %r is not exposed", type(data).__name__, metric.name)
            return
        name = prometheus_metric_name(
            metric.name,
            metric.unit or "",
            kind,
            namespace=self.config.namespace,
            add_suffixes=self.config.add_metric_suffixes,
        )
        family = self._families.get((name, kind))
        if family is None:
            family = self._families[(name, kind)] = _Family(name, kind, metric.description or "", shared)
        if family.shared and mode != _DELTA:
            mode = _SHARED_MAX if mode == _CUMULATIVE and kind == "counter" else _SET
        fixed_items = tuple(fixed.items())
        cache = self._label_caches.get(fixed_items)
        if cache is None:
            if len(self._label_caches) >= _MAX_PLANS:
                self._forget_labels()
            cache = self._label_caches[fixed_items] = {}
        if kind == "histogram":
            self._export_histograms(family, data.data_points, fixed_items, cache, origin, mode, now)
        else:
            self._export_numbers(family, data.data_points, fixed_items, cache, origin, mode, now)

    def _labels_of(self, fixed: tuple[tuple[str, str], ...], cache: dict[int, Labels], attributes: Any) -> Labels:
        """A point's label tuple, from the cache when its attributes are an ``AttributeSet`` seen before."""
        if type(attributes) is not AttributeSet:
            return self._labels(fixed, attributes or {})
        labels = cache.get(attributes.token)
        if labels is None:
            if self._cached_labels >= _MAX_CACHED_LABELS:
                self._forget_labels()
            labels = cache[attributes.token] = self._labels(fixed, attributes)
            self._cached_labels += 1
        return labels

    def _forget_labels(self) -> None:
        for cache in self._label_caches.values():
            cache.clear()  # the dicts stay: callers up the stack may hold one
        self._label_caches.clear()
        self._cached_labels = 0

    def _export_numbers(
        self,
        family: _Family,
        points: Sequence[Any],
        fixed: tuple[tuple[str, str], ...],
        cache: dict[int, Labels],
        origin: int,
        mode: int,
        now: float,
    ) -> None:
        # Hot path, written for speed on purpose (issue 5's throughput target, ~1 µs per point here): _update
        # inlined for one-float rows, arrays and bound methods in locals, the label tuple from the per-set cache.
        table = family.tables.get(())
        if table is None:
            table = family.tables[()] = _Table((), False)
        streams = table.inputs.get(origin)
        if streams is None:
            streams = table.inputs[origin] = {}
        outputs_get, streams_get = table.outputs.get, streams.get
        out, last, starts, seen = table.out, table.last, table.start, table.seen
        cache_get = cache.get
        for point in points:
            if not isinstance(point, NumberDataPoint):
                continue
            attributes = point.attributes
            labels = cache_get(attributes.token) if type(attributes) is AttributeSet else None
            if labels is None:
                labels = self._labels_of(fixed, cache, attributes)
            out_index = outputs_get(labels)
            if out_index is None:
                out_index = table.output_row(labels)
            value = float(point.value)
            start = point.start_time_unix_nano or 0
            row = streams_get(out_index)
            if row is None:
                row = streams[out_index] = len(seen)
                last.append(0.0)
                starts.append(start)
                seen.append(now)
                restarted = True
            else:
                restarted = start != starts[row] or value < last[row]
            if mode == _CUMULATIVE:
                out[out_index] += value if restarted else value - last[row]
                last[row] = value
            elif mode == _DELTA:
                out[out_index] += value
            elif mode == _LEVEL:
                # An up-down count is a level: the output is the sum of its inputs' current levels, and a
                # restarted input replaces its contribution (a restarted worker has no requests in flight).
                out[out_index] += value - last[row]
                last[row] = value
            elif mode == _SHARED_MAX:
                last[row] = value  # the output is the highest live input, taken when rendering
            else:
                out[out_index] = last[row] = value
            starts[row] = start
            seen[row] = now
        if points:
            table.updated = now
            if now < table.oldest:
                table.oldest = now

    def _export_histograms(
        self,
        family: _Family,
        points: Sequence[Any],
        fixed: tuple[tuple[str, str], ...],
        cache: dict[int, Labels],
        origin: int,
        mode: int,
        now: float,
    ) -> None:
        tables = family.tables
        for point in points:
            if not isinstance(point, HistogramDataPoint):
                continue
            labels = self._labels_of(fixed, cache, point.attributes)
            bounds = tuple(point.explicit_bounds)
            table = tables.get(bounds)
            if table is None:
                table = tables[bounds] = _Table(bounds, True)
            if len(point.bucket_counts) + 2 != table.stride:
                continue  # a histogram point without buckets: nothing to add bucket by bucket
            values = [float(point.count), point.sum, *map(float, point.bucket_counts)]
            _update(table, origin, labels, values, point.start_time_unix_nano or 0, mode, now)

    def _labels(self, fixed: tuple[tuple[str, str], ...], attributes: Mapping[str, Any]) -> Labels:
        keys = tuple(attributes)
        plan = self._plans.get((fixed, keys))
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:  # workers come and go (a Gauge's plan names its worker): stay bounded
                self._plans.clear()
                self._label_names.clear()
            plan = self._plans[(fixed, keys)] = self._plan(fixed, keys)
        names, order = plan
        values = [v for _, v in fixed]
        values.extend(v if type(v) is str else label_value(v) for v in attributes.values())
        return (names, *[values[i] for i in order])

    def _plan(self, fixed: tuple[tuple[str, str], ...], keys: tuple[str, ...]) -> tuple[tuple[str, ...], list[int]]:
        # Point attributes come after resource and scope labels and win on a clash, as in the SDK reader.
        position: dict[str, int] = {}
        for index, name in enumerate([name for name, _ in fixed] + [self._label_name(k) for k in keys]):
            position[name] = index
        ordered = sorted(position)
        names = self._names.setdefault(tuple(ordered), tuple(ordered))
        return names, [position[name] for name in ordered]

    def _label_name(self, key: str) -> str:
        name = self._label_names.get(key)
        if name is None:
            name = self._label_names[key] = sanitize_label_name(key)
        return name

    def _expire(self, now: float) -> None:
        horizon = now - self._expiry
        for key, family in list(self._families.items()):
            for bounds, table in list(family.tables.items()):
                table.expire(horizon, level=family.kind == "gauge" and not family.shared)
                if not table.outputs:
                    del family.tables[bounds]
            if not family.tables:
                del self._families[key]
        for resource_key, resource in list(self._resources.items()):
            if resource.last_seen < horizon:
                del self._resources[resource_key]
        for origin_key, origin in list(self._origins.items()):
            if self._origin_seen[origin] < horizon:
                del self._origins[origin_key], self._origin_seen[origin]

    # --- Serving ------------------------------------------------------------------------------------------------

    def series_count(self) -> int:
        """Output series currently exposed (histograms count once, not per bucket)."""
        with self._lock:
            return sum(len(t.outputs) for f in self._families.values() for t in f.tables.values())

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of every live series, with ``target_info`` first."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            lines: list[str] = []
            self._render_target_info(lines)
            for family in self._families.values():
                if family.shared and family.kind == "counter":
                    for table in family.tables.values():
                        table.take_highest_inputs()
                _render_family(family, lines, now if self.config.send_timestamps else None)
        return "".join(lines).encode()

    def _render_target_info(self, lines: list[str]) -> None:
        # One target_info per job: the resource attributes its live workers share (per-worker ones are gone).
        jobs: dict[str, dict[str, str]] = {}
        for resource in self._resources.values():
            common = jobs.get(resource.job)
            if common is None:
                jobs[resource.job] = dict(resource.attributes)
            else:
                for key in [k for k, v in common.items() if resource.attributes.get(k) != v]:
                    del common[key]
        if not jobs:
            return
        lines.append("# HELP target_info Target metadata\n# TYPE target_info gauge\n")
        for job, attributes in jobs.items():
            labels = {**attributes, **self._const_labels}
            if job:
                labels["job"] = job
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"target_info{{{text}}} 1.0\n" if text else "target_info 1.0\n")

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        """ASGI app: ``GET /metrics`` (gzip when accepted; bearer token when ``auth`` is set)."""
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if scope["path"] != "/metrics":
            await _answer(send, 404, b"not found: scrape /metrics\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed: use GET\n", [(b"allow", b"GET")])
        elif self._token is not None and not self._authorized(headers.get(b"authorization")):
            await _answer(send, 401, b"missing or invalid bearer token\n", [(b"www-authenticate", b"Bearer")])
        else:
            # Rendering tens of thousands of series takes milliseconds: keep it off the event loop.
            body = await asyncio.to_thread(self.render)
            extra = [(b"content-type", CONTENT_TYPE.encode())]
            if b"gzip" in headers.get(b"accept-encoding", b"").lower():
                body = gzip.compress(body, compresslevel=6)
                extra.append((b"content-encoding", b"gzip"))
            await _answer(send, 200, body if scope["method"] == "GET" else b"", extra)

    def _authorized(self, header: bytes | None) -> bool:
        scheme, _, token = (header or b"").strip().partition(b" ")
        return hmac.compare_digest(token.strip(), self._token or b"") and scheme.lower() == self._scheme


def _update(
    table: _Table, origin: int, labels: Labels, values: Sequence[float], start: int, mode: int, now: float
) -> None:
    # Hot path: runs once per data point; plain indexing into flat arrays, no objects per series.
    streams = table.inputs.get(origin)
    if streams is None:
        streams = table.inputs[origin] = {}
    stride = table.stride
    # Inputs are keyed by their output's row number, the very int object the output dict holds: a worker's
    # stream costs a dict entry, an int and its array slots, and no second label tuple.
    out_index = table.output_row(labels)
    out_row = out_index * stride
    row = streams.get(out_index)
    if row is None:
        row = streams[out_index] = len(table.seen)
        table.last.extend(_zeros(stride))
        table.start.append(start)
        table.seen.append(now)
        restarted = True
    else:
        restarted = start != table.start[row] or values[0] < table.last[row * stride]
    base = row * stride
    out, last = table.out, table.last
    if mode == _CUMULATIVE:
        for i, value in enumerate(values):
            out[out_row + i] += value if restarted else value - last[base + i]
            last[base + i] = value
    elif mode == _DELTA:
        for i, value in enumerate(values):
            out[out_row + i] += value
    elif mode == _LEVEL:
        # An up-down count is a level: the output is the sum of its inputs' current levels, and a restarted
        # input replaces its contribution (a restarted worker has no requests in flight).
        out[out_row] += values[0] - last[base]
        last[base] = values[0]
    else:  # a gauge's value, or a shared histogram's whole row: the latest one sent
        for i, value in enumerate(values):
            out[out_row + i] = last[base + i] = value
    table.start[row] = start
    table.seen[row] = now
    table.updated = now
    if now < table.oldest:
        table.oldest = now


def _render_family(family: _Family, lines: list[str], now: float | None) -> None:
    name = family.name
    help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
    lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.kind}\n")
    all_names: set[tuple[str, ...]] = {labels[0] for table in family.tables.values() for labels in table.outputs}
    union = sorted({n for names in all_names for n in names})
    for table in family.tables.values():
        stamp = f" {int(table.updated * 1000)}" if now is not None else ""
        out, stride = table.out, table.stride
        for labels, row in table.outputs.items():
            names = labels[0]
            if len(names) == len(union):
                pairs = zip(names, labels[1:], strict=True)
            else:  # as the SDK reader does: every series of a family carries every label, "" when absent
                present = dict(zip(names, labels[1:], strict=True))
                pairs = zip(union, [present.get(n, "") for n in union], strict=True)
            text = ",".join([f'{n}="{_escape(v)}"' for n, v in pairs])
            base = row * stride
            if stride == 1:
                lines.append(
                    f"{name}{{{text}}} {_number(out[base])}{stamp}\n"
                    if text
                    else f"{name} {_number(out[base])}{stamp}\n"
                )
                continue
            sep = "," if text else ""
            cumulative = 0.0
            for bound, index in zip((*table.bounds, "+Inf"), range(base + 2, base + stride), strict=True):
                cumulative += out[index]
                lines.append(f'{name}_bucket{{{text}{sep}le="{bound}"}} {_number(cumulative)}{stamp}\n')
            braces = f"{{{text}}}" if text else ""
            lines.append(f"{name}_count{braces} {_number(out[base])}{stamp}\n")
            lines.append(f"{name}_sum{braces} {_number(out[base + 1])}{stamp}\n")


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    extra = headers or [(b"content-type", b"text/plain; charset=utf-8")]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*extra, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
