"""``otel-monitoring doctor`` against a real stack: Debian's Prometheus scraping a running ``otel-monitoring
collector``, Debian's Alertmanager and Pushgateway. Healthy, it exits 0; with Prometheus stopped, the sidecar
stopped, or a rule that cannot be evaluated, it exits 1 and names the component, the cause and the fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.alerting_support import start_program, wait_for
from tests.e2e.conftest import start_debian_server
from tests.ops_support import (
    PROMETHEUS_BINARY,
    SIDECAR_JOB,
    OpsStack,
    prometheus_api,
    prometheus_args,
    prometheus_config,
    run_ops_cli,
    start_ops_stack,
)
from tests.sidecar_support import send_as_worker
from tests.support import free_port

# Alertmanager's rendered config gets a Slack channel, so no receiver is left without one.
SETTINGS_ENVIRON = {"ALERT_SLACK_WEBHOOK": "http://127.0.0.1:9/services/T000/B000/doctor-test"}

BROKEN_RULES = """
groups:
  - name: doctor-broken
    rules:
      - record: doctor:broken:ratio
        # Two series on the right, one on the left, matched on no label: "found duplicate series for the match group".
        expr: vector(1) * on() (vector(1) or label_replace(vector(1), "copy", "yes", "", ""))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    with start_ops_stack(tmp_path_factory, settings_environ=SETTINGS_ENVIRON) as ops:
        yield ops


def doctor_json(stack: OpsStack, capsys: pytest.CaptureFixture[str], *argv: str, **environ: str) -> tuple[int, Any]:
    capsys.readouterr()
    status = run_ops_cli(["doctor", "--json", *argv], stack.environ(**environ))
    return status, json.loads(capsys.readouterr().out)


def doctor_text(stack: OpsStack, capsys: pytest.CaptureFixture[str], *argv: str, **environ: str) -> tuple[int, str]:
    capsys.readouterr()
    status = run_ops_cli(["doctor", *argv], stack.environ(**environ))
    return status, capsys.readouterr().out


def by_status(report: Any, status: str) -> list[dict[str, Any]]:
    return [finding for finding in report["findings"] if finding["status"] == status]


