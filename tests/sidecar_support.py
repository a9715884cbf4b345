"""Helpers shared by the tests that run ``otel-monitoring collector``: its config, workers sending through the
stock OTLP exporter, and the pseudonym the in-process path gives a customer id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
