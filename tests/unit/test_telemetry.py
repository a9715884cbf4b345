"""The process pipeline: every reader gets its own processing, with one pseudonym key for the process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry, create_resource

KEY = {"OTEL_MONITORING_PSEUDONYM_KEY": "unit-test-key-0123456789"}


def logins_in_memory(data: MetricsData | None) -> list[tuple[dict[str, object], float]]:
    assert data is not None
    return [
        (dict(point.attributes or {}), point.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "logins"
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


def logins_exposed(telemetry: Telemetry) -> list[tuple[dict[str, str], float]]:
    text = render_exposition(telemetry.prometheus_registry, None, None)[0].decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "logins_total"
    ]


def test_merged_series_stay_exact_when_two_readers_collect_in_turn() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(load_settings(environ=KEY), MetricsRegistry(), extra_readers=[reader], start_exporters=False)
    try:
        logins = telemetry.meter_provider.get_meter("app").create_counter("logins")
        logins.add(3, {"email": "ana@example.com", "plan": "pro"})
        logins.add(4, {"email": "bob@example.org", "plan": "pro"})
        for _ in range(4):  # each reader's batches go through its own pipeline, so nothing is counted twice
            in_memory = logins_in_memory(reader.get_metrics_data())
            exposed = logins_exposed(telemetry)
    finally:
        telemetry.shutdown()

    assert in_memory == [({"email": "<email>", "plan": "pro"}, 7)]
    assert exposed == [({"email": "<email>", "plan": "pro"}, 7.0)]


def test_without_a_key_every_reader_uses_the_same_random_pseudonym_key() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(load_settings(environ={}), MetricsRegistry(), extra_readers=[reader], start_exporters=False)
    try:
        telemetry.meter_provider.get_meter("app").create_counter("logins").add(1, {"client_id": "acme-42"})
        [(in_memory, _)] = logins_in_memory(reader.get_metrics_data())
        [(exposed, _)] = logins_exposed(telemetry)
    finally:
        telemetry.shutdown()

    assert in_memory["client_id"] == exposed["client_id"] != "acme-42"  # one pseudonym on /metrics and in OTLP


def _wait_or_abort(pid: int, timeout: float) -> int:
    """The child's exit status; a child stuck (before its own alarm could be set, e.g. in an at-fork hook) is
    sent SIGABRT, so pytest's faulthandler, inherited through the fork, prints where it was stuck."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGABRT)
    return os.waitpid(pid, 0)[1]


def test_forked_child_scrapes_while_a_parent_thread_was_collecting() -> None:
    # gunicorn --preload forks workers while a periodic reader or the standalone endpoint may be collecting.
    registry = MetricsRegistry()
    telemetry = Telemetry(load_settings(environ=KEY), registry, start_exporters=False)
    counter = registry.counter("reqs_total", "Requests", ("route",))
    for n in range(300):
        counter.labels(route=f"/r{n}/ana{n}@example.com").inc()
    stop = threading.Event()

    def scrape_forever() -> None:
        while not stop.is_set():
            render_exposition(telemetry.prometheus_registry, None, None)

    scraper = threading.Thread(target=scrape_forever, daemon=True)
    scraper.start()
    failed = 0
    try:
        for _ in range(10):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:  # the child: its first scrape must finish, with the parent's locks left behind
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # pytest-timeout's handler would let it exit 0
                signal.alarm(5)
                try:
                    render_exposition(telemetry.prometheus_registry, None, None)
                finally:
                    os._exit(0)
            status = _wait_or_abort(pid, timeout=10)
            failed += int(os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0)
    finally:
        stop.set()
        scraper.join()
        telemetry.shutdown()
    assert failed == 0


def test_worker_forked_while_the_parent_holds_the_sdk_collection_lock_still_collects() -> None:
    # opentelemetry-instrument gunicorn starts the SDK in the master; a worker forked while the master's
    # periodic reader was inside the SDK's collection would inherit that lock held, and never export.
    environ = {**KEY, "OTEL_METRICS_EXPORTER": "none", "OTEL_MONITORING_SYSTEM_METRICS": "none"}
    telemetry = Telemetry(load_settings(environ=environ, strict=True), MetricsRegistry(), start_exporters=False)
    sdk_lock = telemetry.meter_provider._measurement_consumer._lock  # type: ignore[attr-defined]
    collecting, finish = threading.Event(), threading.Event()

    def parent_reader_mid_collection() -> None:
        with sdk_lock:
            collecting.set()
            finish.wait()

    reader = threading.Thread(target=parent_reader_mid_collection)
    reader.start()
    collecting.wait()
    threading.Timer(0.2, finish.set).start()  # the collection ends while the fork waits for it
    try:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(5)
            try:
                done = threading.Event()
                threading.Thread(
                    target=lambda: (telemetry.prometheus_reader.collect(), done.set()), daemon=True
                ).start()
                os._exit(0 if done.wait(2) else 1)
            finally:
                os._exit(2)
        status = _wait_or_abort(pid, timeout=10)
    finally:
        reader.join()
        telemetry.shutdown()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_workers_sharing_a_user_set_instance_id_are_still_told_apart_by_pid() -> None:
    environ = {**KEY, "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-1", "OTEL_METRICS_EXPORTER": "none"}
    resource = create_resource(load_settings(environ=environ, strict=True))
    assert resource.attributes["service.instance.id"] == "pod-1"
    assert resource.attributes["process.pid"] == os.getpid()


def test_facade_records_within_the_limits_configured_for_the_cardinality_processor() -> None:
    registry = MetricsRegistry()
    early = registry.counter("campaigns_total", "Campaigns", ("campaign",))  # declared before the pipeline exists
    processors = '{"cardinality": {"limit": 50, "limits": {"campaigns_*": 5}}}'
    telemetry = Telemetry(load_settings(environ={**KEY, "OTEL_MONITORING_PROCESSORS": processors}), registry)
    try:
        late = registry.counter("signups_total", "Signups", ("source",))
        for n in range(100):
            early.labels(campaign=f"c{n}").inc()
            late.labels(source=f"s{n}").inc()
    finally:
        telemetry.shutdown()
    assert len(early.series()) == 5 + 1 and len(late.series()) == 50 + 1  # the limit plus one overflow series


def test_system_metrics_that_cannot_start_leave_the_pipeline_working(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_monitoring.collectors import system

    def broken(*args: object, **kwargs: object) -> None:
        raise PermissionError("/proc is not readable here")

    monkeypatch.setattr(system, "install_system_metrics", broken)
    registry = MetricsRegistry()
    telemetry = Telemetry(load_settings(environ=KEY), registry, start_exporters=False)
    try:
        with caplog.at_level(logging.WARNING):
            telemetry.start_system_metrics()
        registry.counter("orders_total", "Orders").inc()
        body, _ = render_exposition(telemetry.prometheus_registry, None, None)
    finally:
        telemetry.shutdown()

    assert "could not start system metrics" in caplog.text and "/proc is not readable here" in caplog.text
    assert "orders_total 1.0" in body.decode()