def test_a_healthy_stack_exits_0_with_every_component_checked(
    stack: OpsStack, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = doctor_json(stack, capsys, "--only", "prometheus,alertmanager,pushgateway,sidecar")

    assert by_status(report, "fail") == []
    assert status == 0
    assert report["ok"] is True
    checked = {(f["component"], f["check"]) for f in by_status(report, "ok")}
    expected = {("prometheus", c) for c in ("health", "ready", "targets", "rules", "alertmanagers", "samples", "load")}
    expected |= {("alertmanager", "health"), ("alertmanager", "status"), ("pushgateway", "health")}
    expected |= {("sidecar", "health"), ("sidecar", "exporter prometheus")}
    assert expected <= checked
    details = {(f["component"], f["check"]): f["detail"] for f in report["findings"]}
    assert details[("prometheus", "targets")] == "1 of 1 targets up"
    assert details[("prometheus", "rules")].startswith(f"{stack.rule_groups} groups: ")
    assert stack.alertmanager_url in details[("prometheus", "alertmanagers")]


def test_a_stopped_prometheus_is_named_with_the_fix(
    stack: OpsStack, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second Prometheus of the same shape, stopped before doctor runs: the shared one keeps serving the others.
    config = prometheus_config(stack.rules_dir, stack.alertmanager_url.removeprefix("http://"), stack.sidecar.target)
    with start_debian_server(tmp_path_factory, PROMETHEUS_BINARY, prometheus_args(config), package="prometheus") as p:
        stopped_url = p.url
    status, text = doctor_text(
        stack, capsys, "--only", "prometheus,sidecar", OTEL_MONITORING_PROMETHEUS_URL=stopped_url
    )

    assert status == 1
    assert f"{stopped_url}/-/healthy: connection refused" in text
    problems = text.split("Problems, most likely first:")[1]
    assert "prometheus health" in problems
    assert "prometheus is not running, or OTEL_MONITORING_PROMETHEUS_URL points elsewhere" in problems
    assert "is it running? start it with `prometheus --config.file=prometheus.yml`" in problems
    # The sidecar is running: it is not blamed (a warning that no worker sends to it is fine).
    assert not [line for line in problems.splitlines() if "[FAIL]" in line and "sidecar" in line]
    assert text.rstrip().splitlines()[-1].startswith("something is wrong: ")


def test_a_stopped_sidecar_shows_as_a_down_target_with_the_fix(
    stack: OpsStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.sidecar.stop()
    try:
        down = stack.wait_for_target("down")
        status, report = doctor_json(stack, capsys, "--only", "prometheus,sidecar")
    finally:
        stack.sidecar.start()
        stack.wait_for_target("up")

    assert status == 1
    failed = {(f["component"], f["check"]): f for f in by_status(report, "fail")}
    target = failed[("prometheus", f"target {SIDECAR_JOB} {stack.sidecar.target}")]
    assert "connection refused" in target["detail"]
    assert target["detail"] == f"down: {down['lastError']}"
    assert target["problem"] == "metrics not appearing"
    assert "start the service, or the sidecar with `otel-monitoring collector`" in target["fix"]
    sidecar = failed[("sidecar", "health")]
    assert sidecar["detail"] == f"{stack.sidecar.health_url}: connection refused"
    assert "otel-monitoring collector" in sidecar["fix"]
    # The sidecar is the stack's only target: with it down no scrape succeeds, and stale up=0 samples written
    # by the failing scrapes must not pass for fresh data.
    assert failed[("prometheus", "samples")]["problem"] == "metrics not appearing"


def test_a_rule_that_fails_to_evaluate_is_named_with_its_error(
    stack: OpsStack, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = stack.rules_dir / "doctor-broken.rules.yml"
    broken.write_text(BROKEN_RULES, encoding="utf-8")
    try:
        stack.reload_prometheus()

        def errors() -> list[dict[str, Any]]:
            groups = prometheus_api(stack.prometheus.url, "rules")["groups"]
            return [
                r for g in groups for r in g["rules"] if r["name"] == "doctor:broken:ratio" and r["health"] == "err"
            ]

        rule = wait_for(errors, 1, 20.0, "the broken rule evaluated")[0]
        status, text = doctor_text(stack, capsys, "--only", "prometheus")
    finally:
        broken.unlink()
        stack.reload_prometheus()

    assert status == 1
    line = next(line for line in text.splitlines() if "rule doctor:broken:ratio" in line and "FAIL" in line)
    assert f"group doctor-broken ({broken}): {rule['lastError']}" in line
    assert "found duplicate series for the match group" in rule["lastError"]
    assert "[FAIL] alerts not firing or not delivered: prometheus rule doctor:broken:ratio" in text
    assert "otel-monitoring rules check" in text


def test_the_sidecar_receiver_check_reads_its_own_metrics(stack: OpsStack, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = doctor_json(stack, capsys, "--only", "sidecar")

    receiver = next(f for f in report["findings"] if f["check"] == "receiver")
    # Nothing has sent to this sidecar yet: doctor warns that no worker reaches it, naming the variable to set.
    assert (receiver["status"], receiver["detail"]) == ("warn", "accepted 0 points, refused 0")
    assert "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" in receiver["fix"]
    assert status == 0  # a warning is not a failure

    exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{stack.sidecar.otlp}/v1/metrics")
    send_as_worker(exporter, "worker-1", [1, 2, 3], {"customer.tier": "gold"})
    status, report = doctor_json(stack, capsys, "--only", "sidecar")

    receiver = next(f for f in report["findings"] if f["check"] == "receiver")
    accepted = sidecar_counter(stack, "otelcol_receiver_accepted_metric_points_total")
    assert accepted > 0
    assert (receiver["status"], receiver["detail"]) == ("ok", f"accepted {accepted:.0f} points, refused 0")
    assert status == 0


def sidecar_counter(stack: OpsStack, name: str) -> float:
    text = httpx.get(stack.sidecar.metrics_url, timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_grafana_is_skipped_at_its_default_address_and_fails_when_its_url_is_set(
    stack: OpsStack, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = doctor_json(stack, capsys)

    grafana = [f for f in report["findings"] if f["component"] == "grafana"]
    assert [(f["status"], f["check"]) for f in grafana] == [("skip", "health")]
    assert "set GRAFANA_URL" in grafana[0]["detail"]
    assert by_status(report, "fail") == []
    assert status == 0

    status, report = doctor_json(stack, capsys, GRAFANA_URL="http://127.0.0.1:9")

    grafana = [f for f in report["findings"] if f["component"] == "grafana"]
    # Set by the user: not answering is a failure, with the variable to fix.
    assert [(f["status"], f["check"]) for f in grafana] == [("fail", "health")]
    assert "GRAFANA_URL" in grafana[0]["fix"]
    assert status == 1


def test_prometheus_behind_basic_auth_needs_the_credentials_variables(
    stack: OpsStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = tmp_path / "web.yml"
    password_hash = bcrypt.hashpw(b"doctor-password", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(yaml.safe_dump({"basic_auth_users": {"doctor": password_hash}}), encoding="utf-8")
    config = prometheus_config(stack.rules_dir, stack.alertmanager_url.removeprefix("http://"), stack.sidecar.target)
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    argv = [str(PROMETHEUS_BINARY), *prometheus_args(config)(address, tmp_path), f"--web.config.file={web}"]

    with start_program(argv, tmp_path / "prometheus.log", cwd=tmp_path):
        # Up once it answers, which behind basic auth is a 401 without credentials.
        wait_for(lambda: _status_of(f"{url}/-/healthy"), 1, 30.0, "secured Prometheus listening")
        status, report = doctor_json(stack, capsys, "--only", "prometheus", OTEL_MONITORING_PROMETHEUS_URL=url)
        [health] = report["findings"]
        assert (status, health["status"], health["check"]) == (1, "fail", "health")
        assert "HTTP 401" in health["detail"]
        assert "OTEL_MONITORING_PROMETHEUS_USERNAME and OTEL_MONITORING_PROMETHEUS_PASSWORD" in health["fix"]

        status, report = doctor_json(
            stack,
            capsys,
            "--only",
            "prometheus",
            OTEL_MONITORING_PROMETHEUS_URL=url,
            OTEL_MONITORING_PROMETHEUS_USERNAME="doctor",
            OTEL_MONITORING_PROMETHEUS_PASSWORD="doctor-password",
        )
        checks = {f["check"]: f["status"] for f in report["findings"]}
        assert checks["health"] == checks["rules"] == "ok"


def _status_of(url: str) -> list[int]:
    try:
        return [httpx.get(url, timeout=1).status_code]
    except httpx.HTTPError:
        return []
