"""Helpers shared by the sidecar's tests: the config of ``otel-monitoring collector``, workers sending through the
stock OTLP exporter, the pseudonym the in-process path gives a customer id, and for the HTTP exporters a scripted
backend and fake time."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring._instruments import MetricsRegistry
from processors import ProcessorContext, build_pipeline

DEFAULT_PROCESSORS = ["memory_limiter", "sanitize", "cardinality", "batch"]


def write_sidecar_config(
    path: Path, *, otlp: int, prometheus: int, health: int, remote_write: Mapping[str, Any] | None = None
) -> Path:
    """The default pipeline on the given 127.0.0.1 ports, batching every 50 ms; ``remote_write`` adds a
    ``prometheusremotewrite`` exporter with that config."""
    exporters: dict[str, Any] = {"prometheus": {"endpoint": f"127.0.0.1:{prometheus}"}}
    if remote_write is not None:
        exporters["prometheusremotewrite"] = dict(remote_write)
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp}"}}}},
        "processors": {"memory_limiter": None, "sanitize": None, "cardinality": None, "batch": {"timeout": "50ms"}},
        "exporters": exporters,
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health}"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "metrics": {"receivers": ["otlp"], "processors": DEFAULT_PROCESSORS, "exporters": list(exporters)}
            },
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def send_as_worker(
    exporter: MetricExporter,
    instance_id: str,
    adds: Sequence[int],
    attributes: Mapping[str, str],
    observations: Sequence[float] = (),
    observation_attributes: Mapping[str, str] | None = None,
) -> None:
    """One worker of service ``content-api``: ``content.generations`` gets ``adds``, and the histogram
    ``content.generation.duration`` gets ``observations``; force_flush and shutdown make the exports."""
    resource = Resource({"service.name": "content-api", "service.instance.id": instance_id})
    # The interval is never reached: force_flush (and shutdown) export.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    meter = provider.get_meter("worker")
    counter = meter.create_counter("content.generations", unit="{generation}")
    for value in adds:
        counter.add(value, dict(attributes))
    if observations:
        histogram = meter.create_histogram("content.generation.duration", unit="s")
        for seconds in observations:
            histogram.record(seconds, dict(observation_attributes or {}))
    assert provider.force_flush(10_000)
    provider.shutdown()


def in_process_pseudonym(client_id: str, pseudonym_key: str) -> str:
    """What the in-process sanitize makes of ``client_id`` with this key: one customer has one pseudonym in
    both deployments."""
    context = ProcessorContext(MetricsRegistry(), secrets={"pseudonym_key": pseudonym_key})
    pipeline = build_pipeline({}, ["sanitize"], context)
    point = NumberDataPoint({"client_id": client_id}, 1, 2, 1)
    metric = Metric("m", "", "1", Sum([point], AggregationTemporality.CUMULATIVE, True))
    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(InstrumentationScope("s"), [metric], "")], "")])
    [resource_metrics] = pipeline.process(data).resource_metrics
    [out] = resource_metrics.scope_metrics[0].metrics[0].data.data_points
    return str((out.attributes or {})["client_id"])


@dataclass
class Received:
    """One request the scripted backend got: lower-cased headers, the raw body and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class ScriptedServer:
    """Answers with the scripted (status, headers, body) in turn, then 200 with an empty body; records every
    request."""

    url: str
    script: list[tuple[int, dict[str, str], bytes]]
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def scripted_server(path: str = "") -> Iterator[ScriptedServer]:
    """A :class:`ScriptedServer` on 127.0.0.1 whose ``url`` ends with ``path``."""
    state = ScriptedServer("", [])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                status, headers, answer = state.script.pop(0) if state.script else (200, {}, b"")
                state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


class FakeTime:
    """A clock and a sleep for retry loops: sleeping records the wait and moves the clock, instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()  # exporters sleep from several consumer threads

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
