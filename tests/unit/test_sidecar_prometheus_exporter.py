"""The sidecar's prometheus exporter: sums over workers that never go backwards, names as the SDK reader's."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
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
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig, PrometheusExporterConfig
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter, _number

CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
BOUNDS = [0.1, 1.0]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def batch(pid: int, *metrics: Metric, service: str = "shop") -> MetricsData:
    resource = Resource({"service.name": service, "service.instance.id": f"worker-{pid}", "process.pid": pid})
    scope = ScopeMetrics(InstrumentationScope("app", "1.0"), list(metrics), "")
    return MetricsData([ResourceMetrics(resource, [scope], "")])


def counter(value: float, start: int = 1, temporality: AggregationTemporality = CUMULATIVE, **attrs: Any) -> Metric:
    point = NumberDataPoint(attrs or {"route": "/a"}, start, start + 1, value)
    return Metric("http.requests", "Requests", "{request}", Sum([point], temporality, True))


def updown(value: float, start: int = 1) -> Metric:
    point = NumberDataPoint({"route": "/a"}, start, start + 1, value)
    return Metric("http.active", "In flight", "{request}", Sum([point], CUMULATIVE, False))


def histogram(
    counts: Sequence[int], total: float, start: int = 1, temporality: AggregationTemporality = CUMULATIVE
) -> Metric:
    point = HistogramDataPoint({"route": "/a"}, start, start + 1, sum(counts), total, list(counts), BOUNDS, 0.0, 9.0)
    return Metric("http.duration", "Duration", "s", Histogram([point], temporality))


def samples(exporter: PrometheusExporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = exporter.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(exporter: PrometheusExporter, name: str, **labels: str) -> float | None:
    found = [v for (n, ls), v in samples(exporter).items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, found
    return found[0] if found else None


def new_exporter(clock: Clock | None = None, **config: Any) -> PrometheusExporter:
    return PrometheusExporter(PrometheusExporterConfig.model_validate(config), clock=clock or Clock())


def test_counter_is_the_exact_sum_over_three_workers() -> None:
    exporter = new_exporter()
    totals = {1: 0.0, 2: 0.0, 3: 0.0}
    for step, (pid, more) in enumerate([(1, 5), (2, 7), (3, 11), (1, 2.5), (3, 0), (2, 1)]):
        totals[pid] += more
        exporter.export(batch(pid, counter(totals[pid])))
        assert value(exporter, "http_requests_total", route="/a") == sum(totals.values()), step
    assert exporter.series_count() == 1


def test_worker_restart_never_goes_backwards_and_loses_no_increase() -> None:
    exporter = new_exporter()
    exporter.export(batch(1, counter(10, start=100)))
    exporter.export(batch(2, counter(4, start=100)))
    seen: list[float | None] = [value(exporter, "http_requests_total")]
    # Worker 1 restarts with the same instance id: a new start time, and a value below the last one.
    exporter.export(batch(1, counter(3, start=200)))
    seen.append(value(exporter, "http_requests_total"))
    exporter.export(batch(1, counter(6, start=200)))
    seen.append(value(exporter, "http_requests_total"))
    # A reset without a new start time (a lower value) is a restart too.
    exporter.export(batch(2, counter(1, start=100)))
    seen.append(value(exporter, "http_requests_total"))
    assert None not in seen
    assert seen == sorted(v or 0.0 for v in seen), seen
    # Every increase counted once: 10 before the restart, 6 after it; 4 then 1 more on worker 2.
    assert seen[-1] == 10 + 6 + 4 + 1


def test_delta_and_cumulative_workers_add_into_one_series() -> None:
    exporter = new_exporter()
    exporter.export(batch(1, counter(5)))
    exporter.export(batch(2, counter(2, temporality=DELTA)))
    exporter.export(batch(2, counter(3, temporality=DELTA)))
    exporter.export(batch(1, counter(9)))
    assert value(exporter, "http_requests_total") == 9 + 2 + 3
    assert exporter.series_count() == 1


def test_histogram_buckets_are_summed_over_workers_through_a_restart() -> None:
    exporter = new_exporter()
    exporter.export(batch(1, histogram([1, 2, 3], 10.0, start=1)))
    exporter.export(batch(2, histogram([0, 1, 1], 4.0, start=1)))
    exporter.export(batch(1, histogram([1, 0, 0], 0.05, start=2)))  # worker 1 restarted
    exporter.export(batch(3, histogram([2, 0, 0], 0.1, temporality=DELTA)))
    buckets = [1 + 0 + 1 + 2, 2 + 1 + 0 + 0, 3 + 1 + 0 + 0]
    cumulative = [sum(buckets[: i + 1]) for i in range(3)]
    for bound, expected in zip(["0.1", "1.0", "+Inf"], cumulative, strict=True):
        assert value(exporter, "http_duration_seconds_bucket", le=bound) == expected
    assert value(exporter, "http_duration_seconds_count") == sum(buckets)
    assert value(exporter, "http_duration_seconds_sum") == pytest.approx(10.0 + 4.0 + 0.05 + 0.1)


def test_updowncounter_is_the_sum_of_current_levels_and_a_restart_replaces_its_level() -> None:
    exporter = new_exporter()
    exporter.export(batch(1, updown(3)))
    exporter.export(batch(2, updown(4)))
    exporter.export(batch(1, updown(1)))
    assert value(exporter, "http_active") == 1 + 4
    exporter.export(batch(2, updown(0, start=50)))  # restarted: nothing in flight any more
    assert value(exporter, "http_active") == 1


def test_gauges_keep_one_series_per_worker() -> None:
    exporter = new_exporter()
    for pid, level in ((1, 0.25), (2, 0.5)):
        point = NumberDataPoint({}, 0, 1, level)
        exporter.export(batch(pid, Metric("process.cpu.utilization", "", "1", Gauge([point]))))
    assert value(exporter, "process_cpu_utilization", worker="worker-1") == 0.25
    assert value(exporter, "process_cpu_utilization", worker="worker-2") == 0.5


def test_series_not_updated_for_metric_expiration_disappear() -> None:
    clock = Clock()
    exporter = new_exporter(clock, metric_expiration="1m")
    exporter.export(batch(1, counter(5), updown(2)))
    exporter.export(batch(2, counter(7), updown(3)))
    clock.now += 40
    exporter.export(batch(2, counter(8), updown(3)))
    clock.now += 30  # worker 1 silent for 70 s, worker 2 for 30 s
    # Worker 1's increases stay in the counter; its level leaves the up-down count.
    assert value(exporter, "http_requests_total") == 5 + 8
    assert value(exporter, "http_active") == 3
    assert ("target_info", frozenset({("job", "shop")})) in samples(exporter)
    clock.now += 31
    assert exporter.render() == b""
    assert exporter.series_count() == 0


def test_job_instance_namespace_and_const_labels() -> None:
    exporter = new_exporter(namespace="pod", const_labels={"team": "growth"})
    resource = Resource({"service.name": "api", "service.namespace": "shop", "host.name": "node-1", "process.pid": 7})
    scope = ScopeMetrics(InstrumentationScope("app"), [counter(1)], "")
    exporter.export(MetricsData([ResourceMetrics(resource, [scope], "")]))
    labels = {dict(ls).get("job") for (n, ls) in samples(exporter) if n == "pod_http_requests_total"}
    assert labels == {"shop/api"}
    assert value(exporter, "pod_http_requests_total", team="growth") == 1
    target = [dict(ls) for (n, ls) in samples(exporter) if n == "target_info"]
    assert target == [{"job": "shop/api", "host_name": "node-1", "team": "growth"}]
    assert all("instance" not in dict(ls) and "process_pid" not in dict(ls) for (_, ls) in samples(exporter))


def test_numbers_are_written_as_prometheus_client_writes_them() -> None:
    for number in (0.0, 2.5, 3.0, 1e6, 123456789.0, 1e22, -5e7, float("nan"), float("inf"), -float("inf"), 1.5e-7):
        assert _number(number) == floatToGoString(number)  # type: ignore[no-untyped-call]


def test_names_and_label_sets_match_the_sdk_prometheus_reader() -> None:
    registry = CollectorRegistry()
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry), memory])
    meter = provider.get_meter("shop.meter", "2.0")
    meter.create_counter("http.requests", "{request}", "Requests").add(3, {"http.route": "/a", "code": 200})
    meter.create_counter("bytes_total", "By").add(10, {"dir": "in"})
    meter.create_up_down_counter("db.client.connections", "{connection}").add(4, {"pool": "main"})
    meter.create_histogram("http.server.request.duration", "s").record(0.2, {"http.route": "/a", "ok": True})
    meter.create_histogram("queue.wait", "ms/s").record(2)

    def observe(options: CallbackOptions) -> list[Observation]:
        return [Observation(0.5, {"cpu": "0"})]

    meter.create_observable_gauge("system.cpu.utilization", [observe], "1")
    exporter = PrometheusExporter(PrometheusExporterConfig())
    data = memory.get_metrics_data()
    assert data is not None
    exporter.export(data)
    ours = families(exporter.render().decode(), drop={"job", "worker"})  # our decisions, documented
    theirs = families(generate_latest(registry).decode(), drop=set())
    ours.pop("target_info"), theirs.pop("target_info")
    assert len(theirs) == 6  # every instrument kind above, each with its name, type and label sets
    assert ours == theirs
    provider.shutdown()


def families(text: str, drop: set[str]) -> dict[str, tuple[str, set[tuple[str, frozenset[str]]]]]:
    return {
        f.name: (f.type, {(s.name, frozenset(set(s.labels) - drop)) for s in f.samples})
        for f in text_string_to_metric_families(text)
    }


def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    exporter = new_exporter()
    exporter.export(batch(1, counter(5), updown(2), histogram([1, 2, 3], 4.0)))
    exporter.export(batch(2, counter(1, route='say "hi"\\\n')))
    done = subprocess.run([promtool, "check", "metrics"], input=exporter.render(), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert value(exporter, "http_requests_total", route='say "hi"\\\n') == 1


def scrape(exporter: PrometheusExporter, path: str = "/metrics", **headers: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=exporter)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(get())


def test_serves_metrics_over_asgi_gzipped_when_asked() -> None:
    exporter = new_exporter()
    exporter.export(batch(1, counter(5)))
    response = scrape(exporter, **{"accept-encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.content == exporter.render()
    zipped = scrape(exporter, **{"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == exporter.render()
    assert scrape(exporter, "/other").status_code == 404


def test_scrape_requires_the_bearer_token_when_auth_is_set() -> None:
    config = PrometheusExporterConfig.model_validate({"auth": {"authenticator": "bearertokenauth"}})
    token = BearerTokenAuthExtensionConfig.model_validate({"token": "s3cret-token"})
    exporter = PrometheusExporter(config, bearer_token=token)
    assert scrape(exporter).status_code == 401
    assert scrape(exporter, authorization="Bearer wrong").status_code == 401
    assert scrape(exporter, authorization="Bearer s3cret-token").status_code == 200
    with pytest.raises(ValueError, match="bearer_token"):
        PrometheusExporter(config)


def host_cpu_time(seconds: float, start: int = 1) -> Metric:
    point = NumberDataPoint({"cpu.mode": "user"}, start, start + 1, seconds)
    return Metric("system.cpu.time", "CPU time", "s", Sum([point], CUMULATIVE, True))


def host_memory_utilization(ratio: float) -> Metric:
    return Metric("system.memory.utilization", "", "1", Gauge([NumberDataPoint({}, 0, 1, ratio)]))


def test_host_counters_read_by_every_worker_are_not_multiplied_by_the_worker_count() -> None:
    exporter = new_exporter()
    for pid in (1, 2, 3, 4):
        exporter.export(batch(pid, host_cpu_time(3968.35, start=pid)))
    assert value(exporter, "system_cpu_time_seconds_total", cpu_mode="user") == 3968.35


def test_host_counter_never_steps_back_when_workers_read_it_at_different_moments() -> None:
    exporter = new_exporter()
    seen = []
    for pid, reading in [(1, 100.0), (2, 99.9), (1, 100.4), (2, 100.3), (3, 100.2)]:
        exporter.export(batch(pid, host_cpu_time(reading, start=pid)))
        seen.append(value(exporter, "system_cpu_time_seconds_total", cpu_mode="user"))
    assert seen == [100.0, 100.0, 100.4, 100.4, 100.4]


def test_a_restarted_worker_does_not_add_the_host_counter_again() -> None:
    clock = Clock()
    exporter = new_exporter(clock, metric_expiration="10s")
    exporter.export(batch(1, host_cpu_time(500.0, start=1)))
    exporter.export(batch(2, host_cpu_time(500.5, start=2)))
    clock.now += 20  # worker 1 died and expired; worker 5 replaces it and reads the same host counter
    exporter.export(batch(2, host_cpu_time(520.0, start=2)))
    exporter.export(batch(5, host_cpu_time(520.1, start=5)))
    assert value(exporter, "system_cpu_time_seconds_total", cpu_mode="user") == 520.1


def test_host_counter_follows_a_restarted_container_down_once_its_old_workers_expired() -> None:
    clock = Clock()
    exporter = new_exporter(clock, metric_expiration="10s")
    exporter.export(batch(1, host_cpu_time(900.0, start=1)))
    clock.now += 5
    exporter.export(batch(7, host_cpu_time(3.0, start=7)))  # the new container's cgroup starts from zero
    assert value(exporter, "system_cpu_time_seconds_total", cpu_mode="user") == 900.0
    clock.now += 6  # the old worker is gone for good
    exporter.export(batch(7, host_cpu_time(4.0, start=7)))
    assert value(exporter, "system_cpu_time_seconds_total", cpu_mode="user") == 4.0


def test_host_gauge_is_one_series_with_the_latest_value_and_no_worker_label() -> None:
    exporter = new_exporter()
    exporter.export(batch(1, host_memory_utilization(0.41)))
    exporter.export(batch(2, host_memory_utilization(0.43)))
    found = {ls: v for (n, ls), v in samples(exporter).items() if n == "system_memory_utilization"}
    assert list(found.values()) == [0.43]
    assert not any(name == "worker" for name, _ in next(iter(found)))


def test_metrics_outside_the_shared_prefixes_are_still_summed_over_workers() -> None:
    exporter = PrometheusExporter(PrometheusExporterConfig(), clock=Clock(), shared_metric_prefixes=())
    for pid in (1, 2):
        exporter.export(batch(pid, host_cpu_time(10.0, start=pid)))
    assert value(exporter, "system_cpu_time_seconds_total", cpu_mode="user") == 20.0
