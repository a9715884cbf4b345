"""The whole alerting path on 127.0.0.1: a service with the monitoring installed gets an error burst, and the
notifications reach Slack, PagerDuty, email and SMS; after recovery the resolved ones follow.

- The service is ``tests/e2e/alert_pipeline_app.py`` under uvicorn (the middleware, ``/metrics``), its route
  switched to fail (503 after 0.3 s, as a model provider timing out) and back, by a client sending a steady
  20 requests per second whatever the answers take.
- Rules come from code through the real CLI: ``otel-monitoring rules render`` with the built-in pack, the app's
  registered ``high_error_rate`` (``--app``), its backlog rules (``--app module:attr``) and the seed's
  ``HighLatency`` from a YAML file in the seed's shape (``--rules``).
- Debian's Prometheus scrapes the service every second, evaluates every second and resends alerts every second.
- Debian's Alertmanager runs the config ``otel-monitoring alertmanager render`` writes from a settings file
  (group wait and interval 1 s); Slack and PagerDuty are JSON sinks, email an aiosmtpd server, and SMS goes
  through ``otel-monitoring alert-relay`` (a subprocess, the same settings file) to a Twilio-shaped sink.

The stack starts once for the module. The seconds from the first error to each delivery are printed and written
to ``alert-pipeline-timings.json`` in the module's temp directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from otel_monitoring import cli
from tests.alerting_support import (
    AMTOOL_BINARY,
    HTTPSink,
    ReceivedEmail,
    SinkRequest,
    SMTPSink,
    pagerduty_sink,
    slack_sink,
    sms_gateway_sink,
    smtp_sink,
    start_alertmanager,
    start_program,
    wait_for,
)
from tests.e2e.conftest import start_debian_server
from tests.support import ROOT, free_port, uvicorn_argv

__all__ = ["pagerduty_sink", "slack_sink", "sms_gateway_sink", "smtp_sink"]  # fixtures

pytestmark = pytest.mark.e2e

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
APP_MODULE = "tests.e2e.alert_pipeline_app"
JOB = "content-api"
ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
RELAY_TOKEN = "relay-token-for-the-e2e-test"
SMS_SID = "AC0123456789"
SMS_TO = "+15551230001"
EMAIL_TO = "oncall@example.com"
REQUESTS_PER_SECOND = 20.0
FAILURE_DELAY_SECONDS = 0.3  # above HighLatency's threshold below
TIMEOUT = 40.0

# The seed's HighLatency, in the seed's YAML shape, over a window short enough for a test.
SEED_LATENCY_RULES = """
- alert: HighLatency
  expr: histogram_quantile(0.95, sum by (job, le) (rate(http_server_request_duration_seconds_bucket[10s]))) > 0.25
  labels:
    severity: warning
  annotations:
    summary: "Alta latência detectada em {{ $labels.job }}"
    description: "O p95 das requisições de {{ $labels.job }} passou de 250 ms nos últimos 10s"
"""


# --- The service's traffic ----------------------------------------------------------------------------------------


class Traffic:
    """``GET /generate`` at a fixed rate in a thread, whatever the answers take (an open loop, as users are): when
    the service slows down, errors do not thin out the way they would with one client waiting on each answer."""

    def __init__(self, url: str, rate_per_second: float) -> None:
        self.url = url
        self.interval = 1.0 / rate_per_second
        self.statuses: list[tuple[float, int]] = []  # (time.monotonic() of the answer, status)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="traffic", daemon=True)

    async def _request(self, client: httpx.AsyncClient) -> None:
        with contextlib.suppress(httpx.HTTPError):
            response = await client.get(f"{self.url}/generate")
            with self._lock:
                self.statuses.append((time.monotonic(), response.status_code))

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            pending: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._request(client))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*pending)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def first(self, predicate: Callable[[int], bool], after: float = 0.0) -> float | None:
        """When the first answer with a matching status came, at or after ``after``."""
        with self._lock:
            return next((at for at, status in self.statuses if at >= after and predicate(status)), None)

    def count(self, predicate: Callable[[int], bool]) -> int:
        with self._lock:
            return sum(1 for _, status in self.statuses if predicate(status))


# --- The stack ----------------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    app_url: str
    prometheus_url: str
    alertmanager_url: str
    settings_file: Path
    tmp: Path
    traffic: Traffic
    slack: HTTPSink
    pagerduty: HTTPSink
    sms: HTTPSink
    smtp: SMTPSink
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def record_timings(self, scenario: str, figures: dict[str, float]) -> Path:
        """Print the figures and write every scenario's to a JSON file in the temp directory (not the repo)."""
        self.timings[scenario] = {name: round(seconds, 2) for name, seconds in figures.items()}
        path = self.tmp / "alert-pipeline-timings.json"
        path.write_text(json.dumps(self.timings, indent=2) + "\n", encoding="utf-8")
        print(f"\n{scenario}: seconds {json.dumps(self.timings[scenario])} (also in {path})")
        return path


