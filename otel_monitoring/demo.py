"""``otel-monitoring demo``: serve the sample service, drive traffic at it, show what the metrics say.

Everything runs in this process on 127.0.0.1 and stops when the duration ends or on Ctrl-C.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring.sample import create_app

__all__ = ["DemoReport", "run_demo"]


@dataclass
class DemoReport:
    requests: float
    errors: float
    p95_seconds: float
    generations: dict[str, float]


def _start_server(port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the sample service could not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    return server, thread


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation inside the bucket, as PromQL's histogram_quantile does."""
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return 0.0
    rank, lower_bound, lower_count = q * total, 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / max(cumulative - lower_count, 1e-12)
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def summarize(exposition: str) -> DemoReport:
    """Read the sample service's own exposition, as Prometheus would."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    generations: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "http_server_request_duration_seconds_count":
                requests += sample.value
                if sample.labels.get("error_type"):
                    errors += sample.value
            elif sample.name == "http_server_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == "content_generations_total":
                key = f"{sample.labels['content_type']}/{sample.labels['status']}"
                generations[key] = sample.value
    p95 = _quantile(sorted(buckets.items()), 0.95)
    return DemoReport(requests, errors, p95, generations)


def run_demo(port: int, duration: float, rate: float, echo: Callable[[str], None] = print) -> DemoReport:
    """Serve, load and report; returns the final report read from ``/metrics``."""
    server, thread = _start_server(port)
    base = f"http://127.0.0.1:{port}"
    echo(f"sample service on {base}  (metrics: {base}/metrics)")
    report = DemoReport(0, 0, 0, {})
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            started = last_report = time.monotonic()
            while (now := time.monotonic()) - started < duration:
                content_type = random.choice(("article", "caption", "summary", "article", "poem"))
                client.post(f"/generate/{content_type}")
                if now - last_report >= 1:
                    last_report = now
                    report = summarize(client.get("/metrics").text)
                    echo(
                        f"[{now - started:5.1f}s] requests {report.requests:6.0f}  "
                        f"errors {report.errors:4.0f}  p95 {report.p95_seconds * 1000:6.1f} ms"
                    )
                time.sleep(max(0.0, 1 / rate - (time.monotonic() - now)))
            report = summarize(client.get("/metrics").text)
    except KeyboardInterrupt:
        echo("interrupted")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    echo(f"done: {report.requests:.0f} requests, {report.errors:.0f} errors, p95 {report.p95_seconds * 1000:.1f} ms")
    for key, value in sorted(report.generations.items()):
        echo(f"  content_generations_total{{{key}}} = {value:.0f}")
    return report
