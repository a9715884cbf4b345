"""The process's monitoring pipeline: the facade's registry, the SDK's MeterProvider and its readers.

One ``Telemetry`` holds what a process exports: a resource from the settings, a Prometheus reader
whose exposition ``/metrics`` serves (embedded mode, always there), and the readers that
``OTEL_METRICS_EXPORTER`` asks for (``otlp`` to the collector sidecar, ``prometheus`` as a standalone
endpoint, ``console``). The bridge feeds the facade's cells into every reader.
"""

from __future__ import annotations

# Imported for its at-fork hook, which must be registered before any MeterProvider's: the SDK's own after-fork
# handler (MeterProvider._handle_fork) detects the resource on a ThreadPoolExecutor, whose global lock the
# forking thread holds until this module's hook releases it in the child. Registered later, a forked worker
# (gunicorn --preload) would hang in its first instruction.
import concurrent.futures.thread  # noqa: F401
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from otel_monitoring import __version__
from otel_monitoring._access import MetricsAccessPolicy
from otel_monitoring._bridge import MetricsProcessor, RecordingBridge
from otel_monitoring._instruments import MetricsRegistry
from otel_monitoring.pushgateway import PushgatewayPusher, start_pushgateway
from otel_monitoring.settings import OTLPConfig, Settings
from processors import DEFAULT_PIPELINE, Pipeline, PipelineConfigError, ProcessorContext, build_pipeline

if TYPE_CHECKING:
    from otel_monitoring.collectors.system import SystemMetricsHandle

__all__ = [
    "Telemetry",
    "create_pipeline",
    "create_resource",
    "current_telemetry",
    "get_telemetry",
    "pipeline_secrets",
    "set_telemetry",
    "shutdown_telemetry",
    "start_if_exporting",
]

_logger = logging.getLogger(__name__)
SCOPE = InstrumentationScope("otel_monitoring", __version__)
# How long a fork waits in all for the collections and exports in flight (a stuck exporter delays it, never blocks it).
_FORK_LOCK_WAIT_SECONDS = 5.0


def create_resource(settings: Settings) -> Resource:
    """The resource from ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (the name wins, as in the spec),
    with the Kubernetes pod from the downward API (``K8S_POD_NAME``...) under the semantic-convention keys."""
    kubernetes = settings.kubernetes
    pod = {
        "k8s.pod.name": kubernetes.pod_name,
        "k8s.namespace.name": kubernetes.namespace,
        "k8s.node.name": kubernetes.node_name,
        "k8s.container.name": kubernetes.container_name,
    }
    attributes: dict[str, str | int] = {
        **{key: value for key, value in pod.items() if value is not None},
        **settings.service.resource_attributes,
        "service.name": settings.service.name,
        # Tells workers apart even when the user sets one service.instance.id for all of them (uvicorn
        # --workers starts them fresh, each with the same environment): a sidecar summing workers would
        # otherwise take their interleaved counters for one counter restarting again and again.
        "process.pid": os.getpid(),
    }
    # Resource.create adds the SDK's attributes and a service.instance.id; ours win over what it reads.
    return Resource.create(attributes)


def _seconds_histogram_view(buckets: Sequence[float]) -> View:
    # The SDK's default buckets (0, 5, 10, ... 10000) suit milliseconds; every duration in seconds,
    # from any instrumentation, gets the semantic-convention buckets instead.
    return View(instrument_type=Histogram, instrument_unit="s", aggregation=ExplicitBucketHistogramAggregation(buckets))


def _drop_duplicate_http_server_metrics(registry: MetricsRegistry) -> MetricsProcessor:
    """FastAPI (0.16x) records ``http.server.*`` itself once a global MeterProvider exists. Where our middleware
    records them too, FastAPI's copy is dropped, so every request is counted once, with our route templates.

    (A View cannot do it: the seconds-bucket view matches FastAPI's histogram too, and the SDK then keeps
    one stream per matching view.)
    """

    def drop(data: MetricsData) -> MetricsData:
        if registry.get("http.server.request.duration") is None:
            return data
        resource_metrics = []
        for rm in data.resource_metrics:
            scopes = [
                sm if sm.scope.name != "fastapi" else ScopeMetrics(sm.scope, _non_http(sm.metrics), sm.schema_url)
                for sm in rm.scope_metrics
            ]
            resource_metrics.append(ResourceMetrics(rm.resource, scopes, rm.schema_url))
        return MetricsData(resource_metrics)

    return drop


def _non_http(metrics: Sequence[Metric]) -> list[Metric]:
    return [metric for metric in metrics if not metric.name.startswith("http.server.")]