def _settings_document(tmp: Path, relay_port: int, sinks: dict[str, str], smtp_port: int) -> dict[str, Any]:
    return {
        "alerting": {
            "slack_webhook": f"{sinks['slack']}/services/T0/B0/e2e",
            "email": [EMAIL_TO],
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_from": "alertmanager@example.com",
            "smtp_require_tls": False,
            "pagerduty_routing_key": ROUTING_KEY,
            "pagerduty_url": f"{sinks['pagerduty']}/v2/enqueue",
            "sms_url": sinks["sms"],
            "sms_account_sid": SMS_SID,
            "sms_auth_token": "sms-token",
            "sms_from": "+15550001111",
            "sms_to": [SMS_TO],
            # The built-in SLO pages too while the test runs: leave room for it in the rate limit.
            "sms_rate_limit_per_minute": 60,
            "relay_url": f"http://127.0.0.1:{relay_port}",
            "relay_token": RELAY_TOKEN,
            "history_database_url": f"sqlite:///{tmp / 'alert-history.sqlite3'}",
            "dashboard_url": "http://grafana.test/d/otel",
        }
    }


def _cli(*argv: str) -> str:
    """Run the CLI in this process with no environment variables; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(list(argv), environ={})
    assert status == 0, f"otel-monitoring {' '.join(argv)} exited with {status}: {out.getvalue()}"
    return out.getvalue()


def _prometheus_args(rules_dir: Path, alertmanager: str, app: str) -> Callable[[str, Path], list[str]]:
    def args(address: str, data_dir: Path) -> list[str]:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_dir / "*.rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [app]}]}],
        }
        path = data_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return [
            f"--config.file={path}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address={address}",
            # Without it the first alert after start-up waits up to a minute before it is sent.
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ]

    return args


def _prometheus(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


def _wait_until_scraping(pipeline_url: str, alertmanager_url: str, timeout: float = 30.0) -> None:
    """Prometheus discovers its targets and Alertmanagers in batches about 5 s apart: wait for both."""
    alertmanager_api = f"{alertmanager_url}/api/v2/alerts"

    def ready() -> list[str]:
        found = []
        up = _prometheus(pipeline_url, "query", query=f'up{{job="{JOB}"}} == 1')["result"]
        if up:
            found.append("target")
        active = _prometheus(pipeline_url, "alertmanagers")["activeAlertmanagers"]
        if any(item["url"] == alertmanager_api for item in active):
            found.append("alertmanager")
        return found

    wait_for(ready, 2, timeout, "Prometheus discovery")


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    slack_sink: HTTPSink,
    pagerduty_sink: HTTPSink,
    sms_gateway_sink: HTTPSink,
    smtp_sink: SMTPSink,
) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("alert-pipeline")
    relay_port, app_port = free_port(), free_port()
    sinks = {"slack": slack_sink.url, "pagerduty": pagerduty_sink.url, "sms": sms_gateway_sink.url}
    settings_file = tmp / "otel-monitoring.yaml"
    settings_file.write_text(yaml.safe_dump(_settings_document(tmp, relay_port, sinks, smtp_sink.port)))
    seed_rules = tmp / "seed-latency.yaml"
    seed_rules.write_text(SEED_LATENCY_RULES, encoding="utf-8")
    rules_dir = tmp / "rules"
    relay_argv = [sys.executable, "-m", "otel_monitoring", "alert-relay", "--config", str(settings_file)]
    relay_argv += ["--listen", f"127.0.0.1:{relay_port}"]
    app_env = {"OTEL_SERVICE_NAME": JOB, "OTEL_MONITORING_PSEUDONYM_KEY": "e2e-pseudonym-key-0123456789"}

    with contextlib.ExitStack() as stack:
        # The slow starters side by side: the relay, the service, and the rules render (imports the app).
        relay = stack.enter_context(start_program(relay_argv, tmp / "relay.log", cwd=tmp))
        app = stack.enter_context(
            start_program(uvicorn_argv(f"{APP_MODULE}:app", app_port), tmp / "app.log", env=app_env)
        )
        render = subprocess.Popen(
            [sys.executable, "-m", "otel_monitoring", "rules", "render", "--out", str(rules_dir),
             "--app", APP_MODULE, "--app", f"{APP_MODULE}:backlog_rules", "--rules", str(seed_rules)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

        alertmanager_file = tmp / "alertmanager" / "alertmanager.yml"
        _cli("--config", str(settings_file), "alertmanager", "render", "--out", str(alertmanager_file),
             "--group-wait", "1s", "--group-interval", "1s")  # fmt: skip
        if AMTOOL_BINARY.exists():
            subprocess.run(
                [str(AMTOOL_BINARY), "check-config", str(alertmanager_file)], check=True, capture_output=True
            )
        alertmanager = stack.enter_context(start_alertmanager(alertmanager_file, tmp / "alertmanager-data"))

        output, _ = render.communicate(timeout=60)
        assert render.returncode == 0, output.decode(errors="replace")
        app_url = f"http://127.0.0.1:{app_port}"
        app.wait_ready(f"{app_url}/metrics")
        traffic = Traffic(app_url, REQUESTS_PER_SECOND)
        traffic.start()
        stack.callback(traffic.stop)

        alertmanager_address = alertmanager.url.removeprefix("http://")
        prometheus = stack.enter_context(
            start_debian_server(
                tmp_path_factory,
                PROMETHEUS_BINARY,
                _prometheus_args(rules_dir, alertmanager_address, f"127.0.0.1:{app_port}"),
                package="prometheus",
            )
        )
        relay.wait_ready(f"http://127.0.0.1:{relay_port}/healthz")
        _wait_until_scraping(prometheus.url, alertmanager.url)
        yield Pipeline(
            app_url,
            prometheus.url,
            alertmanager.url,
            settings_file,
            tmp,
            traffic,
            slack_sink,
            pagerduty_sink,
            sms_gateway_sink,
            smtp_sink,
        )


# --- Reading the sinks --------------------------------------------------------------------------------------------


def _slack(pipeline: Pipeline, name: str, status: str, severity: str) -> list[SinkRequest]:
    title = f"[{status}{':1' if status == 'FIRING' else ''}] {severity} {name} ({JOB})"
    return pipeline.slack.received(lambda request: request.json()["attachments"][0]["title"] == title)


def _pagerduty(pipeline: Pipeline, name: str, action: str) -> list[SinkRequest]:
    return pipeline.pagerduty.received(
        lambda request: f" {name} " in request.json()["payload"]["summary"] and request.json()["event_action"] == action
    )


def _sms(pipeline: Pipeline, name: str, status: str) -> list[SinkRequest]:
    return pipeline.sms.received(lambda request: request.form()["Body"].startswith(f"[{status}] critical {name} "))


def _emails(pipeline: Pipeline, name: str, status: str | None = None) -> list[ReceivedEmail]:
    return pipeline.smtp.received(
        lambda message: f" {name} " in message.subject and (status is None or message.subject.startswith(f"[{status}"))
    )


def _firing_in_prometheus(pipeline: Pipeline, name: str, severity: str) -> dict[str, Any]:
    """The alert as Prometheus holds it (labels, annotations rendered), once it is firing."""

    def firing() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = _prometheus(pipeline.prometheus_url, "alerts")["alerts"]
        return [
            alert
            for alert in alerts
            if alert["state"] == "firing"
            and (alert["labels"]["alertname"], alert["labels"]["severity"]) == (name, severity)
        ]

    found: list[dict[str, Any]] = wait_for(firing, 1, TIMEOUT, f"{name} ({severity}) firing in Prometheus")
    return found[0]


def _history(pipeline: Pipeline, name: str) -> list[dict[str, Any]]:
    """The relay's archive, read back with ``otel-monitoring alerts history --json``."""
    printed = _cli("--config", str(pipeline.settings_file), "alerts", "history", "--since", "1h", "--json")
    entries = [json.loads(line) for line in printed.splitlines() if line.strip()]
    return [entry for entry in entries if entry["alertname"] == name]


