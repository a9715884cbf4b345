"""Cost of one recording: the facade against prometheus_client and the OpenTelemetry SDK, in one process.

    python bench/recording_cost.py            # full run, writes bench/results/recording_cost.{json,md}
    python bench/recording_cost.py --quick    # a few thousand calls, prints only (used by the tests)

Each case is timed with ``timeit`` over ``--number`` calls, ``--repeat`` times; the minimum is the
figure (the least disturbed run), in nanoseconds per call. Peers run interleaved in the same process,
so machine noise hits them alike; the ratio is ours divided by prometheus_client's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_monitoring.metrics import MetricsRegistry

RESULTS = Path(__file__).parent / "results"


def build_cases() -> list[tuple[str, dict[str, Callable[[], Any]]]]:
    prom = prometheus_client.CollectorRegistry()
    prom_counter = prometheus_client.Counter("requests", "Requests", ["method", "route"], registry=prom)
    prom_histogram = prometheus_client.Histogram("latency_seconds", "Latency", ["method", "route"], registry=prom)
    prom_bound_counter = prom_counter.labels("GET", "/items")
    prom_bound_histogram = prom_histogram.labels("GET", "/items")

    ours = MetricsRegistry()
    our_counter = ours.counter("requests_total", "Requests", ["method", "route"])
    our_histogram = ours.histogram("latency_seconds", "Latency", ["method", "route"])
    our_bound_counter = our_counter.labels("GET", "/items")
    our_bound_histogram = our_histogram.labels("GET", "/items")

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    sdk_counter = meter.create_counter("requests")
    sdk_histogram = meter.create_histogram("latency", unit="s")
    attributes = {"method": "GET", "route": "/items"}

    return [
        (
            "bound counter inc()",
            {
                "otel_monitoring": our_bound_counter.inc,
                "prometheus_client": prom_bound_counter.inc,
                "opentelemetry-sdk add(1, attrs)": lambda: sdk_counter.add(1, attributes),
            },
        ),
        (
            "bound histogram observe(v)",
            {
                "otel_monitoring": lambda: our_bound_histogram.observe(0.042),
                "prometheus_client": lambda: prom_bound_histogram.observe(0.042),
                "opentelemetry-sdk record(v, attrs)": lambda: sdk_histogram.record(0.042, attributes),
            },
        ),
        (
            "labels(a, b).inc()",
            {
                "otel_monitoring": lambda: our_counter.labels("GET", "/items").inc(),
                "prometheus_client": lambda: prom_counter.labels("GET", "/items").inc(),
            },
        ),
        (
            "labels(method=a, route=b).inc()",
            {
                "otel_monitoring": lambda: our_counter.labels(method="GET", route="/items").inc(),
                "prometheus_client": lambda: prom_counter.labels(method="GET", route="/items").inc(),
            },
        ),
        (
            "inc(1, attributes)",
            {
                "otel_monitoring": lambda: our_counter.inc(1, attributes),
                "prometheus_client labels(**attributes).inc()": lambda: prom_counter.labels(**attributes).inc(),
                "opentelemetry-sdk add(1, attrs)": lambda: sdk_counter.add(1, attributes),
            },
        ),
    ]


def measure(number: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for case, contenders in build_cases():
        best = {name: float("inf") for name in contenders}
        for _ in range(repeat):  # interleaved, so a noisy moment does not favour one contender
            for name, call in contenders.items():
                seconds = timeit.timeit(call, number=number)
                best[name] = min(best[name], seconds / number * 1e9)
        prom = next(value for name, value in best.items() if name.startswith("prometheus_client"))
        rows.append(
            {
                "case": case,
                "ns_per_call": {name: round(value, 1) for name, value in best.items()},
                "ratio_to_prometheus_client": round(best["otel_monitoring"] / prom, 3),
            }
        )
    return rows


def render_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Recording cost (ns per call, lower is better)",
        "",
        f"{meta['python']} on {meta['machine']}; number={meta['number']}, repeat={meta['repeat']}, minimum kept.",
        "",
        "| case | otel_monitoring | prometheus_client | opentelemetry-sdk | ours / prometheus_client |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        values = row["ns_per_call"]
        prom = next(v for k, v in values.items() if k.startswith("prometheus_client"))
        sdk = next((v for k, v in values.items() if k.startswith("opentelemetry-sdk")), None)
        sdk_text = f"{sdk:.0f}" if sdk is not None else "n/a"
        ours = values["otel_monitoring"]
        lines.append(
            f"| {row['case']} | {ours:.0f} | {prom:.0f} | {sdk_text} | {row['ratio_to_prometheus_client']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run that prints and writes nothing")
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    number, repeat = (2_000, 2) if args.quick else (args.number, args.repeat)
    rows = measure(number, repeat)
    meta = {"python": sys.version.split()[0], "machine": platform.machine(), "number": number, "repeat": repeat}
    report = render_markdown(rows, meta)
    print(report)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "recording_cost.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (RESULTS / "recording_cost.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
