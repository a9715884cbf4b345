"""The ``otlphttp`` exporter: OTLP/HTTP to a gateway tier (an OpenTelemetry Collector) or any OTLP backend.

Built from :class:`~otel_monitoring.sidecar.config.OTLPHTTPExporterConfig`. ``export`` encodes a batch once with
the SDK's own ``encode_metrics`` (opentelemetry-exporter-otlp-proto-common) as OTLP protobuf or OTLP/JSON,
gzips it when ``compression: gzip``, and offers the bytes to the shared
:class:`~otel_monitoring.sidecar.sending_queue.SendingQueue`, whose consumers POST them to
``<endpoint>/v1/metrics`` with retries (and keep them on disk with ``sending_queue.storage``).

Responses, by the OTLP/HTTP specification (https://opentelemetry.io/docs/specs/otlp/#otlphttp-response):
2xx is success, and a ``partial_success`` in it is logged once and its ``rejected_data_points`` counted; 429, 502,
503 and 504 are retried, honouring ``Retry-After``, as are network errors; every other status is permanent.

>>> from otel_monitoring.sidecar.config import OTLPHTTPExporterConfig
>>> exporter = OTLPHTTPExporter(OTLPHTTPExporterConfig(endpoint="http://127.0.0.1:9"))
>>> exporter.start()
>>> exporter.export(MetricsData([]))  # nothing to send
True
>>> exporter.shutdown(timeout=1.0)
>>> exporter.stats().capacity
1000
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final

import httpx
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.sdk.metrics.export import MetricsData

from otel_monitoring.sidecar._points import count_points
from otel_monitoring.sidecar.config import OTLPHTTPExporterConfig
from otel_monitoring.sidecar.sending_queue import (
    Batch,
    PermanentError,
    QueuedExporter,
    QueueFiles,
    RetryableError,
    make_http_client,
    retry_after_seconds,
    user_agent,
)

__all__ = ["OTLPHTTPExporter", "encode_request"]

_logger = logging.getLogger(__name__)

# https://opentelemetry.io/docs/specs/otlp/#retryable-response-codes
_RETRYABLE: Final = frozenset({429, 502, 503, 504})
_CONTENT_TYPES: Final = {"proto": "application/x-protobuf", "json": "application/json"}
_MAX_LOGGED_BODY: Final = 512
# Level 6, zlib's default: most of level 9's ratio for about a third of its time on metric payloads.
_GZIP_LEVEL: Final = 6


def encode_request(data: MetricsData, encoding: str = "proto", compression: str = "gzip") -> Batch:
    """One OTLP ``ExportMetricsServiceRequest`` body for ``data``, encoded and compressed as configured; the
    batch's ``tag`` (``"proto+gzip"``) tells the sender which headers go with it.

    >>> batch = encode_request(MetricsData([]), "json", "none")
    >>> batch.body, batch.tag, batch.points
    (b'{}', 'json+none', 0)
    """
    message = encode_metrics(data)
    if encoding == "json":
        document = json_format.MessageToDict(message, use_integers_for_enums=True)
        _ids_to_hex(document)
        body = json.dumps(document, separators=(",", ":")).encode()
    else:
        body = message.SerializeToString()
    if compression == "gzip":
        body = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
    return Batch(bytes(body), count_points(data), tag=f"{encoding}+{compression}")


def _ids_to_hex(document: Any) -> None:
    """OTLP/JSON writes exemplars' trace and span ids as hex, where protobuf's JSON mapping writes base64.

    https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding
    """
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("traceId", "spanId") and isinstance(value, str):
                document[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)
    elif isinstance(document, list):
        for item in document:
            _ids_to_hex(item)


class OTLPHTTPExporter(QueuedExporter):
    """Sends metrics as OTLP/HTTP through the sending queue, without blocking the pipeline.

    ``storage`` keeps the queue on disk (the sidecar passes the ``file_storage`` extension named by
    ``sending_queue.storage``); ``auth_header`` returns an ``Authorization`` value (the ``bearertokenauth``
    extension) for every request; ``client``, ``clock``, ``sleep`` and ``jitter`` are injectable for tests.
    Lifecycle, ``busy``/``reserve``/``release`` and ``stats()`` come from
    :class:`~otel_monitoring.sidecar.sending_queue.QueuedExporter`.
    """

    def __init__(
        self,
        config: OTLPHTTPExporterConfig,
        *,
        storage: QueueFiles | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
        auth_header: Callable[[], str] | None = None,
        name: str = "otlphttp",
    ) -> None:
        super().__init__(
            self._send,
            config.sending_queue,
            config.retry_on_failure,
            storage,
            name=name,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
            logger=_logger,
        )
        self._config = config
        self._url = config.resolved_metrics_endpoint()
        self._auth_header = auth_header
        self._own_client = client is None
        consumers = config.sending_queue.num_consumers if config.sending_queue.enabled else 1
        self._client = client if client is not None else make_http_client(config.timeout, config.tls, consumers)
        self._headers = {"User-Agent": user_agent()}
        self._headers.update({key: value.get_secret_value() for key, value in config.headers.items()})

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        """Encode ``data`` once and queue it; False when the queue refused it (or, without a queue, sending failed).
        ``reserved``: the caller holds a :meth:`reserve`, which this export uses."""
        batch = encode_request(data, self._config.encoding, self._config.compression)
        return self.queue.offer([batch] if batch.points else [], reserved=reserved)

    # --- the sender side ---

    def _send(self, batch: Batch) -> None:
        # Headers come from the batch's tag, not the config: a batch restored from disk keeps its own encoding.
        encoding, _, compression = batch.tag.partition("+")
        headers = {**self._headers, "Content-Type": _CONTENT_TYPES.get(encoding, _CONTENT_TYPES["proto"])}
        if compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        if self._auth_header is not None:
            headers["Authorization"] = self._auth_header()
        try:
            response = self._client.post(self._url, content=batch.body, headers=headers)
        except httpx.TransportError as error:
            raise RetryableError(f"cannot reach {self._url} ({type(error).__name__})", key="network") from None
        status = response.status_code
        if 200 <= status < 300:
            self._partial_success(response, batch.points)
            return
        message = _status_message(response)
        if status in _RETRYABLE:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise RetryableError(f"{self._url} answered {status}: {message}", retry_after=retry_after, key="retry")
        raise PermanentError(f"{self._url} refused a request with {status}: {message}", key=f"status_{status}")

    def _partial_success(self, response: httpx.Response, points: int) -> None:
        if not response.content:
            return
        reply = metrics_service_pb2.ExportMetricsServiceResponse()
        try:
            if "json" in response.headers.get("content-type", ""):
                json_format.Parse(response.content, reply, ignore_unknown_fields=True)
            else:
                reply.ParseFromString(response.content)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError):
            _logger.debug("%s: a 2xx answer whose body is not an ExportMetricsServiceResponse", self.name)
            return
        partial = reply.partial_success
        self.count_partial_success(partial.rejected_data_points, partial.error_message, points)


def _status_message(response: httpx.Response) -> str:
    """The ``google.rpc.Status`` message of an OTLP error answer, else the start of the body."""
    content_type = response.headers.get("content-type", "")
    if "protobuf" in content_type:
        try:
            return str(status_pb2.Status.FromString(response.content).message) or "(no message)"
        except DecodeError:
            pass
    return response.text[:_MAX_LOGGED_BODY].strip() or "(no body)"
