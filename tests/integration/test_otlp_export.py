"""Facade metrics reach the SDK's stock OTLP exporter with OpenTelemetry semantics."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry
from tests.support import OTLPRecorder, free_port, running, uvicorn_argv


@pytest.fixture
def recorder() -> Iterator[OTLPRecorder]:
    receiver = OTLPRecorder()
    yield receiver
    receiver.close()


def telemetry_for(recorder: OTLPRecorder, registry: MetricsRegistry, temporality: str) -> Telemetry:
    settings = load_settings(
        environ={
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": recorder.endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": temporality,
            "OTEL_METRIC_EXPORT_INTERVAL": "3600000",  # exports happen on force_flush only
            "OTEL_SERVICE_NAME": "checkout",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        },
        strict=True,
    )
    return Telemetry(settings, registry)


def test_cumulative_otlp_export_carries_resource_scope_and_values(recorder: OTLPRecorder) -> None:
    registry = MetricsRegistry()
    telemetry = telemetry_for(recorder, registry, "cumulative")
    try:
        orders = registry.counter("orders_total", "Orders", ("status",))
        latency = registry.histogram("checkout_seconds", "Checkout time", unit="s", buckets=[0.1, 1])
        orders.labels(status="paid").inc(2)
        latency.observe(0.5)
        telemetry.force_flush()
        orders.labels(status="paid").inc(3)
        telemetry.force_flush()
    finally:
        telemetry.shutdown()

    points = recorder.points("orders_total")
    resource, scope, last = points[-1]
    assert resource["service.name"] == "checkout"
    assert resource["deployment.environment.name"] == "test"
    assert scope.name == "otel_monitoring"
    assert [p.as_double for _, _, p in points][:2] == [2, 5]  # cumulative: running totals
    assert {kv.key: kv.value.string_value for kv in last.attributes} == {"status": "paid"}
    [(_, _, histogram)] = recorder.points("checkout_seconds")[:1]
    assert (list(histogram.bucket_counts), list(histogram.explicit_bounds)) == ([0, 1, 0], [0.1, 1.0])


def test_delta_otlp_export_sends_changes_with_delta_temporality(recorder: OTLPRecorder) -> None:
    registry = MetricsRegistry()
    telemetry = telemetry_for(recorder, registry, "delta")
    try:
        jobs = registry.counter("jobs_total", "Jobs")
        jobs.inc(4)
        telemetry.force_flush()
        jobs.inc(1)
        telemetry.force_flush()
    finally:
        telemetry.shutdown()

    request_metrics = [
        m for r in recorder.requests for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    ]
    jobs_metrics = [m for m in request_metrics if m.name == "jobs_total"]
    assert {m.sum.aggregation_temporality for m in jobs_metrics} == {
        metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    }
    assert [p.as_double for _, _, p in recorder.points("jobs_total")] == [4, 1]


def test_service_exporting_otlp_sends_without_ever_being_scraped(recorder: OTLPRecorder) -> None:
    port = free_port()
    env = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": recorder.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_SERVICE_NAME": "orders",
    }
    base = f"http://127.0.0.1:{port}"
    with running(uvicorn_argv("tests.integration.seed_app:app", port), f"{base}/items/0", env=env):
        for item in range(1, 4):
            httpx.get(f"{base}/items/{item}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not recorder.points("http_requests_total"):
            time.sleep(0.1)
    assert recorder.points("http_requests_total"), "the service never exported"
    routes = {
        kv.value.string_value
        for _, _, point in recorder.points("http.server.request.duration")
        for kv in point.attributes  # type: ignore[attr-defined]
        if kv.key == "http.route"
    }
    assert routes == {"/items/{item_id}"}
