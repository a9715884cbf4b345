"""The seed's examples, served by a real uvicorn, scraped by a real HTTP client, checked by promtool."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, running, uvicorn_argv


@pytest.fixture(scope="module")
def seed_server() -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(uvicorn_argv("tests.integration.seed_app:app", port), f"{base}/metrics"):
        for item in range(5):
            assert httpx.get(f"{base}/items/{item}").status_code == 200
        assert httpx.get(f"{base}/boom").status_code == 500  # uvicorn closes this connection: one client each
        assert httpx.get(f"{base}/no/such/page").status_code == 404
        yield base


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def test_seed_metrics_are_exposed_under_the_names_written(seed_server: str) -> None:
    text = httpx.get(f"{seed_server}/metrics").text
    values = samples(text)
    assert values[("http_requests_total", frozenset())] == 5
    assert "_total_total" not in text
    assert values[("http_request_duration_seconds_count", frozenset())] == 5
    buckets = {dict(labels)["le"] for name, labels in values if name == "http_request_duration_seconds_bucket"}
    assert buckets == {"0.1", "0.5", "1.0", "2.0", "5.0", "+Inf"}
    assert values[("http_requests_active", frozenset())] == 0
    assert "# HELP http_requests_total Total de requisições HTTP" in text


def test_middleware_records_semantic_convention_http_metrics_with_route_templates(seed_server: str) -> None:
    values = samples(httpx.get(f"{seed_server}/metrics").text)
    counts = {
        dict(labels).get("http_route", ""): (dict(labels), value)
        for (name, labels), value in values.items()
        if name == "http_server_request_duration_seconds_count"
    }
    items_labels, items_count = counts["/items/{item_id}"]
    assert items_count == 5
    assert items_labels["http_request_method"] == "GET"
    assert items_labels["http_response_status_code"] == "200"
    boom_labels, _ = counts["/boom"]
    assert (boom_labels["http_response_status_code"], boom_labels["error_type"]) == ("500", "RuntimeError")
    unmatched_labels, unmatched_count = counts[""]  # unmatched paths share one value, never the raw path
    assert unmatched_labels["http_response_status_code"] == "404" and unmatched_count == 1
    assert not any("/no/such/page" in str(labels) for _, labels in values)
    active = [v for (name, _), v in values.items() if name == "http_server_active_requests"]
    assert active == [0.0]  # /metrics is excluded by default, so no request is in flight


def test_exposition_passes_promtool_check_metrics(seed_server: str) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    text = httpx.get(f"{seed_server}/metrics").text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # Semantic-convention gauges named *.count keep their standard translation (docs/system-metrics.md); that
    # lint is the only one allowed.
    semconv_counts = {"process_thread_count", "process_unix_file_descriptor_count", "system_network_connection_count"}
    unexpected = [line for line in problems if not (line.split()[0] in semconv_counts and '"_count" suffix' in line)]
    assert (result.returncode in (0, 3), unexpected) == (True, [])


def test_openmetrics_is_served_when_the_scraper_asks_for_it(seed_server: str) -> None:
    response = httpx.get(f"{seed_server}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    assert "http_requests_total 5.0" in response.text


def test_exposition_is_gzipped_when_the_scraper_accepts_gzip(seed_server: str) -> None:
    with httpx.stream("GET", f"{seed_server}/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        compressed = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
    assert b"http_requests_total 5.0" in gzip.decompress(compressed)
    plain = httpx.get(f"{seed_server}/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_seed_configuration_calls_set_the_settings_fields(seed_server: str) -> None:
    assert httpx.get(f"{seed_server}/settings").json() == {
        "retention_days": 15,
        "push_gateway": "http://127.0.0.1:9",
        "job_name": "aiagency-core",
        "alert_emails": ["alerts@aiagency.com"],
        "alerts": ["high_error_rate"],
    }
