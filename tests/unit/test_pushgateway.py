"""The Pushgateway pusher: when it pushes, what it sends, and how it fails without hurting the host program."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.error import HTTPError, URLError

import pytest
from prometheus_client import generate_latest

from otel_monitoring.config import SettingsStore
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.pushgateway import PushgatewayPusher
from otel_monitoring.settings import PushgatewayConfig, ServiceConfig, Settings
from otel_monitoring.telemetry import Telemetry

GATEWAY = "http://pushgateway.example:9091"
LOGGER = "otel_monitoring.pushgateway"


@dataclass
class Push:
    gateway: str
    job: str
    grouping_key: dict[str, Any]
    timeout: float | None
    exposition: str


@dataclass
class FakePush:
    """Stands in for prometheus_client's push_to_gateway: records each push, or raises what it is given."""

    error: Exception | None = None
    pushes: list[Push] = field(default_factory=list)
    pushed: threading.Event = field(default_factory=threading.Event)
    notify_after: int = 1
    block: threading.Event | None = None

    def __call__(self, gateway: str, *, job: str, registry: Any, grouping_key: Any, timeout: Any, handler: Any) -> None:
        if self.block is not None:
            self.block.wait(10)
        if self.error is not None:
            raise self.error
        self.pushes.append(Push(gateway, job, dict(grouping_key), timeout, generate_latest(registry).decode()))
        if len(self.pushes) >= self.notify_after:
            self.pushed.set()


