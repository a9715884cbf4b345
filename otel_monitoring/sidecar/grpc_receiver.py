"""The ``otlp`` receiver over gRPC: ``MetricsService/Export`` by the OTLP/gRPC specification, on ``grpc.aio``.

https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md#otlpgrpc

The server runs in the sidecar's event loop beside the uvicorn servers. The service is registered generically,
with no deserializer, so each request arrives as the raw ``ExportMetricsServiceRequest`` bytes and goes through
the same :class:`~otel_monitoring.sidecar.otlp.OTLPMetricsDecoder` and the same consumer as OTLP/HTTP. Answers:

=====================================  ===================================================================
OK                                     every point taken; ``partial_success.rejected_data_points`` counts
                                       the points left out (summaries, invalid histograms), with the reasons
INVALID_ARGUMENT                       the message is not an ``ExportMetricsServiceRequest``; or the
                                       pipeline refused the data for good (``ReceiverBusy(permanent=True)``)
UNAVAILABLE + ``RetryInfo``            the pipeline is busy (memory limiter, full sending queue, shutting
                                       down): the spec's backpressure signal, retried by every OTLP client
UNAUTHENTICATED                        ``auth`` is set and the ``authorization`` metadata is missing or wrong
RESOURCE_EXHAUSTED                     the message is over ``max_recv_msg_size_mib`` after decompression
                                       (grpc core answers it; no ``RetryInfo``, so clients do not retry)
INTERNAL                               an unexpected error in the pipeline (logged)
=====================================  ===================================================================

``RetryInfo`` is sent twice, in the two places clients read it: inside ``grpc-status-details-bin`` (a
``google.rpc.Status`` with the detail, as the Collector sends it and Go and Java clients read it) and as
``google.rpc.retryinfo-bin`` (what the OpenTelemetry Python exporter reads). gzip is grpc's business: a
compressed message arrives inflated.

>>> async def consume(data):
...     pass
>>> receiver = OTLPGRPCReceiver(OTLPGRPCServerConfig(), consume)
>>> receiver.address
'127.0.0.1:4317'
>>> port = await receiver.start()  # doctest: +SKIP
>>> await receiver.stop(grace=2.0)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from google.protobuf import any_pb2, duration_pb2  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from otel_monitoring.sidecar._auth import load_bearer_token, read_token_file
from otel_monitoring.sidecar.config import (
    BearerTokenAuthExtensionConfig,
    MiB,
    OTLPGRPCServerConfig,
    split_host_port,
)
from otel_monitoring.sidecar.otlp import OTLPDecodeError, OTLPMetricsDecoder, encode_export_response, protobuf_backend
from otel_monitoring.sidecar.receiver import MetricsConsumer, ReceiverBusy, ReceiverStats

__all__ = ["METRICS_EXPORT_METHOD", "METRICS_SERVICE", "OTLPGRPCReceiver", "retry_info_metadata"]

_logger = logging.getLogger(__name__)

METRICS_SERVICE: Final = "opentelemetry.proto.collector.metrics.v1.MetricsService"
"""Fully-qualified gRPC service name of OTLP metrics."""

METRICS_EXPORT_METHOD: Final = f"/{METRICS_SERVICE}/Export"
"""The method path a client calls."""

_STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
_PYTHON_RETRY_INFO_KEY: Final = "google.rpc.retryinfo-bin"


def retry_info_metadata(
    code: grpc.StatusCode, message: str, retry_after_seconds: float
) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying ``RetryInfo`` for an error status, in both places clients look for it.

    >>> [key for key, _ in retry_info_metadata(grpc.StatusCode.UNAVAILABLE, "busy", 1.5)]
    ['grpc-status-details-bin', 'google.rpc.retryinfo-bin']
    """
    seconds = max(0.0, retry_after_seconds)
    whole = math.floor(seconds)
    retry_info = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
    )
    detail = any_pb2.Any()
    detail.Pack(retry_info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return ((_STATUS_DETAILS_KEY, status.SerializeToString()), (_PYTHON_RETRY_INFO_KEY, retry_info.SerializeToString()))


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, bytes], ...] = ()) -> None:
        self.code = code
        self.message = message
        self.trailers = trailers
        super().__init__(message)


