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
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.sdk.metrics.export import MetricsData

from otel_monitoring.sidecar._points import count_points
from otel_monitoring.sidecar.config import OTLPExporterConfig
from otel_monitoring.sidecar.sending_queue import (
    Batch,
    PermanentError,
    QueuedExporter,
    QueueFiles,
    RetryableError,
)

__all__ = ["OTLPGRPCExporter", "OTLPGRPCSender", "encode_metrics_request"]

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


class OTLPGRPCExporter(QueuedExporter):
    """The ``otlp`` exporter: ``export(data)`` encodes one batch and offers it to the exporter's
    :class:`~otel_monitoring.sidecar.sending_queue.SendingQueue` (``sending_queue``, ``retry_on_failure``), whose
    consumer threads make the calls; ``storage`` (the ``file_storage`` extension's files for this exporter) keeps
    the queue on disk. Lifecycle, ``busy``/``reserve``/``release`` and ``stats()`` (the ``otlphttp`` exporter's
    :class:`~otel_monitoring.sidecar.sending_queue.QueuedExporterStats`) come from
    :class:`~otel_monitoring.sidecar.sending_queue.QueuedExporter`; ``rejected`` are points the server took but
    reported in ``partial_success`` (counted in ``sent`` too). ``auth_header`` returns the ``authorization``
    value (the runtime's ``bearertokenauth``); ``clock``, ``sleep`` and ``jitter`` go to the queue, so tests need
    no real waiting.

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
        super().__init__(
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
        self.config = config
        self.sender = sender if sender is not None else OTLPGRPCSender(config, auth_header=auth_header, name=name)

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        """Queue one batch; False when the queue refused it (full, closed; counted in ``stats().dropped``).
        With ``sending_queue.enabled: false`` the batch is sent now and False means it failed. ``reserved``: the
        caller holds a :meth:`reserve`, which this export uses."""
        points = count_points(data)
        batches = [Batch(encode_metrics_request(data), points, tag=_BATCH_TAG)] if points else []
        return self.queue.offer(batches, reserved=reserved)

    def close(self) -> None:
        self.sender.close()

    def _send_batch(self, batch: Batch) -> None:
        if batch.tag not in ("", _BATCH_TAG):
            raise PermanentError(f"a queued batch has encoding {batch.tag!r}, not {_BATCH_TAG!r}", key="tag")
        partial = self.sender.send(batch.body).partial_success
        self.count_partial_success(partial.rejected_data_points, partial.error_message, batch.points)
