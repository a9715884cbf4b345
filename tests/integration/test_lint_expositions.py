"""``otel-monitoring lint --metrics-url`` against real servers on 127.0.0.1: an instrumented FastAPI service under
``opentelemetry-instrument`` (every collector on, real traffic) has nothing to flag; a prometheus_client endpoint
with names that break the guidelines has each one flagged; an unreachable URL is bad input."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from otel_monitoring.docs_cli import add_commands
from tests.integration.test_zero_code_collectors import INSTRUMENT, serve
from tests.support import free_port


def run_lint(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lint", *argv])
    status: int = args.func(args)
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


@pytest.mark.skipif(not Path(INSTRUMENT).exists(), reason="opentelemetry-instrument is not installed")
def test_an_instrumented_service_with_customers_in_its_metrics_has_nothing_to_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(tmp_path) as (base, metrics_url), httpx.Client(base_url=base) as client:
        item_id = client.post("/items", json={"name": "widget", "owner": "ana@example.com"}).json()["id"]
        assert client.get(f"/items/{item_id}").status_code == 200
        assert client.get(f"/upstream/{item_id}").status_code == 200
        generation = {"client_id": "acme-customer-7781", "model": "gpt-4o", "provider": "openai"}
        assert client.post("/generate", json={**generation, "input_tokens": 10, "output_tokens": 5}).is_success
        exposition = httpx.get(metrics_url).text
        status, lines, err = run_lint(["--metrics-url", metrics_url], capsys)
    # The exposition really carries customers and the HTTP, database and business metrics lint looked at.
    assert "client_id=" in exposition and "acme-customer-7781" not in exposition
    for name in ("http_server_request_duration_seconds", "db_client_operation_duration_seconds", "cache_operations"):
        assert name in exposition
    assert (status, lines) == (0, [])
    assert "0 findings" in err


@pytest.fixture
def nonconforming_endpoint() -> Iterator[str]:
    """A prometheus_client endpoint whose metrics break one guideline each."""
    registry = CollectorRegistry()
    Histogram("checkout_latency_ms", "Checkout latency", registry=registry).observe(12)
    Gauge("queue_depth_total", "Queue depth", registry=registry).set(4)
    Gauge("workers_count", "Busy workers", registry=registry).set(2)
    Counter("logins", "Logins", ["user_id"], registry=registry).labels("48213").inc()
    Gauge("upload_size", "", registry=registry).set(1)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_each_nonconforming_metric_of_a_real_endpoint_is_flagged_with_its_rule(
    nonconforming_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run_lint(["--metrics-url", nonconforming_endpoint], capsys)
    assert status == 1
    flagged = {tuple(line.split(": ")[:2]) for line in lines}
    assert flagged == {
        ("checkout_latency_ms", "base-unit"),
        ("queue_depth_total", "total-suffix"),
        ("workers_count", "reserved-suffix"),
        ("logins_total", "high-cardinality-label"),
        ("upload_size", "undocumented"),
    }
    assert not any("48213" in line for line in lines)


def test_an_unreachable_url_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    status, lines, err = run_lint(["--metrics-url", url], capsys)
    assert (status, lines) == (2, [])
    assert err.startswith(f"otel-monitoring: error: --metrics-url {url}: ")
