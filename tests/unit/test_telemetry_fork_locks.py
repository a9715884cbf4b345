"""Before a fork the telemetry holds the SDK's locks, within one bounded wait, and names any it could not take."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_monitoring import telemetry as telemetry_module
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry

WAIT = 0.3


def test_locks_busy_at_fork_share_one_deadline_and_are_named_in_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(telemetry_module, "_FORK_LOCK_WAIT_SECONDS", WAIT)
    telemetry = Telemetry(
        load_settings(environ={}), MetricsRegistry(), extra_readers=[InMemoryMetricReader()], start_exporters=False
    )
    busy = telemetry.bridge.locks()
    assert len(busy) >= 2  # one per reader: several locks that a fork cannot take
    taken = threading.Event()
    done = threading.Event()

    def collection_in_flight() -> None:  # another thread holds them, as a collection would
        for lock in busy:
            lock.acquire()
        taken.set()
        done.wait(10)
        for lock in busy:
            lock.release()

    thread = threading.Thread(target=collection_in_flight)
    thread.start()
    try:
        assert taken.wait(10)
        caplog.set_level(logging.WARNING, logger="otel_monitoring.telemetry")
        started = time.monotonic()
        telemetry._hold_locks_for_fork()
        waited = time.monotonic() - started
        telemetry._release_locks_held_for_fork()
    finally:
        done.set()
        thread.join(10)
        telemetry.shutdown()

    assert waited < WAIT * 1.5  # one deadline for all: not WAIT for each busy lock
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "fork" in r.getMessage()]
    assert len(warnings) == 1
    assert all(f"collection lock {index} of the metrics bridge" in warnings[0] for index in range(len(busy)))
    assert "may hang" in warnings[0]
