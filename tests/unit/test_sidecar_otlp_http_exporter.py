"""The ``otlphttp`` exporter: encodings, headers, OTLP/HTTP retry rules, partial success, restored batches.

Requests go to a scripted HTTP server on 127.0.0.1 and are decoded with the sidecar's own OTLP decoder (and the
official protobuf bindings); time is a fake clock whose sleep only advances it.
"""

from __future__ import annotations

import doctest
import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring.sidecar import otlp_exporter
from otel_monitoring.sidecar.config import OTLPHTTPExporterConfig
from otel_monitoring.sidecar.otlp import OTLPMetricsDecoder, encode_export_response
from otel_monitoring.sidecar.otlp_exporter import OTLPHTTPExporter, encode_request
from otel_monitoring.sidecar.sending_queue import FileStorage, SendingQueue
from tests.sidecar_support import FakeTime, Received, ScriptedServer, scripted_server

T0 = 1_700_000_000_000_000_000


def metrics_data(value: int = 7) -> MetricsData:
    number = NumberDataPoint({"queue": "mail", "n": 3}, T0, T0 + 10**9, value)
    counter = Metric("jobs", "", "1", Sum([number], AggregationTemporality.CUMULATIVE, True))
    point = HistogramDataPoint({"route": "/a"}, T0, T0 + 10**9, 4, 2.5, [1, 2, 1], [0.1, 1.0], 0.05, 1.5)
    histogram = Metric("latency", "", "s", Histogram([point], AggregationTemporality.CUMULATIVE))
    scope = ScopeMetrics(InstrumentationScope("app", "1.0"), [counter, histogram], "")
    return MetricsData([ResourceMetrics(Resource({"service.name": "api", "service.instance.id": "w1"}), [scope], "")])


def decoded(request: Received) -> MetricsData:
    """The request's body as the sidecar's receiver decodes it."""
    body = gzip.decompress(request.body) if request.headers.get("content-encoding") == "gzip" else request.body
    as_json = request.headers["content-type"] == "application/json"
    return OTLPMetricsDecoder().decode(body, as_json=as_json).data


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as state:
        yield state


SYNC = {"sending_queue": {"enabled": False}}


def exporter_for(url: str, fake: FakeTime | None = None, **overrides: Any) -> OTLPHTTPExporter:
    fake = fake or FakeTime()
    config = OTLPHTTPExporterConfig.model_validate({"endpoint": url, **overrides})
    return OTLPHTTPExporter(config, clock=fake.clock, sleep=fake.sleep, jitter=lambda: 0.5)


def test_sends_gzipped_protobuf_by_default_with_headers_that_decode_to_the_same_request(
    server: ScriptedServer,
) -> None:
    data = metrics_data()
    exporter = exporter_for(server.url, headers={"X-Tenant": "t1"}, **SYNC)
    exporter._auth_header = lambda: "Bearer s3cret"

    assert exporter.export(data)

    (request,) = server.received
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["user-agent"].startswith("otel-monitoring/")
    assert (request.headers["x-tenant"], request.headers["authorization"]) == ("t1", "Bearer s3cret")
    assert ExportMetricsServiceRequest.FromString(gzip.decompress(request.body)) == encode_metrics(data)
    assert exporter.stats().sent == 2


@pytest.mark.parametrize(("encoding", "compression"), [("json", "none"), ("json", "gzip"), ("proto", "none")])
def test_every_encoding_decodes_to_the_same_points(server: ScriptedServer, encoding: str, compression: str) -> None:
    data = metrics_data()
    exporter = exporter_for(server.url, encoding=encoding, compression=compression, **SYNC)

    assert exporter.export(data)

    (request,) = server.received
    assert ("content-encoding" in request.headers) == (compression == "gzip")
    assert (
        decoded(request).to_json()
        == OTLPMetricsDecoder().decode_protobuf(encode_metrics(data).SerializeToString()).data.to_json()
    )


