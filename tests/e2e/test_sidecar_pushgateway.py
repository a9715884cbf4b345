"""The sidecar's ``pushgateway`` exporter pushing to Debian's real Pushgateway: the sum over workers, PUT semantics,
grouping-key escaping, the push at shutdown, and quiet failure."""

from __future__ import annotations

import logging
import math
import threading
import uuid

import httpx
import pytest
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
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring.sidecar.config import PrometheusExporterConfig, PushgatewayExporterConfig
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter
from otel_monitoring.sidecar.pushgateway_exporter import PushgatewayExporter
from tests.support import free_port

pytestmark = pytest.mark.e2e

BOUNDS = [0.1, 0.5, 1.0]


def worker_batch(pid: int, orders: dict[str, int], latencies: list[float], *, service: str = "shop") -> MetricsData:
    """One worker's cumulative export: an orders counter per country and a latency histogram."""
    counts = [
        sum(1 for value in latencies if lower < value <= upper)
        for lower, upper in zip([-math.inf, *BOUNDS[:-1]], BOUNDS, strict=True)
    ]
    counts.append(sum(1 for value in latencies if value > BOUNDS[-1]))
    points = [NumberDataPoint({"country": country}, 1, 2, value) for country, value in orders.items()]
    histogram_point = HistogramDataPoint(
        {"route": "/pay"}, 1, 2, len(latencies), sum(latencies), counts, BOUNDS, min(latencies), max(latencies)
    )
    metrics = [
        Metric("orders", "Orders placed", "1", Sum(points, AggregationTemporality.CUMULATIVE, True)),
        Metric(
            "checkout.duration", "Checkout time", "s", Histogram([histogram_point], AggregationTemporality.CUMULATIVE)
        ),
    ]
    scope = ScopeMetrics(InstrumentationScope("shop.checkout"), metrics, "")
    resource = Resource({"service.name": service, "process.pid": pid})
    return MetricsData([ResourceMetrics(resource, [scope], "")])