def _otlp_temporality(preference: str) -> dict[type, AggregationTemporality]:
    # https://opentelemetry.io/docs/specs/otel/metrics/sdk_exporters/otlp/#additional-environment-variable-configuration
    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    table: dict[type, AggregationTemporality]
    if preference == "delta":
        table = {Counter: delta, ObservableCounter: delta, Histogram: delta}
    elif preference == "lowmemory":
        table = {Counter: delta, ObservableCounter: cumulative, Histogram: delta}
    else:
        table = {Counter: cumulative, ObservableCounter: cumulative, Histogram: cumulative}
    return {**table, UpDownCounter: cumulative, ObservableUpDownCounter: cumulative, ObservableGauge: cumulative}


def _create_otlp_exporter(otlp: OTLPConfig) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=otlp.resolved_metrics_endpoint(),
        headers=dict(otlp.headers),
        timeout=otlp.timeout_ms / 1000,
        compression=Compression.Gzip if otlp.compression == "gzip" else Compression.NoCompression,
        preferred_temporality=_otlp_temporality(otlp.temporality_preference),
    )


def pipeline_secrets(settings: Settings) -> dict[str, str]:
    """The secrets processors need. Without a configured pseudonym key, sanitize falls back to one random key
    per process (shared by every pipeline, so a customer has one pseudonym on /metrics and in OTLP) and warns."""
    key = settings.processing.pseudonym_key
    return {"pseudonym_key": key.get_secret_value()} if key is not None else {}


def create_pipeline(
    settings: Settings, registry: MetricsRegistry, secrets: dict[str, str], *, strict: bool = False
) -> Pipeline:
    """The processing pipeline from ``settings.processing``; its own metrics go to ``registry``.

    Inside a host application a bad pipeline logs one warning and the default pipeline runs instead,
    so personal data stays sanitized; ``strict`` (the CLI) raises ``PipelineConfigError``.
    """
    processing = settings.processing
    context = ProcessorContext(registry=registry, secrets=secrets)
    try:
        return build_pipeline(processing.processors, processing.pipeline, context)
    except PipelineConfigError as error:
        if strict:
            raise
        _logger.warning("%s; using the default pipeline %s", error, ", ".join(DEFAULT_PIPELINE))
        return build_pipeline({}, None, context)


class _ReaderPipeline:
    """One reader's pipeline, rebuilt from the same recipe on the first collection in a forked child.

    Not in the fork handler itself: building runs arbitrary code (imports, logging, locks) at a moment
    when another thread of the parent may have held any lock; the first collection runs in normal context.
    """

    def __init__(self, build: Callable[[], Pipeline]) -> None:
        self._build = build
        self._pid = os.getpid()
        self._pipeline = build()
        self._pipeline.start()

    @property
    def pipeline(self) -> Pipeline:
        if self._pid != os.getpid():  # forked: the inherited processors may hold locks and the parent's state
            self._pid = os.getpid()
            self._pipeline = self._build()
            self._pipeline.start()
        return self._pipeline


