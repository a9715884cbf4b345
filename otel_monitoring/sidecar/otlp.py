"""Decoding OTLP/HTTP metrics requests (protobuf and JSON) into the OpenTelemetry SDK's ``MetricsData``.

The sidecar's processors transform SDK ``MetricsData``, so the receiver turns every request into that model.
Points the model cannot hold (Summary, points flagged "no recorded value") and points the OTLP data model calls
invalid (a histogram whose bucket counts do not match its bounds...) are left out and counted, for
``partial_success.rejected_data_points``.

>>> from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
>>> request = ExportMetricsServiceRequest()
>>> metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="jobs")
>>> point = metric.gauge.data_points.add(as_int=3)
>>> point.attributes.add(key="queue").value.string_value = "mail"
>>> decoded = OTLPMetricsDecoder().decode_protobuf(request.SerializeToString())
>>> decoded.accepted_points, decoded.rejected_points
(1, 0)
>>> decoded.data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].attributes
{'queue': 'mail'}

Speed: this is the sidecar's hot path. The request is parsed with protobuf's upb backend into *shadow* message
classes, identical to opentelemetry-proto's except that a data point's ``attributes`` field is declared as
``repeated bytes`` (wire-compatible with ``repeated KeyValue``). Each point's attributes then arrive as a tuple
of raw encoded ``KeyValue`` byte strings, and that tuple is the key of a cache holding the decoded attribute
dict, so a series seen before costs one dictionary lookup instead of several protobuf attribute reads per
attribute. Points of one series share that one dict, an immutable ``processors._merge.AttributeSet`` whose
``token`` lets the processors and exporters find their own per-series work again (sanitize's rewrite,
cardinality's set key, the exporter's label tuple) instead of redoing it for every point.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

# protobuf ships no type information and pyproject's mypy overrides cover only opentelemetry and prometheus_client.
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory  # type: ignore[import-untyped]
from google.protobuf.internal import api_implementation  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
from opentelemetry.sdk.metrics._internal.point import Buckets
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram as SDKExponentialHistogram,
)
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint as SDKExponentialHistogramDataPoint,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from processors._merge import AttributeSet

__all__ = [
    "DecodedMetrics",
    "OTLPDecodeError",
    "OTLPMetricsDecoder",
    "encode_export_response",
    "encode_status",
    "protobuf_backend",
]

_METRICS_FILE = "opentelemetry/proto/metrics/v1/metrics.proto"
_POINT_MESSAGES = ("NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint", "SummaryDataPoint")
# https://github.com/open-telemetry/opentelemetry-proto/blob/main/opentelemetry/proto/metrics/v1/metrics.proto
# DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK: a staleness marker, which the SDK model cannot carry.
_NO_RECORDED_VALUE: Final = 1
_TEMPORALITIES: Final = {1: AggregationTemporality.DELTA, 2: AggregationTemporality.CUMULATIVE}
_MAX_REASONS: Final = 5  # distinct rejection reasons named in one error message


def protobuf_backend() -> str:
    """The protobuf implementation in use: ``"upb"`` is required for speed (the pure-Python one is ~20x slower).

    >>> protobuf_backend()
    'upb'
    """
    return str(api_implementation.Type())


class OTLPDecodeError(ValueError):
    """The request body is not a valid ``ExportMetricsServiceRequest`` in the encoding it claims (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class DecodedMetrics:
    """One decoded request: the points the SDK model holds, and how many were rejected and why."""

    data: MetricsData
    accepted_points: int
    rejected_points: int
    error_message: str = ""
    """Human-readable reasons for the rejected points, for ``partial_success.error_message``; "" when none."""


def _shadow_request_class() -> Any:
    # A private pool, so the shadow messages never clash with opentelemetry-proto's registered ones.
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    metrics = descriptor_pb2.FileDescriptorProto()
    metrics_pb2.DESCRIPTOR.CopyToProto(metrics)
    for message in metrics.message_type:
        if message.name in _POINT_MESSAGES:
            for field in message.field:
                if field.name == "attributes":
                    # Same wire format as an embedded KeyValue: length-delimited, field 7 (9 for NumberDataPoint).
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    field.ClearField("type_name")
    pool.Add(metrics)
    service = descriptor_pb2.FileDescriptorProto()
    metrics_service_pb2.DESCRIPTOR.CopyToProto(service)
    service.ClearField("service")
    pool.Add(service)
    descriptor = pool.FindMessageTypeByName("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")
    return message_factory.GetMessageClass(descriptor)


_ShadowRequest: Any = _shadow_request_class()
_key_value_from_bytes: Callable[[bytes], common_pb2.KeyValue] = common_pb2.KeyValue.FromString
_new = object.__new__


def _dict_backed(cls: type, fields: Sequence[str]) -> bool:
    """True when an instance of the dataclass ``cls`` is exactly its ``fields`` in its ``__dict__``: then filling
    that dict makes the object ``cls(**values)`` makes. False for a class with ``__slots__`` or other fields.

    >>> @dataclasses.dataclass(frozen=True, slots=True)
    ... class Slotted:
    ...     value: int
    >>> _dict_backed(NumberDataPoint, ("attributes", "start_time_unix_nano", "time_unix_nano", "value", "exemplars"))
    True
    >>> _dict_backed(Slotted, ("value",))
    False
    """
    if not dataclasses.is_dataclass(cls) or not hasattr(_new(cls), "__dict__"):
        return False
    return {field.name for field in dataclasses.fields(cls)} == set(fields)


_NUMBER_FIELDS: Final = ("attributes", "start_time_unix_nano", "time_unix_nano", "value", "exemplars")
_HISTOGRAM_FIELDS: Final = (
    *_NUMBER_FIELDS[:3],
    "count",
    "sum",
    "bucket_counts",
    "explicit_bounds",
    "min",
    "max",
    "exemplars",
)
# The decoder fills the SDK points' instance dicts directly (the fast path below) only while the SDK's point
# dataclasses are plain dict-backed ones with these fields; a future SDK with slots or new fields gets the
# constructor, slower but right.
_FAST_POINTS: Final = _dict_backed(NumberDataPoint, _NUMBER_FIELDS) and _dict_backed(
    HistogramDataPoint, _HISTOGRAM_FIELDS
)


# --- AnyValue -------------------------------------------------------------------------------------------------


def _any_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as a hashable SDK attribute value.

    Scalars keep their type, bytes stay bytes, an empty value is None and arrays become tuples, all of which
    the SDK's ``AnyValue`` allows and processors can hash. A map (kvlist) becomes its JSON text, as the
    specification maps AnyValue for non-OTLP formats: a dict could not be hashed into a series key.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return tuple(_any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return json.dumps(_json_any_value(value), separators=(",", ":"), allow_nan=True)
    if kind == "bytes_value":
        return value.bytes_value
    return None


def _json_any_value(value: common_pb2.AnyValue) -> Any:
    # The JSON form of an AnyValue for non-OTLP formats: bytes as base64, maps as objects, arrays as arrays.
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {item.key: _json_any_value(item.value) for item in value.kvlist_value.values}
    if kind == "array_value":
        return [_json_any_value(item) for item in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(key_values: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    return {item.key: _any_value(item.value) for item in key_values}


def _span_or_trace_id(raw: bytes) -> int | None:
    return int.from_bytes(raw, "big") if raw else None


def _exemplars(exemplars: Sequence[metrics_pb2.Exemplar]) -> list[Exemplar]:
    result = []
    for exemplar in exemplars:
        value = exemplar.as_int if exemplar.WhichOneof("value") == "as_int" else exemplar.as_double
        result.append(
            Exemplar(
                _attributes(exemplar.filtered_attributes),
                value,
                exemplar.time_unix_nano,
                _span_or_trace_id(exemplar.span_id),
                _span_or_trace_id(exemplar.trace_id),
            )
        )
    return result


# --- Responses ------------------------------------------------------------------------------------------------


def encode_export_response(rejected_points: int, error_message: str, *, as_json: bool) -> bytes:
    """An ``ExportMetricsServiceResponse``; ``partial_success`` is set only when points were rejected or there
    is a message, as the specification requires for a full success.

    >>> encode_export_response(0, "", as_json=True)
    b'{}'
    >>> encode_export_response(2, "summary points are not supported", as_json=True)
    b'{"partialSuccess":{"rejectedDataPoints":"2","errorMessage":"summary points are not supported"}}'
    """
    response = metrics_service_pb2.ExportMetricsServiceResponse()
    if rejected_points or error_message:
        response.partial_success.rejected_data_points = rejected_points
        response.partial_success.error_message = error_message
    return _encode(response, as_json)


def encode_status(code: int, message: str, *, as_json: bool) -> bytes:
    """A ``google.rpc.Status`` body for a 4xx/5xx answer (``code`` is the gRPC code, which OTLP/HTTP clients
    only log).

    >>> encode_status(3, "body is not valid JSON", as_json=True)
    b'{"code":3,"message":"body is not valid JSON"}'
    """
    return _encode(status_pb2.Status(code=code, message=message), as_json)


def _encode(message: Message, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode("ascii")
    return bytes(message.SerializeToString())


# --- JSON -----------------------------------------------------------------------------------------------------

_DATA_KEYS: Final = ("sum", "gauge", "histogram", "exponentialHistogram", "exponential_histogram", "summary")
_POINT_KEYS: Final = ("dataPoints", "data_points")
_ID_KEYS: Final = ("traceId", "spanId", "trace_id", "span_id")


def _hex_ids_to_base64(document: Any) -> None:
    """OTLP/JSON writes exemplars' trace and span ids as hex, where protobuf's JSON mapping expects base64.

    https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md#json-protobuf-encoding
    Any other shape is left alone for the protobuf parser to refuse.
    """
    for resource_metrics in _dicts(_get(document, "resourceMetrics", "resource_metrics")):
        for scope_metrics in _dicts(_get(resource_metrics, "scopeMetrics", "scope_metrics")):
            for metric in _dicts(_get(scope_metrics, "metrics")):
                for data_key in _DATA_KEYS:
                    data = metric.get(data_key)
                    if not isinstance(data, dict):
                        continue
                    for point in _dicts(_get(data, *_POINT_KEYS)):
                        for exemplar in _dicts(_get(point, "exemplars")):
                            for id_key in _ID_KEYS:
                                text = exemplar.get(id_key)
                                if isinstance(text, str) and text:
                                    try:
                                        exemplar[id_key] = base64.b64encode(bytes.fromhex(text)).decode("ascii")
                                    except ValueError:
                                        raise OTLPDecodeError(f"exemplar {id_key} is not hex: {text[:40]!r}") from None


def _get(document: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in document:
            return document[key]
    return None


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


# --- Decoder --------------------------------------------------------------------------------------------------


class _Rejections:
    """Counts rejected points by reason, naming one metric per reason."""

    __slots__ = ("count", "reasons")

    def __init__(self) -> None:
        self.count = 0
        self.reasons: dict[str, list[Any]] = {}

    def add(self, reason: str, metric: str, points: int = 1) -> None:
        self.count += points
        entry = self.reasons.get(reason)
        if entry is None:
            self.reasons[reason] = [metric, points]
        else:
            entry[1] += points

    def message(self) -> str:
        parts = [
            f"{points} {reason} (first in metric {metric!r})"
            for reason, (metric, points) in list(self.reasons.items())[:_MAX_REASONS]
        ]
        if len(self.reasons) > _MAX_REASONS:
            parts.append(f"and {len(self.reasons) - _MAX_REASONS} more reasons")
        return "rejected data points: " + "; ".join(parts) if parts else ""


class OTLPMetricsDecoder:
    """Decodes ``ExportMetricsServiceRequest`` bodies into SDK ``MetricsData``; keep one per receiver.

    It caches decoded attribute sets, resources and scopes (each bounded by ``max_cached_attribute_sets``;
    a full cache is emptied, which costs one cold request). Not thread-safe: use it from one event loop.

    >>> decoder = OTLPMetricsDecoder()
    >>> decoder.decode_json(b'{"resourceMetrics": []}').data.resource_metrics
    []
    """

    def __init__(self, *, max_cached_attribute_sets: int = 65536) -> None:
        self._max_cached = max_cached_attribute_sets
        self._sets: dict[tuple[bytes, ...], AttributeSet] = {}
        self._pairs: dict[bytes, tuple[str, Any]] = {}
        self._resources: dict[bytes, Resource] = {}
        self._scopes: dict[bytes, InstrumentationScope] = {}

    def decode(self, body: bytes, *, as_json: bool) -> DecodedMetrics:
        """Decode a JSON or protobuf body; raises :class:`OTLPDecodeError` when it is malformed."""
        return self.decode_json(body) if as_json else self.decode_protobuf(body)

    def decode_json(self, body: bytes) -> DecodedMetrics:
        """Decode an OTLP/JSON body (lowerCamelCase keys, hex trace/span ids, 64-bit integers as strings or
        numbers, enums as integers; unknown fields are ignored, as the specification requires)."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise OTLPDecodeError(f"body is not valid JSON: {_short(error)}") from None
        if not isinstance(document, dict):
            raise OTLPDecodeError("body must be a JSON object (an ExportMetricsServiceRequest)")
        try:
            _hex_ids_to_base64(document)
            request = json_format.ParseDict(
                document, metrics_service_pb2.ExportMetricsServiceRequest(), ignore_unknown_fields=True
            )
            binary = request.SerializeToString()
        except OTLPDecodeError:
            raise
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
            raise OTLPDecodeError(f"body is not an OTLP/JSON ExportMetricsServiceRequest: {_short(error)}") from None
        # One conversion path for both encodings, so JSON and protobuf give the same MetricsData.
        return self.decode_protobuf(binary)

    def decode_protobuf(self, body: bytes) -> DecodedMetrics:
        """Decode a binary protobuf ``ExportMetricsServiceRequest``."""
        try:
            request = _ShadowRequest.FromString(body)
            return self._convert(request)
        except DecodeError as error:
            raise OTLPDecodeError(f"body is not a protobuf ExportMetricsServiceRequest: {_short(error)}") from None

    # Hot path, written for speed on purpose: bound methods and caches in locals, one dictionary lookup per
    # point for a series seen before, no per-point allocation beyond the SDK's point object.
    def _convert(self, request: Any) -> DecodedMetrics:
        rejections = _Rejections()
        accepted = 0
        resource_list = []
        for resource_metrics in request.resource_metrics:
            scope_list = []
            for scope_metrics in resource_metrics.scope_metrics:
                metric_list = []
                for metric in scope_metrics.metrics:
                    converted, points = self._metric(metric, rejections)
                    if converted is not None:
                        metric_list.append(converted)
                        accepted += points
                if metric_list:
                    schema_url = scope_metrics.schema_url
                    scope = self._scope(scope_metrics.scope, schema_url)
                    scope_list.append(ScopeMetrics(scope, metric_list, schema_url))
            if scope_list:
                schema_url = resource_metrics.schema_url
                resource = self._resource(resource_metrics.resource, schema_url)
                resource_list.append(ResourceMetrics(resource, scope_list, schema_url))
        return DecodedMetrics(MetricsData(resource_list), accepted, rejections.count, rejections.message())

    def _metric(self, metric: Any, rejections: _Rejections) -> tuple[Metric | None, int]:
        kind = metric.WhichOneof("data")
        name = metric.name
        data: Any
        points: Sequence[Any]
        if kind == "sum":
            source = metric.sum
            temporality = _TEMPORALITIES.get(source.aggregation_temporality)
            if temporality is None:
                return self._reject_all(source, "points with an unspecified aggregation temporality", name, rejections)
            points = self._number_points(source.data_points, name, rejections)
            data = Sum(points, temporality, source.is_monotonic)
        elif kind == "gauge":
            points = self._number_points(metric.gauge.data_points, name, rejections)
            data = Gauge(points)
        elif kind == "histogram":
            source = metric.histogram
            temporality = _TEMPORALITIES.get(source.aggregation_temporality)
            if temporality is None:
                return self._reject_all(source, "points with an unspecified aggregation temporality", name, rejections)
            points = self._histogram_points(source.data_points, name, rejections)
            data = Histogram(points, temporality)
        elif kind == "exponential_histogram":
            source = metric.exponential_histogram
            temporality = _TEMPORALITIES.get(source.aggregation_temporality)
            if temporality is None:
                return self._reject_all(source, "points with an unspecified aggregation temporality", name, rejections)
            points = self._exponential_points(source.data_points, name, rejections)
            data = SDKExponentialHistogram(points, temporality)
        elif kind == "summary":
            # The SDK model has no Summary; the OpenTelemetry SDKs never produce one either.
            return self._reject_all(metric.summary, "summary points (not supported)", name, rejections)
        else:
            return None, 0  # a metric without data carries no point to count
        if not points:
            return None, 0
        return Metric(name, metric.description, metric.unit, data), len(points)

    @staticmethod
    def _reject_all(source: Any, reason: str, name: str, rejections: _Rejections) -> tuple[None, int]:
        count = len(source.data_points)
        if count:
            rejections.add(reason, name, count)
        return None, 0

    def _point_attributes(self, raw: Any) -> AttributeSet:
        key = tuple(raw)
        attributes = self._sets.get(key)
        if attributes is None:
            attributes = self._decode_set(key)
        return attributes

    def _decode_set(self, key: tuple[bytes, ...]) -> AttributeSet:
        pairs = self._pairs
        decoded: dict[str, Any] = {}
        for encoded in key:
            pair = pairs.get(encoded)
            if pair is None:
                key_value = _key_value_from_bytes(encoded)
                pair = (key_value.key, _any_value(key_value.value))
                if len(pairs) >= self._max_cached:
                    pairs.clear()
                pairs[encoded] = pair
            decoded[pair[0]] = pair[1]
        attributes = AttributeSet(decoded)
        if len(self._sets) >= self._max_cached:
            self._sets.clear()
        self._sets[key] = attributes
        return attributes

    def _number_points(self, source: Any, name: str, rejections: _Rejections) -> list[NumberDataPoint]:
        sets_get = self._sets.get
        decode_set = self._decode_set
        points: list[NumberDataPoint] = []
        append = points.append
        for point in source:
            which = point.WhichOneof("value")
            if which is None:
                rejections.add("number points without a value", name)
                continue
            if point.flags & _NO_RECORDED_VALUE:
                rejections.add("points flagged 'no recorded value' (not supported)", name)
                continue
            key = tuple(point.attributes)
            attributes = sets_get(key)
            if attributes is None:
                attributes = decode_set(key)
            exemplars = point.exemplars
            values = {
                "attributes": attributes,
                "start_time_unix_nano": point.start_time_unix_nano,
                "time_unix_nano": point.time_unix_nano,
                "value": point.as_double if which == "as_double" else point.as_int,
                "exemplars": _exemplars(exemplars) if exemplars else (),
            }
            if _FAST_POINTS:
                # The SDK's frozen dataclass __init__ sets each field through object.__setattr__: filling the
                # instance dict directly is the same object for ~0.25 µs less per point (issue 5's throughput
                # target). _FAST_POINTS checked at import that this is still the same object.
                created = _new(NumberDataPoint)
                created.__dict__.update(values)
            else:
                created = NumberDataPoint(**values)
            append(created)
        return points

    def _histogram_points(self, source: Any, name: str, rejections: _Rejections) -> list[HistogramDataPoint]:
        points: list[HistogramDataPoint] = []
        valid_bounds: list[float] | None = None  # the last bounds found valid: points of a metric share theirs
        for point in source:
            if point.flags & _NO_RECORDED_VALUE:
                rejections.add("points flagged 'no recorded value' (not supported)", name)
                continue
            bucket_counts = list(point.bucket_counts)
            bounds = list(point.explicit_bounds)
            count = point.count
            # https://github.com/open-telemetry/opentelemetry-proto/blob/main/opentelemetry/proto/metrics/v1/metrics.proto
            # (HistogramDataPoint): one more count than bounds, or neither; bounds strictly increasing; the
            # counts add up to `count`.
            if bucket_counts and len(bucket_counts) != len(bounds) + 1:
                rejections.add("histogram points whose bucket_counts are not one more than explicit_bounds", name)
                continue
            if not bucket_counts and bounds:
                rejections.add("histogram points with explicit_bounds but no bucket_counts", name)
                continue
            if bounds != valid_bounds:
                if any(not lower < upper for lower, upper in itertools.pairwise(bounds)) or any(
                    math.isnan(bound) for bound in bounds
                ):
                    rejections.add("histogram points whose explicit_bounds are not strictly increasing", name)
                    continue
                valid_bounds = bounds
            if bucket_counts and sum(bucket_counts) != count:
                rejections.add("histogram points whose bucket_counts do not add up to count", name)
                continue
            exemplars = point.exemplars
            values = {
                "attributes": self._point_attributes(point.attributes),
                "start_time_unix_nano": point.start_time_unix_nano,
                "time_unix_nano": point.time_unix_nano,
                "count": count,
                # sum, min and max are optional in OTLP and required in the SDK model. A missing sum is 0,
                # as the Collector's Prometheus translation writes it; min and max get the SDK's "not
                # recorded" values.
                "sum": point.sum if point.HasField("sum") else 0.0,
                "bucket_counts": bucket_counts,
                "explicit_bounds": bounds,
                "min": point.min if point.HasField("min") else math.inf,
                "max": point.max if point.HasField("max") else -math.inf,
                "exemplars": _exemplars(exemplars) if exemplars else (),
            }
            if _FAST_POINTS:  # as for number points: the instance dict filled directly
                created = _new(HistogramDataPoint)
                created.__dict__.update(values)
            else:
                created = HistogramDataPoint(**values)
            points.append(created)
        return points

    def _exponential_points(
        self, source: Any, name: str, rejections: _Rejections
    ) -> list[SDKExponentialHistogramDataPoint]:
        points: list[SDKExponentialHistogramDataPoint] = []
        for point in source:
            if point.flags & _NO_RECORDED_VALUE:
                rejections.add("points flagged 'no recorded value' (not supported)", name)
                continue
            positive = list(point.positive.bucket_counts)
            negative = list(point.negative.bucket_counts)
            if point.count != point.zero_count + sum(positive) + sum(negative):
                rejections.add("exponential histogram points whose buckets do not add up to count", name)
                continue
            points.append(
                SDKExponentialHistogramDataPoint(
                    self._point_attributes(point.attributes),
                    point.start_time_unix_nano,
                    point.time_unix_nano,
                    point.count,
                    point.sum if point.HasField("sum") else 0.0,
                    point.scale,
                    point.zero_count,
                    Buckets(point.positive.offset, positive),
                    Buckets(point.negative.offset, negative),
                    point.flags,
                    point.min if point.HasField("min") else math.inf,
                    point.max if point.HasField("max") else -math.inf,
                    _exemplars(point.exemplars) if point.exemplars else (),
                )
            )
        return points

    def _resource(self, resource: Any, schema_url: str) -> Resource:
        key = resource.SerializeToString(deterministic=True) + b"\0" + schema_url.encode()
        cached = self._resources.get(key)
        if cached is None:
            cached = Resource(_attributes(resource.attributes), schema_url)
            if len(self._resources) >= self._max_cached:
                self._resources.clear()
            self._resources[key] = cached
        return cached

    def _scope(self, scope: Any, schema_url: str) -> InstrumentationScope:
        key = scope.SerializeToString(deterministic=True) + b"\0" + schema_url.encode()
        cached = self._scopes.get(key)
        if cached is None:
            attributes = _attributes(scope.attributes)
            cached = InstrumentationScope(scope.name, scope.version or None, schema_url, attributes)
            if len(self._scopes) >= self._max_cached:
                self._scopes.clear()
            self._scopes[key] = cached
        return cached


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