def group_samples(pushgateway_url: str, job: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the Pushgateway serves for ``job``, keyed by name and labels (``job`` and ``instance`` left out)."""
    text = httpx.get(f"{pushgateway_url}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("job") != job or sample.name == "push_failure_time_seconds":
                continue
            # `le` as Python writes the bound: the Pushgateway re-renders 1.0 as "1".
            labels = tuple(
                sorted(
                    (k, str(float(v)) if k == "le" else v)
                    for k, v in sample.labels.items()
                    if k not in ("job", "instance")
                )
            )
            samples[(sample.name, labels)] = sample.value
    return samples


def unique_job(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_pushed_group_is_the_sum_over_workers(pushgateway_url: str) -> None:
    job = unique_job("sidecar-sum")
    workers = {
        101: ({"BR": 4, "PT": 9}, [0.05, 0.3, 0.7, 2.0]),
        102: ({"BR": 6, "PT": 1}, [0.2, 0.2, 0.9]),
    }
    exporter = PushgatewayExporter(PushgatewayExporterConfig(url=pushgateway_url, job=job))
    for pid, (orders, latencies) in workers.items():
        assert exporter.export(worker_batch(pid, orders, latencies))
    assert exporter.push()
    samples = group_samples(pushgateway_url, job)

    def labels(**extra: str) -> tuple[tuple[str, str], ...]:
        scope = {"otel_scope_name": "shop.checkout", "otel_scope_schema_url": "", "otel_scope_version": ""}
        return tuple(sorted({"exported_job": "shop", **scope, **extra}.items()))

    for country in ("BR", "PT"):
        expected = sum(orders[country] for orders, _ in workers.values())
        assert samples[("orders_total", labels(country=country))] == expected
    all_latencies = [value for _, latencies in workers.values() for value in latencies]
    assert samples[("checkout_duration_seconds_count", labels(route="/pay"))] == len(all_latencies)
    assert samples[("checkout_duration_seconds_sum", labels(route="/pay"))] == pytest.approx(sum(all_latencies))
    for bound in BOUNDS:
        expected = sum(1 for value in all_latencies if value <= bound)
        assert samples[("checkout_duration_seconds_bucket", labels(route="/pay", le=str(bound)))] == expected
    stats = exporter.stats()
    assert (stats.pushes, stats.failed_pushes) == (1, 0)
    assert stats.sent == stats.exported == sum(len(orders) + 1 for orders, _ in workers.values())


def test_two_services_keep_apart_under_one_grouping_job(pushgateway_url: str) -> None:
    # The Pushgateway overwrites `job` with the grouping key: without the rename both series would be one.
    job = unique_job("sidecar-services")
    exporter = PushgatewayExporter(PushgatewayExporterConfig(url=pushgateway_url, job=job))
    exporter.export(worker_batch(1, {"BR": 2}, [0.1], service="shop"))
    exporter.export(worker_batch(2, {"BR": 5}, [0.1], service="billing"))
    assert exporter.push()
    orders = {
        dict(labels)["exported_job"]: value
        for (name, labels), value in group_samples(pushgateway_url, job).items()
        if name == "orders_total"
    }
    assert orders == {"shop": 2, "billing": 5}


def test_job_with_a_slash_is_pushed_under_its_exact_name(pushgateway_url: str) -> None:
    job = unique_job("batch") + "/nightly report"
    exporter = PushgatewayExporter(PushgatewayExporterConfig(url=pushgateway_url, job=job))
    exporter.export(worker_batch(1, {"PT": 3}, [0.4]))
    assert exporter.push()
    assert any(name == "orders_total" for name, _ in group_samples(pushgateway_url, job))


def test_put_replaces_the_group_so_expired_series_disappear(pushgateway_url: str) -> None:
    job = unique_job("sidecar-expiry")
    now = [1000.0]
    store = PrometheusExporter(PrometheusExporterConfig(metric_expiration="60s"), clock=lambda: now[0])
    exporter = PushgatewayExporter(PushgatewayExporterConfig(url=pushgateway_url, job=job), store=store)
    exporter.export(worker_batch(1, {"BR": 1, "PT": 1}, [0.1]))
    assert exporter.push()
    countries = {
        dict(labels).get("country") for name, labels in group_samples(pushgateway_url, job) if name == "orders_total"
    }
    assert countries == {"BR", "PT"}
    now[0] += 61  # both series expire in the store; only PT comes back
    exporter.export(worker_batch(1, {"PT": 2}, [0.1]))
    assert exporter.push()
    orders = {
        dict(labels)["country"]: value
        for (name, labels), value in group_samples(pushgateway_url, job).items()
        if name == "orders_total"
    }
    assert orders == {"PT": 2}


def test_periodic_pushes_and_a_final_push_at_shutdown(pushgateway_url: str) -> None:
    job = unique_job("sidecar-periodic")
    config = PushgatewayExporterConfig(url=pushgateway_url, job=job, interval="7s")
    waits: list[float] = []
    second_wait = threading.Event()

    def wait(seconds: float, wake: threading.Event) -> None:
        # The first wait ends at once (one periodic push happens); the second blocks until shutdown wakes it.
        waits.append(seconds)
        if len(waits) >= 2:
            second_wait.set()
            wake.wait(30)

    exporter = PushgatewayExporter(config, wait=wait)
    exporter.export(worker_batch(1, {"BR": 3}, [0.1]))
    exporter.start()
    assert second_wait.wait(30)
    assert waits == [7.0, 7.0]
    [periodic] = [v for (name, _), v in group_samples(pushgateway_url, job).items() if name == "orders_total"]
    exporter.export(worker_batch(1, {"BR": 8}, [0.1]))
    exporter.shutdown(timeout=5)
    [final] = [v for (name, _), v in group_samples(pushgateway_url, job).items() if name == "orders_total"]
    assert (periodic, final) == (3, 8)
    assert exporter.stats().pushes == 2


def test_unreachable_gateway_warns_once_per_streak_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://user:pushgateway-secret@127.0.0.1:{free_port()}"
    exporter = PushgatewayExporter(PushgatewayExporterConfig(url=url, job="unreachable", timeout="2s"))
    data = worker_batch(1, {"BR": 3}, [0.1])
    exporter.export(data)
    with caplog.at_level(logging.DEBUG, logger="otel_monitoring.sidecar.pushgateway_exporter"):
        results = [exporter.push() for _ in range(3)]
        exporter.shutdown(timeout=2)
    assert results == [False, False, False]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "pushgateway-secret" not in caplog.text
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in warnings[0].getMessage()
    stats = exporter.stats()
    assert (stats.pushes, stats.failed_pushes) == (0, 4)
    assert stats.failed == stats.exported == 2


def test_gateway_refusal_is_reported_with_its_reason(pushgateway_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # A metric pushed with a timestamp is refused by the Pushgateway (400); the reason comes from its answer body.
    job = unique_job("sidecar-refused")
    store = PrometheusExporter(PrometheusExporterConfig(send_timestamps=True))
    exporter = PushgatewayExporter(PushgatewayExporterConfig(url=pushgateway_url, job=job), store=store)
    exporter.export(worker_batch(1, {"BR": 3}, [0.1]))
    with caplog.at_level(logging.WARNING, logger="otel_monitoring.sidecar.pushgateway_exporter"):
        assert not exporter.push()
    assert "HTTP 400" in caplog.text
    assert "timestamp" in caplog.text
    assert not any(name == "orders_total" for name, _ in group_samples(pushgateway_url, job))
