"""`otel-monitoring collector` as a process: two workers' stock OTLP exporters in, one clean scrape target out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    MetricsData,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.sidecar_support import in_process_pseudonym, send_as_worker, write_sidecar_config
from tests.support import free_port, running

PSEUDONYM_KEY = "integration-pseudonym-key-0123456789"
CLIENT = "acme-corp-42"
EMAIL = "ana.silva@example.com"
ADDS = {"worker-1": [2, 1], "worker-2": [4]}


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    ports = {"otlp": free_port(), "prometheus": free_port(), "health": free_port()}
    config = write_sidecar_config(
        tmp_path / "collector.yaml", otlp=ports["otlp"], prometheus=ports["prometheus"], health=ports["health"]
    )
    urls = {
        "otlp": f"http://127.0.0.1:{ports['otlp']}/v1/metrics",
        "metrics": f"http://127.0.0.1:{ports['prometheus']}/metrics",
        "health": f"http://127.0.0.1:{ports['health']}/",
    }
    argv = [sys.executable, "-m", "otel_monitoring", "collector", "--config", str(config)]
    env = {"OTEL_MONITORING_PSEUDONYM_KEY": PSEUDONYM_KEY}
    with running(argv, urls["health"], env=env) as process:
        yield process, urls


class _CountingExporter(OTLPMetricExporter):
    """The stock exporter, counting the data points it sent (force_flush and shutdown each export once)."""

    points = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float | None = 10_000, **kwargs: object) -> Any:
        result = super().export(metrics_data, timeout_millis, **kwargs)
        _CountingExporter.points += sum(
            len(m.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        return result


def _generations(metrics_url: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(metrics_url, timeout=5).text
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "content_generations_total"
    ]


def _own_metrics(metrics_url: str) -> dict[str, float]:
    text = httpx.get(metrics_url, timeout=5).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("receiver") == "otlp" or sample.labels.get("exporter") == "prometheus"
    }


def test_sums_two_workers_removes_personal_data_and_stops_on_sigterm(
    sidecar: tuple[subprocess.Popen[bytes], dict[str, str]],
) -> None:
    process, urls = sidecar
    _CountingExporter.points = 0
    assert httpx.get(urls["health"], timeout=5).status_code == 200
    for instance_id, adds in ADDS.items():
        send_as_worker(
            _CountingExporter(endpoint=urls["otlp"]), instance_id, adds, {"client_id": CLIENT, "contact": EMAIL}
        )

    expected_total = sum(sum(adds) for adds in ADDS.values())
    deadline = time.monotonic() + 10
    # Polled: the batch processor sends on within its timeout, and the last export may land in a later batch.
    while (own := _own_metrics(urls["metrics"])).get("otelcol_exporter_sent_metric_points_total") != (
        _CountingExporter.points
    ):
        assert time.monotonic() < deadline, f"the sidecar never exported every point: {own}"
        time.sleep(0.05)

    [(labels, value)] = _generations(urls["metrics"])  # one series: the two workers are summed, not kept apart
    assert value == expected_total
    assert labels["client_id"] == in_process_pseudonym(CLIENT, PSEUDONYM_KEY) != CLIENT
    assert labels["contact"] != EMAIL
    body = httpx.get(urls["metrics"], timeout=5).text
    assert CLIENT not in body and EMAIL not in body
    assert own["otelcol_receiver_accepted_metric_points_total"] == _CountingExporter.points > 0
    assert own["otelcol_receiver_refused_metric_points_total"] == 0

    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - started < 5


UNDEFINED = "service:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      exporters: [prometheus]\n"
NO_QUEUE_DIRECTORY = """
receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}}
exporters: {otlphttp/gateway: {endpoint: "http://127.0.0.1:9", sending_queue: {storage: file_storage}}}
extensions: {file_storage: {directory: /nonexistent/otel-monitoring-queue}}
service: {extensions: [file_storage], pipelines: {metrics: {receivers: [otlp], exporters: [otlphttp/gateway]}}}
"""


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (UNDEFINED, "service.pipelines.metrics.receivers[0]", "is not defined under receivers"),
        (NO_QUEUE_DIRECTORY, "extensions.file_storage.directory", "does not exist"),
    ],
)
def test_a_config_that_cannot_run_exits_2_with_one_line(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "otel_monitoring", "collector", "--config", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "OTEL_MONITORING_PSEUDONYM_KEY": PSEUDONYM_KEY},
    )
    assert result.returncode == 2
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith(f"otel-monitoring: error: {key}: ") and problem in line