class Telemetry:
    """A MeterProvider whose readers export both the SDK's instruments and the facade's metrics.

    ``extra_readers`` lets tests add an ``InMemoryMetricReader``; ``processor`` replaces the processing
    pipeline built from ``settings.processing`` (tests pass an identity function to see raw data).
    """

    def __init__(
        self,
        settings: Settings,
        registry: MetricsRegistry,
        *,
        extra_readers: Sequence[MetricReader] = (),
        processor: MetricsProcessor | None = None,
        start_exporters: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.resource = create_resource(settings)
        self.access_policy = MetricsAccessPolicy(settings.metrics_endpoint)
        self.prometheus_registry = CollectorRegistry(auto_describe=False)
        self.prometheus_reader = PrometheusMetricReader(
            registry=self.prometheus_registry, scope_info_enabled=settings.metrics_endpoint.scope_labels
        )
        readers: list[MetricReader] = [self.prometheus_reader, *extra_readers]
        exporters = settings.exporters.metrics or []
        if start_exporters:
            readers.extend(self._exporter_readers(exporters))
        self._readers = readers
        self.meter_provider = MeterProvider(
            resource=self.resource,
            metric_readers=readers,
            views=[_seconds_histogram_view(settings.http.duration_buckets)],
        )
        self._pipelines: list[_ReaderPipeline] = []
        self.bridge = RecordingBridge(registry, self.resource, SCOPE)
        for index, reader in enumerate(readers):
            # The pipeline's own metrics (redactions, overflows) come from the first reader's pipeline only:
            # every reader processes the same data, and counting it once per reader would multiply them.
            own_metrics = registry if index == 0 else MetricsRegistry()
            self.bridge.attach(reader, process=processor or self._reader_pipeline(own_metrics))
        if self._pipelines:
            self._apply_cardinality_limits_to_the_facade(self._pipelines[0].pipeline)
        self._standalone_server: object | None = None
        if start_exporters and "prometheus" in exporters:
            self._start_standalone_endpoint()
        self._shut_down = False
        self._pid = os.getpid()
        self._held_for_fork: list[threading.Lock] = []
        weak_before_fork = weakref.WeakMethod(self._hold_locks_for_fork)
        weak_after_in_parent = weakref.WeakMethod(self._release_locks_held_for_fork)
        weak_after_fork = weakref.WeakMethod(self._after_fork_in_child)
        os.register_at_fork(
            before=lambda: (method := weak_before_fork()) and method(),
            after_in_parent=lambda: (method := weak_after_in_parent()) and method(),
            after_in_child=lambda: (method := weak_after_fork()) and method(),
        )
        self.pushgateway_pusher: PushgatewayPusher | None = start_pushgateway(self) if start_exporters else None
        self._system_metrics: SystemMetricsHandle | None = None

    def _hold_locks_for_fork(self) -> None:
        """Before a fork, wait for any collection or export in flight and hold its locks through the fork.

        A lock a parent thread holds at the fork stays held forever in the child, so a worker forked mid-export
        (opentelemetry-instrument gunicorn: the SDK starts in the master) would never export at all; seen in
        about 7 forks out of 10 in tests/integration/test_sidecar_many_workers.py. The SDK's own locks are
        private, hence the guarded lookups. One deadline bounds the wait for all the locks together, so a stuck
        exporter delays a fork by ``_FORK_LOCK_WAIT_SECONDS`` at most, never blocks it; a lock not taken by then
        is named in one warning, since the child may hang on it.
        """
        # The bridge's locks are taken before the SDK's lock by every collection: the same order here.
        locks = [
            (f"collection lock {index} of the metrics bridge", lock) for index, lock in enumerate(self.bridge.locks())
        ]
        consumer_lock = getattr(getattr(self.meter_provider, "_measurement_consumer", None), "_lock", None)
        if consumer_lock is not None:
            locks.append(("the SDK's measurement consumer lock", consumer_lock))
        for reader in self._readers:
            export_lock = getattr(reader, "_export_lock", None)
            if export_lock is not None:
                locks.append((f"the export lock of {type(reader).__name__}", export_lock))
        deadline = time.monotonic() + _FORK_LOCK_WAIT_SECONDS
        held: list[threading.Lock] = []
        missed: list[str] = []
        for name, lock in locks:
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                held.append(lock)
            else:
                missed.append(name)
        self._held_for_fork = held
        if missed:
            _logger.warning(
                "pid %d forks while %s is still held after %gs (a collection or export in flight): the child may "
                "hang when it collects metrics",
                os.getpid(),
                ", ".join(missed),
                _FORK_LOCK_WAIT_SECONDS,
            )

    def _release_locks_held_for_fork(self) -> None:
        for lock in reversed(self._held_for_fork):
            lock.release()
        self._held_for_fork = []

    def _after_fork_in_child(self) -> None:
        """Keep a forked worker (gunicorn ``--preload``) exporting, as a process of its own.

        The SDK restarts its periodic readers' threads in the child; here every lock is replaced and
        the worker gets its own ``service.instance.id``, so a collector never merges two workers'
        cumulative series into one.
        """
        self._release_locks_held_for_fork()
        self.registry.reset_locks_after_fork()
        self.bridge.reset_locks()
        worker = Resource({"service.instance.id": str(uuid.uuid4()), "process.pid": os.getpid()})
        self.resource = self.resource.merge(worker)
        self.bridge.set_resource(self.resource)
        self.meter_provider._update_resource(worker)  # the SDK's own fork hook uses this seam too
        if self._standalone_server is not None:
            _logger.warning(
                "worker pid %d was forked from pid %d, which owns the metrics endpoint on port %s: this worker's "
                "metrics are not served there; export them with OTEL_METRICS_EXPORTER=otlp to the collector sidecar",
                os.getpid(),
                self._pid,
                self.settings.exporters.prometheus_port,
            )
            self._standalone_server = None
        if self.pushgateway_pusher is not None:
            self.pushgateway_pusher.reset_after_fork()
        # prometheus_client's registry lock too: a scrape in a parent thread may have held it.
        self.prometheus_registry._lock = threading.Lock()

    def _reader_pipeline(self, own_metrics: MetricsRegistry) -> MetricsProcessor:
        """A pipeline of its own for one reader: processors keep state from one batch to the next."""
        slot = _ReaderPipeline(lambda: create_pipeline(self.settings, own_metrics, pipeline_secrets(self.settings)))
        self._pipelines.append(slot)
        deduplicate = _drop_duplicate_http_server_metrics(self.registry)
        return lambda data: slot.pipeline.process(deduplicate(data))

    def _apply_cardinality_limits_to_the_facade(self, pipeline: Pipeline) -> None:
        # The facade caps label sets when recording, so a burst never allocates cells; it uses the limits
        # the pipeline's cardinality processor was configured with, so both paths agree.
        for _, step in pipeline.steps:
            limit_for = getattr(step, "limit_for", None)
            if limit_for is not None:
                self.registry.set_cardinality_limits(limit_for)
                return

    @property
    def pipelines(self) -> list[Pipeline]:
        return [slot.pipeline for slot in self._pipelines]

    def _exporter_readers(self, exporters: Sequence[str]) -> list[MetricReader]:
        interval = self.settings.exporters.export_interval_ms
        readers: list[MetricReader] = []
        protocol = self.settings.exporters.otlp.protocol
        if "otlp" in exporters and protocol != "http/protobuf":
            _logger.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported here (only http/protobuf); metrics are not sent "
                "over OTLP until it is http/protobuf",
                protocol,
            )
        elif "otlp" in exporters:
            otlp = _create_otlp_exporter(self.settings.exporters.otlp)
            readers.append(PeriodicExportingMetricReader(otlp, export_interval_millis=interval))
        if "console" in exporters:
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=interval))
        return readers

    def _start_standalone_endpoint(self) -> None:
        from otel_monitoring.exporter import start_http_server

        host, port = self.settings.exporters.prometheus_host, self.settings.exporters.prometheus_port
        try:
            self._standalone_server = start_http_server(port, addr=host, telemetry=self)
        except OSError as error:
            # Inside a host application a taken port must not stop the service from starting.
            _logger.warning(
                "could not serve metrics on %s:%s (%s); the app's own /metrics still works", host, port, error
            )

    def start_system_metrics(self) -> None:
        """Measure what ``settings.collectors`` asks for: system, process, container and Kubernetes resources,
        read when a reader collects, and the network probes. Calling it again restarts what was stopped.

        Never raises: a host app runs on without system metrics, and one warning says why.
        """
        try:
            if self._system_metrics is None:
                from otel_monitoring.collectors.system import install_system_metrics

                self._system_metrics = install_system_metrics(
                    self.meter_provider, self.settings, registry=self.registry
                )
            else:
                self._system_metrics.restart()
        except Exception:
            _logger.warning("could not start system metrics; the app runs without them", exc_info=True)

    def stop_system_metrics(self) -> None:
        """Stop the probes; the system instruments stay registered but report nothing until started again."""
        if self._system_metrics is not None:
            self._system_metrics.stop()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self.meter_provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Flush and stop every reader; safe to call twice."""
        if self._shut_down:
            return
        self._shut_down = True
        server = self._standalone_server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
        self.stop_system_metrics()
        if self.pushgateway_pusher is not None:
            self.pushgateway_pusher.stop(final_push=True)  # before the readers stop, so it still has values
        self.meter_provider.shutdown()
        for pipeline in self.pipelines:
            pipeline.shutdown()


_lock = threading.Lock()
_telemetry: Telemetry | None = None


def current_telemetry() -> Telemetry | None:
    """The process-wide pipeline if it was built, without building it."""
    return _telemetry


def get_telemetry() -> Telemetry:
    """The process-wide pipeline, built on first use from ``config.get_settings()``."""
    global _telemetry
    if _telemetry is None:
        with _lock:
            if _telemetry is None:
                from otel_monitoring import config
                from otel_monitoring.metrics import default_registry

                _telemetry = Telemetry(config.get_settings(), default_registry())
                # Embedded mode: what opentelemetry-instrument's otel_monitoring_system instrumentor would start.
                _telemetry.start_system_metrics()
    return _telemetry


def start_if_exporting() -> None:
    """Build the pipeline now when something must be sent without being asked: a Pushgateway, or an
    exporter named in ``OTEL_METRICS_EXPORTER``. Otherwise it is built by the first scrape or push.

    Called on the first declaration in the default registry, by the HTTP middleware and by
    ``config.configure_exporter``, so a service that only records still exports.
    """
    from otel_monitoring import config

    if _telemetry is not None:
        return
    settings = config.get_settings()
    if settings.pushgateway.url or set(settings.exporters.metrics or ()) - {"none"}:
        get_telemetry()


def set_telemetry(telemetry: Telemetry) -> None:
    """Install the process-wide pipeline (the ``opentelemetry-instrument`` configurator does)."""
    global _telemetry
    with _lock:
        previous, _telemetry = _telemetry, telemetry
    if previous is not None and previous is not telemetry:
        previous.shutdown()


def shutdown_telemetry() -> None:
    global _telemetry
    with _lock:
        previous, _telemetry = _telemetry, None
    if previous is not None:
        previous.shutdown()
