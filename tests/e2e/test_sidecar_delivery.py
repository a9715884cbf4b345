"""Lossless delivery through ``otel-monitoring collector`` to Debian's Prometheus (remote-write receiver on).

A worker posts a cumulative counter to the sidecar every 100 ms and remembers each value the sidecar accepted
(HTTP 200). (a) Prometheus is down for 30 s and comes back: every accepted value is stored, in order.
(b) The sidecar queues on disk while Prometheus is down, gets SIGTERM, starts again on the same directory, and
Prometheus comes up: again every accepted value is stored, in order. Values are read back exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tests.e2e import test_remote_write as remote_write_e2e
from tests.sidecar_support import DEFAULT_PROCESSORS
from tests.support import ROOT, free_port, stop_process_group, wait_until_ready

pytestmark = pytest.mark.e2e

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
PSEUDONYM_KEY = "e2e-pseudonym-key-0123456789abcdef"
METRIC = "outage_probe_total"
EXPORTER = 'exporter="prometheusremotewrite"'


# --- processes ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def prometheus(port: int, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's Prometheus on 127.0.0.1:<port> with its data in ``data_dir`` (kept across restarts)."""
    if not PROMETHEUS_BINARY.exists():
        pytest.skip(f"{PROMETHEUS_BINARY} is not installed (apt-get install -y --no-install-recommends prometheus)")
    data_dir.mkdir(exist_ok=True)
    with (data_dir / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [str(PROMETHEUS_BINARY), *remote_write_e2e.prometheus_args(f"127.0.0.1:{port}", data_dir)],
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (data_dir / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.05)
        yield process
    finally:
        stop_process_group(process)


class Sidecar:
    """``otel-monitoring collector`` as a subprocess: OTLP in, prometheus and remote write out."""

    def __init__(self, tmp_path: Path, prometheus_port: int, queue_dir: Path | None = None) -> None:
        self.otlp, self.metrics, self.health = free_port(), free_port(), free_port()
        remote_write: dict[str, Any] = {
            "endpoint": f"http://127.0.0.1:{prometheus_port}/api/v1/write",
            "target_info": {"enabled": False},
            # Retry until the backend is back; the bounded queue limits what is kept.
            "retry_on_failure": {"initial_interval": "100ms", "max_interval": "500ms", "max_elapsed_time": "0s"},
        }
        extensions: dict[str, Any] = {"health_check": {"endpoint": f"127.0.0.1:{self.health}"}}
        if queue_dir is not None:
            remote_write["remote_write_queue"] = {"storage": "file_storage/queue"}
            extensions["file_storage/queue"] = {"directory": str(queue_dir), "create_directory": True}
        document = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{self.otlp}"}}}},
            "processors": {p: None for p in DEFAULT_PROCESSORS} | {"batch": {"timeout": "50ms"}},
            "exporters": {
                "prometheus": {"endpoint": f"127.0.0.1:{self.metrics}"},
                "prometheusremotewrite": remote_write,
            },
            "extensions": extensions,
            "service": {
                "extensions": list(extensions),
                "pipelines": {
                    "metrics": {
                        "receivers": ["otlp"],
                        "processors": DEFAULT_PROCESSORS,
                        "exporters": ["prometheus", "prometheusremotewrite"],
                    }
                },
            },
        }
        self.config = tmp_path / f"collector-{self.otlp}.yaml"
        self.config.write_text(yaml.safe_dump(document), encoding="utf-8")
        self.log = tmp_path / f"collector-{self.otlp}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_MONITORING_PSEUDONYM_KEY": PSEUDONYM_KEY}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "otel_monitoring", "collector", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_ready(f"http://127.0.0.1:{self.health}/", self.process)
        deadline = time.monotonic() + 20
        while httpx.get(f"http://127.0.0.1:{self.health}/", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit status and how long the drain took."""
        assert self.process is not None
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGTERM)
        status = self.process.wait(timeout=20)
        return status, time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def own_metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5).text
        (line,) = [line for line in text.splitlines() if line.startswith(name)]
        return float(line.rsplit(" ", 1)[1])


class Worker:
    """Posts the next cumulative value every 100 ms; keeps ``(timestamp_ms, value)`` of those answered 200."""

    def __init__(self) -> None:
        self.accepted: list[tuple[int, float]] = []
        self.refused = 0
        self.value = 0.0
        self._stop = threading.Event()

    def post(self, port: int) -> bool:
        self.value += 1
        stamp = time.time_ns()
        point = NumberDataPoint({"phase": "any"}, stamp - 10**9, stamp, self.value)
        metric = Metric("outage.probe", "", "", Sum([point], AggregationTemporality.CUMULATIVE, True))
        resource = Resource({"service.name": "delivery", "service.instance.id": "worker-1"})
        data = MetricsData([ResourceMetrics(resource, [ScopeMetrics(InstrumentationScope("e2e"), [metric], "")], "")])
        body = encode_metrics(data).SerializeToString()
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/metrics",
                content=body,
                headers={"content-type": "application/x-protobuf"},
                timeout=5,
            )
        except httpx.HTTPError:
            self.refused += 1
            return False
        if response.status_code != 200:
            self.refused += 1
            return False
        self.accepted.append((stamp // 1_000_000, self.value))
        return True

    def run_for(self, port: int, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.post(port)
            time.sleep(0.1)


def stored(prometheus_port: int) -> list[tuple[int, float]]:
    response = httpx.get(
        f"http://127.0.0.1:{prometheus_port}/api/v1/query",
        params={"query": f"{METRIC}[30m]", "time": time.time()},
        timeout=5,
    )
    response.raise_for_status()
    result = response.json()["data"]["result"]
    if not result:
        return []
    (series,) = result
    return [(round(float(t) * 1000), float(v)) for t, v in series["values"]]


def wait_for_all(prometheus_port: int, expected: list[tuple[int, float]], timeout: float) -> list[tuple[int, float]]:
    deadline = time.monotonic() + timeout
    while (found := stored(prometheus_port)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


# --- tests ------------------------------------------------------------------------------------------------------


def test_every_accepted_point_arrives_after_prometheus_was_down_for_30_seconds(tmp_path: Path) -> None:
    prometheus_port = free_port()
    data_dir = tmp_path / "prometheus"
    sidecar = Sidecar(tmp_path, prometheus_port)
    worker = Worker()
    try:
        with prometheus(prometheus_port, data_dir):
            sidecar.start()
            worker.run_for(sidecar.otlp, 2.0)
            before = len(worker.accepted)
        down_at = time.monotonic()
        worker.run_for(sidecar.otlp, 30.0)
        during = len(worker.accepted) - before
        queued = sidecar.own_metric(f"otelcol_exporter_queue_size{{{EXPORTER}")
        assert time.monotonic() - down_at >= 30
        with prometheus(prometheus_port, data_dir):
            back_at = time.monotonic()
            worker.run_for(sidecar.otlp, 2.0)
            found = wait_for_all(prometheus_port, worker.accepted, timeout=20)
            caught_up = time.monotonic() - back_at
            failed = sidecar.own_metric(
                'otelcol_exporter_send_failed_metric_points_total{exporter="prometheusremotewrite"'
            )
            status, _ = sidecar.terminate()
    finally:
        sidecar.stop()

    print(f"outage: {during} points accepted while down; all stored {caught_up:.1f}s after it ended")
    assert queued > 0  # the outage really held data back in the queue
    assert during >= 100  # kept accepting through the outage (one post per 100 ms plus its own time)
    assert worker.refused == 0
    assert found == worker.accepted  # every accepted value, exactly, in order
    assert failed == 0
    assert status == 0


def test_file_queue_survives_sigterm_and_restart_while_prometheus_is_down(tmp_path: Path) -> None:
    prometheus_port = free_port()
    queue_dir = tmp_path / "queue"
    worker = Worker()
    first = Sidecar(tmp_path, prometheus_port, queue_dir)
    try:
        first.start()
        worker.run_for(first.otlp, 2.0)
        assert first.own_metric(f"otelcol_exporter_queue_size{{{EXPORTER}") > 0
        status, drain_seconds = first.terminate()
    finally:
        first.stop()
    on_disk = list((queue_dir / "prometheusremotewrite").glob("*.batch"))
    kept_points = len(worker.accepted)

    second = Sidecar(tmp_path, prometheus_port, queue_dir)
    try:
        with prometheus(prometheus_port, tmp_path / "prometheus"):
            second.start()
            worker.run_for(second.otlp, 1.0)
            found = wait_for_all(prometheus_port, worker.accepted, timeout=20)
            second_status, _ = second.terminate()
    finally:
        second.stop()

    print(f"file queue: {len(on_disk)} requests ({kept_points} points) kept on disk; drain took {drain_seconds:.1f}s")
    assert status == 0 and drain_seconds < 10
    assert on_disk and kept_points > 10
    assert worker.refused == 0
    assert found == worker.accepted  # the restored points first, then the new ones: exact values, in order
    assert second_status == 0
    assert list((queue_dir / "prometheusremotewrite").iterdir()) == []  # everything sent, nothing corrupt
