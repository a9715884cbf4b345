"""Access control on metrics endpoints: token, basic auth, IP allowlist, access log; standalone server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from otel_monitoring.exporter import MetricsHTTPServer, start_http_server
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry
from tests.support import free_port, running, uvicorn_argv


def standalone(environ: dict[str, str]) -> tuple[Telemetry, MetricsHTTPServer]:
    registry = MetricsRegistry()
    registry.counter("logins_total", "Logins").inc(3)
    telemetry = Telemetry(load_settings(environ=environ, strict=True), registry)
    return telemetry, start_http_server(0, addr="127.0.0.1", telemetry=telemetry)


@pytest.fixture
def token_server() -> Iterator[str]:
    telemetry, server = standalone(
        {"OTEL_MONITORING_METRICS_TOKEN": "s3cret-token", "OTEL_MONITORING_METRICS_ACCESS_LOG": "true"}
    )
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    telemetry.shutdown()


def test_standalone_server_serves_the_exposition_without_auth_by_default() -> None:
    telemetry, server = standalone({})
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
        missing = httpx.get(f"http://127.0.0.1:{server.port}/other")
    finally:
        server.shutdown()
        telemetry.shutdown()
    assert response.status_code == 200 and "logins_total 3.0" in response.text
    assert missing.status_code == 404


def test_bearer_token_is_required_when_configured(token_server: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="otel_monitoring.access"):
        anonymous = httpx.get(f"{token_server}/metrics")
        wrong = httpx.get(f"{token_server}/metrics", headers={"Authorization": "Bearer nope"})
        right = httpx.get(f"{token_server}/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "logins_total 3.0" in right.text and "logins_total" not in anonymous.text
    lines = [record.getMessage() for record in caplog.records if record.name == "otel_monitoring.access"]
    assert len(lines) == 3 and lines[0].startswith("127.0.0.1 /metrics 401") and " 200 " in lines[2]
    assert all("s3cret" not in line for line in lines)


def test_basic_auth_is_required_when_configured() -> None:
    telemetry, server = standalone(
        {"OTEL_MONITORING_METRICS_USERNAME": "prom", "OTEL_MONITORING_METRICS_PASSWORD": "pw"}
    )
    base = f"http://127.0.0.1:{server.port}/metrics"
    try:
        anonymous = httpx.get(base)
        wrong = httpx.get(base, auth=("prom", "wrong"))
        right = httpx.get(base, auth=("prom", "pw"))
    finally:
        server.shutdown()
        telemetry.shutdown()
    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert anonymous.headers["www-authenticate"] == 'Basic realm="metrics"'


def test_ip_allowlist_refuses_other_addresses() -> None:
    telemetry, server = standalone({"OTEL_MONITORING_METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"})
    try:
        refused = httpx.get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.shutdown()
        telemetry.shutdown()
    assert refused.status_code == 403 and "logins_total" not in refused.text


def test_asgi_metrics_endpoint_enforces_the_token_from_the_environment() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(
        uvicorn_argv("tests.integration.seed_app:app", port),
        f"{base}/items/1",
        env={"OTEL_MONITORING_METRICS_TOKEN": "tkn"},
    ):
        anonymous = httpx.get(f"{base}/metrics")
        allowed = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer tkn"})
    assert anonymous.status_code == 401
    assert allowed.status_code == 200 and "http_requests_total" in allowed.text
