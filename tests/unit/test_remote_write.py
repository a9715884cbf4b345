"""The prometheusremotewrite exporter: wire format, names and labels, retries, queue bounds and shutdown.

Requests go to a scripted HTTP server on 127.0.0.1; time is a fake clock whose sleep only advances it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cramjam
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.exporter.prometheus import _CustomCollector
from opentelemetry.sdk.metrics._internal.point import Buckets
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
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
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring.sidecar.config import PrometheusRemoteWriteExporterConfig
from otel_monitoring.sidecar.remote_write import (
    RemoteWriteConverter,
    RemoteWriteExporter,
    Series,
    encode_series,
    format_bound,
)
from otel_monitoring.sidecar.sending_queue import FileStorage, QueueFiles
from tests.sidecar_support import FakeTime, ScriptedServer, scripted_server
from tests.support import free_port

CUMULATIVE = AggregationTemporality.CUMULATIVE
T0 = 1_700_000_000_000_000_000  # nanoseconds


# --- building MetricsData ---------------------------------------------------------------------------------------


def counter(name: str, points: Sequence[tuple[Mapping[str, Any], float, int]], unit: str = "") -> Metric:
    data = [NumberDataPoint(dict(a), T0, t, v) for a, v, t in points]
    return Metric(name, "", unit, Sum(data, CUMULATIVE, True))


def histogram(
    name: str, attributes: Mapping[str, Any], bounds: Sequence[float], counts: Sequence[int], total: float, unit: str
) -> Metric:
    point = HistogramDataPoint(dict(attributes), T0, T0 + 10**9, sum(counts), total, list(counts), list(bounds), 0, 9)
    return Metric(name, "", unit, Histogram([point], CUMULATIVE))


def metrics_data(metrics: Sequence[Metric], resource: Mapping[str, Any] | None = None) -> MetricsData:
    scope = ScopeMetrics(InstrumentationScope("test.scope", "1.0"), list(metrics), "")
    return MetricsData([ResourceMetrics(Resource(dict(resource or {})), [scope], "")])


def config(**overrides: Any) -> PrometheusRemoteWriteExporterConfig:
    return PrometheusRemoteWriteExporterConfig.model_validate(
        {"endpoint": "http://127.0.0.1:9/api/v1/write", **overrides}
    )


def by_name(series: Sequence[Series]) -> dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[float, int]]]:
    return {
        (dict(s.labels)["__name__"], frozenset((k, v) for k, v in s.labels if k != "__name__")): list(s.samples)
        for s in series
    }


# --- an independent decoder: protobuf's own parser, from a descriptor written here -----------------------------


def _write_request_class() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(name="test_remote_write.proto", package="testprompb", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    messages = {
        "Label": [("name", 1, F.TYPE_STRING, None), ("value", 2, F.TYPE_STRING, None)],
        "Sample": [("value", 1, F.TYPE_DOUBLE, None), ("timestamp", 2, F.TYPE_INT64, None)],
        "TimeSeries": [("labels", 1, F.TYPE_MESSAGE, "Label"), ("samples", 2, F.TYPE_MESSAGE, "Sample")],
        "WriteRequest": [("timeseries", 1, F.TYPE_MESSAGE, "TimeSeries")],
    }
    for message_name, fields in messages.items():
        message = proto.message_type.add(name=message_name)
        for field_name, number, kind, type_name in fields:
            label = F.LABEL_REPEATED if type_name else F.LABEL_OPTIONAL
            added = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = f".testprompb.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("testprompb.WriteRequest"))


WriteRequest = _write_request_class()


def decode(body: bytes) -> list[Series]:
    request = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        Series(
            tuple((label.name, label.value) for label in ts.labels),
            tuple((sample.value, sample.timestamp) for sample in ts.samples),
        )
        for ts in request.timeseries
    ]


# --- a scripted server and fake time ----------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server("/api/v1/write") as state:
        yield state


def accepted_series(server: ScriptedServer) -> list[Series]:
    """The series of every write the server answered with 200."""
    return [s for r in server.received if r.status == 200 for s in decode(r.body)]


def exporter_for(
    url: str, fake: FakeTime, jitter: float = 0.5, storage: QueueFiles | None = None, **overrides: Any
) -> RemoteWriteExporter:
    return RemoteWriteExporter(
        config(endpoint=url, **overrides), clock=fake.clock, sleep=fake.sleep, jitter=lambda: jitter, storage=storage
    )


SYNC = {"remote_write_queue": {"enabled": False}}


# --- encoding ---------------------------------------------------------------------------------------------------


def test_encoded_write_request_decodes_with_protobuf_to_the_same_series() -> None:
    series = [
        Series((("__name__", "jobs_total"), ("queue", "mail")), ((3.0, 1_700_000_000_123), (4.5, 1_700_000_001_123))),
        Series((("__name__", "zero"), ("name", "é ünïcode " * 20)), ((0.0, 0), (-1.25e300, -5))),
        Series((("__name__", "inf"),), ((float("inf"), 2**62),)),
    ]

    assert decode(encode_series(series)) == series


def test_body_is_snappy_block_format_not_framed() -> None:
    body = encode_series([Series((("__name__", "x"),), ((1.0, 1),))])

    assert bytes(cramjam.snappy.decompress_raw(body))  # the raw block decoder reads it
    assert not body.startswith(b"\xff\x06\x00\x00sNaPpY")  # no framing stream identifier


@pytest.mark.parametrize("bound", [0.005, 0.1, 1.0, 2.5, 10.0, 100.0, 1e-7, 123456789.0])
def test_bounds_format_as_the_scrape_exporter_writes_le(bound: float) -> None:
    # The sidecar's scrape exporter renders the same bound; both exporters must give one label value per bucket.
    from otel_monitoring.sidecar.config import PrometheusExporterConfig
    from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter

    scrape = PrometheusExporter(PrometheusExporterConfig.model_validate({"endpoint": "127.0.0.1:0"}))
    scrape.export(metrics_data([histogram("h", {}, [bound], [1, 0], 1.0, "")]))
    rendered = {line.split('le="')[1].split('"')[0] for line in scrape.render().decode().splitlines() if 'le="' in line}

    text = format_bound(bound)

    assert float(text) == bound
    assert rendered == {text, "+Inf"}


def test_infinite_and_nan_bounds_are_written_as_prometheus_spells_them() -> None:
    assert [format_bound(b) for b in (float("inf"), float("-inf"), float("nan"))] == ["+Inf", "-Inf", "NaN"]


# --- names and labels -------------------------------------------------------------------------------------------


def reference_samples(data: MetricsData) -> set[tuple[str, frozenset[tuple[str, str]], float]]:
    """What the OpenTelemetry Prometheus exporter renders for the same data (le made comparable as floats)."""
    collector = _CustomCollector(disable_target_info=True, scope_info_enabled=False)
    collector.add_metrics_data(data)
    samples = set()
    for family in collector.collect():
        for sample in family.samples:
            labels = {k: (format_bound(float(v)) if k == "le" else v) for k, v in sample.labels.items() if v}
            samples.add((sample.name, frozenset(labels.items()), float(sample.value)))
    return samples


def test_names_and_labels_match_the_opentelemetry_prometheus_exporter() -> None:
    data = metrics_data(
        [
            counter("http.server.requests", [({"http.request.method": "GET", "code": 200}, 7, T0)], unit="{request}"),
            counter("jobs_total", [({"queue": "mail"}, 3, T0)], unit="1"),
            counter("db.io", [({"direction": "read"}, 4096, T0)], unit="By"),
            Metric("queue.depth", "", "1", Gauge([NumberDataPoint({"queue": "mail"}, T0, T0, 5)])),
            Metric("pool.usage", "", "", Sum([NumberDataPoint({"state": "idle"}, T0, T0, -2)], CUMULATIVE, False)),
            histogram("http.server.request.duration", {"route": "/a"}, [0.005, 0.1, 1.0], [1, 2, 0, 1], 2.5, "s"),
        ]
    )
    converter = RemoteWriteConverter(config())

    ours = {(name, labels, samples[0][0]) for (name, labels), samples in by_name(converter.series(data)).items()}

    assert ours == reference_samples(data)
    assert any(name == "http_server_request_duration_seconds_bucket" for name, _, _ in ours)
    assert any(name == "db_io_bytes_total" for name, _, _ in ours)


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    bounds, counts = [0.1, 1.0], [2, 3, 4]
    data = metrics_data([histogram("latency", {"route": "/"}, bounds, counts, 12.5, "s")])

    series = by_name(RemoteWriteConverter(config()).series(data))

    timestamp = (T0 + 10**9) // 1_000_000
    route = ("route", "/")
    for bound, expected in zip(["0.1", "1.0", "+Inf"], [2, 5, 9], strict=True):
        assert series[("latency_seconds_bucket", frozenset({route, ("le", bound)}))] == [(expected, timestamp)]
    assert series[("latency_seconds_sum", frozenset({route}))] == [(12.5, timestamp)]
    assert series[("latency_seconds_count", frozenset({route}))] == [(sum(counts), timestamp)]


def test_job_and_instance_come_from_the_resource_and_target_info_carries_the_rest() -> None:
    resource = {
        "service.name": "api",
        "service.namespace": "shop",
        "service.instance.id": "pod-1",
        "deployment.environment": "prod",
    }
    data = metrics_data([counter("hits", [({"job": "spoofed", "path": "/"}, 1, T0)])], resource)

    series = by_name(RemoteWriteConverter(config(external_labels={"cluster": "eu-1"})).series(data))

    identity = {("job", "shop/api"), ("instance", "pod-1"), ("cluster", "eu-1")}
    assert series[("hits_total", frozenset(identity | {("path", "/")}))] == [(1.0, T0 // 1_000_000)]
    assert series[("target_info", frozenset(identity | {("deployment_environment", "prod")}))] == [
        (1.0, T0 // 1_000_000)
    ]


def test_external_labels_do_not_override_a_series_label_and_namespace_prefixes_names() -> None:
    data = metrics_data([counter("hits", [({"cluster": "own"}, 1, T0)])], {"service.name": "api"})

    series = RemoteWriteConverter(config(external_labels={"cluster": "eu-1"}, namespace="shop")).series(data)

    labels = {dict(s.labels)["__name__"]: dict(s.labels) for s in series}
    assert labels["shop_hits_total"]["cluster"] == "own"
    assert "shop_target_info" not in labels  # only service.* attributes: nothing for target_info to say


def test_labels_are_sorted_and_empty_values_left_out() -> None:
    data = metrics_data([counter("hits", [({"zeta": "1", "Alpha": "2", "error.type": "", "b": "3"}, 1, T0)])])

    (series,) = RemoteWriteConverter(config()).series(data)

    names = [name for name, _ in series.labels]
    assert names == sorted(names)
    assert "error_type" not in names
    assert len(names) == 4  # __name__, Alpha, b, zeta


def test_attribute_keys_that_collide_after_sanitizing_join_their_values() -> None:
    data = metrics_data([counter("hits", [({"a.b": "dot", "a-b": "dash"}, 1, T0)])])

    (series,) = RemoteWriteConverter(config()).series(data)

    assert dict(series.labels)["a_b"] == "dash;dot"  # ordered by the original keys: "a-b" < "a.b"


def test_no_suffixes_when_add_metric_suffixes_is_false() -> None:
    data = metrics_data([counter("io", [({}, 1, T0)], unit="By")])

    (series,) = RemoteWriteConverter(config(add_metric_suffixes=False)).series(data)

    assert dict(series.labels)["__name__"] == "io"


def test_resource_attributes_become_labels_when_asked_but_point_attributes_win() -> None:
    data = metrics_data([counter("hits", [({"region": "point"}, 1, T0)])], {"region": "resource", "host.name": "h1"})

    (series,) = [
        s
        for s in RemoteWriteConverter(config(resource_to_telemetry_conversion={"enabled": True})).series(data)
        if dict(s.labels)["__name__"] == "hits_total"
    ]

    assert dict(series.labels)["region"] == "point"
    assert dict(series.labels)["host_name"] == "h1"


def test_delta_and_exponential_points_are_refused_and_counted(server: ScriptedServer) -> None:
    delta = Metric("d", "", "", Sum([NumberDataPoint({}, T0, T0, 1)] * 2, AggregationTemporality.DELTA, True))
    exponential = Metric(
        "e",
        "",
        "",
        ExponentialHistogram(
            [ExponentialHistogramDataPoint({}, T0, T0, 1, 1.0, 0, 0, Buckets(0, [1]), Buckets(0, []), 0, 0, 1, 1)],
            CUMULATIVE,
        ),
    )
    kept = counter("kept", [({}, 1, T0)])
    exporter = exporter_for(server.url, FakeTime(), **SYNC)

    assert exporter.export(metrics_data([delta, exponential, kept]))

    stats = exporter.stats()
    assert (stats.unsupported, stats.sent) == (3, 1)
    assert [dict(s.labels)["__name__"] for s in accepted_series(server)] == ["kept_total"]


# --- delivery ---------------------------------------------------------------------------------------------------


def test_sends_remote_write_headers_and_a_decodable_body(server: ScriptedServer) -> None:
    data = metrics_data([counter("hits", [({"path": "/"}, 3, T0)])])
    exporter = exporter_for(server.url, FakeTime(), headers={"X-Scope-OrgID": "tenant-1"}, **SYNC)

    assert exporter.export(data)

    (request,) = server.received
    assert request.headers["content-encoding"] == "snappy"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["x-prometheus-remote-write-version"] == "0.1.0"
    assert request.headers["user-agent"].startswith("otel-monitoring/")
    assert request.headers["x-scope-orgid"] == "tenant-1"
    assert decode(request.body) == RemoteWriteConverter(config()).series(data)


def test_retries_5xx_with_exponential_backoff_then_succeeds(server: ScriptedServer) -> None:
    server.script = [(503, {}, b"busy"), (500, {}, b"oops"), (502, {}, b"")]
    fake = FakeTime()
    retry = {"initial_interval": "100ms", "max_interval": "250ms", "multiplier": 2, "max_elapsed_time": "1m"}
    exporter = exporter_for(server.url, fake, jitter=0.5, retry_on_failure=retry, **SYNC)

    assert exporter.export(metrics_data([counter("hits", [({}, 1, T0)])]))

    # jitter 0.5 is the middle of the randomization range: the nominal waits, doubling up to max_interval.
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.25])
    assert len(server.received) == 4
    stats = exporter.stats()
    assert (stats.sent, stats.failed, stats.retries) == (1, 0, 3)


def test_jitter_spreads_each_wait_within_the_randomization_factor(server: ScriptedServer) -> None:
    server.script = [(503, {}, b"")] * 2
    low, high = FakeTime(), FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "10s", "multiplier": 1, "randomization_factor": 0.5}

    exporter_for(server.url, low, jitter=0.0, retry_on_failure=retry, **SYNC).export(
        metrics_data([counter("a", [({}, 1, T0)])])
    )
    server.script = [(503, {}, b"")] * 2
    exporter_for(server.url, high, jitter=0.999999, retry_on_failure=retry, **SYNC).export(
        metrics_data([counter("a", [({}, 1, T0)])])
    )

    assert low.sleeps == pytest.approx([0.5, 0.5])
    assert high.sleeps == pytest.approx([1.5, 1.5], rel=1e-5)


def test_honours_retry_after_on_429(server: ScriptedServer) -> None:
    server.script = [(429, {"Retry-After": "7"}, b"slow down")]
    fake = FakeTime()
    exporter = exporter_for(server.url, fake, **SYNC)

    assert exporter.export(metrics_data([counter("hits", [({}, 1, T0)])]))

    assert fake.sleeps == [7.0]
    assert exporter.stats().sent == 1


def test_other_4xx_is_not_retried_and_its_body_logged_once(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [(400, {}, b"out of order sample"), (400, {}, b"out of order sample")]
    fake = FakeTime()
    exporter = exporter_for(server.url, fake, **SYNC)
    caplog.set_level(logging.WARNING, "otel_monitoring.sidecar.remote_write")

    assert not exporter.export(metrics_data([counter("a", [({}, 1, T0)]), counter("b", [({}, 1, T0)])]))
    assert not exporter.export(metrics_data([counter("a", [({}, 2, T0 + 10**9)])]))

    assert len(server.received) == 2
    assert fake.sleeps == []
    assert exporter.stats().failed == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "400" in warnings[0] and "out of order sample" in warnings[0]


def test_gives_up_after_max_elapsed_time(server: ScriptedServer) -> None:
    server.script = [(500, {}, b"")] * 100
    fake = FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "4s", "multiplier": 2, "max_elapsed_time": "10s"}
    exporter = exporter_for(server.url, fake, retry_on_failure=retry, **SYNC)

    assert not exporter.export(metrics_data([counter("hits", [({}, 1, T0)])]))

    assert sum(fake.sleeps) <= 10
    assert fake.sleeps == pytest.approx([1, 2, 4])  # one more 4 s wait would pass 10 s
    assert exporter.stats().failed == 1


def test_network_errors_are_retried() -> None:
    fake = FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "1s", "max_elapsed_time": "3s"}
    exporter = exporter_for(f"http://127.0.0.1:{free_port()}/api/v1/write", fake, retry_on_failure=retry, **SYNC)

    assert not exporter.export(metrics_data([counter("hits", [({}, 1, T0)])]))

    assert len(fake.sleeps) == 3
    assert exporter.stats().failed == 1


def test_no_retry_when_retry_on_failure_is_disabled(server: ScriptedServer) -> None:
    server.script = [(503, {}, b"")]
    exporter = exporter_for(server.url, FakeTime(), retry_on_failure={"enabled": False}, **SYNC)

    assert not exporter.export(metrics_data([counter("hits", [({}, 1, T0)])]))

    assert (len(server.received), exporter.stats().failed) == (1, 1)


def test_full_queue_refuses_new_batches_counts_them_and_logs_once(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = exporter_for(server.url, FakeTime(), remote_write_queue={"queue_size": 2, "num_consumers": 1})
    caplog.set_level(logging.WARNING, "otel_monitoring.sidecar.remote_write")
    batches = [metrics_data([counter("hits", [({}, n, T0 + n * 10**9)])]) for n in range(4)]

    accepted = [exporter.export(batch) for batch in batches]  # not started: nothing leaves the queue

    assert accepted == [True, True, False, False]
    assert (exporter.stats().queued_requests, exporter.stats().dropped) == (2, 2)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    exporter.start()
    assert exporter.flush(timeout=10)
    assert [s.samples[0][0] for s in accepted_series(server)] == [0.0, 1.0]  # the oldest were kept
    exporter.shutdown()
    assert exporter.stats().sent == 2


def test_each_series_arrives_in_time_order_with_many_consumers(server: ScriptedServer) -> None:
    server.script = [(503, {}, b"")] * 5  # early failures must not reorder anything
    exporter = exporter_for(server.url, FakeTime(), remote_write_queue={"num_consumers": 4})
    exporter.start()
    for n in range(30):
        exporter.export(metrics_data([counter(f"c{i}", [({}, n, T0 + n * 10**9)]) for i in range(8)]))

    exporter.shutdown(timeout=10)

    timestamps: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for series in accepted_series(server):
        timestamps.setdefault(series.labels, []).extend(t for _, t in series.samples)
    assert len(timestamps) == 8
    assert all(ts == sorted(ts) and len(ts) == 30 for ts in timestamps.values())
    assert exporter.stats().sent == 240


def test_shutdown_drains_the_queue_and_is_idempotent(server: ScriptedServer) -> None:
    exporter = exporter_for(server.url, FakeTime())
    exporter.start()
    exporter.export(metrics_data([counter("hits", [({}, 5, T0)])]))

    exporter.shutdown(timeout=5)
    exporter.shutdown(timeout=5)

    assert exporter.stats().sent == 1
    assert not exporter.export(metrics_data([counter("hits", [({}, 6, T0 + 10**9)])]))


def test_shutdown_gives_up_on_a_down_endpoint_within_its_timeout() -> None:
    fake = FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "1s", "max_elapsed_time": "0"}  # 0: retry forever
    exporter = exporter_for(
        f"http://127.0.0.1:{free_port()}/api/v1/write",
        fake,
        retry_on_failure=retry,
        remote_write_queue={"num_consumers": 1},
    )
    exporter.start()
    for n in range(3):
        exporter.export(metrics_data([counter("hits", [({}, n, T0 + n * 10**9)])]))

    exporter.shutdown(timeout=2)

    stats = exporter.stats()
    assert stats.sent == 0
    assert stats.failed + stats.dropped == 3
    assert stats.queued == 0


def test_default_config_builds_starts_exports_nothing_and_shuts_down_twice() -> None:
    exporter = RemoteWriteExporter(config())
    exporter.start()

    assert exporter.export(MetricsData([]))

    exporter.shutdown(timeout=1)
    exporter.shutdown(timeout=1)
    assert exporter.stats().sent == 0


def test_file_backed_queue_without_a_storage_is_refused_with_the_key_named() -> None:
    with pytest.raises(ValueError, match=r"remote_write_queue\.storage"):
        RemoteWriteExporter(config(remote_write_queue={"storage": "file_storage"}))


def test_file_backed_queue_keeps_unsent_writes_for_the_next_exporter(server: ScriptedServer, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/api/v1/write"
    settings = {"remote_write_queue": {"storage": "file_storage", "num_consumers": 2}}
    storage = FileStorage(tmp_path, fsync=False)
    storage.open()
    forever = {"max_elapsed_time": "0"}
    first = exporter_for(down, FakeTime(), storage=storage.queue_files("rw"), retry_on_failure=forever, **settings)
    first.start()
    for n in range(5):
        assert first.export(metrics_data([counter(f"c{i}", [({}, n, T0 + n * 10**9)]) for i in range(3)]))
    first.shutdown(timeout=0.5)
    storage.close()
    kept = first.stats().kept_requests

    storage = FileStorage(tmp_path, fsync=False)
    storage.open()
    second = exporter_for(server.url, FakeTime(), storage=storage.queue_files("rw"), **settings)
    second.start()
    assert second.flush(timeout=10)
    second.shutdown()
    storage.close()

    assert kept > 0 and second.stats().restored_requests == kept
    assert (first.stats().dropped, first.stats().failed, second.stats().sent) == (0, 0, 15)
    timestamps: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for series in accepted_series(server):
        timestamps.setdefault(series.labels, []).extend(t for _, t in series.samples)
    assert len(timestamps) == 3
    assert all(ts == sorted(ts) and len(ts) == 5 for ts in timestamps.values())


def test_authorization_header_comes_from_the_callback(server: ScriptedServer) -> None:
    exporter = RemoteWriteExporter(
        config(endpoint=server.url, **SYNC), sleep=FakeTime().sleep, auth_header=lambda: "Bearer t0ken"
    )

    exporter.export(metrics_data([counter("hits", [({}, 1, T0)])]))

    assert server.received[0].headers["authorization"] == "Bearer t0ken"
