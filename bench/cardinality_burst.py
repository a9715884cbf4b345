"""Memory of a burst of distinct label values: the facade's limit, the cardinality processor, unbounded peers.

    python bench/cardinality_burst.py            # 1,000,000 values; writes bench/results/cardinality_burst.{json,md}
    python bench/cardinality_burst.py --quick    # 20,000 values, prints only (used by the tests)

Each contender records one counter increment per distinct value of one label, in a fresh process
state, with ``tracemalloc`` measuring the memory still held afterwards (what the metric keeps) and
the peak. The series count is read from what each contender would export.
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
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
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

from otel_monitoring.metrics import MetricsRegistry
from processors import ProcessorContext
from processors.cardinality import FACTORY as CARDINALITY

RESULTS = Path(__file__).parent / "results"


def facade(values: int) -> tuple[int, object]:
    registry = MetricsRegistry()
    counter = registry.counter("signups_total", "Signups", ("campaign",))
    for value in range(values):
        counter.labels(f"campaign-{value}").inc()
    return len(counter.series()), registry


def prometheus_client_counter(values: int) -> tuple[int, object]:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("signups", "Signups", ["campaign"], registry=registry)
    for value in range(values):
        counter.labels(f"campaign-{value}").inc()
    return len(counter._metrics), registry


def opentelemetry_sdk(values: int) -> tuple[int, object]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("bench").create_counter("signups")
    for value in range(values):
        counter.add(1, {"campaign": f"campaign-{value}"})
    return _points(reader.get_metrics_data()), provider


def _points(data: MetricsData | None) -> int:
    if data is None:
        return 0
    return sum(len(m.data.data_points) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)


def cardinality_processor(values: int, batch: int = 10_000) -> tuple[int, object]:
    """The sidecar's path: batches of OTLP-like cumulative points, each value a new attribute set."""
    processor = CARDINALITY.create_from({}, ProcessorContext())
    resource, scope = Resource({"service.name": "bench"}), InstrumentationScope("bench")
    exported = 0
    for first in range(0, values, batch):
        points = [
            NumberDataPoint({"campaign": f"campaign-{value}"}, 1, 2, 1)
            for value in range(first, min(values, first + batch))
        ]
        metric = Metric("signups", "", "", Sum(points, AggregationTemporality.CUMULATIVE, True))
        out = processor.process(MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, [metric], "")], "")]))
        exported = max(exported, _points(out))
    return exported, processor


CONTENDERS: dict[str, Callable[[int], tuple[int, object]]] = {
    "otel_monitoring facade (limit 2000)": facade,
    "cardinality processor (limit 2000)": cardinality_processor,
    "prometheus_client (no limit)": prometheus_client_counter,
    "opentelemetry-sdk 1.45.1 (no limit)": opentelemetry_sdk,
}


def measure(values: int) -> list[dict[str, Any]]:
    rows = []
    for name, run in CONTENDERS.items():
        gc.collect()
        tracemalloc.start()
        started = time.perf_counter()
        # Keep the result alive while measuring: what the metric holds is what the burst costs.
        series, holder = run(values)
        seconds = time.perf_counter() - started
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del holder
        rows.append(
            {
                "contender": name,
                "values": values,
                "series_exported": series,
                "retained_mib": round(current / 2**20, 1),
                "peak_mib": round(peak / 2**20, 1),
                "seconds": round(seconds, 2),
            }
        )
    return rows


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# A burst of {meta['values']:,} distinct label values",
        "",
        f"{meta['python']} on {meta['machine']}; memory by tracemalloc (Python allocations), time includes tracing.",
        "",
        "| contender | series exported | retained MiB | peak MiB | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['contender']} | {row['series_exported']:,} | {row['retained_mib']} | {row['peak_mib']} |"
            f" {row['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 values; prints and writes nothing")
    parser.add_argument("--values", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    values = 20_000 if args.quick else args.values
    rows = measure(values)
    meta = {"python": sys.version.split()[0], "machine": platform.machine(), "values": values}
    report = render_markdown(rows, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "cardinality_burst.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (RESULTS / "cardinality_burst.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
