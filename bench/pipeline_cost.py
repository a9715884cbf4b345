"""Cost per data point of each processor in the default pipeline (sanitize, business, cardinality).

    python bench/pipeline_cost.py            # writes bench/results/pipeline_cost.{json,md}
    python bench/pipeline_cost.py --quick    # a few batches, prints only (used by the tests)

A realistic batch of 1,000 points, as the recording bridge hands it over at each collection: HTTP
server histograms, a facade counter labelled by customer (and, from careless code, by email), GenAI
token usage by model and customer, and gauges. Attribute dicts are the same objects from batch to
batch and values grow, as with the SDK's cumulative readers. Each processor is timed on the output of
the one before it, in steady state (after warm-up batches), median of the batches kept.

For scale, the same run times what surrounds the pipeline on every collection: the SDK's own
collection of 1,000 points (InMemoryMetricReader) and their rendering to the Prometheus text format
by OpenTelemetry's Prometheus reader.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from otel_monitoring.metrics import MetricsRegistry
from processors import DEFAULT_PIPELINE, ProcessorContext, build_pipeline

RESULTS = Path(__file__).parent / "results"
CUMULATIVE = AggregationTemporality.CUMULATIVE
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.0-flash", "mistral-large"]


class BatchSource:
    """Builds the same 1,000 series every batch, with growing values, as a cumulative reader would."""

    def __init__(self) -> None:
        routes = [f"/api/v1/items/{{item_id}}/part{n}" for n in range(40)]
        self.http = [
            {"http.request.method": m, "url.scheme": "http", "http.route": r, "http.response.status_code": s}
            for r in routes
            for m, s in (("GET", 200), ("POST", 201), ("GET", 404), ("POST", 500), ("GET", 304))
        ]  # 200 series
        self.logins = [
            {"client_id": f"customer-{n:04d}", "plan": "pro" if n % 3 else "free", "email": f"user{n}@example.com"}
            if n % 10 == 0
            else {"client_id": f"customer-{n:04d}", "plan": "pro" if n % 3 else "free"}
            for n in range(300)
        ]  # 300 series, one in ten carrying an email
        self.tokens = [
            {
                "gen_ai.request.model": MODELS[n % 5],
                "gen_ai.provider.name": "openai",
                "gen_ai.token.type": "input" if n % 2 else "output",
                "client_id": f"customer-{n // 10:04d}",
            }
            for n in range(300)
        ]  # 300 series
        self.gauges = [{"queue": f"queue-{n}", "region": "us-east-1"} for n in range(200)]  # 200 series
        self.resource = Resource({"service.name": "bench"})
        self.scope = InstrumentationScope("bench")

    def batch(self, tick: int) -> MetricsData:
        def histogram(attributes: dict[str, Any], scale: float) -> HistogramDataPoint:
            counts = [tick] * (len(BOUNDS) + 1)
            return HistogramDataPoint(attributes, 1, 2 + tick, sum(counts), scale * tick, counts, BOUNDS, 0.001, 9.0)

        metrics = [
            Metric(
                "http.server.request.duration",
                "",
                "s",
                Histogram([histogram(a, 0.05) for a in self.http], CUMULATIVE),
            ),
            Metric(
                "logins_total",
                "",
                "",
                Sum([NumberDataPoint(a, 1, 2 + tick, tick) for a in self.logins], CUMULATIVE, True),
            ),
            Metric(
                "gen_ai.client.token.usage",
                "",
                "{token}",
                Histogram([histogram(a, 700.0) for a in self.tokens], CUMULATIVE),
            ),
            Metric("queue_depth", "", "", Gauge([NumberDataPoint(a, 1, 2 + tick, tick % 7) for a in self.gauges])),
        ]
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(self.scope, metrics, "")], "")])


def points_in(data: MetricsData) -> int:
    return sum(len(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)


def measure_pipeline(batches: int, warmup: int) -> dict[str, Any]:
    pipeline = build_pipeline(
        {}, None, ProcessorContext(registry=MetricsRegistry(), secrets={"pseudonym_key": "bench-key-0123456789abcdef"})
    )
    source = BatchSource()
    timings: dict[str, list[float]] = {component_id: [] for component_id in pipeline.ids}
    first_batch: dict[str, float] = {}
    points = 0
    for tick in range(1, warmup + batches + 1):
        data = source.batch(tick)
        points = points_in(data)
        for component_id, step in pipeline.steps:
            started = time.perf_counter()
            data = step.process(data)
            per_point = (time.perf_counter() - started) / points * 1e6
            if tick == 1:
                first_batch[component_id] = round(per_point, 3)  # every series is new: caches are cold
            elif tick > warmup:
                timings[component_id].append(per_point)
    per_processor = {component_id: round(statistics.median(values), 3) for component_id, values in timings.items()}
    return {
        "points_per_batch": points,
        "us_per_point": per_processor,
        "total": round(sum(per_processor.values()), 3),
        "first_batch_us_per_point": first_batch,
    }


def measure_surroundings(batches: int) -> dict[str, float]:
    """What the SDK's collection and the Prometheus rendering cost per point, for scale."""
    reader = InMemoryMetricReader()
    registry = CollectorRegistry()
    prometheus = PrometheusMetricReader(registry=registry)
    meter = MeterProvider(metric_readers=[reader, prometheus]).get_meter("bench")
    counter = meter.create_counter("logins")
    histogram = meter.create_histogram("latency", unit="s")
    for n in range(500):
        counter.add(1, {"client_id": f"customer-{n}", "plan": "pro"})
        histogram.record(0.1, {"route": f"/r/{n}", "method": "GET"})
    collect, render = [], []
    for _ in range(batches):
        started = time.perf_counter()
        reader.get_metrics_data()
        collect.append((time.perf_counter() - started) / 1000 * 1e6)
        started = time.perf_counter()
        generate_latest(registry)
        render.append((time.perf_counter() - started) / 1000 * 1e6)
    return {
        "sdk_collection_us_per_point": round(statistics.median(collect), 3),
        "prometheus_rendering_us_per_point": round(statistics.median(render), 3),
    }