def _wait_for_history(pipeline: Pipeline, name: str, count: int) -> list[dict[str, Any]]:
    return wait_for(lambda: _history(pipeline, name), count, TIMEOUT, f"{name} in the alert history")


def _set(pipeline: Pipeline, path: str) -> float:
    response = httpx.put(f"{pipeline.app_url}{path}", timeout=5)
    response.raise_for_status()
    return time.monotonic()


# --- Tests --------------------------------------------------------------------------------------------------------


def test_an_error_burst_reaches_slack_pagerduty_email_and_sms_and_recovery_resolves_them(pipeline: Pipeline) -> None:
    def is_error(status: int) -> bool:
        return status >= 500

    switched = _set(pipeline, f"/fault?failing=true&delay_seconds={FAILURE_DELAY_SECONDS}")
    try:
        # Firing: high_error_rate (critical) pages PagerDuty, Slack and SMS; HighLatency (warning) goes to
        # Slack and email.
        [pagerduty_trigger] = wait_for(lambda: _pagerduty(pipeline, "high_error_rate", "trigger"), 1, TIMEOUT, "PD")
        [slack_critical] = wait_for(
            lambda: _slack(pipeline, "high_error_rate", "FIRING", "critical"), 1, TIMEOUT, "Slack critical"
        )
        [sms_firing] = wait_for(lambda: _sms(pipeline, "high_error_rate", "FIRING"), 1, TIMEOUT, "SMS")
        [slack_warning] = wait_for(
            lambda: _slack(pipeline, "HighLatency", "FIRING", "warning"), 1, TIMEOUT, "Slack warning"
        )
        [email_firing] = wait_for(lambda: _emails(pipeline, "HighLatency", "FIRING"), 1, TIMEOUT, "email")
        error_rate = _firing_in_prometheus(pipeline, "high_error_rate", "critical")
        latency = _firing_in_prometheus(pipeline, "HighLatency", "warning")
    finally:
        recovered = _set(pipeline, "/fault?failing=false")
    first_error = pipeline.traffic.first(is_error, after=switched)
    assert first_error is not None and pipeline.traffic.count(is_error) > 0

    # Each message carries the summary and description Prometheus rendered for the alert (the job filled in).
    summary, description = error_rate["annotations"]["summary"], error_rate["annotations"]["description"]
    assert JOB in summary and JOB in description

    trigger = pagerduty_trigger.json()
    assert pagerduty_trigger.path == "/v2/enqueue"
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical"
    assert summary in trigger["payload"]["summary"]
    assert trigger["payload"]["custom_details"]["description"] == description
    assert trigger["payload"]["custom_details"]["runbook_url"] == "https://wiki.example/runbooks/high_error_rate"

    attachment = slack_critical.json()["attachments"][0]
    assert summary in attachment["text"] and description in attachment["text"]
    assert attachment["color"] == "danger"

    sms = sms_firing.form()
    assert sms_firing.path == f"/2010-04-01/Accounts/{SMS_SID}/Messages.json"
    assert sms["To"] == SMS_TO
    assert summary in sms["Body"] and description in sms["Body"]

    latency_summary, latency_description = latency["annotations"]["summary"], latency["annotations"]["description"]
    assert JOB in latency_summary
    assert latency_summary in slack_warning.json()["attachments"][0]["text"]
    assert email_firing.recipients == [EMAIL_TO]
    assert email_firing.subject == f"[FIRING:1] warning HighLatency ({JOB})"
    assert latency_summary in email_firing.text() and latency_description in email_firing.text()

    # Recovery: Prometheus resolves both alerts, Alertmanager sends the resolved notifications everywhere.
    [pagerduty_resolve] = wait_for(lambda: _pagerduty(pipeline, "high_error_rate", "resolve"), 1, TIMEOUT, "PD")
    [slack_resolved] = wait_for(
        lambda: _slack(pipeline, "high_error_rate", "RESOLVED", "critical"), 1, TIMEOUT, "Slack resolved"
    )
    [sms_resolved] = wait_for(lambda: _sms(pipeline, "high_error_rate", "RESOLVED"), 1, TIMEOUT, "SMS resolved")
    [slack_warning_resolved] = wait_for(
        lambda: _slack(pipeline, "HighLatency", "RESOLVED", "warning"), 1, TIMEOUT, "Slack warning resolved"
    )
    [email_resolved] = wait_for(lambda: _emails(pipeline, "HighLatency", "RESOLVED"), 1, TIMEOUT, "email resolved")
    assert pagerduty_resolve.json()["dedup_key"] == trigger["dedup_key"]
    assert summary in slack_resolved.json()["attachments"][0]["text"]
    assert slack_resolved.json()["attachments"][0]["color"] == "good"
    assert summary in sms_resolved.form()["Body"]
    assert latency_summary in email_resolved.text()
    for resolved in (pagerduty_resolve, slack_resolved, sms_resolved, slack_warning_resolved):
        assert resolved.received > recovered
    assert email_resolved.received > recovered
    # One notification per state and channel: nothing repeated, nothing lost.
    assert len(_pagerduty(pipeline, "high_error_rate", "trigger")) == 1
    assert len(_sms(pipeline, "high_error_rate", "FIRING")) == 1
    assert len(_emails(pipeline, "HighLatency")) == 2

    # The relay archived every notification it received, firing then resolved.
    for name, receiver in (("high_error_rate", "critical"), ("HighLatency", "warning")):
        entries = _wait_for_history(pipeline, name, 2)
        assert [entry["status"] for entry in entries] == ["firing", "resolved"]
        assert {entry["receiver"] for entry in entries} == {receiver}
        assert entries[0]["labels"]["job"] == JOB
        assert entries[0]["fingerprint"] == entries[1]["fingerprint"]

    delivered = {
        "pagerduty": pagerduty_trigger.received,
        "slack_critical": slack_critical.received,
        "sms_via_relay": sms_firing.received,
        "slack_warning": slack_warning.received,
        "email_warning": email_firing.received,
    }
    resolved_at = {
        "pagerduty": pagerduty_resolve.received,
        "slack_critical": slack_resolved.received,
        "sms_via_relay": sms_resolved.received,
        "slack_warning": slack_warning_resolved.received,
        "email_warning": email_resolved.received,
    }
    for at in (*delivered.values(), *resolved_at.values()):
        assert at > first_error
    figures = {f"first_error_to_{channel}": at - first_error for channel, at in delivered.items()}
    figures |= {f"first_error_to_{channel}_resolved": at - first_error for channel, at in resolved_at.items()}
    figures |= {f"recovery_to_{channel}_resolved": at - recovered for channel, at in resolved_at.items()}
    figures["error_burst"] = recovered - first_error
    pipeline.record_timings("error_burst", figures)


