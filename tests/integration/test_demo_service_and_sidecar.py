"""The demo without Debian's Prometheus tools: the sample service under ``opentelemetry-instrument`` and the collector
sidecar only, read from the sidecar's scrape; it says what is missing, shows live figures, and leaves nothing
running. (The whole stack, with Prometheus and a delivered alert: tests/e2e/test_demo.py.)"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from otel_monitoring.demo import DebianBinaries, DemoStack, Figures, TrafficPlan, run_demo
from otel_monitoring.demo.customers import CUSTOMERS
from tests.demo_support import Descendants, descendants
from tests.support import ROOT

__all__ = ["descendants"]  # fixture


def test_without_the_debian_binaries_it_runs_service_and_sidecar_says_what_is_missing_and_cleans_up(
    descendants: Descendants,
) -> None:
    out = io.StringIO()
    status = run_demo(duration=6, rate=20, out=out, interactive=False, binaries=DebianBinaries.none())
    text = out.getvalue()
    assert status == 0, text
    [missing] = [line for line in text.splitlines() if line.startswith("not installed:")]
    for package in ("prometheus", "prometheus-alertmanager", "prometheus-pushgateway"):
        assert package in missing
    assert "apt-get install" in missing
    assert "Prometheus " not in text.split("traffic:")[0].split("Open:")[1]  # no URL for what does not run
    rates = [float(rate) for rate in re.findall(r"rps ([\d.]+)", text)]
    assert rates and max(rates) > 5, text
    assert re.search(r"p95 \d+ ms", text), text
    [removed] = re.findall(r"removed (\S+)", text)
    assert not Path(removed).exists()
    assert len(descendants.seen) >= 2  # the sidecar and the service (and whatever they started)
    assert descendants.alive() == []


def test_a_failure_episode_raises_the_error_rate_and_p95_the_sidecar_shows(descendants: Descendants) -> None:
    with DemoStack(plan=TrafficPlan.steady(rate=25), binaries=DebianBinaries.none()) as stack:
        data_dir = stack.data_dir
        assert stack.prometheus_url is None and stack.alertmanager_url is None and stack.pushgateway_url is None
        baseline = _wait_for(stack, lambda figures: figures.live and figures.p95_seconds is not None, "traffic")
        assert baseline.error_ratio is not None and baseline.error_ratio < 0.05
        with stack.failure_episode():
            failing = _wait_for(stack, lambda figures: (figures.error_ratio or 0) > 0.1, "errors")
        assert failing.p95_seconds is not None and baseline.p95_seconds is not None
        assert failing.p95_seconds > baseline.p95_seconds
        # Costs are per customer, and only pseudonyms reach the sidecar.
        customers = [customer for customer, _ in failing.costs]
        assert customers and all(re.fullmatch(r"u_[0-9a-f]+", customer) for customer in customers)
        scrape = httpx.get(stack.sidecar_metrics_url, timeout=5).text
        assert not any(customer.id in scrape for customer in CUSTOMERS)
    assert data_dir is not None and not data_dir.exists()
    assert descendants.alive() == []


def _wait_for(stack: DemoStack, condition: Callable[[Figures], bool], what: str, timeout: float = 30.0) -> Figures:
    deadline = time.monotonic() + timeout
    while True:
        figures = stack.read_figures()
        if condition(figures):
            return figures
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {timeout} s; last figures {figures}")
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"PROMETHEUS_RETENTION_DAYS": "soon"}, "PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'soon')"),
        (["--duration", "0"], {}, "--duration: must be a number of seconds > 0 (got 0)"),
        (["--rate", "-3"], {}, "--rate: must be requests per second > 0 (got -3)"),
    ],
)
def test_bad_settings_or_options_exit_2_with_one_line(argv: list[str], env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_monitoring", "demo", "--duration", "1", *argv],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"otel-monitoring: error: {message}"]
