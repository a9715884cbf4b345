"""The OTLP/HTTP receiver under uvicorn on 127.0.0.1: the SDK's stock exporter, faults, and a fuzz test."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricsData, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig, OTLPHTTPServerConfig
from otel_monitoring.sidecar.receiver import OTLPHTTPReceiver, ReceiverBusy
from tests.support import free_port

LIMIT = 4 * 1024 * 1024
TOKEN = "integration-token-0123456789"


@dataclass
class Sink:
    """The consumer: keeps every batch; ``refuse`` makes it raise instead."""

    batches: list[MetricsData] = field(default_factory=list)
    refuse: BaseException | None = None

    async def __call__(self, data: MetricsData) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.batches.append(data)


@dataclass
class Served:
    url: str
    sink: Sink
    receiver: OTLPHTTPReceiver


def _serve(receiver: OTLPHTTPReceiver, sink: Sink, path: str) -> Iterator[Served]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}{path}", sink, receiver)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    sink = Sink()
    config = OTLPHTTPServerConfig(max_request_body_size=LIMIT)
    yield from _serve(OTLPHTTPReceiver(config, sink), sink, "/v1/metrics")


@pytest.fixture
def sink(served: Served) -> Sink:
    served.sink.batches.clear()
    served.sink.refuse = None
    return served.sink


def _valid_request(value: int = 1) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="jobs")
    metric.sum.aggregation_temporality = 2
    metric.sum.is_monotonic = True
    point = metric.sum.data_points.add(time_unix_nano=1, as_int=value)
    point.attributes.add(key="queue").value.string_value = "mail"
    return request


def _post(url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": content_type, **headers}, timeout=30)


def _assert_still_serving(served: Served) -> None:
    response = _post(served.url, _valid_request(41).SerializeToString())
    assert response.status_code == 200
    assert served.sink.batches[-1].resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].value == 41


# --- The SDK's stock exporter ---------------------------------------------------------------------------------


def _points(batches: list[MetricsData], name: str) -> list[object]:
    return [
        point
        for batch in batches
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_stock_exporter_counters_histograms_and_gauges_arrive_exactly(
    served: Served, sink: Sink, compression: Compression
) -> None:
    exporter = OTLPMetricExporter(endpoint=served.url, compression=compression)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "checkout"}))
    try:
        meter = provider.get_meter("shop", "1.0")
        orders = meter.create_counter("orders", unit="{order}")
        latency = meter.create_histogram("latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
        temperature = meter.create_gauge("temperature")
        sent_orders = {"paid": [2, 3], "refunded": [1]}
        for status, amounts in sent_orders.items():
            for amount in amounts:
                orders.add(amount, {"status": status, "retry": False})
        observations = [0.05, 0.5, 0.7, 3.0]
        for value in observations:
            latency.record(value, {"route": "/cart"})
        temperature.set(21.5, {"room": "a"})
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()

    assert served.receiver.stats.responses[200] >= 1
    counted = {p.attributes["status"]: p.value for p in _points(sink.batches, "orders")}  # type: ignore[attr-defined]
    assert counted == {status: sum(amounts) for status, amounts in sent_orders.items()}
    assert {p.attributes["retry"] for p in _points(sink.batches, "orders")} == {False}  # type: ignore[attr-defined]
    # shutdown exports once more: cumulative points, the same values again
    histogram = _points(sink.batches, "latency")[-1]
    assert histogram.count == len(observations)  # type: ignore[attr-defined]
    assert histogram.sum == pytest.approx(sum(observations))  # type: ignore[attr-defined]
    assert list(histogram.bucket_counts) == [  # type: ignore[attr-defined]
        sum(v <= 0.1 for v in observations),
        sum(0.1 < v <= 1.0 for v in observations),
        sum(v > 1.0 for v in observations),
    ]
    assert (histogram.min, histogram.max) == (min(observations), max(observations))  # type: ignore[attr-defined]
    gauge = _points(sink.batches, "temperature")[-1]
    assert (gauge.value, gauge.attributes) == (21.5, {"room": "a"})  # type: ignore[attr-defined]
    resource = sink.batches[0].resource_metrics[0]
    assert resource.resource.attributes["service.name"] == "checkout"
    assert resource.scope_metrics[0].scope.name == "shop"


def test_json_request_is_answered_in_json_with_partial_success(served: Served, sink: Sink) -> None:
    request = _valid_request(5)
    summary = request.resource_metrics[0].scope_metrics[0].metrics.add(name="rpc")
    summary.summary.data_points.add(count=1, sum=2.0)
    body = json_format.MessageToJson(request, use_integers_for_enums=True).encode()
    response = _post(served.url, body, "application/json; charset=utf-8")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    partial = response.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "1" and "summary" in partial["errorMessage"]
    assert sink.batches[-1].resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].value == 5


def test_full_success_leaves_partial_success_unset(served: Served, sink: Sink) -> None:
    response = _post(served.url, gzip.compress(_valid_request().SerializeToString()), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert not ExportMetricsServiceResponse.FromString(response.content).HasField("partial_success")
    assert len(sink.batches) == 1


# --- Faults ---------------------------------------------------------------------------------------------------


def _gzip_bomb(inflated: int = 1 << 30) -> bytes:
    # Streamed: 1 GiB of zeros is never held in memory, only ~1 MB of compressed output.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(inflated // len(zeros))]
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    return _gzip_bomb()


def test_gzip_bomb_is_stopped_at_the_limit(served: Served, sink: Sink, gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < LIMIT  # the raw body passes; only decompression can catch it
    response = _post(served.url, gzip_bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "after decompression" in Status.FromString(response.content).message
    assert sink.batches == []
    _assert_still_serving(served)


FAULTS = [
    pytest.param(b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", {}, 400, id="malformed-protobuf"),
    pytest.param(b'{"resourceMetrics": [', "application/json", {}, 400, id="malformed-json"),
    pytest.param(b"a=1", "application/x-www-form-urlencoded", {}, 415, id="wrong-content-type"),
    pytest.param(_valid_request().SerializeToString()[:-4], "application/x-protobuf", {}, 400, id="truncated"),
    pytest.param(
        gzip.compress(_valid_request().SerializeToString())[:-6],
        "application/x-protobuf",
        {"Content-Encoding": "gzip"},
        400,
        id="truncated-gzip",
    ),
    pytest.param(b"not gzip at all", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400, id="not-gzip"),
    pytest.param(b"x", "application/x-protobuf", {"Content-Encoding": "br"}, 415, id="unsupported-encoding"),
    pytest.param(bytes(LIMIT + 1), "application/x-protobuf", {}, 413, id="oversized"),
]


@pytest.mark.parametrize(("body", "content_type", "headers", "status"), FAULTS)
def test_faults_get_their_status_and_the_receiver_keeps_serving(
    served: Served, sink: Sink, body: bytes, content_type: str, headers: dict[str, str], status: int
) -> None:
    response = _post(served.url, body, content_type, **headers)
    assert response.status_code == status
    assert Status.FromString(response.content).message if "json" not in content_type else response.json()["message"]
    assert sink.batches == []
    _assert_still_serving(served)


def test_oversized_body_streamed_without_length_is_refused(served: Served, sink: Sink) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield bytes(1 << 20)

    response = httpx.post(served.url, content=chunks(), headers={"Content-Type": "application/x-protobuf"}, timeout=30)
    assert response.status_code == 413
    _assert_still_serving(served)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/metrics", 405), ("POST", "/v1/traces", 404), ("PUT", "/v1/metrics", 405)],
)
def test_wrong_method_and_unknown_path(served: Served, method: str, path: str, status: int) -> None:
    url = served.url.replace("/v1/metrics", path)
    response = httpx.request(method, url, content=b"", headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == status
    if status == 405:
        assert response.headers["allow"] == "POST"


def test_busy_consumer_gets_503_with_retry_after(served: Served, sink: Sink) -> None:
    sink.refuse = ReceiverBusy(2.2, message="memory above the soft limit")
    before = served.receiver.stats.refused_points
    response = _post(served.url, _valid_request().SerializeToString())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert Status.FromString(response.content).message == "memory above the soft limit"
    assert served.receiver.stats.refused_points == before + 1


def test_permanent_refusal_is_400_without_retry_after(served: Served, sink: Sink) -> None:
    sink.refuse = ReceiverBusy(0, permanent=True)
    response = _post(served.url, _valid_request().SerializeToString())
    assert response.status_code == 400 and "retry-after" not in response.headers


def test_consumer_bug_is_500_and_logged(served: Served, sink: Sink, caplog: pytest.LogCaptureFixture) -> None:
    sink.refuse = RuntimeError("bug in a processor")
    with caplog.at_level(logging.ERROR, logger="otel_monitoring.sidecar.receiver"):
        response = _post(served.url, _valid_request().SerializeToString(), "application/json")
    # The JSON body of _valid_request's protobuf bytes is not JSON: 400, the consumer is never reached.
    assert response.status_code == 400
    body = json_format.MessageToJson(_valid_request()).encode()
    with caplog.at_level(logging.ERROR, logger="otel_monitoring.sidecar.receiver"):
        response = _post(served.url, body, "application/json")
    assert response.status_code == 500
    assert any("bug in a processor" in (record.exc_text or str(record.exc_info)) for record in caplog.records)


# --- Bearer token ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_with_token() -> Iterator[Served]:
    sink = Sink()
    config = OTLPHTTPServerConfig.model_validate({"auth": {"authenticator": "bearertokenauth"}})
    token = BearerTokenAuthExtensionConfig(filename="/run/secrets/otlp-token")
    receiver = OTLPHTTPReceiver(config, sink, bearer_token=token, read_text=lambda path: TOKEN + "\n")
    yield from _serve(receiver, sink, "/v1/metrics")


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        (f"Basic {TOKEN}", 401),
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
    ],
)
def test_bearer_token_is_required(served_with_token: Served, authorization: str | None, status: int) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = _post(served_with_token.url, _valid_request().SerializeToString(), **headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


# --- Fuzz -----------------------------------------------------------------------------------------------------

_SEED_REQUEST = _valid_request(3)
_histogram = _SEED_REQUEST.resource_metrics[0].scope_metrics[0].metrics.add(name="latency")
_histogram.histogram.aggregation_temporality = 1
_histogram.histogram.data_points.add(count=2, sum=1.0, bucket_counts=[1, 1], explicit_bounds=[0.5])
_SEEDS = {
    "application/x-protobuf": _SEED_REQUEST.SerializeToString(),
    "application/json": json_format.MessageToJson(_SEED_REQUEST, use_integers_for_enums=True).encode(),
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    content_type = draw(st.sampled_from(sorted(_SEEDS)))
    body = bytearray(_SEEDS[content_type])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "insert"]))
        if not body:
            break
        at = draw(st.integers(0, len(body) - 1))
        if kind == "flip":
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del body[at:]
        elif kind == "splice":
            other = _SEEDS[draw(st.sampled_from(sorted(_SEEDS)))]
            start = draw(st.integers(0, len(other) - 1))
            body[at:at] = other[start : start + draw(st.integers(1, 64))]
        else:
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
    compressed = draw(st.booleans())
    return content_type, bytes(body), compressed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_fuzzed_payloads_never_get_500(served: Served, case: tuple[str, bytes, bool]) -> None:
    served.sink.refuse = None
    content_type, body, compressed = case
    headers = {"Content-Encoding": "gzip"} if compressed else {}
    response = _post(served.url, gzip.compress(body) if compressed else body, content_type, **headers)
    assert response.status_code in (200, 400), (response.status_code, response.content[:200])
    if response.status_code == 200:
        assert response.headers["content-type"] == content_type
    else:
        message = response.json()["message"] if "json" in content_type else Status.FromString(response.content).message
        assert message


def test_no_internal_errors_after_the_fuzz(served: Served) -> None:
    assert served.receiver.stats.responses[500] <= 1  # only test_consumer_bug_is_500_and_logged's deliberate one
    _assert_still_serving(served)
    json.dumps(dict(served.receiver.stats.responses))  # plain ints, readable by the sidecar's own metrics
