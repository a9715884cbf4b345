"""The ``otlp`` receiver over HTTP: a plain ASGI app serving ``POST /v1/metrics`` by the OTLP/HTTP specification.

https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md#otlphttp

Protobuf or JSON (answered in the same encoding), gzip or identity, a body limit applied while reading and
again while decompressing (413), ``partial_success`` for rejected points, 400 with a ``google.rpc.Status`` for
malformed bodies, 415 for an unsupported content type or encoding, 401 for a missing or wrong bearer token,
and 503 with ``Retry-After`` when the pipeline raises :class:`ReceiverBusy`. docs/sidecar-receiver.md has the
full table.

>>> async def consume(data):
...     pass
>>> app = OTLPHTTPReceiver(OTLPHTTPServerConfig(), consume)  # serve with uvicorn.Server(uvicorn.Config(app))
>>> app.stats.accepted_points
0
"""

from __future__ import annotations

import hmac
import logging
import math
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.sdk.metrics.export import MetricsData

from otel_monitoring.sidecar._asgi import serve_lifespan
from otel_monitoring.sidecar._auth import load_bearer_token, read_token_file
from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig, OTLPHTTPServerConfig
from otel_monitoring.sidecar.otlp import (
    OTLPDecodeError,
    OTLPMetricsDecoder,
    encode_export_response,
    encode_status,
    protobuf_backend,
)

__all__ = ["MetricsConsumer", "OTLPHTTPReceiver", "ReceiverBusy", "ReceiverStats"]

_logger = logging.getLogger(__name__)

MetricsConsumer = Callable[[MetricsData], Awaitable[None]]

_PROTOBUF: Final = b"application/x-protobuf"
_JSON: Final = b"application/json"
# After an early answer (413), the rest of the body is read and dropped, up to this much, so the client sees the
# status instead of a connection reset while it is still sending.
_DRAIN_LIMIT: Final = 64 * 1024 * 1024
# gRPC codes for google.rpc.Status.code; OTLP/HTTP clients only log them.
_GRPC_CODE: Final = {400: 3, 401: 16, 404: 5, 405: 12, 413: 8, 415: 3, 500: 13, 503: 14}
_REASON: Final = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class ReceiverBusy(Exception):
    """Raised by the consumer (memory limiter, full queues) to refuse a request.

    Retryable by default: the receiver answers 503 with ``Retry-After`` (whole seconds, rounded up), and the
    sender's exporter retries. ``permanent=True`` means the data will never be accepted: 400, not retried
    (as the OpenTelemetry Collector answers a permanent pipeline error).

    >>> str(ReceiverBusy(1.5, message="memory above the soft limit"))
    'memory above the soft limit'
    """

    def __init__(self, retry_after_seconds: float, permanent: bool = False, message: str = "") -> None:
        self.retry_after_seconds = retry_after_seconds
        self.permanent = permanent
        super().__init__(message or ("data refused" if permanent else "receiver busy, retry later"))


@dataclass(slots=True)
class ReceiverStats:
    """What the receiver saw, for the sidecar's own metrics. Points are counted only in decoded bodies.

    ``accepted_points`` went to the consumer, which took them; ``rejected_points`` were invalid or not
    representable (``partial_success``); ``refused_points`` were valid but the consumer refused them
    (:class:`ReceiverBusy`) or failed; ``responses`` counts answers by HTTP status.
    """

    received_points: int = 0
    accepted_points: int = 0
    rejected_points: int = 0
    refused_points: int = 0
    responses: Counter[int] = field(default_factory=Counter)


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.message = message
        self.headers = headers
        super().__init__(message)