def test_json_writes_exemplar_ids_as_hex_as_otlp_json_requires() -> None:
    from opentelemetry.sdk.metrics._internal.exemplar import Exemplar

    point = NumberDataPoint({}, T0, T0 + 1, 1, exemplars=[Exemplar({}, 1.0, T0, 0xABC, 0x1234)])
    metric = Metric("m", "", "1", Sum([point], AggregationTemporality.CUMULATIVE, True))
    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(InstrumentationScope("s"), [metric], "")], "")])

    body = encode_request(data, "json", "none").body.decode()

    assert '"spanId":"0000000000000abc"' in body
    assert f'"traceId":"{0x1234:032x}"' in body


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried_honouring_retry_after(server: ScriptedServer, status: int) -> None:
    server.script = [(status, {"Retry-After": "11"}, b"busy"), (status, {}, b"busy")]
    fake = FakeTime()
    exporter = exporter_for(server.url, fake, **SYNC)

    assert exporter.export(metrics_data())

    assert fake.sleeps == [11.0, 7.5]  # Retry-After, then the second nominal wait (5 s x 1.5)
    assert len(server.received) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500, 501])
def test_other_statuses_are_permanent_and_their_status_message_logged(
    server: ScriptedServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    reply = status_pb2.Status(code=3, message="metric name is empty").SerializeToString()
    server.script = [(status, {"Content-Type": "application/x-protobuf"}, reply)]
    fake = FakeTime()
    exporter = exporter_for(server.url, fake, **SYNC)
    caplog.set_level(logging.WARNING)

    assert not exporter.export(metrics_data())

    assert fake.sleeps == []
    assert exporter.stats().failed == 2
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(status) in warning and "metric name is empty" in warning


def test_partial_success_is_counted_and_logged_once(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    partial = encode_export_response(1, "summary points are not supported", as_json=False)
    server.script = [(200, {"Content-Type": "application/x-protobuf"}, partial)] * 2
    exporter = exporter_for(server.url, **SYNC)
    caplog.set_level(logging.WARNING)

    assert exporter.export(metrics_data())
    assert exporter.export(metrics_data(8))

    stats = exporter.stats()
    assert (stats.sent, stats.rejected) == (4, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "summary points are not supported" in warnings[0]


def test_a_restored_batch_is_sent_with_the_encoding_it_was_stored_with(server: ScriptedServer, tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, fsync=False)
    storage.open()
    files = storage.queue_files("otlphttp")
    old = OTLPHTTPExporterConfig.model_validate({"endpoint": server.url, "encoding": "json", "compression": "none"})
    SendingQueue(lambda batch: None, old.sending_queue, old.retry_on_failure, files).offer(
        [encode_request(metrics_data(), "json", "none")]
    )

    config = OTLPHTTPExporterConfig.model_validate(
        {"endpoint": server.url, "sending_queue": {"storage": "file_storage"}}
    )
    exporter = OTLPHTTPExporter(config, storage=files)
    exporter.start()
    assert exporter.flush(timeout=10)
    exporter.export(metrics_data(9))
    exporter.shutdown(timeout=5)
    storage.close()

    first, second = server.received
    assert (first.headers["content-type"], "content-encoding" in first.headers) == ("application/json", False)
    assert (second.headers["content-type"], second.headers["content-encoding"]) == ("application/x-protobuf", "gzip")
    assert (
        decoded(first).to_json()
        == OTLPMetricsDecoder().decode_protobuf(encode_metrics(metrics_data()).SerializeToString()).data.to_json()
    )
    assert exporter.stats().restored_requests == 1


def test_storage_in_config_without_a_storage_object_is_refused_naming_the_key() -> None:
    config = OTLPHTTPExporterConfig.model_validate(
        {"endpoint": "http://127.0.0.1:9", "sending_queue": {"storage": "file_storage"}}
    )

    with pytest.raises(ValueError, match=r"^exporters\.otlphttp/gw\.sending_queue\.storage: "):
        OTLPHTTPExporter(config, name="otlphttp/gw")


def test_metrics_endpoint_is_used_as_is(server: ScriptedServer) -> None:
    received_paths: list[str] = []
    exporter = exporter_for(server.url, metrics_endpoint=server.url + "/custom/path", **SYNC)
    original = exporter._client.post

    def post(url: str, **kwargs: Any) -> Any:
        received_paths.append(url)
        return original(url, **kwargs)

    exporter._client.post = post  # type: ignore[method-assign]
    exporter.export(metrics_data())

    assert received_paths == [server.url + "/custom/path"]


def test_module_examples_run() -> None:
    results = doctest.testmod(otlp_exporter)

    assert results.attempted > 3
    assert results.failed == 0
