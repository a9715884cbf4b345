"""``opentelemetry-instrument uvicorn`` on a service with SQLAlchemy, a cache, outgoing calls and business calls:
every family is on ``/metrics`` with the values the test caused, and no SQL literal or raw customer id anywhere."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support import free_port, running

INSTRUMENT = str(Path(sys.executable).parent / "opentelemetry-instrument")
pytestmark = pytest.mark.skipif(not Path(INSTRUMENT).exists(), reason="opentelemetry-instrument is not installed")

CUSTOMERS = {"acme-customer-7781": (1200, 350), "globex-customer-9902": (800, 90)}
SECRET_NAME = "confidential-widget-5521"
SECRET_OWNER = "owner@example.com"
COLLECTORS = ("sqlalchemy", "httpx", "system")  # instrumentor entry points: otel_monitoring_<name>


def samples(exposition: str, name: str, **labels: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    ]


def total(exposition: str, name: str, **labels: str) -> float:
    return sum(sample.value for sample in samples(exposition, name, **labels))


@contextlib.contextmanager
def serve(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    app_port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{app_port}"
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "OTEL_SERVICE_NAME": "catalog",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "COLLECTORS_APP_DB": str(tmp_path / "catalog.db"),
        "COLLECTORS_APP_UPSTREAM": base,
        **(extra_env or {}),
    }
    argv = [INSTRUMENT, sys.executable, "-m", "uvicorn", "tests.integration.collectors_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(app_port), "--log-level", "warning"]
    with running(argv, f"{base}/health", env=env):
        yield base, f"http://127.0.0.1:{metrics_port}/metrics"


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Drive a known workload, then scrape once."""
    with serve(tmp_path_factory.mktemp("catalog")) as (base, metrics_url), httpx.Client(base_url=base) as client:
        new_item = {"name": SECRET_NAME, "owner": SECRET_OWNER}
        ids = [client.post("/items", json=new_item).json()["id"] for _ in range(5)]
        for item_id in ids:  # a miss (and a SELECT), then two hits
            for _ in range(3):
                assert client.get(f"/items/{item_id}").status_code == 200
        assert client.get("/items/999999").status_code == 404  # a miss and a SELECT finding nothing
        for client_id, (input_tokens, output_tokens) in CUSTOMERS.items():
            for _ in range(2):
                generation = {"client_id": client_id, "model": "gpt-4o", "provider": "openai"}
                generation |= {"input_tokens": input_tokens, "output_tokens": output_tokens}
                assert client.post("/generate", json=generation).status_code == 200
        for item_id in ids[:3]:  # cache hits in the service behind the outgoing call
            assert client.get(f"/upstream/{item_id}").json() == {"status": 200}
        return httpx.get(metrics_url).text


def test_http_server_requests_are_counted_by_route_template(exposition: str) -> None:
    name = "http_server_request_duration_seconds_count"
    assert total(exposition, name, http_route="/items", http_request_method="POST") == 5
    # 15 reads + 1 not found from the test, and 3 more through /upstream
    assert total(exposition, name, http_route="/items/{item_id}") == 19
    assert total(exposition, name, http_route="/items/{item_id}", http_response_status_code="404") == 1


def test_database_queries_are_counted_exactly(exposition: str) -> None:
    name = "db_client_operation_duration_seconds_count"
    assert total(exposition, name, db_operation_name="INSERT", db_collection_name="items") == 5
    # every item misses once, plus the lookup that found nothing; the reads behind /upstream are cache hits
    assert total(exposition, name, db_operation_name="SELECT", db_collection_name="items") == 6
    assert {s.labels["db_system_name"] for s in samples(exposition, name)} == {"sqlite"}


def test_cache_hits_and_misses_match_the_requests(exposition: str) -> None:
    results = {
        s.labels.get("cache_operation_result", ""): s.value for s in samples(exposition, "cache_operations_total")
    }
    assert results.get("hit") == 10 + 3
    assert results.get("miss") == 6
    assert results.get("set") == 5


def test_tokens_are_summed_exactly_per_type(exposition: str) -> None:
    name = "gen_ai_client_token_usage_sum"
    assert total(exposition, name, gen_ai_token_type="input") == 2 * sum(i for i, _ in CUSTOMERS.values())
    assert total(exposition, name, gen_ai_token_type="output") == 2 * sum(o for _, o in CUSTOMERS.values())
    assert total(exposition, "content_generations_total") == 2 * len(CUSTOMERS)
    generations = 2 * len(CUSTOMERS)
    assert total(exposition, "gen_ai_client_operation_duration_seconds_sum") == 0.5 * generations
    assert total(exposition, "feature_usage_total", feature_name="article_export") == 2 * generations
    assert total(exposition, "user_satisfaction_sum") == 4 * generations


def test_outgoing_calls_are_measured_with_a_route_template(exposition: str) -> None:
    found = samples(exposition, "http_client_request_duration_seconds_count")
    assert sum(s.value for s in found) == 3
    assert {s.labels.get("url_template") for s in found} == {"/items/{id}"}


def test_system_and_process_metrics_are_exposed(exposition: str) -> None:
    assert total(exposition, "process_memory_usage_bytes") > 10_000_000  # RSS of a Python web service
    assert samples(exposition, "system_cpu_time_seconds_total")
    assert samples(exposition, "system_memory_usage_bytes")


def test_no_sql_literal_and_no_raw_customer_id_is_exported(exposition: str) -> None:
    for secret in (SECRET_NAME, SECRET_OWNER, *CUSTOMERS):
        assert secret not in exposition


@pytest.mark.parametrize(
    "switches",
    [
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(f"otel_monitoring_{name}" for name in COLLECTORS)},
        {
            "OTEL_MONITORING_DB_METRICS": "false",
            "OTEL_MONITORING_HTTP_CLIENT_METRICS": "false",
            "OTEL_MONITORING_SYSTEM_METRICS": "none",
        },
    ],
    ids=["disabled-instrumentations", "settings"],
)
def test_each_collector_can_be_turned_off(tmp_path: Path, switches: dict[str, str]) -> None:
    with serve(tmp_path, switches) as (base, metrics_url), httpx.Client(base_url=base) as client:
        item_id = client.post("/items", json={"name": "a", "owner": "b"}).json()["id"]
        assert client.get(f"/upstream/{item_id}").json() == {"status": 200}
        exposition = httpx.get(metrics_url).text

    assert total(exposition, "http_server_request_duration_seconds_count", http_route="/items") == 1
    for family in ("db_client_operation_duration_seconds_count", "http_client_request_duration_seconds_count"):
        assert samples(exposition, family) == []
    assert "system_cpu_time_seconds_total" not in exposition
    assert "process_memory_usage_bytes" not in exposition
    assert total(exposition, "cache_operations_total", cache_operation_result="miss") == 1  # the app's own API
