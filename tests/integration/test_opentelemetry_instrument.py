"""``opentelemetry-instrument uvicorn app:app`` with no monitoring code gives the whole pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, running

INSTRUMENT = str(Path(sys.executable).parent / "opentelemetry-instrument")


def route_counts(exposition: str) -> list[tuple[str, float]]:
    """(route, count) of every request-duration series, duplicates kept so a double count shows."""
    return [
        (sample.labels.get("http_route", ""), sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
    ]


@pytest.mark.skipif(not Path(INSTRUMENT).exists(), reason="opentelemetry-instrument is not installed")
def test_uninstrumented_fastapi_app_serves_http_metrics_with_route_templates() -> None:
    app_port, metrics_port = free_port(), free_port()
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "OTEL_SERVICE_NAME": "orders",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    argv = [
        INSTRUMENT,
        sys.executable,
        "-m",
        "uvicorn",
        "tests.integration.plain_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(app_port),
        "--log-level",
        "warning",
    ]
    base = f"http://127.0.0.1:{app_port}"
    with running(argv, f"{base}/pid", env=env):
        for user in range(3):
            assert httpx.get(f"{base}/users/{user}/orders/7").status_code == 200
        exposition = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text

    counts = route_counts(exposition)
    assert [count for route, count in counts if route == "/users/{user_id}/orders/{order_id}"] == [3]
    assert sum(count for _, count in counts) == 4  # the three requests and the readiness probe, each counted once
    assert not any(f"/users/{user}/" in exposition for user in range(3))
    assert 'service_name="orders"' in exposition  # target_info carries the resource
    bucket_bounds = {
        sample.labels["le"]
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_bucket"
    }
    assert {"0.005", "0.1", "10.0", "+Inf"} <= bucket_bounds  # seconds, not milliseconds