def render_markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Default pipeline: cost per data point (µs, lower is better; target < 2 per processor)",
        "",
        f"{meta['python']} on {meta['machine']}; {result['points_per_batch']} points per batch, "
        f"{meta['batches']} batches after {meta['warmup']} warm-up, median kept.",
        "",
        "| step | µs per data point | first batch (all series new) |",
        "|---|---:|---:|",
    ]
    first = result["first_batch_us_per_point"]
    lines += [
        f"| {component_id} | {value:.2f} | {first[component_id]:.2f} |"
        for component_id, value in result["us_per_point"].items()
    ]
    lines += [
        f"| **whole pipeline ({', '.join(DEFAULT_PIPELINE)})** | **{result['total']:.2f}** | "
        f"{sum(first.values()):.2f} |",
        "",
        "For scale, per point on the same run:",
        "",
        "| around the pipeline | µs per data point |",
        "|---|---:|",
        f"| opentelemetry-sdk collection (InMemoryMetricReader) | {result['sdk_collection_us_per_point']:.2f} |",
        f"| Prometheus text rendering (OpenTelemetry's Prometheus reader) | "
        f"{result['prometheus_rendering_us_per_point']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few batches; prints and writes nothing")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    batches, warmup = (3, 1) if args.quick else (args.batches, args.warmup)
    result = {**measure_pipeline(batches, warmup), **measure_surroundings(batches)}
    meta = {"python": sys.version.split()[0], "machine": platform.machine(), "batches": batches, "warmup": warmup}
    report = render_markdown(result, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "pipeline_cost.json").write_text(json.dumps({"meta": meta, **result}, indent=2) + "\n")
        (RESULTS / "pipeline_cost.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