class OTLPHTTPReceiver:
    """ASGI app for OTLP/HTTP metrics. ``consumer`` gets each request's accepted points as SDK ``MetricsData``.

    ``bearer_token`` is the ``bearertokenauth`` extension that ``config.auth.authenticator`` names (the
    runtime resolves the id); its ``filename`` is read once, here, with ``read_text``. TLS and the listen
    address are the server's business (``config.endpoint``, ``config.tls``).

    >>> async def consume(data):
    ...     pass
    >>> token = BearerTokenAuthExtensionConfig(token="s3cret-token")
    >>> config = OTLPHTTPServerConfig.model_validate({"auth": {"authenticator": "bearertokenauth"}})
    >>> OTLPHTTPReceiver(config, consume, bearer_token=token).metrics_path
    '/v1/metrics'
    """

    def __init__(
        self,
        config: OTLPHTTPServerConfig,
        consumer: MetricsConsumer,
        *,
        bearer_token: BearerTokenAuthExtensionConfig | None = None,
        decoder: OTLPMetricsDecoder | None = None,
        read_text: Callable[[str], str] = read_token_file,
    ) -> None:
        if config.auth is not None and bearer_token is None:
            raise ValueError(
                f"receivers.otlp.protocols.http.auth.authenticator: extension {config.auth.authenticator!r} "
                "must be given to the receiver as bearer_token"
            )
        if protobuf_backend() != "upb":
            _logger.warning(
                "protobuf uses its %r backend; OTLP decoding is about 20x slower than with upb", protobuf_backend()
            )
        self.metrics_path = config.metrics_url_path
        self.max_body = config.max_request_body_size
        self.stats = ReceiverStats()
        self._consumer = consumer
        self._decoder = decoder or OTLPMetricsDecoder()
        self._scheme: bytes | None = None
        self._token = b""
        if bearer_token is not None and config.auth is not None:
            self._token = load_bearer_token(bearer_token, read_text, name=config.auth.authenticator)
            self._scheme = bearer_token.scheme.lower().encode()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._handle(scope, receive, send)
        elif kind == "lifespan":
            await serve_lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _handle(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        headers = _headers(scope)
        content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        as_json = content_type == _JSON
        body_read = False
        try:
            self._check_request(scope, headers, content_type)
            compressed = self._content_encoding(headers)
            body_read = True  # from here on the body is read (or drained) before any answer
            body = await self._read_body(receive, headers, compressed)
            await self._process(body, as_json, send)
        except _Refused as refusal:
            if not body_read:
                body_read = True
                await _drain(receive, 0)
            await self._answer_status(send, refusal.status, refusal.message, as_json, refusal.headers)
        except Exception:
            _logger.exception("OTLP receiver: unexpected error while handling a request")
            await self._answer_status(send, 500, "internal error in the receiver", as_json, ())

    def _check_request(self, scope: dict[str, Any], headers: dict[bytes, bytes], content_type: bytes) -> None:
        if scope["path"] != self.metrics_path:
            raise _Refused(404, f"not found: this receiver serves POST {self.metrics_path}")
        if scope["method"] != "POST":
            raise _Refused(405, f"method {scope['method']} not allowed: use POST", ((b"allow", b"POST"),))
        if self._scheme is not None:
            self._check_token(headers.get(b"authorization"))
        if content_type not in (_PROTOBUF, _JSON):
            shown = content_type.decode("latin-1")[:80] or "none"
            raise _Refused(415, f"unsupported content type {shown!r} (valid: application/x-protobuf, application/json)")

    def _check_token(self, header: bytes | None) -> None:
        scheme, _, token = (header or b"").strip().partition(b" ")
        # The token is compared in constant time; the scheme is public and case-insensitive (RFC 9110).
        valid = hmac.compare_digest(token.strip(), self._token)
        if not valid or scheme.lower() != self._scheme:
            raise _Refused(401, "missing or invalid bearer token", ((b"www-authenticate", b"Bearer"),))

    @staticmethod
    def _content_encoding(headers: dict[bytes, bytes]) -> bool:
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding in (b"", b"identity"):
            return False
        if encoding == b"gzip":
            return True
        shown = encoding.decode("latin-1")[:40]
        raise _Refused(415, f"unsupported content encoding {shown!r} (valid: gzip, identity)")

    async def _read_body(
        self, receive: Callable[[], Awaitable[Any]], headers: dict[bytes, bytes], compressed: bool
    ) -> bytes:
        limit = self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise await _too_large(receive, 0, limit)
        chunks: list[bytes] = []
        size = 0
        inflater = _GzipInflater(limit) if compressed else None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "client disconnected before the body was complete")
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > limit:
                raise await _too_large(receive, size if more else -1, limit)
            if inflater is not None:
                try:
                    inflater.feed(chunk)
                except _InflatedTooLarge:
                    raise await _too_large(receive, size if more else -1, limit, inflated=True) from None
                except _Refused:
                    if more:
                        await _drain(receive, size)
                    raise
            else:
                chunks.append(chunk)
            if not more:
                break
        if inflater is not None:
            return inflater.finish()
        return b"".join(chunks)

    async def _process(self, body: bytes, as_json: bool, send: Any) -> None:
        try:
            decoded = self._decoder.decode(body, as_json=as_json)
        except OTLPDecodeError as error:
            raise _Refused(400, str(error)) from None
        stats = self.stats
        stats.received_points += decoded.accepted_points + decoded.rejected_points
        stats.rejected_points += decoded.rejected_points
        if decoded.accepted_points:
            try:
                await self._consumer(decoded.data)
            except ReceiverBusy as busy:
                stats.refused_points += decoded.accepted_points
                if busy.permanent:
                    raise _Refused(400, str(busy)) from None
                retry_after = str(max(1, math.ceil(busy.retry_after_seconds))).encode()
                raise _Refused(503, str(busy), ((b"retry-after", retry_after),)) from None
            except Exception:
                stats.refused_points += decoded.accepted_points
                raise
            stats.accepted_points += decoded.accepted_points
        reply = encode_export_response(decoded.rejected_points, decoded.error_message, as_json=as_json)
        await self._answer(send, 200, reply, as_json, ())

    async def _answer_status(
        self, send: Any, status: int, message: str, as_json: bool, headers: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        body = encode_status(_GRPC_CODE.get(status, 2), message, as_json=as_json)
        await self._answer(send, status, body, as_json, headers)

    async def _answer(
        self, send: Any, status: int, body: bytes, as_json: bool, headers: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        self.stats.responses[status] += 1
        response_headers = [
            (b"content-type", _JSON if as_json else _PROTOBUF),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})


class _InflatedTooLarge(Exception):
    pass


class _GzipInflater:
    """Decompresses gzip incrementally and stops as soon as the output passes ``limit``: a gzip bomb is never
    inflated beyond the limit (plus one chunk of at most 64 KiB)."""

    __slots__ = ("_chunks", "_inflater", "_limit", "_size")

    _STEP: Final = 65536

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._chunks: list[bytes] = []
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        while data:
            if self._inflater.eof:
                # Another gzip member (RFC 1952 allows concatenated members, and gzip.decompress reads them all);
                # trailing bytes that are not one are refused.
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            inflater = self._inflater
            try:
                out = inflater.decompress(data, self._STEP)
            except zlib.error as error:
                raise _Refused(400, f"body is not valid gzip: {error}") from None
            self._size += len(out)
            if self._size > self._limit:
                raise _InflatedTooLarge
            self._chunks.append(out)
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def finish(self) -> bytes:
        if not self._inflater.eof:
            raise _Refused(400, "gzip body is truncated")
        return b"".join(self._chunks)


async def _too_large(
    receive: Callable[[], Awaitable[Any]], read: int, limit: int, *, inflated: bool = False
) -> _Refused:
    """The 413 refusal, after draining what remains of the body (``read`` < 0: nothing remains)."""
    if read >= 0:
        await _drain(receive, read)
    where = "after decompression" if inflated else "(max_request_body_size)"
    return _Refused(413, f"body is larger than {limit} bytes {where}")


async def _drain(receive: Callable[[], Awaitable[Any]], already: int) -> None:
    drained = already
    while drained <= _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    # ASGI servers give lower-case names; the last value of a repeated header wins.
    return {name.lower(): value for name, value in scope.get("headers", ())}
