"""Batch jobs push to Debian's real Pushgateway: on exporter.push(), at exit, periodically, and fail quietly.

Each job runs as a fresh Python process, as a real batch job would, so settings and the pipeline start
from nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, free_port

pytestmark = pytest.mark.e2e

INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"

BATCH_JOB = """
import logging, os, sys
from otel_monitoring import config, exporter, metrics

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
config.configure_exporter(push_gateway=sys.argv[1], job_name="nightly-report")
rows = metrics.counter("nightly_report_rows_total", "Rows written by the nightly report")
steps = metrics.histogram("nightly_report_step_seconds", "Duration of one report step", buckets=[0.1, 1.0])
rows.inc(40)
steps.observe(0.05)
steps.observe(0.5)
print("pushed", exporter.push(), "pid", os.getpid(), flush=True)
rows.inc(2)  # only the push at exit carries this
"""

UNREACHABLE_JOB = """
import logging, sys
from otel_monitoring import config, exporter, metrics

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
config.configure_exporter(push_gateway=sys.argv[1], job_name="unreachable-report")
metrics.counter("unreachable_report_rows_total", "Rows").inc(3)
print("pushed", exporter.push(), flush=True)
"""

NO_GATEWAY_JOB = """
import logging
from otel_monitoring import exporter, metrics

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
metrics.counter("unconfigured_report_rows_total", "Rows").inc(3)
print("pushed", exporter.push(), flush=True)
"""

LONG_RUNNING_JOB = """
import time
from otel_monitoring import metrics

metrics.counter("periodic_report_items_total", "Items processed").inc(7)
print("recorded", flush=True)
time.sleep(30)  # the test ends the process once it has seen a periodic push
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any monitoring settings, so only the test's own apply."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "PROMETHEUS_", "ALERT", "GRAFANA_"))
    }
    # A fixed pseudonym key, so the only warnings are the ones a test is about.
    return {**inherited, "PYTHONPATH": str(ROOT), "OTEL_MONITORING_PSEUDONYM_KEY": "e2e-test-key-0123456789", **extra}


def run_job(source: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def pushed_samples(gateway: str, job: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The Pushgateway's own exposition, for one job: (sample name, labels) -> value."""
    exposition = httpx.get(f"{gateway}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.labels.get("job") == job
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    matches = [v for (sample, sample_labels), v in samples.items() if sample == name and wanted <= sample_labels]
    assert len(matches) <= 1, f"{name}{labels} matches {len(matches)} samples"
    return matches[0] if matches else None


def test_batch_job_pushes_its_counter_and_histogram_on_push_and_at_exit(pushgateway_url: str) -> None:
    result = run_job(BATCH_JOB, pushgateway_url)

    assert result.returncode == 0, result.stderr
    assert "pushed True" in result.stdout
    assert "WARNING" not in result.stderr
    samples = pushed_samples(pushgateway_url, "nightly-report")
    assert value(samples, "nightly_report_rows_total", job="nightly-report", instance="") == 42
    assert value(samples, "nightly_report_step_seconds_bucket", le="0.1") == 1
    assert value(samples, "nightly_report_step_seconds_bucket", le="1") == 2  # Go formats 1.0 as "1"
    assert value(samples, "nightly_report_step_seconds_bucket", le="+Inf") == 2
    assert value(samples, "nightly_report_step_seconds_count") == 2
    assert value(samples, "nightly_report_step_seconds_sum") == pytest.approx(0.55)
    # The Pushgateway records the time of the last successful push per group.
    assert value(samples, "push_time_seconds", job="nightly-report") == pytest.approx(time.time(), abs=60)


def test_unreachable_gateway_logs_one_warning_without_credentials_and_the_job_exits_zero() -> None:
    port = free_port()  # nothing listens there
    result = run_job(UNREACHABLE_JOB, f"http://batch:hunter2-secret@127.0.0.1:{port}")

    assert result.returncode == 0, result.stderr
    assert "pushed False" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr  # exporter.push() warns; the failing push at exit does not again
    assert f"http://127.0.0.1:{port}" in warnings[0]
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_push_without_a_configured_gateway_returns_false_with_a_warning() -> None:
    result = run_job(NO_GATEWAY_JOB)

    assert result.returncode == 0, result.stderr
    assert "pushed False" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert "PROMETHEUS_PUSH_GATEWAY" in warnings[0]


@pytest.mark.parametrize("launcher", ["python", "opentelemetry-instrument"])
def test_environment_configured_process_pushes_periodically_while_it_runs(pushgateway_url: str, launcher: str) -> None:
    # Nothing in the program pushes: only the periodic pusher can bring the value to the gateway before the
    # process ends. Plain python starts it on the first metric declaration; opentelemetry-instrument at start-up.
    if launcher != "python" and not INSTRUMENT.exists():
        pytest.skip("opentelemetry-instrument is not installed")
    env = clean_env(
        PROMETHEUS_PUSH_GATEWAY=pushgateway_url,
        OTEL_MONITORING_PUSH_INTERVAL="0.2",
        OTEL_MONITORING_PUSH_JOB_NAME=f"periodic-report-{launcher}",
        OTEL_METRICS_EXPORTER="none",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    argv = [sys.executable, "-c", textwrap.dedent(LONG_RUNNING_JOB)]
    if launcher != "python":
        argv.insert(0, str(INSTRUMENT))
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        seen = None
        while seen is None and time.monotonic() < deadline and process.poll() is None:
            seen = value(pushed_samples(pushgateway_url, f"periodic-report-{launcher}"), "periodic_report_items_total")
            time.sleep(0.1)
        still_running = process.poll() is None
    finally:
        process.kill()
        output = process.communicate(timeout=10)[0].decode(errors="replace")

    assert seen == 7, output
    assert still_running, output