class GatedWait:
    """Lets the periodic thread through ``rounds`` waits at once, then waits for real (until stop wakes it)."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.intervals: list[float] = []

    def __call__(self, seconds: float, wake: threading.Event) -> bool:
        self.intervals.append(seconds)
        if len(self.intervals) <= self.rounds:
            return False
        return wake.wait(10)


@pytest.fixture
def registry() -> MetricsRegistry:
    return MetricsRegistry()


@pytest.fixture
def telemetry(registry: MetricsRegistry) -> Iterator[Telemetry]:
    pipeline = Telemetry(Settings(), registry, start_exporters=False)
    yield pipeline
    pipeline.shutdown()


def no_settings(listener: Any) -> Any:
    """A settings subscription that never fires, so tests do not touch the process-wide settings."""
    return lambda: None


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_pushes_every_interval_until_stopped(telemetry: Telemetry, registry: MetricsRegistry) -> None:
    registry.counter("batch_rows_total", "Rows").inc(3)
    push = FakePush(notify_after=3)
    wait = GatedWait(rounds=3)
    config = PushgatewayConfig(url=GATEWAY, job_name="nightly", interval_seconds=7.5, push_at_exit=False)
    pusher = PushgatewayPusher(telemetry, config, push_function=push, wait=wait, subscribe=no_settings)

    pusher.start()
    assert push.pushed.wait(10)
    pusher.stop(final_push=False)

    assert len(push.pushes) == 3
    assert not pusher.running
    assert wait.intervals[:3] == [7.5, 7.5, 7.5]
    assert {(p.gateway, p.job) for p in push.pushes} == {(GATEWAY, "nightly")}
    assert "batch_rows_total 3.0" in push.pushes[-1].exposition


def test_starts_no_thread_while_no_gateway_is_configured(telemetry: Telemetry) -> None:
    push = FakePush()
    pusher = PushgatewayPusher(telemetry, PushgatewayConfig(), push_function=push, subscribe=no_settings)

    pusher.start()
    try:
        assert not pusher.running
        assert pusher.push() is False
    finally:
        pusher.stop(final_push=True)

    assert push.pushes == []


def test_stop_with_final_push_sends_the_latest_values_once(telemetry: Telemetry, registry: MetricsRegistry) -> None:
    rows = registry.counter("report_rows_total", "Rows")
    push = FakePush()
    config = PushgatewayConfig(url=GATEWAY, job_name="report")
    pusher = PushgatewayPusher(telemetry, config, push_function=push, wait=GatedWait(rounds=0), subscribe=no_settings)
    pusher.start()
    rows.inc(5)

    pusher.stop(final_push=True)
    pusher.stop(final_push=True)  # a second stop (shutdown, then exit) pushes nothing more

    assert len(push.pushes) == 1
    assert "report_rows_total 5.0" in push.pushes[0].exposition


def test_stop_without_final_push_sends_nothing(telemetry: Telemetry) -> None:
    push = FakePush()
    pusher = PushgatewayPusher(telemetry, PushgatewayConfig(url=GATEWAY), push_function=push, subscribe=no_settings)

    pusher.stop(final_push=False)

    assert push.pushes == []


def test_groups_by_job_alone_so_each_run_replaces_the_previous_one(
    telemetry: Telemetry,
) -> None:
    push = FakePush()
    config = PushgatewayConfig(url=GATEWAY, job_name="nightly", timeout_seconds=2.5)
    pusher = PushgatewayPusher(telemetry, config, push_function=push, subscribe=no_settings)

    assert pusher.push() is True

    assert push.pushes[0].job == "nightly"
    assert push.pushes[0].grouping_key == {}
    assert push.pushes[0].timeout == 2.5


def test_an_explicit_service_instance_id_becomes_the_instance_label(registry: MetricsRegistry) -> None:
    settings = Settings(service=ServiceConfig(resource_attributes={"service.instance.id": "nightly-host-a"}))
    telemetry = Telemetry(settings, registry, start_exporters=False)
    push = FakePush()
    pusher = PushgatewayPusher(telemetry, PushgatewayConfig(url=GATEWAY), push_function=push, subscribe=no_settings)
    try:
        assert pusher.push() is True
    finally:
        telemetry.shutdown()

    assert push.pushes[0].grouping_key == {"instance": "nightly-host-a"}


def test_failures_log_one_warning_per_streak_and_return_false(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    push = FakePush(error=URLError(ConnectionRefusedError(111, "Connection refused")))
    pusher = PushgatewayPusher(
        telemetry, PushgatewayConfig(url=GATEWAY, job_name="nightly"), push_function=push, subscribe=no_settings
    )
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    first_streak = [pusher.push() for _ in range(3)]
    push.error = None
    recovered = pusher.push()
    push.error = URLError(ConnectionRefusedError(111, "Connection refused"))
    second_streak = pusher.push()

    assert first_streak == [False, False, False]
    assert recovered is True
    assert second_streak is False
    warnings = warnings_from(caplog)
    assert len(warnings) == 2
    assert GATEWAY in warnings[0]
    assert "Connection refused" in warnings[0]
    assert "'nightly'" in warnings[0]
    assert any("works again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_an_error_response_is_reported_with_the_gateways_reason(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    body = io.BytesIO(b"pushed metrics are invalid or inconsistent with existing metrics: type mismatch\n")
    error = HTTPError(f"{GATEWAY}/metrics/job/nightly", 400, "Bad Request", Message(), body)
    pusher = PushgatewayPusher(
        telemetry, PushgatewayConfig(url=GATEWAY), push_function=FakePush(error=error), subscribe=no_settings
    )

    assert pusher.push() is False

    [warning] = warnings_from(caplog)
    assert "HTTP 400 Bad Request: pushed metrics are invalid or inconsistent" in warning


def test_a_push_function_that_raises_anything_never_raises_into_the_host(telemetry: Telemetry) -> None:
    push = FakePush(error=ValueError("collector exploded"))
    pusher = PushgatewayPusher(telemetry, PushgatewayConfig(url=GATEWAY), push_function=push, subscribe=no_settings)

    assert pusher.push() is False


def test_a_push_without_answer_gives_up_after_the_timeout(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    push = FakePush(block=release)
    config = PushgatewayConfig(url=GATEWAY, timeout_seconds=0.05)
    pusher = PushgatewayPusher(telemetry, config, push_function=push, subscribe=no_settings)

    try:
        assert pusher.push() is False
        # The stuck push still holds its worker: the next push fails at once instead of piling up threads.
        assert pusher.push() is False
    finally:
        release.set()

    [warning] = warnings_from(caplog)
    assert "no answer within 0.05s" in warning


def test_a_settings_change_starts_pushing_to_the_new_gateway(telemetry: Telemetry) -> None:
    store = SettingsStore(environ={})
    push = FakePush()
    wait = GatedWait(rounds=1)
    pusher = PushgatewayPusher(
        telemetry, store.get().pushgateway, push_function=push, wait=wait, subscribe=store.add_listener
    )
    pusher.start()
    try:
        assert not pusher.running
        store.configure_exporter(push_gateway=GATEWAY, job_name="late-job", interval_seconds=2)
        assert push.pushed.wait(10)
    finally:
        pusher.stop(final_push=False)

    assert (push.pushes[0].gateway, push.pushes[0].job) == (GATEWAY, "late-job")
    assert wait.intervals[0] == 2


def test_stop_stops_following_settings(telemetry: Telemetry) -> None:
    store = SettingsStore(environ={})
    pusher = PushgatewayPusher(
        telemetry, store.get().pushgateway, push_function=FakePush(), subscribe=store.add_listener
    )
    pusher.start()
    pusher.stop(final_push=False)

    store.configure_exporter(push_gateway=GATEWAY)

    assert pusher.config.url is None
    assert not pusher.running


def test_credentials_in_the_url_are_neither_logged_nor_left_in_the_url(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    secret_url = "http://batch:s3cret-pass@pushgateway.example:9091/prefix?token=abc123"
    push = FakePush(error=URLError("failed for batch:s3cret-pass"))
    pusher = PushgatewayPusher(telemetry, PushgatewayConfig(url=secret_url), push_function=push, subscribe=no_settings)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    assert pusher.push() is False
    push.error = None
    assert pusher.push() is True

    [warning] = warnings_from(caplog)
    assert "http://pushgateway.example:9091/prefix" in warning
    assert "s3cret-pass" not in caplog.text
    assert "abc123" not in caplog.text
    # urllib cannot send user:password@host itself; the credentials travel in the handler's Authorization header.
    assert push.pushes[0].gateway == "http://pushgateway.example:9091/prefix?token=abc123"
