"""The collector sidecar end to end: stock OTLP exporters in, Debian's Prometheus reading both ways out.

Two workers (two MeterProviders with their own ``service.instance.id``) send through the official
OTLP/HTTP exporter to ``otel-monitoring collector``. Debian's Prometheus scrapes the sidecar's ``prometheus``
exporter and also receives its ``prometheusremotewrite``. The test reads the values back through
Prometheus' HTTP API and checks that no customer id or email reached any label Prometheus holds.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

from tests.e2e.conftest import start_debian_server
from tests.sidecar_support import in_process_pseudonym, send_as_worker, write_sidecar_config
from tests.support import free_port, running

pytestmark = pytest.mark.e2e

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
PSEUDONYM_KEY = "e2e-pseudonym-key-0123456789abcdef"
CLIENT = "acme-corp-42"
EMAIL = "ana.silva@example.com"
# Per worker: the counter's adds and the histogram's observations (seconds).
WORKERS = {
    "worker-1": ([2, 1], [0.2, 3.0]),
    "worker-2": ([4], [0.7]),
}
T = TypeVar("T")


def _prometheus_args(sidecar_metrics: int) -> Callable[[str, Path], list[str]]:
    def args(address: str, data_dir: Path) -> list[str]:
        config = data_dir / "prometheus.yml"
        config.write_text(
            f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sidecar
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:{sidecar_metrics}"]
        labels:
          path: scrape
""",
            encoding="utf-8",
        )
        return [
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address={address}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ]

    return args


def _api(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _api(url, "query", query=promql, time=time.time())["result"]
    return result


def _values(url: str, promql: str, by: str) -> dict[str, float]:
    return {r["metric"].get(by, ""): float(r["value"][1]) for r in _query(url, promql)}


def _eventually(read: Callable[[], T], expected: T, deadline: float, what: str) -> T:
    """Poll ``read`` until it returns ``expected``; the last value read is in the failure message."""
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"{what}: got {value!r}, expected {expected!r}"
        time.sleep(0.1)
    return value


def test_prometheus_scrapes_and_receives_the_workers_sums_without_personal_data(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    otlp, metrics, health = free_port(), free_port(), free_port()
    expected_count = {instance: float(sum(adds)) for instance, (adds, _) in WORKERS.items()}
    observations = [seconds for _, recorded in WORKERS.values() for seconds in recorded]
    total = sum(expected_count.values())

    with start_debian_server(
        tmp_path_factory, PROMETHEUS_BINARY, _prometheus_args(metrics), package="prometheus"
    ) as server:
        # external_labels are added only where a series lacks the label, and the scrape job adds path="scrape":
        # both paths write the same metric names into one Prometheus, and this label tells them apart.
        remote_write = {"endpoint": f"{server.url}/api/v1/write", "external_labels": {"path": "remote_write"}}
        config = write_sidecar_config(
            tmp_path / "collector.yaml", otlp=otlp, prometheus=metrics, health=health, remote_write=remote_write
        )
        argv = [sys.executable, "-m", "otel_monitoring", "collector", "--config", str(config)]
        health_url = f"http://127.0.0.1:{health}/"
        with running(argv, health_url, env={"OTEL_MONITORING_PSEUDONYM_KEY": PSEUDONYM_KEY}) as sidecar:
            deadline = time.monotonic() + 20
            _eventually(lambda: httpx.get(health_url, timeout=5).status_code, 200, deadline, "sidecar health")
            for instance, (adds, recorded) in WORKERS.items():
                exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{otlp}/v1/metrics")
                attributes = {"client_id": CLIENT, "user.email": EMAIL}
                send_as_worker(exporter, instance, adds, attributes, recorded, {"client_id": CLIENT})

            # (1) The scrape: one series, the sum over both workers; the sidecar's job survives honor_labels.
            scraped = 'content_generations_total{path="scrape"}'
            _eventually(lambda: _values(server.url, scraped, "job"), {"content-api": total}, deadline, "scrape")
            scraped_count = 'content_generation_duration_seconds_count{path="scrape"}'
            _eventually(lambda: _values(server.url, scraped_count, "path"), {"scrape": 3.0}, deadline, "scrape")
            # (2) Remote write: one series per worker, as job/instance from each worker's resource.
            written = 'content_generations_total{path="remote_write", job="content-api"}'
            _eventually(lambda: _values(server.url, written, "instance"), expected_count, deadline, "remote write")
            written_count = 'content_generation_duration_seconds_count{path="remote_write"}'
            per_worker_count = {instance: float(len(recorded)) for instance, (_, recorded) in WORKERS.items()}
            _eventually(lambda: _values(server.url, written_count, "instance"), per_worker_count, deadline, "rw")

            for path in ("scrape", "remote_write"):
                (summed,) = _query(server.url, f'sum(content_generations_total{{path="{path}"}})')
                assert float(summed["value"][1]) == total
                (seconds,) = _query(server.url, f'sum(content_generation_duration_seconds_sum{{path="{path}"}})')
                assert float(seconds["value"][1]) == pytest.approx(sum(observations))
                buckets = _query(
                    server.url, f'sum by (le) (content_generation_duration_seconds_bucket{{path="{path}"}})'
                )
                # Cumulative buckets: each `le` counts the observations at or below it. Scrape and remote write
                # spell each bound the same way ("5.0"), so one bound is one series, not two.
                spellings = [b["metric"]["le"] for b in buckets]
                assert len(spellings) == len({float(le) for le in spellings}), spellings
                assert {float(b["metric"]["le"]): float(b["value"][1]) for b in buckets} == {
                    float(b["metric"]["le"]): float(sum(1 for s in observations if s <= float(b["metric"]["le"])))
                    for b in buckets
                }
                assert len(buckets) > 2

            # (3) No raw customer id or email in any label value of any series Prometheus holds.
            pseudonym = in_process_pseudonym(CLIENT, PSEUDONYM_KEY)
            assert pseudonym.startswith("u_")
            client_ids = set(_api(server.url, "label/client_id/values"))
            assert client_ids == {pseudonym}
            names = _api(server.url, "labels")
            assert "client_id" in names
            # The email attribute arrived and was redacted in place, not silently dropped with its series.
            emails = set(_api(server.url, "label/user_email/values"))
            assert emails and not any("@" in value for value in emails), emails
            for name in names:
                for value in _api(server.url, f"label/{name}/values"):
                    assert CLIENT not in value and EMAIL not in value, (name, value)
            series = _api(server.url, "series", **{"match[]": '{__name__=~".+"}'})
            assert any(s.get("client_id") == pseudonym and s.get("path") == "remote_write" for s in series)
            assert any(s.get("client_id") == pseudonym and s.get("path") == "scrape" for s in series)
            for labels in series:
                for name, value in labels.items():
                    assert CLIENT not in value and EMAIL not in value, (name, value)

            os.killpg(sidecar.pid, signal.SIGTERM)
            assert sidecar.wait(timeout=10) == 0
    assert server.process.poll() is not None
