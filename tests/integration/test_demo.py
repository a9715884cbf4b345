"""The README's main job: ``otel-monitoring demo`` serves, loads, reports from /metrics and leaves nothing running."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

from tests.support import ROOT, free_port


def test_demo_reports_the_traffic_it_sent_and_frees_its_port() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "otel_monitoring", "demo", "--duration", "2", "--port", str(port), "--rate", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    done = re.search(r"done: (\d+) requests, (\d+) errors, p95 ([\d.]+) ms", result.stdout)
    assert done is not None, result.stdout
    assert int(done.group(1)) >= 20  # about 40/s for 2 s, read back from the service's own /metrics
    assert "content_generations_total{article/ok}" in result.stdout
    with socket.socket() as probe:  # the server is gone: its port can be bound again
        probe.bind(("127.0.0.1", port))


def test_demo_refuses_bad_settings_with_exit_2_and_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otel_monitoring", "demo", "--duration", "1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PROMETHEUS_RETENTION_DAYS": "soon"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "otel-monitoring: error: PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'soon')"
    ]
