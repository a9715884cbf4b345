"""doctor's diagnosis from what the servers said: the fix for a down target, the sidecar's otelcol_* metrics,
Alertmanager receivers without a channel, the order problems are explained in, and bad input."""

from __future__ import annotations

import argparse
import base64
import doctest
import json

import httpx
import pytest

from otel_monitoring import doctor, ops_cli
from otel_monitoring.doctor import DoctorReport, Finding, run_doctor
from otel_monitoring.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("last_error", "in_fix"),
    [
        ('Get "http://10.0.0.5:8889/metrics": dial tcp 10.0.0.5:8889: connect: connection refused', "collector"),
        ('Get "http://app:8000/metrics": context deadline exceeded', "scrape_timeout"),
        ("server returned HTTP status 401 Unauthorized", "OTEL_MONITORING_METRICS_TOKEN"),
        ("server returned HTTP status 404 Not Found", "metrics_path"),
        ('Get "http://gone:8000/metrics": dial tcp: lookup gone on 127.0.0.53:53: no such host', "DNS"),
        ("something nobody has seen", "curl http://10.0.0.5:8889/metrics"),
    ],
)
def test_a_down_target_gets_the_fix_its_last_error_points_to(last_error: str, in_fix: str) -> None:
    cause, fix = doctor._target_fix(last_error, "http://10.0.0.5:8889/metrics")

    assert in_fix in fix
    assert cause


def exposition(queue_size: int, capacity: int, failed: int = 0, accepted: int = 100, refused: int = 0) -> str:
    return f"""# TYPE otelcol_receiver_accepted_metric_points_total counter
otelcol_receiver_accepted_metric_points_total{{receiver="otlp",transport="http"}} {accepted}
# TYPE otelcol_receiver_refused_metric_points_total counter
otelcol_receiver_refused_metric_points_total{{receiver="otlp",transport="http"}} {refused}
# TYPE otelcol_exporter_send_failed_metric_points_total counter
otelcol_exporter_send_failed_metric_points_total{{exporter="prometheusremotewrite"}} {failed}
# TYPE otelcol_exporter_queue_size gauge
otelcol_exporter_queue_size{{exporter="prometheusremotewrite",data_type="metrics"}} {queue_size}
# TYPE otelcol_exporter_queue_capacity gauge
otelcol_exporter_queue_capacity{{exporter="prometheusremotewrite",data_type="metrics"}} {capacity}
"""


def test_a_nearly_full_sending_queue_fails_naming_the_exporter() -> None:
    findings = doctor._check_sidecar_metrics(exposition(queue_size=95, capacity=100))

    exporter = next(f for f in findings if f.check == "exporter prometheusremotewrite")
    assert exporter.status == "fail"
    assert exporter.detail.startswith("queue 95/100")
    assert "backend is down" in exporter.cause


def test_failed_sends_and_refusals_are_warnings() -> None:
    findings = doctor._check_sidecar_metrics(exposition(queue_size=1, capacity=100, failed=7, refused=3))

    by_check = {f.check: f for f in findings}
    assert by_check["exporter prometheusremotewrite"].status == "warn"
    assert "failed 7" in by_check["exporter prometheusremotewrite"].detail
    assert (by_check["receiver"].status, by_check["receiver"].detail) == ("warn", "accepted 100 points, refused 3")
    assert "memory limiter" in by_check["receiver"].cause


def test_metrics_without_otelcol_families_are_not_the_sidecar() -> None:
    findings = doctor._check_sidecar_metrics("# TYPE up gauge\nup 1\n")

    assert [(f.status, f.check) for f in findings] == [("fail", "metrics")]
    assert "OTEL_MONITORING_SIDECAR_METRICS_URL" in findings[0].fix


def test_receivers_used_by_a_route_but_without_a_channel_are_listed() -> None:
    config = """
route:
  receiver: warning
  routes:
    - matchers: ['severity="critical"']
      receiver: critical
    - matchers: ['severity="info"']
      receiver: info
    - matchers: ['alertname="Watchdog"']
      receiver: "null"
receivers:
  - name: warning
  - name: critical
    slack_configs: [{channel: '#alerts'}]
  - name: info
  - name: unused
  - name: "null"
"""
    assert doctor._unroutable_receivers(config) == ["info", "warning"]


def test_problems_list_failures_first_and_the_seeds_common_problems_before_the_rest() -> None:
    report = DoctorReport(
        [
            Finding("sidecar", "health", "fail", "down", "c", "f", doctor.COMPONENT_DOWN),
            Finding("grafana", "dashboards", "warn", "missing", "c", "f", doctor.DASHBOARDS_SLOW),
            Finding("prometheus", "rules", "fail", "none", "c", "f", doctor.ALERTS_NOT_FIRING),
            Finding("prometheus", "target sidecar x", "fail", "down", "c", "f", doctor.METRICS_MISSING),
            Finding("prometheus", "health", "ok", "200"),
        ]
    )

    assert [(f.component, f.check) for f in report.problems()] == [
        ("prometheus", "target sidecar x"),
        ("prometheus", "rules"),
        ("sidecar", "health"),
        ("grafana", "dashboards"),
    ]
    assert not report.ok
    text = report.render_text()
    assert text.index("1. [FAIL] metrics not appearing") < text.index("2. [FAIL] alerts not firing")
    document = json.loads(report.to_json())
    assert document["summary"] == {"ok": 1, "warn": 1, "fail": 3, "skip": 0}
    assert document["ok"] is False