class OTLPGRPCReceiver:
    """OTLP/gRPC metrics on a ``grpc.aio`` server. ``consumer`` gets each request's accepted points as SDK
    ``MetricsData`` (the same consumer as :class:`~otel_monitoring.sidecar.receiver.OTLPHTTPReceiver`'s).

    ``bearer_token`` is the ``bearertokenauth`` extension that ``config.auth.authenticator`` names; its
    ``filename`` is read once, here, with ``read_text``; TLS files are read by :meth:`start` with ``read_bytes``.
    ``stats`` counts points as the HTTP receiver does; ``stats.responses`` is keyed by gRPC status code number
    (0 OK, 3 INVALID_ARGUMENT, 14 UNAVAILABLE, 16 UNAUTHENTICATED, 13 INTERNAL).

    :meth:`start` (a coroutine: the server belongs to the running loop) binds ``config.endpoint`` and returns the
    bound port; :meth:`stop` refuses new calls and lets calls in flight finish within ``grace`` seconds.

    >>> async def consume(data):
    ...     pass
    >>> config = OTLPGRPCServerConfig.model_validate({"endpoint": "127.0.0.1:0", "max_recv_msg_size_mib": 8})
    >>> receiver = OTLPGRPCReceiver(config, consume)
    >>> receiver.max_message_bytes
    8388608
    """

    def __init__(
        self,
        config: OTLPGRPCServerConfig,
        consumer: MetricsConsumer,
        *,
        bearer_token: BearerTokenAuthExtensionConfig | None = None,
        decoder: OTLPMetricsDecoder | None = None,
        read_text: Callable[[str], str] = read_token_file,
        read_bytes: Callable[[str], bytes] = lambda path: Path(path).read_bytes(),
    ) -> None:
        if config.auth is not None and bearer_token is None:
            raise ValueError(
                f"receivers.otlp.protocols.grpc.auth.authenticator: extension {config.auth.authenticator!r} "
                "must be given to the receiver as bearer_token"
            )
        if protobuf_backend() != "upb":
            _logger.warning(
                "protobuf uses its %r backend; OTLP decoding is about 20x slower than with upb", protobuf_backend()
            )
        self.config = config
        host, port = split_host_port(config.endpoint)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_message_bytes = config.max_recv_msg_size_mib * MiB
        self.stats = ReceiverStats()
        self._consumer = consumer
        self._decoder = decoder or OTLPMetricsDecoder()
        self._read_bytes = read_bytes
        self._server: Any = None
        self._scheme: str | None = None
        self._token = b""
        if bearer_token is not None and config.auth is not None:
            self._token = load_bearer_token(bearer_token, read_text, name=config.auth.authenticator)
            self._scheme = bearer_token.scheme.lower()

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The generic handler of ``MetricsService/Export``, for serving it from a server of one's own."""
        # No request deserializer and no response serializer: grpc hands over and sends raw bytes, so the
        # decoder parses each message once, with its own fast classes.
        export = grpc.unary_unary_rpc_method_handler(self.export)
        return grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": export})

    async def start(self) -> int:
        """Create the server in the running loop, bind ``config.endpoint`` and serve; returns the bound port.

        Raises ``RuntimeError`` when the address cannot be bound and ``OSError`` when a TLS file cannot be read.
        """
        if self._server is not None:
            raise RuntimeError("the OTLP/gRPC receiver is already started")
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                # grpc sets SO_REUSEPORT by default on Linux: a second sidecar would then share the port silently
                # instead of failing to start, and requests would be split between them.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.rpc_handler(),))
        tls = self.config.tls
        if tls is None:
            port = server.add_insecure_port(self.address)
        else:
            client_ca = self._read_bytes(tls.client_ca_file) if tls.client_ca_file else None
            credentials = grpc.ssl_server_credentials(
                [(self._read_bytes(tls.key_file), self._read_bytes(tls.cert_file))],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            port = server.add_secure_port(self.address, credentials)
        await server.start()
        self._server = server
        return int(port)

    async def stop(self, grace: float | None = 2.0) -> None:
        """Stop serving: new calls are refused, calls in flight get ``grace`` seconds; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    async def export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The ``Export`` method: ``request`` is an encoded ``ExportMetricsServiceRequest``; the answer is an
        encoded ``ExportMetricsServiceResponse``."""
        try:
            if self._scheme is not None:
                self._check_token(context.invocation_metadata())
            reply = await self._process(request)
            self.stats.responses[0] += 1
            return reply
        except _Refused as refusal:
            self.stats.responses[refusal.code.value[0]] += 1
            await context.abort(refusal.code, refusal.message, refusal.trailers)
        except Exception:
            _logger.exception("OTLP/gRPC receiver: unexpected error while handling a request")
            self.stats.responses[grpc.StatusCode.INTERNAL.value[0]] += 1
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the receiver")
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    def _check_token(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
        header = ""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                header = value  # grpc gives lower-case keys; the last value wins, as in the HTTP receiver
        scheme, _, token = header.strip().partition(" ")
        # The token is compared in constant time; the scheme is public and case-insensitive (RFC 9110).
        valid = hmac.compare_digest(token.strip().encode(), self._token)
        if not valid or scheme.lower() != self._scheme:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    async def _process(self, request: bytes) -> bytes:
        try:
            decoded = self._decoder.decode_protobuf(request)
        except OTLPDecodeError as error:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        stats = self.stats
        stats.received_points += decoded.accepted_points + decoded.rejected_points
        stats.rejected_points += decoded.rejected_points
        if decoded.accepted_points:
            try:
                await self._consumer(decoded.data)
            except ReceiverBusy as busy:
                stats.refused_points += decoded.accepted_points
                if busy.permanent:
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(busy)) from None
                code = grpc.StatusCode.UNAVAILABLE
                raise _Refused(
                    code, str(busy), retry_info_metadata(code, str(busy), busy.retry_after_seconds)
                ) from None
            except Exception:
                stats.refused_points += decoded.accepted_points
                raise
            stats.accepted_points += decoded.accepted_points
        return encode_export_response(decoded.rejected_points, decoded.error_message, as_json=False)
