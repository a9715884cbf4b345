"""The collector sidecar's runtime: builds every component from a :class:`CollectorConfig` and serves it.

Each metrics pipeline is ``receivers -> processors in order -> every exporter``. A receiver listed by two
pipelines feeds both; an exporter listed by two pipelines gets both streams. Processors are built per pipeline
(they keep state, as in the Collector) and one batch at a time runs through a pipeline, in a worker thread so the
event loop keeps answering requests. ``memory_limiter`` is a gate checked before a request enters any pipeline;
``batch`` accumulates points and sends them on when it holds ``send_batch_size`` points or after ``timeout``.

Servers (the OTLP receiver, each prometheus exporter, health_check) are uvicorn servers in one asyncio loop.
:meth:`CollectorService.run` blocks until SIGTERM or SIGINT, then drains: health answers 503, the receivers
stop, batches are flushed, exporters shut down within a timeout, and the process exits 0.

>>> from otel_monitoring.sidecar.config import load_collector_config
>>> service = CollectorService(load_collector_config(None))
>>> sorted(service.exporters)
['prometheus']
>>> service.run()  # doctest: +SKIP
0
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import uvicorn
from opentelemetry.sdk.metrics.export import MetricsData

from otel_monitoring._instruments import MetricsRegistry
from otel_monitoring.sidecar._asgi import serve_lifespan
from otel_monitoring.sidecar._auth import load_bearer_token
from otel_monitoring.sidecar._points import count_points
from otel_monitoring.sidecar.config import (
    BatchConfig,
    BearerTokenAuthExtensionConfig,
    CollectorConfig,
    CollectorConfigError,
    DebugExporterConfig,
    FileStorageExtensionConfig,
    HealthCheckExtensionConfig,
    MemoryLimiterConfig,
    OTLPExporterConfig,
    OTLPHTTPExporterConfig,
    PrometheusExporterConfig,
    PrometheusRemoteWriteExporterConfig,
    PushgatewayExporterConfig,
    TLSServerConfig,
    component_type,
    split_host_port,
)
from otel_monitoring.sidecar.grpc_receiver import OTLPGRPCReceiver
from otel_monitoring.sidecar.memory_limiter import MemoryLimiter, available_memory, process_rss
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter
from otel_monitoring.sidecar.receiver import OTLPHTTPReceiver, ReceiverBusy
from otel_monitoring.sidecar.sending_queue import FileStorage, QueueFiles, StorageError
from processors import Pipeline, Processor, ProcessorContext
from processors.pipeline import factory_for

__all__ = [
    "CollectorService",
    "DebugExporter",
    "ExporterCounts",
    "HealthCheck",
    "MetricsExporter",
    "count_points",
]

_logger = logging.getLogger(__name__)

STARTING: Final = "starting"
RUNNING: Final = "running"
STOPPING: Final = "stopping"
STOPPED: Final = "stopped"

_EXPORTER_SHUTDOWN_TIMEOUT: Final = 3.0
# Seconds: the Retry-After of a refused request, and how often a pipeline retries a batch its exporters refused.
_RETRY_INTERVAL: Final = 1.0


# --- Exporters --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExporterCounts:
    """An exporter's figures for the sidecar's own metrics, in data points (``queue_size`` and
    ``queue_capacity`` in requests). ``failed``: given up after trying (or refused by conversion);
    ``enqueue_failed``: refused by a full or closed sending queue."""

    sent: int = 0
    failed: int = 0
    queue_size: int = 0
    series: int | None = None
    queue_capacity: int = 0
    enqueue_failed: int = 0


class MetricsExporter(Protocol):
    """What the service needs of an exporter. ``export`` may block; it runs in a worker thread.

    ``export`` returns True when it took the data (sent, queued, or given up and counted in ``failed``) and
    False when it refused it, nothing kept: the request is then refused upstream and the sender retries.
    ``reserve()`` holds room for one ``export(data, reserved=True)`` (False: no room now); ``release()`` gives
    an unused reservation back. ``busy()`` says whether an export without reservation might be refused.
    """

    def start(self) -> None: ...

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool: ...

    def busy(self) -> bool: ...

    def reserve(self) -> bool: ...

    def release(self) -> None: ...

    def counts(self) -> ExporterCounts: ...

    def shutdown(self, timeout: float) -> None: ...


class _Counted:
    """Counts what passed through a synchronous exporter (thread-safe: pipelines export from worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = 0
        self._failed = 0

    def _count(self, sent: int, failed: int) -> None:
        with self._lock:
            self._sent += sent
            self._failed += failed

    def _snapshot(self, series: int | None = None) -> ExporterCounts:
        with self._lock:
            return ExporterCounts(self._sent, self._failed, 0, series)

    def busy(self) -> bool:
        return False

    def reserve(self) -> bool:
        return True  # synchronous: nothing to hold

    def release(self) -> None:
        pass


class _PrometheusExporterAdapter(_Counted):
    def __init__(self, exporter: PrometheusExporter, component_id: str) -> None:
        super().__init__()
        self.exporter = exporter
        self.component_id = component_id

    def start(self) -> None:
        pass

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        points = count_points(data)
        try:
            self.exporter.export(data)
        except Exception:
            _logger.exception("%s: export failed", self.component_id)
            self._count(0, points)
            return False
        self._count(points, 0)
        return True

    def counts(self) -> ExporterCounts:
        return self._snapshot(self.exporter.series_count())

    def shutdown(self, timeout: float) -> None:
        pass


class _StatsExporterAdapter:
    """An exporter with the service's shape but its own stats (remote write, otlphttp, otlp, pushgateway):
    everything is passed through, and ``counts`` maps its stats to :class:`ExporterCounts`."""

    def __init__(self, exporter: Any, counts: Callable[[], ExporterCounts]) -> None:
        self.exporter = exporter
        self.counts = counts

    def start(self) -> None:
        self.exporter.start()

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        return bool(self.exporter.export(data, reserved=reserved))

    def busy(self) -> bool:
        return bool(self.exporter.busy())

    def reserve(self) -> bool:
        return bool(self.exporter.reserve())

    def release(self) -> None:
        self.exporter.release()

    def shutdown(self, timeout: float) -> None:
        self.exporter.shutdown(timeout=timeout)


class DebugExporter(_Counted):
    """The ``debug`` exporter: one log line per batch (counts; metric names from ``normal`` verbosity).

    Sampling as in the Collector: ``sampling_initial`` batches are logged each second, then one in
    ``sampling_thereafter``.

    >>> DebugExporter(DebugExporterConfig()).export(MetricsData([]))
    True
    """

    def __init__(
        self,
        config: DebugExporterConfig,
        component_id: str = "debug",
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = _logger,
    ) -> None:
        super().__init__()
        self.config = config
        self.component_id = component_id
        self._clock = clock
        self._logger = logger
        self._second = -1
        self._in_second = 0

    def start(self) -> None:
        pass

    def _sampled(self) -> bool:
        second = int(self._clock())
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        over = self._in_second - self.config.sampling_initial
        return over <= 0 or over % self.config.sampling_thereafter == 0

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        points = count_points(data)
        self._count(points, 0)
        with self._lock:
            sampled = self._sampled()
        if sampled:
            metrics = [
                metric.name
                for resource_metrics in data.resource_metrics
                for scope_metrics in resource_metrics.scope_metrics
                for metric in scope_metrics.metrics
            ]
            names = f" ({', '.join(sorted(set(metrics)))})" if self.config.verbosity != "basic" and metrics else ""
            self._logger.info(
                "%s: %d resources, %d metrics, %d data points%s",
                self.component_id,
                len(data.resource_metrics),
                len(metrics),
                points,
                names,
            )
        return True

    def counts(self) -> ExporterCounts:
        return self._snapshot()

    def shutdown(self, timeout: float) -> None:
        pass


class _ServedPrometheusExporter(PrometheusExporter):
    """The prometheus exporter with the sidecar's own metrics appended to every scrape."""

    own_metrics: Callable[[], str] | None = None

    def render(self) -> bytes:
        body = super().render()
        if self.own_metrics is None:
            return body
        return body + self.own_metrics().encode()


# --- Health ----------------------------------------------------------------------------------------------------


class HealthCheck:
    """ASGI app of the ``health_check`` extension: ``GET <path>`` is 200 while ``is_running()``, else 503.

    >>> HealthCheck(HealthCheckExtensionConfig(), lambda: True).path
    '/'
    """

    def __init__(self, config: HealthCheckExtensionConfig, is_running: Callable[[], bool]) -> None:
        self.path = config.path
        self._is_running = is_running

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != self.path:
            status, body = 404, b'{"status":"not found"}'
        elif scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b'{"status":"method not allowed"}'
        elif self._is_running():
            status, body = 200, b'{"status":"Server available"}'
        else:
            status, body = 503, b'{"status":"Server not available"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})


# --- Pipelines ---------------------------------------------------------------------------------------------------


class _Reservations:
    """The room one request holds in a pipeline's exporters, from ``admit`` until its export uses it; whatever
    the export did not use goes back with :meth:`release` (once: the export may still run in its thread when a
    cancelled request releases)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[MetricsExporter] = []

    def hold(self, exporter: MetricsExporter) -> None:
        with self._lock:
            self._held.append(exporter)

    def take(self, exporter: MetricsExporter) -> bool:
        """True when the request holds room in ``exporter``, which the caller's export now uses."""
        with self._lock:
            if exporter in self._held:
                self._held.remove(exporter)
                return True
            return False

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for exporter in held:
            exporter.release()


class _MetricsPipeline:
    """One pipeline: processors before ``batch``, the batch, processors after it, then the exporters.

    Nothing accepted is lost to a full exporter queue:

    - Without ``batch`` every request is exported on its own, so :meth:`admit` reserves room for it in every
      exporter before the receiver accepts it (one reservation each, taken atomically by the exporter's queue).
      Checking ``busy()`` and exporting later would let concurrent requests all pass while one slot is free.
      All or none: a request that cannot reserve in one exporter releases what it holds in the others and is
      refused (503), so the sender's retry never duplicates what one exporter already took. An export refused
      all the same (a queue shut down, a disk that cannot write) fails the request with :class:`ReceiverBusy`;
      the exporters after it never get the data.
    - With ``batch`` requests accumulate and a flush exports later, so no request can hold room for it. A flush
      an exporter refuses stays in ``_unsent`` for that exporter only (the others took it: sending it again
      would duplicate it there) and is retried, in order, at the next flush, scheduled every
      ``_RETRY_INTERVAL``. Meanwhile :meth:`admit` refuses new data, which bounds what the pipeline holds.
    """

    def __init__(
        self,
        pipeline_id: str,
        before: Pipeline,
        batch: BatchConfig | None,
        after: Pipeline,
        exporters: Sequence[tuple[str, MetricsExporter]],
        gates: Sequence[MemoryLimiter],
    ) -> None:
        self.pipeline_id = pipeline_id
        self.before = before
        self.batch = batch
        self.after = after
        self.exporters = list(exporters)
        self.gates = list(gates)
        self._pending: list[MetricsData] = []
        self._pending_points = 0
        # (exporter id, exporter, data) refused at a flush, oldest first; only changed under the pipeline's lock.
        self._unsent: list[tuple[str, MetricsExporter, MetricsData]] = []
        self._lock: asyncio.Lock | None = None
        self._timer: asyncio.Task[None] | None = None

    def admit(self) -> _Reservations:
        """Raise :class:`ReceiverBusy` if this pipeline cannot take data now (memory, full exporter queues, a
        refused batch waiting); else the room the request holds in the exporters (none with ``batch``)."""
        for gate in self.gates:
            gate.check()
        reservations = _Reservations()
        if self.batch is not None:
            if self._unsent:
                raise ReceiverBusy(
                    _RETRY_INTERVAL,
                    message=f"service.pipelines.{self.pipeline_id}: a batch the exporters refused waits to be "
                    "sent; retry later",
                )
            for exporter_id, exporter in self.exporters:
                if exporter.busy():
                    raise ReceiverBusy(
                        _RETRY_INTERVAL, message=f"exporters.{exporter_id}: sending queue is full; retry later"
                    )
            return reservations
        for exporter_id, exporter in self.exporters:
            if not exporter.reserve():
                reservations.release()
                raise ReceiverBusy(
                    _RETRY_INTERVAL, message=f"exporters.{exporter_id}: sending queue is full; retry later"
                )
            reservations.hold(exporter)
        return reservations

    def _lock_now(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def consume(self, data: MetricsData, reservations: _Reservations | None = None) -> None:
        """Process and export ``data`` (or add it to the batch); ``reservations`` from :meth:`admit`."""
        reservations = reservations if reservations is not None else _Reservations()
        try:
            async with self._lock_now():
                if self.batch is None:
                    refused = await asyncio.to_thread(self._process_and_export, data, reservations)
                    if refused is not None:
                        raise ReceiverBusy(
                            _RETRY_INTERVAL, message=f"exporters.{refused}: the data was refused; retry later"
                        )
                    return
                processed = await asyncio.to_thread(self.before.process, data)
                self._pending.append(processed)
                self._pending_points += count_points(processed)
                if self._pending_points >= self.batch.send_batch_size:
                    await self._flush_locked()
                elif self._timer is None:
                    self._timer = asyncio.create_task(self._flush_later(self.batch.timeout))
        finally:
            reservations.release()

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock_now():
            self._timer = None
            await self._flush_locked()

    async def flush(self, timeout: float = 0.0) -> None:
        """Send what the batch holds now (at shutdown), retrying what exporters refuse for up to ``timeout``
        seconds (their queues are still draining); what is still refused then is logged as lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._lock_now():
            await self._flush_locked()
            while self._unsent and loop.time() < deadline:
                await asyncio.sleep(min(0.05, timeout))
                await self._flush_locked()
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            if self._unsent:
                _logger.error(
                    "service.pipelines.%s: %d data points the exporters (%s) still refuse at shutdown are lost",
                    self.pipeline_id,
                    sum(count_points(data) for _, _, data in self._unsent),
                    ", ".join(sorted({exporter_id for exporter_id, _, _ in self._unsent})),
                )
                self._unsent = []

    async def _flush_locked(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        if not self._pending and not self._unsent:
            return
        batch = MetricsData([rm for data in self._pending for rm in data.resource_metrics])
        self._pending, self._pending_points = [], 0
        await asyncio.to_thread(self._export_after_batch, batch)
        if self._unsent and self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(_RETRY_INTERVAL))

    def _process_and_export(self, data: MetricsData, reservations: _Reservations) -> str | None:
        return self._export(self.after.process(self.before.process(data)), reservations)

    def _export_after_batch(self, data: MetricsData) -> None:
        was_refusing = bool(self._unsent)
        # Built aside and assigned once at the end: admit() reads _unsent on the event loop meanwhile, and must
        # not see this batch as refused while it is still being exported.
        to_send = list(self._unsent)
        if data.resource_metrics:
            processed = self.after.process(data)
            to_send.extend((exporter_id, exporter, processed) for exporter_id, exporter in self.exporters)
        kept: list[tuple[str, MetricsExporter, MetricsData]] = []
        refusing: set[str] = set()
        for exporter_id, exporter, batch in to_send:
            # An exporter that refuses one batch gets none of the later ones this time: its order is kept.
            if exporter_id in refusing or not self._export_one(exporter_id, exporter, batch, reserved=False):
                refusing.add(exporter_id)
                kept.append((exporter_id, exporter, batch))
        self._unsent = kept
        if kept and not was_refusing:
            _logger.warning(
                "service.pipelines.%s: exporters %s refused a batch (sending queue full); it is kept and retried, "
                "and new data is refused upstream until they take it",
                self.pipeline_id,
                ", ".join(sorted(refusing)),
            )

    def _export(self, data: MetricsData, reservations: _Reservations) -> str | None:
        """Export to every exporter in turn; the id of the first that refused (the later ones never got it)."""
        for exporter_id, exporter in self.exporters:
            if not self._export_one(exporter_id, exporter, data, reserved=reservations.take(exporter)):
                return exporter_id
        return None

    @staticmethod
    def _export_one(exporter_id: str, exporter: MetricsExporter, data: MetricsData, *, reserved: bool) -> bool:
        try:
            return exporter.export(data, reserved=reserved)
        except Exception:
            # A bug, not a refusal: sending the same data again would fail again. Logged, and counted as taken.
            _logger.exception("exporters.%s: export failed", exporter_id)
            if reserved:
                # The room may not have been used. Giving back one that was can only make a later offer refused
                # (a 503 the sender retries); keeping one that was not would shrink the queue for good.
                exporter.release()
            return True

    def start(self) -> None:
        self.before.start()
        self.after.start()

    def shutdown(self) -> None:
        self.before.shutdown()
        self.after.shutdown()


# --- The service ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Listener:
    key: str
    endpoint: str
    app: Any
    tls: TLSServerConfig | None
    stage: int  # 0: receivers (stop first), 1: exporters and extensions (stop last)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the service: several servers share one loop and one shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CollectorService:
    """The sidecar: components built from ``config``, served until stopped.

    ``settings`` defaults to ``otel_monitoring.config.get_settings()`` (the pseudonym key for ``sanitize``);
    ``registry`` receives the processors' own metrics; ``memory_usage`` and ``total_memory`` feed
    ``memory_limiter``, and ``clock`` (monotonic seconds) paces its checks; tests inject them. A component the
    runtime cannot provide yet stops construction with :class:`CollectorConfigError` naming it.

    >>> from otel_monitoring.sidecar.config import load_collector_config
    >>> CollectorService(load_collector_config(None)).pipelines["metrics"].gates[0].component_id
    'memory_limiter'
    """

    def __init__(
        self,
        config: CollectorConfig,
        *,
        settings: Any = None,
        registry: MetricsRegistry | None = None,
        memory_usage: Callable[[], int] = process_rss,
        total_memory: Callable[[], int] = available_memory,
        clock: Callable[[], float] = time.monotonic,
        exporter_shutdown_timeout: float = _EXPORTER_SHUTDOWN_TIMEOUT,
    ) -> None:
        self.config = config
        self.state = STARTING
        self.registry = registry if registry is not None else MetricsRegistry()
        self._exporter_shutdown_timeout = exporter_shutdown_timeout
        self._memory_usage = memory_usage
        self._total_memory = total_memory
        self._clock = clock
        self._secrets = self._pipeline_secrets(settings)
        self.prometheus_exporters: dict[str, _ServedPrometheusExporter] = {}
        # file_storage extensions: no I/O until serve() opens them (and takes their locks).
        self.file_storages: dict[str, FileStorage] = {
            extension_id: FileStorage(
                extension.directory, create_directory=extension.create_directory, timeout=extension.timeout
            )
            for extension_id in config.service.extensions
            if isinstance(extension := config.extensions[extension_id], FileStorageExtensionConfig)
        }
        self.exporters: dict[str, MetricsExporter] = {
            exporter_id: self._create_exporter(exporter_id) for exporter_id in self._used("exporters")
        }
        self.pipelines: dict[str, _MetricsPipeline] = {
            pipeline_id: self._create_pipeline(pipeline_id) for pipeline_id in config.service.pipelines
        }
        self.receivers: dict[str, OTLPHTTPReceiver] = {}
        self.grpc_receivers: dict[str, OTLPGRPCReceiver] = {}
        for receiver_id in self._used("receivers"):
            self._create_receiver(receiver_id)
        self.health_checks: dict[str, HealthCheck] = {
            extension_id: HealthCheck(extension, lambda: self.state == RUNNING)
            for extension_id in config.service.extensions
            if isinstance(extension := config.extensions[extension_id], HealthCheckExtensionConfig)
        }
        if config.service.telemetry.metrics.level != "none":
            for exporter in self.prometheus_exporters.values():
                exporter.own_metrics = self.render_own_metrics
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- building ---

    @staticmethod
    def _pipeline_secrets(settings: Any) -> dict[str, str]:
        from otel_monitoring.telemetry import pipeline_secrets

        if settings is None:
            from otel_monitoring import config

            settings = config.get_settings()
        return pipeline_secrets(settings)

    def _used(self, section: str) -> list[str]:
        used: list[str] = []
        for pipeline in self.config.service.pipelines.values():
            used += [component_id for component_id in getattr(pipeline, section) if component_id not in used]
        return used

    def _bearer_token(self, auth: Any) -> BearerTokenAuthExtensionConfig | None:
        if auth is None:
            return None
        extension = self.config.extensions[auth.authenticator]
        return extension if isinstance(extension, BearerTokenAuthExtensionConfig) else None

    def _create_exporter(self, exporter_id: str) -> MetricsExporter:
        config = self.config.exporters[exporter_id]
        type_name = component_type(exporter_id)
        if isinstance(config, PrometheusExporterConfig):
            try:
                exporter = _ServedPrometheusExporter(config, bearer_token=self._bearer_token(config.auth))
            except (ValueError, OSError) as error:
                raise CollectorConfigError(f"exporters.{exporter_id}", str(error)) from None
            self.prometheus_exporters[exporter_id] = exporter
            return _PrometheusExporterAdapter(exporter, exporter_id)
        if isinstance(config, PrometheusRemoteWriteExporterConfig):
            return self._create_remote_write(exporter_id, config)
        if isinstance(config, OTLPHTTPExporterConfig | OTLPExporterConfig):
            return self._create_otlp(exporter_id, config)
        if isinstance(config, PushgatewayExporterConfig):
            return self._create_pushgateway(exporter_id, config)
        if isinstance(config, DebugExporterConfig):
            return DebugExporter(config, exporter_id)
        raise CollectorConfigError(f"exporters.{exporter_id}", f"exporter type {type_name!r} is not available yet")

    def _auth_header(self, auth: Any) -> Callable[[], str] | None:
        """The ``Authorization`` value an exporter sends (its ``bearertokenauth``), read once at start."""
        token = self._bearer_token(auth)
        if token is None:
            return None
        try:
            secret = load_bearer_token(token, name=auth.authenticator).decode()
        except (OSError, ValueError) as error:
            raise CollectorConfigError(f"extensions.{auth.authenticator}.filename", str(error)) from None
        value = f"{token.scheme} {secret}"
        return lambda: value

    def _queue_files(self, exporter_id: str, queue_key: str, storage_id: str | None) -> QueueFiles | None:
        """The files of ``exporter_id``'s queue in the ``file_storage`` extension its ``storage`` names."""
        if storage_id is None:
            return None
        storage = self.file_storages.get(storage_id)
        if storage is None:  # the config checks this at load; a hand-built config may still get here
            raise CollectorConfigError(
                f"exporters.{exporter_id}.{queue_key}.storage",
                f"extension {storage_id!r} is not a file_storage extension listed in service.extensions "
                f"(available: {', '.join(sorted(self.file_storages)) or 'none'})",
            )
        return storage.queue_files(exporter_id)

    def _create_remote_write(self, exporter_id: str, config: PrometheusRemoteWriteExporterConfig) -> MetricsExporter:
        from otel_monitoring.sidecar.remote_write import RemoteWriteExporter

        files = self._queue_files(exporter_id, "remote_write_queue", config.remote_write_queue.storage)
        auth_header = self._auth_header(config.auth)  # its errors name the extension's key: outside the try
        try:
            exporter = RemoteWriteExporter(config, auth_header=auth_header, name=exporter_id, storage=files)
        except (ValueError, OSError) as error:
            raise CollectorConfigError(f"exporters.{exporter_id}", str(error)) from None

        def counts() -> ExporterCounts:
            stats = exporter.stats()
            return ExporterCounts(
                sent=stats.sent,
                failed=stats.failed + stats.unsupported,
                queue_size=stats.queued_requests,
                queue_capacity=stats.capacity,
                enqueue_failed=stats.dropped,
            )

        return _StatsExporterAdapter(exporter, counts)

    def _create_otlp(self, exporter_id: str, config: OTLPHTTPExporterConfig | OTLPExporterConfig) -> MetricsExporter:
        """``otlphttp`` or ``otlp`` (gRPC): the same shape (auth_header, storage, stats with the same fields)."""
        from otel_monitoring.sidecar.otlp_exporter import OTLPHTTPExporter
        from otel_monitoring.sidecar.otlp_grpc_exporter import OTLPGRPCExporter

        exporter_class: Any = OTLPHTTPExporter if isinstance(config, OTLPHTTPExporterConfig) else OTLPGRPCExporter
        files = self._queue_files(exporter_id, "sending_queue", config.sending_queue.storage)
        auth_header = self._auth_header(config.auth)  # its errors name the extension's key: outside the try
        try:
            exporter = exporter_class(config, auth_header=auth_header, name=exporter_id, storage=files)
        except (ValueError, OSError) as error:
            raise CollectorConfigError(f"exporters.{exporter_id}", str(error)) from None

        def counts() -> ExporterCounts:
            stats = exporter.stats()
            return ExporterCounts(
                sent=stats.sent - stats.rejected,
                failed=stats.failed + stats.rejected,
                queue_size=stats.queued_requests,
                queue_capacity=stats.capacity,
                enqueue_failed=stats.dropped,
            )

        return _StatsExporterAdapter(exporter, counts)

    def _create_pushgateway(self, exporter_id: str, config: PushgatewayExporterConfig) -> MetricsExporter:
        from otel_monitoring.sidecar.pushgateway_exporter import PushgatewayExporter

        exporter = PushgatewayExporter(config, name=exporter_id)

        def counts() -> ExporterCounts:
            stats = exporter.stats()
            return ExporterCounts(sent=stats.sent, failed=stats.failed, series=stats.series)

        return _StatsExporterAdapter(exporter, counts)

    def _create_pipeline(self, pipeline_id: str) -> _MetricsPipeline:
        pipeline = self.config.service.pipelines[pipeline_id]
        before: list[tuple[str, Processor]] = []
        after: list[tuple[str, Processor]] = []
        batch: BatchConfig | None = None
        gates: list[MemoryLimiter] = []
        for index, processor_id in enumerate(pipeline.processors):
            config = self.config.processors[processor_id]
            if isinstance(config, MemoryLimiterConfig):
                gates.append(
                    MemoryLimiter(
                        config,
                        memory_usage=self._memory_usage,
                        total_memory=self._total_memory,
                        clock=self._clock,
                        component_id=processor_id,
                    )
                )
            elif isinstance(config, BatchConfig):
                if batch is not None:
                    raise CollectorConfigError(
                        f"service.pipelines.{pipeline_id}.processors[{index}]",
                        "only one batch processor per pipeline is supported",
                    )
                batch = config
            else:
                context = ProcessorContext(self.registry, secrets=self._secrets, component_id=processor_id)
                step = factory_for(component_type(processor_id)).create(config, context)
                (before if batch is None else after).append((processor_id, step))
        exporters = [(exporter_id, self.exporters[exporter_id]) for exporter_id in pipeline.exporters]
        return _MetricsPipeline(pipeline_id, Pipeline(before), batch, Pipeline(after), exporters, gates)

    def _create_receiver(self, receiver_id: str) -> None:
        """The receiver's protocols: HTTP into ``self.receivers``, gRPC into ``self.grpc_receivers``; both feed
        one consumer, so a request counts the same whichever way it came."""
        config = self.config.receivers[receiver_id]
        pipelines = [
            p for pid, p in self.pipelines.items() if receiver_id in self.config.service.pipelines[pid].receivers
        ]
        consumer = self._consumer(pipelines)
        if (grpc := config.protocols.grpc) is not None:
            try:
                self.grpc_receivers[receiver_id] = OTLPGRPCReceiver(
                    grpc, consumer, bearer_token=self._bearer_token(grpc.auth)
                )
            except (ValueError, OSError) as error:
                raise CollectorConfigError(f"receivers.{receiver_id}.protocols.grpc", str(error)) from None
        if (http := config.protocols.http) is not None:
            try:
                self.receivers[receiver_id] = OTLPHTTPReceiver(
                    http, consumer, bearer_token=self._bearer_token(http.auth)
                )
            except (ValueError, OSError) as error:
                raise CollectorConfigError(f"receivers.{receiver_id}.protocols.http", str(error)) from None

    def _consumer(self, pipelines: Sequence[_MetricsPipeline]) -> Callable[[MetricsData], Awaitable[None]]:
        async def consume(data: MetricsData) -> None:
            if self.state != RUNNING:
                raise ReceiverBusy(1.0, message="the sidecar is not running (starting or shutting down)")
            # Every pipeline admits the request (and reserves room in its exporters) before any gets it: a refusal
            # then reaches none of them, so the sender's retry never doubles what one pipeline already took.
            admitted: list[_Reservations] = []
            try:
                for pipeline in pipelines:
                    admitted.append(pipeline.admit())
            except ReceiverBusy:
                for reservations in admitted:
                    reservations.release()
                raise
            if len(pipelines) == 1:
                await pipelines[0].consume(data, admitted[0])
            else:
                await asyncio.gather(
                    *(pipeline.consume(data, held) for pipeline, held in zip(pipelines, admitted, strict=True))
                )

        return consume

    # --- own metrics ---

    def render_own_metrics(self) -> str:
        """The sidecar's own metrics in the Prometheus text format, named as the Collector names its own."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            lines.extend(
                f"{name}{{{labels}}} {float(value)}\n" if labels else f"{name} {float(value)}\n"
                for labels, value in samples
            )

        receivers = [(f'receiver="{rid}",transport="http"', r.stats) for rid, r in self.receivers.items()]
        receivers += [(f'receiver="{rid}",transport="grpc"', r.stats) for rid, r in self.grpc_receivers.items()]
        family(
            "otelcol_receiver_accepted_metric_points_total",
            "counter",
            "Data points successfully pushed into the pipelines.",
            [(labels, stats.accepted_points) for labels, stats in receivers],
        )
        family(
            "otelcol_receiver_refused_metric_points_total",
            "counter",
            "Valid data points the pipelines refused (memory limit, full queues, shutting down); senders retry.",
            [(labels, stats.refused_points) for labels, stats in receivers],
        )
        family(
            "otel_monitoring_receiver_received_metric_points_total",
            "counter",
            "Data points decoded from requests, valid or not.",
            [(labels, stats.received_points) for labels, stats in receivers],
        )
        family(
            "otel_monitoring_receiver_rejected_metric_points_total",
            "counter",
            "Invalid data points left out and reported in partial_success.",
            [(labels, stats.rejected_points) for labels, stats in receivers],
        )
        counts = [(f'exporter="{eid}"', e.counts()) for eid, e in self.exporters.items()]
        family(
            "otelcol_exporter_sent_metric_points_total",
            "counter",
            "Data points the exporter delivered (taken by the prometheus exporter, accepted by the backend).",
            [(labels, c.sent) for labels, c in counts],
        )
        family(
            "otelcol_exporter_send_failed_metric_points_total",
            "counter",
            "Data points the exporter gave up on (refused by the backend, retries exhausted, not convertible).",
            [(labels, c.failed) for labels, c in counts],
        )
        family(
            "otelcol_exporter_enqueue_failed_metric_points_total",
            "counter",
            "Data points the sending queue refused (full or shutting down).",
            [(labels, c.enqueue_failed) for labels, c in counts],
        )
        family(
            "otelcol_exporter_queue_size",
            "gauge",
            "Requests waiting in the exporter's sending queue.",
            [(f'{labels},data_type="metrics"', c.queue_size) for labels, c in counts],
        )
        family(
            "otelcol_exporter_queue_capacity",
            "gauge",
            "Requests the exporter's sending queue holds at most (0: no queue).",
            [(f'{labels},data_type="metrics"', c.queue_capacity) for labels, c in counts],
        )
        family(
            "otel_monitoring_exporter_series",
            "gauge",
            "Series the prometheus exporter currently exposes.",
            [(labels, c.series) for labels, c in counts if c.series is not None],
        )
        gates = [gate for pipeline in self.pipelines.values() for gate in pipeline.gates]
        if gates:
            family(
                "otelcol_process_memory_rss_bytes",
                "gauge",
                "Resident memory at the memory limiter's latest check.",
                [("", gates[0].last_usage)],
            )
        return "".join(lines)

    # --- running ---

    def _listeners(self) -> list[_Listener]:
        listeners = [
            _Listener(
                f"receivers.{rid}.protocols.http.endpoint",
                http.endpoint,
                self.receivers[rid],
                http.tls,
                0,
            )
            for rid in self.receivers
            if (http := self.config.receivers[rid].protocols.http) is not None
        ]
        listeners += [
            _Listener(f"exporters.{eid}.endpoint", e.config.endpoint, e, e.config.tls, 1)
            for eid, e in self.prometheus_exporters.items()
        ]
        for extension_id, health in self.health_checks.items():
            extension = self.config.extensions[extension_id]
            assert isinstance(extension, HealthCheckExtensionConfig)
            listeners.append(_Listener(f"extensions.{extension_id}.endpoint", extension.endpoint, health, None, 1))
        return listeners

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then drain and return 0 (1 if a server failed to start).

        An endpoint that cannot be bound raises :class:`CollectorConfigError` naming its key."""
        return asyncio.run(self._run_with_signals())

    async def _run_with_signals(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            return await self.serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        """Ask a running :meth:`serve` to drain and return; safe from any thread or a signal handler."""
        if self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, ready: Callable[[], None] | None = None) -> int:
        """Start components and servers, run until :meth:`request_stop`, then drain. ``ready`` is called once
        every server listens."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers: list[tuple[_Listener, _Server, socket.socket]] = []
        try:
            for listener in self._listeners():
                servers.append((listener, self._server(listener), _bind(listener)))
        except CollectorConfigError:
            for _, _, sock in servers:
                sock.close()
            raise
        try:
            await self._start_grpc_receivers()
        except CollectorConfigError:
            for _, _, sock in servers:
                sock.close()
            raise
        try:
            self._start_exporters()
        except CollectorConfigError:
            for _, _, sock in servers:
                sock.close()
            await self._stop_grpc_receivers(grace=0)
            raise
        for pipeline in self.pipelines.values():
            pipeline.start()
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for _, server, sock in servers]
        while not all(server.started for _, server, _ in servers):
            if any(task.done() for task in tasks):
                _logger.error("a listener failed to start; stopping")
                self._stop.set()
                break
            await asyncio.sleep(0.01)
        else:
            self.state = RUNNING
            _logger.info(
                "collector running: %s; listening on %s",
                self.config.summary(),
                ", ".join(
                    [f"{listener.endpoint} ({listener.key})" for listener, _, _ in servers]
                    + [
                        f"{r.config.endpoint} (receivers.{rid}.protocols.grpc.endpoint)"
                        for rid, r in self.grpc_receivers.items()
                    ]
                ),
            )
            if ready is not None:
                ready()
        await self._stop.wait()
        return await self._drain(servers, tasks)

    async def _start_grpc_receivers(self) -> None:
        """Bind and start every OTLP/gRPC server (answering UNAVAILABLE until the service runs); on failure the
        ones started are stopped and the error names the endpoint's key."""
        for receiver_id, receiver in self.grpc_receivers.items():
            try:
                await receiver.start()
            except (RuntimeError, OSError) as error:
                await self._stop_grpc_receivers(grace=0)
                raise CollectorConfigError(
                    f"receivers.{receiver_id}.protocols.grpc.endpoint",
                    f"cannot listen on {receiver.config.endpoint}: {error}",
                ) from None

    async def _stop_grpc_receivers(self, grace: float) -> None:
        await asyncio.gather(*(r.stop(grace) for r in self.grpc_receivers.values()), return_exceptions=True)

    def _start_exporters(self) -> None:
        """Open the file_storage extensions (their locks), then start the exporters, which send first what an
        earlier run left on disk. On failure everything started is stopped again, files untouched."""
        started: list[MetricsExporter] = []
        try:
            for extension_id, storage in self.file_storages.items():
                try:
                    storage.open()
                except StorageError as error:
                    raise CollectorConfigError(f"extensions.{extension_id}.directory", str(error)) from None
            for exporter_id, exporter in self.exporters.items():
                try:
                    exporter.start()
                except StorageError as error:
                    raise CollectorConfigError(f"exporters.{exporter_id}", str(error)) from None
                started.append(exporter)
        except CollectorConfigError:
            for exporter in started:
                exporter.shutdown(0.0)
            self._close_storages()
            raise

    def _close_storages(self) -> None:
        for storage in self.file_storages.values():
            storage.close()

    async def _drain(self, servers: list[tuple[_Listener, _Server, socket.socket]], tasks: list[Any]) -> int:
        failed = self.state != RUNNING
        self.state = STOPPING
        _logger.info("collector stopping: draining")
        # Receivers first, so nothing new arrives while the batches are flushed.
        for stage in (0, 1):
            stage_tasks = [
                t for (listener, server, _), t in zip(servers, tasks, strict=True) if listener.stage == stage
            ]
            for listener, server, _ in servers:
                if listener.stage == stage:
                    server.should_exit = True
            await asyncio.gather(*stage_tasks, return_exceptions=True)
            if stage == 0:
                await self._stop_grpc_receivers(grace=2.0)
                await self._stop_pipelines()
        self._close_storages()
        self.state = STOPPED
        _logger.info("collector stopped")
        return 1 if failed else 0

    async def _stop_pipelines(self) -> None:
        for pipeline in self.pipelines.values():
            try:
                await pipeline.flush(self._exporter_shutdown_timeout)
            except Exception:
                _logger.exception("service.pipelines.%s: flushing at shutdown failed", pipeline.pipeline_id)
        timeout = self._exporter_shutdown_timeout
        await asyncio.gather(
            *(asyncio.to_thread(exporter.shutdown, timeout) for exporter in self.exporters.values()),
            return_exceptions=True,
        )
        for pipeline in self.pipelines.values():
            pipeline.shutdown()

    @staticmethod
    def _server(listener: _Listener) -> _Server:
        host, port = split_host_port(listener.endpoint)
        options: dict[str, Any] = {}
        if listener.tls is not None:
            options = {"ssl_certfile": listener.tls.cert_file, "ssl_keyfile": listener.tls.key_file}
            if listener.tls.client_ca_file:
                options.update(ssl_ca_certs=listener.tls.client_ca_file, ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            listener.app,
            host=host,
            port=port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            **options,
        )
        return _Server(config)


def _bind(listener: _Listener) -> socket.socket:
    host, port = split_host_port(listener.endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CollectorConfigError(listener.key, f"cannot listen on {listener.endpoint}: {error.strerror}") from None
    return sock