def test_warnings_and_skips_alone_are_healthy() -> None:
    report = DoctorReport([Finding("grafana", "health", "skip", "x"), Finding("sidecar", "receiver", "warn", "y")])

    assert report.ok
    assert report.render_text().rstrip().splitlines()[-1].startswith("healthy: 0 ok, 1 warnings, 0 failed, 1 skipped")


def refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_unreachable_optional_components_at_default_urls_are_skipped_required_ones_fail() -> None:
    report = run_doctor(Settings(), transport=httpx.MockTransport(refusing))

    statuses = {f.component: f.status for f in report.findings}
    assert statuses == {
        "prometheus": "fail",
        "alertmanager": "fail",
        "grafana": "skip",
        "pushgateway": "skip",
        "sidecar": "skip",
    }


def test_a_url_set_by_the_user_makes_an_optional_component_required() -> None:
    settings = load_settings(environ={"OTEL_MONITORING_SIDECAR_HEALTH_URL": "http://sidecar:13133/"})

    report = run_doctor(settings, only=["sidecar"], transport=httpx.MockTransport(refusing))

    [finding] = report.findings
    assert (finding.status, finding.detail) == ("fail", "http://sidecar:13133/: connection refused")
    assert finding.fix.startswith("is it running? start it with `otel-monitoring collector`")


def test_prometheus_answering_401_names_the_credentials_variables() -> None:
    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="Unauthorized")

    report = run_doctor(Settings(), only=["prometheus"], transport=httpx.MockTransport(unauthorized))

    [finding] = report.findings
    assert finding.status == "fail"
    assert "OTEL_MONITORING_PROMETHEUS_USERNAME" in finding.fix
    assert "OTEL_MONITORING_PROMETHEUS_PASSWORD" in finding.fix


def test_prometheus_credentials_from_settings_are_sent_as_basic_auth() -> None:
    seen: list[str | None] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(503, text="not ready")

    settings = load_settings(
        environ={"OTEL_MONITORING_PROMETHEUS_USERNAME": "doctor", "OTEL_MONITORING_PROMETHEUS_PASSWORD": "s3cret"}
    )
    run_doctor(settings, only=["prometheus"], transport=httpx.MockTransport(record))

    assert seen and seen[0] == "Basic " + base64.b64encode(b"doctor:s3cret").decode()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    ops_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["doctor", "--only", "prometheus,grafna"], "unknown component 'grafna' (valid: prometheus, alertmanager"),
        (["doctor", "--timeout", "0"], "must be a number of seconds > 0 (got '0')"),
        (["doctor", "--max-sample-age", "soon"], "must be a number of seconds > 0 (got 'soon')"),
    ],
)
def test_bad_doctor_arguments_exit_2_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        parse(argv)

    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_only_removes_duplicates_and_keeps_the_order() -> None:
    assert parse(["doctor", "--only", "sidecar, prometheus,sidecar"]).only == ["sidecar", "prometheus"]


def test_a_bad_setting_stops_doctor_before_any_request() -> None:
    from otel_monitoring.settings import SettingsError

    args = parse(["doctor"])
    args.environ = {"OTEL_MONITORING_PROMETHEUS_URL": "prometheus:9090"}

    with pytest.raises(SettingsError, match="OTEL_MONITORING_PROMETHEUS_URL: must be an http"):
        args.func(args)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(doctor)

    assert result.attempted > 0
    assert result.failed == 0


URL_SECRETS = {
    "ALERTMANAGER_URL": "http://admin:hunter2secret@127.0.0.1:1",
    "OTEL_MONITORING_PROMETHEUS_URL": "http://admin:prom-secret@127.0.0.1:2",
    "PROMETHEUS_PUSH_GATEWAY": "http://admin:push-secret@127.0.0.1:3",
    "OTEL_MONITORING_SIDECAR_HEALTH_URL": "http://admin:side-secret@127.0.0.1:4/",
}


def answering(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": {}})


@pytest.mark.parametrize("transport", [refusing, answering], ids=["unreachable", "answering"])
def test_passwords_in_urls_appear_nowhere_in_the_report(transport: httpx.MockTransport) -> None:
    settings = load_settings(environ=URL_SECRETS)

    report = run_doctor(settings, transport=httpx.MockTransport(transport))

    output = report.render_text() + report.to_json()
    for secret in ("hunter2secret", "prom-secret", "push-secret", "side-secret"):
        assert secret not in output
    assert "http://admin:********@127.0.0.1:1" in output  # the URL is still shown, its password masked


def test_the_grafana_check_warns_about_each_dashboard_the_dashboards_package_builds() -> None:
    from otel_monitoring._dashboard_uids import DASHBOARD_UIDS
    from otel_monitoring.dashboards import dashboard_specs

    present, absent = DASHBOARD_UIDS[1:], DASHBOARD_UIDS[0]

    def grafana(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/search":
            return httpx.Response(200, json=[{"uid": uid} for uid in present])
        return httpx.Response(200, json={"database": "ok", "version": "11.0.0"})

    settings = load_settings(environ={"GRAFANA_API_KEY": "glsa_doctor"})
    report = run_doctor(settings, only=["grafana"], transport=httpx.MockTransport(grafana))

    dashboards = next(f for f in report.findings if f.check == "dashboards")
    assert (dashboards.status, dashboards.detail) == ("warn", f"{len(present)} dashboards; missing: {absent}")
    assert list(DASHBOARD_UIDS) == [spec.uid for spec in dashboard_specs()]
