"""The README's main job end to end: ``otel-monitoring demo --duration 30`` on Debian's Prometheus, Alertmanager
and Pushgateway shows live figures and delivers an alert to its sink, exits 0 and leaves no process, port or
file behind; and :class:`~otel_monitoring.demo.DemoStack`, the same stack for other tests, fills Prometheus with
what the dashboards read (recording rules, pseudonymized costs, the batch job's push)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_monitoring.demo import DebianBinaries, DemoStack, TrafficPlan
from otel_monitoring.demo.batch import JOB as BATCH_JOB
from otel_monitoring.demo.customers import CUSTOMERS
from tests.demo_support import Descendants, descendants
from tests.support import ROOT

__all__ = ["descendants"]  # fixture

pytestmark = pytest.mark.e2e

_BINARIES = DebianBinaries.find()
_MISSING = _BINARIES.missing()
needs_binaries = pytest.mark.skipif(
    bool(_MISSING), reason=f"not installed: {', '.join(_MISSING)} (apt-get install -y --no-install-recommends ...)"
)


def _port_is_free(port: int) -> bool:
    """Nothing listens on it: a server could bind it now. SO_REUSEADDR, as servers set it, so that connections
    of the stopped servers still in TIME_WAIT do not count."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@needs_binaries
def test_demo_for_30_seconds_shows_live_figures_delivers_an_alert_and_leaves_nothing_running(
    descendants: Descendants,
) -> None:
    launched = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "otel_monitoring", "demo", "--duration", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    wall = time.monotonic() - launched
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert result.stderr == "", result.stderr

    # Live figures: requests per second, p95 and error rate, non-zero while the failure episode runs.
    figures = [
        (float(rps), int(p95), float(errors))
        for rps, p95, errors in re.findall(r"rps ([\d.]+)  p95 (\d+) ms  errors ([\d.]+)%", out)
    ]
    assert len(figures) >= 20, out
    assert max(rps for rps, _, _ in figures) > 10
    assert all(p95 > 0 for _, p95, _ in figures)
    assert max(errors for _, _, errors in figures) > 10  # the episode's errors, above the alerts' 10%
    assert re.search(r"top cost u_[0-9a-f]+…?=\$\d", out), out

    # An alert delivered to the sink: the demo's short-window copy of high_error_rate, from Prometheus through
    # Alertmanager to the Slack-shaped sink.
    delivered = re.findall(r"\[\s*(\d+)s\] delivered to the alert sink \(Slack webhook\): (.+)", out)
    titles = [title for _, title in delivered]
    assert "[FIRING:1] critical DemoHighErrorRate (content-api)" in titles, out

    # Nothing left: no process, no port, no temp directory.
    assert len(descendants.seen) >= 5, descendants.seen  # sidecar, service, Prometheus, Alertmanager, Pushgateway
    assert descendants.alive() == []
    ports = [int(port) for port in re.findall(r"^  \S.*?http://127\.0\.0\.1:(\d+)", out, flags=re.MULTILINE)]
    assert len(set(ports)) >= 5, out
    assert [port for port in set(ports) if not _port_is_free(port)] == []
    [removed] = re.findall(r"; removed (\S+)$", out, flags=re.MULTILINE)
    assert not Path(removed).exists()

    ready = re.search(r"ready in ([\d.]+) s", out)
    first_figures = re.search(r"first figures ([\d.]+) s after traffic began", out)
    first_alert = re.search(r"first alert delivered ([\d.]+) s after traffic began", out)
    assert ready and first_figures and first_alert, out
    print(
        f"\ndemo timings: start-up {ready.group(1)} s, first figures {first_figures.group(1)} s and first delivered "
        f"alert {first_alert.group(1)} s after traffic began; {wall:.1f} s in all"
    )


def _query(stack: DemoStack, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def _eventually(stack: DemoStack, promql: str, timeout: float = 40.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (result := _query(stack, promql)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{promql}: no data within {timeout} s")
        time.sleep(0.5)
    return result


@needs_binaries
def test_demo_stack_fills_prometheus_with_recording_rules_pseudonymized_costs_and_the_batch_jobs_push(
    descendants: Descendants,
) -> None:
    with DemoStack(plan=TrafficPlan.steady(rate=20), batch_every=None) as stack:
        assert stack.prometheus_url and stack.alertmanager_url and stack.pushgateway_url
        data_dir = stack.data_dir
        assert stack.run_batch_job() == 0
        pushed = _eventually(stack, f'usage_report_generations{{job="{BATCH_JOB}"}}')
        assert {series["metric"]["status"] for series in pushed} >= {"ok"}

        # The built-in pack's recording rules are loaded and evaluated over the service.
        assert _eventually(stack, 'job:http_server_requests:rate5m{job="content-api"} > 0')
        costs = _eventually(stack, 'client_id:otel_monitoring_business_cost_USD:increase1h{client_id!=""}')
        assert all(re.fullmatch(r"u_[0-9a-f]+|other", series["metric"]["client_id"]) for series in costs)

        # No customer id reaches Prometheus in the clear, in any label of any series.
        response = httpx.get(f"{stack.prometheus_url}/api/v1/label/client_id/values", timeout=5)
        values = response.json()["data"]
        assert values and not {customer.id for customer in CUSTOMERS} & set(values)

        # The live view switches to PromQL once a whole window of scrapes is stored.
        deadline = time.monotonic() + 30
        while (figures := stack.read_figures()).source != "Prometheus":
            assert time.monotonic() < deadline, figures
            time.sleep(0.5)
        assert figures.requests_per_second and figures.requests_per_second > 5
        assert figures.alertmanager_active is not None
    assert data_dir is not None and not data_dir.exists()
    assert descendants.alive() == []
