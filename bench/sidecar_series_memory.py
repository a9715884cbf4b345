"""Memory per active series and rendering time: the sidecar's prometheus exporter beside prometheus_client.

    python bench/sidecar_series_memory.py            # 10,000 series, writes bench/results/sidecar_series_memory.*
    python bench/sidecar_series_memory.py --quick    # 1,000 series, prints only (used by the tests)

Memory is what ``tracemalloc`` sees the store grow by while it takes in N series with three labels (method,
route, status), after a garbage collection. The label strings exist before the measurement on both sides (in
the SDK points' attribute dicts for ours, in a list for prometheus_client), so neither side is charged for
them. Ours is measured for one worker (one input stream per output series) and for four workers feeding the
same output series (four input streams each). Histograms use prometheus_client's default buckets on both sides.
Rendering is the best of ``--repeat`` full renders of the N counter series. The ratio is ours divided by
prometheus_client's.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_monitoring.sidecar.config import PrometheusExporterConfig
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter

RESULTS = Path(__file__).parent / "results"
BOUNDS = [b for b in prometheus_client.Histogram.DEFAULT_BUCKETS if b != float("inf")]


def label_values(n: int) -> list[tuple[str, str, str]]:
    methods = ["GET", "POST", "PUT", "DELETE"]
    return [(methods[i % 4], f"/items/{i}", str(200 + i % 5)) for i in range(n)]


def measure(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes the structure built by ``build`` keeps, and the structure (kept alive until measured)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


def prometheus_client_counter(values: list[tuple[str, str, str]]) -> Callable[[], Any]:
    def build() -> Any:
        registry = prometheus_client.CollectorRegistry()
        family = prometheus_client.Counter("requests", "Requests", ["method", "route", "status"], registry=registry)
        for labels in values:
            family.labels(*labels).inc(3)
        return registry

    return build


def prometheus_client_histogram(values: list[tuple[str, str, str]]) -> Callable[[], Any]:
    def build() -> Any:
        registry = prometheus_client.CollectorRegistry()
        family = prometheus_client.Histogram(
            "latency_seconds", "Latency", ["method", "route", "status"], registry=registry
        )
        for labels in values:
            family.labels(*labels).observe(0.2)
        return registry

    return build


def batches(values: list[tuple[str, str, str]], workers: int, histogram: bool) -> list[MetricsData]:
    attributes = [{"method": m, "route": r, "status": s} for m, r, s in values]
    result = []
    for worker in range(workers):
        if histogram:
            counts = [0] * (len(BOUNDS) + 1)
            counts[7] = 1
            points: list[Any] = [HistogramDataPoint(a, 1, 2, 1, 0.2, counts, BOUNDS, 0.2, 0.2) for a in attributes]
            data: Any = Histogram(points, AggregationTemporality.CUMULATIVE)
            metric = Metric("latency", "Latency", "s", data)
        else:
            points = [NumberDataPoint(a, 1, 2, 3.0) for a in attributes]
            metric = Metric("requests", "Requests", "1", Sum(points, AggregationTemporality.CUMULATIVE, True))
        resource = Resource({"service.name": "shop", "service.instance.id": f"w{worker}", "process.pid": 100 + worker})
        scope = ScopeMetrics(InstrumentationScope("app"), [metric], "")
        result.append(MetricsData([ResourceMetrics(resource, [scope], "")]))
    return result


def ours(data: list[MetricsData]) -> Callable[[], Any]:
    def build() -> Any:
        exporter = PrometheusExporter(PrometheusExporterConfig(), clock=lambda: 1000.0)
        for batch in data:
            exporter.export(batch)
        return exporter

    return build


def best_time(function: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def run(n: int, repeat: int) -> dict[str, Any]:
    values = label_values(n)
    rows: list[dict[str, Any]] = []
    for kind, peer in (("counter", prometheus_client_counter), ("histogram", prometheus_client_histogram)):
        peer_bytes, _ = measure(peer(values))
        for workers in (1, 4):
            data = batches(values, workers, kind == "histogram")
            our_bytes, exporter = measure(ours(data))
            assert exporter.series_count() == n
            rows.append(
                {
                    "case": f"{kind}, {workers} worker{'s' if workers > 1 else ''}",
                    "prometheus_client_bytes_per_series": peer_bytes / n,
                    "otel_monitoring_bytes_per_series": our_bytes / n,
                    "ratio": our_bytes / peer_bytes,
                }
            )
    registry = prometheus_client_counter(values)()
    exporter = ours(batches(values, 1, False))()
    render = {
        "prometheus_client_ms": best_time(lambda: prometheus_client.generate_latest(registry), repeat) * 1e3,
        "otel_monitoring_ms": best_time(exporter.render, repeat) * 1e3,
    }
    render["ratio"] = render["otel_monitoring_ms"] / render["prometheus_client_ms"]
    return {"series": n, "memory": rows, "render_counters": render}


def to_markdown(result: dict[str, Any]) -> str:
    n = result["series"]
    lines = [
        f"# Sidecar prometheus exporter: memory per series and rendering ({n:,} series, 3 labels)",
        "",
        "Bytes per output series kept by the store (tracemalloc), label strings excluded on both sides.",
        "",
        "| case | prometheus_client | otel_monitoring | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for row in result["memory"]:
        lines.append(
            f"| {row['case']} | {row['prometheus_client_bytes_per_series']:,.0f} | "
            f"{row['otel_monitoring_bytes_per_series']:,.0f} | {row['ratio']:.2f} |"
        )
    render = result["render_counters"]
    lines += [
        "",
        f"Rendering {n:,} counter series, best of runs, in milliseconds:",
        "",
        "| renderer | ms | ratio |",
        "| --- | --- | --- |",
        f"| prometheus_client generate_latest | {render['prometheus_client_ms']:.1f} | 1.00 |",
        f"| otel_monitoring render() | {render['otel_monitoring_ms']:.1f} | {render['ratio']:.2f} |",
        "",
        f"Python {platform.python_version()}, prometheus_client {prometheus_client_version()}, {platform.machine()}.",
        "",
    ]
    return "\n".join(lines)


def prometheus_client_version() -> str:
    from importlib.metadata import version

    return version("prometheus_client")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 series, print only")
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    n = 1_000 if args.quick else args.series
    result = run(n, 2 if args.quick else args.repeat)
    text = to_markdown(result)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sidecar_series_memory.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "sidecar_series_memory.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