def test_a_critical_and_a_warning_of_one_alert_and_service_deliver_only_the_critical(pipeline: Pipeline) -> None:
    name = "GenerationBacklog"
    raised = _set(pipeline, "/backlog?depth=500")
    try:
        # Both rules fire in Prometheus, and Alertmanager holds both: the warning is inhibited, not missing.
        critical = _firing_in_prometheus(pipeline, name, "critical")
        warning = _firing_in_prometheus(pipeline, name, "warning")
        assert {key: value for key, value in critical["labels"].items() if key != "severity"} == {
            key: value for key, value in warning["labels"].items() if key != "severity"
        }
        [slack_critical] = wait_for(lambda: _slack(pipeline, name, "FIRING", "critical"), 1, TIMEOUT, "Slack")
        [pagerduty_trigger] = wait_for(lambda: _pagerduty(pipeline, name, "trigger"), 1, TIMEOUT, "PagerDuty")

        held = httpx.get(
            f"{pipeline.alertmanager_url}/api/v2/alerts", params={"filter": f'alertname="{name}"'}, timeout=5
        ).json()
        by_severity = {alert["labels"]["severity"]: alert for alert in held}
        assert by_severity["critical"]["status"]["state"] == "active"
        assert by_severity["warning"]["status"]["state"] == "suppressed"
        assert by_severity["warning"]["status"]["inhibitedBy"] == [by_severity["critical"]["fingerprint"]]
    finally:
        lowered = _set(pipeline, "/backlog?depth=0")

    # The critical's resolution comes seconds after any warning notification would have gone out (group wait
    # 1 s): by then, none did.
    [slack_resolved] = wait_for(lambda: _slack(pipeline, name, "RESOLVED", "critical"), 1, TIMEOUT, "Slack resolved")
    _wait_for_history(pipeline, name, 2)
    assert slack_resolved.received > lowered
    assert _slack(pipeline, name, "FIRING", "warning") == [] and _slack(pipeline, name, "RESOLVED", "warning") == []
    assert _emails(pipeline, name) == []  # warnings go to email: none came
    assert {(entry["status"], entry["severity"]) for entry in _history(pipeline, name)} == {
        ("firing", "critical"),
        ("resolved", "critical"),
    }
    pipeline.record_timings(
        "inhibition",
        {
            "raised_to_slack_critical": slack_critical.received - raised,
            "raised_to_pagerduty": pagerduty_trigger.received - raised,
            "lowered_to_slack_resolved": slack_resolved.received - lowered,
        },
    )
