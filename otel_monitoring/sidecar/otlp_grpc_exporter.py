"""The ``otlp`` exporter: OTLP/gRPC to a gateway tier (an OpenTelemetry Collector) or any OTLP/gRPC backend.

Built from :class:`~otel_monitoring.sidecar.config.OTLPExporterConfig`, as the Collector's ``otlp`` exporter:
``endpoint`` is ``host:port`` (TLS unless ``tls.insecure``) or a URL whose scheme chooses (``http://``: plaintext,
``https://``: TLS); ``headers`` and the ``bearertokenauth`` token go in each call's metadata; ``compression: gzip``
compresses each message; ``timeout`` is each call's deadline.

Two layers, so delivery is the sidecar's one sending queue:

- :class:`OTLPGRPCSender` makes one call: ``send(body)``, ``body`` being an encoded ``ExportMetricsServiceRequest``
  (:func:`encode_metrics_request`). It classifies a failure by the OTLP spec
  (https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md#failures): CANCELLED,
  DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS raise
  :class:`~otel_monitoring.sidecar.sending_queue.RetryableError`, and so does RESOURCE_EXHAUSTED when the server
  sent ``RetryInfo`` (whose delay the error carries); every other code raises ``PermanentError``.
- :class:`OTLPGRPCExporter` is the service's exporter: ``export(data)`` encodes the batch once and offers it to a
  :class:`~otel_monitoring.sidecar.sending_queue.SendingQueue`, which retries with backoff (``retry_on_failure``),
  bounds what waits (``sending_queue``) and, with ``storage``, keeps it on disk across restarts.

>>> from otel_monitoring.sidecar.config import OTLPExporterConfig
>>> exporter = OTLPGRPCExporter(OTLPExporterConfig(endpoint="http://gateway:4317"))
>>> exporter.sender.target, exporter.sender.secure
('gateway:4317', False)
>>> exporter.export(metrics_data)  # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.sdk.metrics.export import MetricsData

from otel_monitoring.sidecar.config import OTLPExporterConfig
from otel_monitoring.sidecar.sending_queue import (
    Batch,
    PermanentError,
    QueueFiles,
    RetryableError,
    SendingQueue,
)

__all__ = ["OTLPGRPCExporter", "OTLPGRPCSender", "OTLPGRPCStats", "encode_metrics_request"]

_logger = logging.getLogger(__name__)

_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
_RETRYABLE: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_MAX_LOGGED_DETAILS: Final = 300
# Kept on disk with each batch: an uncompressed ExportMetricsServiceRequest (gRPC compresses per call).
_BATCH_TAG: Final = "otlp-proto"


def encode_metrics_request(data: MetricsData) -> bytes:
    """``MetricsData`` as an encoded ``ExportMetricsServiceRequest`` (opentelemetry-exporter-otlp-proto-common's
    encoder, the one the SDK's own OTLP exporters use).

    >>> encode_metrics_request(MetricsData([]))
    b''
    """
    return bytes(encode_metrics(data).SerializeToString())


class OTLPGRPCSender:
    """Sends encoded ``ExportMetricsServiceRequest`` messages to ``config.endpoint``; one call per :meth:`send`.

    Thread-safe (a grpc channel is). ``auth_header`` returns the ``authorization`` value of each call (the
    ``bearertokenauth`` extension that ``config.auth`` names, resolved by the runtime; required when
    ``config.auth`` is set). TLS files are read once, here, with ``read_bytes``.
    ``insecure_skip_verify`` is refused: grpcio cannot skip verification (give ``ca_file`` instead).

    >>> sender = OTLPGRPCSender(OTLPExporterConfig(endpoint="gateway:4317", tls={"insecure": True}))
    >>> sender.send(encode_metrics_request(metrics_data)).partial_success.rejected_data_points  # doctest: +SKIP
    0
    >>> sender.close()
    """

    def __init__(
        self,
        config: OTLPExporterConfig,
        *,
        auth_header: Callable[[], str] | None = None,
        name: str = "otlp",
        read_bytes: Callable[[str], bytes] = lambda path: Path(path).read_bytes(),
    ) -> None:
        if config.auth is not None and auth_header is None:
            raise ValueError(
                f"exporters.{name}.auth.authenticator: extension {config.auth.authenticator!r} "
                "must be given to the exporter as auth_header"
            )
        self.name = name
        self.timeout = config.timeout
        self.target, self.secure = _target(config)
        # gRPC metadata keys must be lower-case; the extension's token wins over an `authorization` header.
        headers = {key.lower(): value.get_secret_value() for key, value in config.headers.items()}
        if auth_header is not None:
            headers.pop("authorization", None)
        self._metadata = tuple(headers.items())
        self._auth_header = auth_header
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        if self.secure:
            tls = config.tls
            if tls is not None and tls.insecure_skip_verify:
                raise ValueError(
                    f"exporters.{name}.tls.insecure_skip_verify: not supported by the gRPC exporter; give the "
                    "server's CA as tls.ca_file, or use tls.insecure for plaintext"
                )
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read_bytes(tls.ca_file) if tls is not None and tls.ca_file else None,
                private_key=read_bytes(tls.key_file) if tls is not None and tls.key_file else None,
                certificate_chain=read_bytes(tls.cert_file) if tls is not None and tls.cert_file else None,
            )
            self._channel = grpc.secure_channel(self.target, credentials)
        else:
            self._channel = grpc.insecure_channel(self.target)
        # No serializers: the body is already encoded, and the answer is parsed here only when it carries data.
        self._export = self._channel.unary_unary(_EXPORT_METHOD)

    def send(self, body: bytes) -> ExportMetricsServiceResponse:
        """Make one ``Export`` call with ``body``; the server's answer, whose ``partial_success`` may count
        rejected points. Raises :class:`RetryableError` (with the server's ``RetryInfo`` delay) or
        :class:`PermanentError` as the OTLP spec classifies the status code."""
        metadata = self._metadata
        if self._auth_header is not None:
            metadata = (*metadata, ("authorization", self._auth_header()))
        try:
            reply = self._export(body, timeout=self.timeout, metadata=metadata, compression=self._compression)
        except grpc.RpcError as error:
            raise _classify(error) from None
        try:
            response: ExportMetricsServiceResponse = ExportMetricsServiceResponse.FromString(reply or b"")
        except DecodeError:
            # The server took the data (status OK); an unreadable answer is its problem, not a reason to resend.
            return ExportMetricsServiceResponse()
        return response

    def close(self) -> None:
        """Close the channel; calls in flight fail with CANCELLED. Idempotent."""
        self._channel.close()


def _target(config: OTLPExporterConfig) -> tuple[str, bool]:
    """The channel target and whether it uses TLS, as the Collector decides: a URL's scheme wins, then
    ``tls.insecure``; TLS by default."""
    endpoint = config.endpoint
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.netloc, parts.scheme == "https"
    return endpoint, not (config.tls is not None and config.tls.insecure)


def _classify(error: Any) -> RetryableError | PermanentError:
    code = error.code()
    details = (error.details() or "")[:_MAX_LOGGED_DETAILS]
    message = f"the server answered {code.name}" + (f": {details}" if details else "")
    retry_after = _retry_delay(error.trailing_metadata() or ())
    if code in _RETRYABLE:
        return RetryableError(message, retry_after=retry_after, key=code.name)
    # https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md#failures: retry
    # RESOURCE_EXHAUSTED only when the server says recovery is possible, by sending RetryInfo.
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None:
        return RetryableError(message, retry_after=retry_after, key=code.name)
    return PermanentError(message, key=code.name)


def _retry_delay(trailers: Any) -> float | None:
    """``RetryInfo.retry_delay`` in seconds, from ``grpc-status-details-bin`` (the Collector's, Go's and Java's
    place) or ``google.rpc.retryinfo-bin`` (the OpenTelemetry Python SDK's); None when absent or unreadable."""
    metadata: Mapping[str, Any] = {key: value for key, value in trailers}
    info = error_details_pb2.RetryInfo()
    try:
        if isinstance(raw := metadata.get("grpc-status-details-bin"), bytes):
            for detail in status_pb2.Status.FromString(raw).details:
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
        if isinstance(raw := metadata.get("google.rpc.retryinfo-bin"), bytes):
            info.ParseFromString(raw)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    except DecodeError:
        return None
    return None


@dataclass(frozen=True, slots=True)
class OTLPGRPCStats:
    """Counts in data points, for the sidecar's own metrics; the same fields as the ``otlphttp`` exporter's.

    ``sent``: in calls the server answered OK (``rejected`` of them it reported refusing in ``partial_success``).
    ``failed``: given up (a permanent status, retries exhausted, or without storage still failing when
    shutdown's time ran out). ``dropped``: never sent (queue full or closed; without storage, still queued at
    shutdown). ``queued``/``queued_requests``: waiting now, of ``capacity`` requests. ``retries``: attempts
    repeated. ``restored_requests``/``kept_requests``: found on disk at start / left there at shutdown.
    """

    sent: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    queued_requests: int = 0
    capacity: int = 0
    retries: int = 0
    restored_requests: int = 0
    kept_requests: int = 0


class OTLPGRPCExporter:
    """The ``otlp`` exporter: ``export(data)`` encodes one batch and offers it to the exporter's
    :class:`~otel_monitoring.sidecar.sending_queue.SendingQueue` (``sending_queue``, ``retry_on_failure``), whose
    consumer threads make the calls; ``storage`` (the ``file_storage`` extension's files for this exporter) keeps
    the queue on disk. ``busy()`` is the queue's, so a full queue refuses data upstream.

    ``stats()`` (:class:`OTLPGRPCStats`, the fields of ``OTLPHTTPStats``) counts points; ``rejected`` are points
    the server took but reported in ``partial_success`` (counted in ``sent`` too). ``auth_header`` returns the
    ``authorization`` value (the runtime's ``bearertokenauth``); ``clock``, ``sleep`` and ``jitter`` go to the
    queue, so tests need no real waiting.

    >>> exporter = OTLPGRPCExporter(OTLPExporterConfig(endpoint="gateway:4317"), name="otlp/gateway")
    >>> exporter.start()
    >>> exporter.export(MetricsData([]))
    True
    >>> exporter.shutdown(timeout=1.0)
    >>> exporter.stats().sent, exporter.stats().capacity
    (0, 1000)
    """

    def __init__(
        self,
        config: OTLPExporterConfig,
        *,
        auth_header: Callable[[], str] | None = None,
        name: str = "otlp",
        storage: QueueFiles | None = None,
        sender: OTLPGRPCSender | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if config.sending_queue.storage is not None and storage is None:
            raise ValueError(
                f"exporters.{name}.sending_queue.storage: names a file_storage extension, but no storage was given "
                "(pass storage=FileStorage(...).queue_files(name), as the sidecar does)"
            )
        self.config = config
        self.name = name
        self.sender = sender if sender is not None else OTLPGRPCSender(config, auth_header=auth_header, name=name)
        self.queue = SendingQueue(
            self._send_batch,
            config.sending_queue,
            config.retry_on_failure,
            storage,
            name=name,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
            logger=_logger,
        )
        self._lock = threading.Lock()
        self._rejected = 0
        self._partial_logged = False

    def start(self) -> None:
        """Start the queue's consumers (and send what ``storage`` kept from an earlier run)."""
        self.queue.start()

    def export(self, data: MetricsData) -> bool:
        """Queue one batch; False when the queue refused it (full, closed; counted in ``stats().dropped``).
        With ``sending_queue.enabled: false`` the batch is sent now and False means it failed."""
        from otel_monitoring.sidecar.service import count_points  # the service imports this module

        points = count_points(data)
        if not points:
            return True
        return self.queue.offer([Batch(encode_metrics_request(data), points, tag=_BATCH_TAG)])

    def busy(self) -> bool:
        """True while the queue might not take the next batch: the pipeline then refuses data upstream."""
        return self.queue.busy()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty; False if that took longer than ``timeout``."""
        return self.queue.flush(timeout)

    def stats(self) -> OTLPGRPCStats:
        """A snapshot of the counters (see :class:`OTLPGRPCStats`)."""
        queue = self.queue.stats()
        return OTLPGRPCStats(
            sent=queue.sent,
            rejected=self.rejected_points,
            failed=queue.failed,
            dropped=queue.dropped,
            queued=queue.queued,
            queued_requests=queue.queued_batches,
            capacity=queue.capacity,
            retries=queue.retries,
            restored_requests=queue.restored_batches,
            kept_requests=queue.kept_batches,
        )

    @property
    def rejected_points(self) -> int:
        """Points the server reported in ``partial_success.rejected_data_points``."""
        with self._lock:
            return self._rejected

    def shutdown(self, timeout: float = 5.0) -> None:
        """Send what is queued for up to ``timeout`` seconds, then close the channel. Idempotent."""
        self.queue.shutdown(timeout)
        self.sender.close()

    def _send_batch(self, batch: Batch) -> None:
        if batch.tag not in ("", _BATCH_TAG):
            raise PermanentError(f"a queued batch has encoding {batch.tag!r}, not {_BATCH_TAG!r}", key="tag")
        partial = self.sender.send(batch.body).partial_success
        if partial.rejected_data_points or partial.error_message:
            with self._lock:
                self._rejected += partial.rejected_data_points
                first, self._partial_logged = not self._partial_logged, True
            # One warning: a server that rejects a kind of point rejects it in every batch.
            _logger.log(
                logging.WARNING if first else logging.DEBUG,
                "%s: the server rejected %d of %d data points: %s",
                self.name,
                partial.rejected_data_points,
                batch.points,
                partial.error_message or "no reason given",
            )
