"""Debian's Alertmanager with the config ``otel-monitoring alertmanager render`` writes, delivering to local sinks.

Slack, PagerDuty and the SMS gateway are HTTP stand-ins, email goes to an aiosmtpd server, SMS through the real
alert relay (uvicorn in a thread) which also archives every notification. Alerts are posted to Alertmanager's v2
API; each test uses its own alert names, so the module shares one Alertmanager and one set of sinks.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from otel_monitoring.alert_relay import AlertHistory, SMSNotifier, TwilioSMSGateway, make_alert_relay_app
from otel_monitoring.alerting_cli import add_commands
from otel_monitoring.alertmanager_config import RouteTiming, write_alertmanager_config
from otel_monitoring.settings import load_settings
from tests.alerting_support import (
    AMTOOL_BINARY,
    HTTPSink,
    SinkRequest,
    SMTPSink,
    heartbeat_sink,
    make_alert,
    pagerduty_sink,
    post_alerts,
    serve_app,
    slack_sink,
    sms_gateway_sink,
    smtp_sink,
    start_alertmanager,
    wait_for,
)

__all__ = ["heartbeat_sink", "pagerduty_sink", "slack_sink", "sms_gateway_sink", "smtp_sink"]  # fixtures

ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
RELAY_TOKEN = "relay-token-for-tests"
SMS_SID = "AC0123456789"
SMS_TO = "+15551230001"
ENDS_IN = timedelta(seconds=4)


@dataclass
class Stack:
    alertmanager_url: str
    history: AlertHistory
    slack: HTTPSink
    pagerduty: HTTPSink
    sms: HTTPSink
    heartbeat: HTTPSink
    smtp: SMTPSink
    config_file: Path


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    slack_sink: HTTPSink,
    pagerduty_sink: HTTPSink,
    sms_gateway_sink: HTTPSink,
    heartbeat_sink: HTTPSink,
    smtp_sink: SMTPSink,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerting")
    history = AlertHistory(f"sqlite:///{tmp / 'history.sqlite3'}")
    gateway = TwilioSMSGateway(sms_gateway_sink.url, SMS_SID, "sms-token", "+15550001111")
    notifier = SMSNotifier(gateway, [SMS_TO], rate_per_minute=60, dedupe_seconds=3600)
    app = make_alert_relay_app(history, notifier, token=RELAY_TOKEN)
    try:
        with serve_app(app) as relay_url:
            settings = load_settings(
                environ={},
                strict=True,
                overrides={
                    "alerting": {
                        "slack_webhook": f"{slack_sink.url}/services/T0/B0/x",
                        "email": ["ops@example.com"],
                        "smtp_host": "127.0.0.1",
                        "smtp_port": smtp_sink.port,
                        "smtp_from": "alertmanager@example.com",
                        "smtp_require_tls": False,
                        "pagerduty_routing_key": ROUTING_KEY,
                        "pagerduty_url": f"{pagerduty_sink.url}/v2/enqueue",
                        "sms_account_sid": SMS_SID,
                        "sms_auth_token": "sms-token",
                        "sms_from": "+15550001111",
                        "sms_to": [SMS_TO],
                        "relay_url": relay_url,
                        "relay_token": RELAY_TOKEN,
                        "heartbeat_url": f"{heartbeat_sink.url}/ping",
                        "dashboard_url": "http://grafana.test/d/otel",
                    }
                },
            )
            config_file = tmp / "alertmanager" / "alertmanager.yml"
            # Short waits so deliveries take about a second; repeats far away so every delivery is counted once.
            timing = RouteTiming(
                group_wait="1s",
                group_interval="1s",
                repeat_interval="1h",
                critical_repeat_interval="1h",
                info_repeat_interval="1h",
                heartbeat_interval="1h",
            )
            write_alertmanager_config(settings, config_file, timing=timing)
            if AMTOOL_BINARY.exists():
                subprocess.run([str(AMTOOL_BINARY), "check-config", str(config_file)], check=True, capture_output=True)
            with start_alertmanager(config_file, tmp / "alertmanager-data") as alertmanager:
                yield Stack(
                    alertmanager.url,
                    history,
                    slack_sink,
                    pagerduty_sink,
                    sms_gateway_sink,
                    heartbeat_sink,
                    smtp_sink,
                    config_file,
                )
    finally:
        history.close()


def _about(name: str) -> object:
    def matches(request: SinkRequest) -> bool:
        return name in request.body.decode(errors="replace")

    return matches


def _slack(stack: Stack, name: str, status: str) -> list[SinkRequest]:
    return stack.slack.received(
        lambda request: (
            name in request.body.decode() and request.json()["attachments"][0]["title"].startswith(f"[{status}")
        )
    )


def _pagerduty(stack: Stack, name: str, action: str) -> list[SinkRequest]:
    return stack.pagerduty.received(
        lambda request: name in request.body.decode() and request.json()["event_action"] == action
    )


def _sms(stack: Stack, name: str, status: str) -> list[SinkRequest]:
    return stack.sms.received(
        lambda request: f"[{status}]" in request.form()["Body"] and name in request.form()["Body"]
    )


def _emails(stack: Stack, name: str, status: str | None = None) -> list[object]:
    return stack.smtp.received(
        lambda message: name in message.subject and (status is None or message.subject.startswith(f"[{status}"))
    )


def test_critical_alert_pages_pagerduty_slack_and_sms_and_resolves_after_ends_at(stack: Stack) -> None:
    name = "CheckoutDown"
    alert = make_alert(name, "critical", ends_in=ENDS_IN)
    ends_at = datetime.fromisoformat(alert["endsAt"])
    posted = post_alerts(stack.alertmanager_url, [alert])
    posted_wall = datetime.now(UTC)
    summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]

    resolved_pd = wait_for(lambda: _pagerduty(stack, name, "resolve"), 1, 30, "PagerDuty resolve")
    resolved_slack = wait_for(lambda: _slack(stack, name, "RESOLVED"), 1, 30, "Slack resolved")
    resolved_sms = wait_for(lambda: _sms(stack, name, "RESOLVED"), 1, 30, "SMS resolved")
    firing_pd = _pagerduty(stack, name, "trigger")
    firing_slack = _slack(stack, name, "FIRING")
    firing_sms = _sms(stack, name, "FIRING")

    # Exactly one firing and one resolved notification per channel, none by email.
    assert [len(firing_pd), len(firing_slack), len(firing_sms)] == [1, 1, 1]
    assert [len(resolved_pd), len(resolved_slack), len(resolved_sms)] == [1, 1, 1]
    assert _emails(stack, name) == []

    trigger = firing_pd[0].json()
    assert firing_pd[0].path == "/v2/enqueue"
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical"
    assert summary in trigger["payload"]["summary"]
    assert trigger["payload"]["custom_details"]["description"] == description
    assert resolved_pd[0].json()["dedup_key"] == trigger["dedup_key"]

    attachment = firing_slack[0].json()["attachments"][0]
    assert attachment["title"] == f"[FIRING:1] critical {name} ({alert['labels']['service']})"
    assert summary in attachment["text"] and description in attachment["text"]
    assert "http://grafana.test/d/otel" in attachment["text"]
    assert attachment["color"] == "danger"

    sms = firing_sms[0]
    assert sms.path == f"/2010-04-01/Accounts/{SMS_SID}/Messages.json"
    assert sms.form()["To"] == SMS_TO
    assert summary in sms.form()["Body"] and description in sms.form()["Body"]
    assert sms.headers["Authorization"].startswith("Basic ")

    # Resolved notifications come only once endsAt has passed.
    seconds_to_end = (ends_at - posted_wall).total_seconds()
    for request in (resolved_pd[0], resolved_slack[0], resolved_sms[0]):
        assert request.received - posted >= seconds_to_end - 0.1
    latencies = {
        channel: round(requests[0].received - posted, 2)
        for channel, requests in (("pagerduty", firing_pd), ("slack", firing_slack), ("sms", firing_sms))
    }
    print(f"\ncritical: seconds from post to delivery {latencies}, endsAt after {seconds_to_end:.1f}s")


def test_warning_goes_to_slack_and_email_only(stack: Stack) -> None:
    name = "DiskFillingUp"
    alert = make_alert(name, "warning", service="database", ends_in=ENDS_IN)
    posted = post_alerts(stack.alertmanager_url, [alert])

    resolved_email = stack.smtp.wait_for(lambda message: name in message.subject and "RESOLVED" in message.subject)
    wait_for(lambda: _slack(stack, name, "RESOLVED"), 1, 30, "Slack resolved")

    firing_emails = _emails(stack, name, "FIRING")
    assert len(firing_emails) == 1 and len(resolved_email) == 1
    assert len(_slack(stack, name, "FIRING")) == 1
    assert stack.pagerduty.received(_about(name)) == []  # type: ignore[arg-type]
    assert stack.sms.received(lambda request: name in request.form()["Body"]) == []

    message = stack.smtp.received(lambda message: name in message.subject and "FIRING" in message.subject)[0]
    assert message.recipients == ["ops@example.com"]
    assert message.sender == "alertmanager@example.com"
    assert message.subject == f"[FIRING:1] warning {name} (database)"
    body = message.text()
    assert alert["annotations"]["summary"] in body and alert["annotations"]["description"] in body
    assert "<html>" in body  # the HTML part is there beside the plain text
    print(f"\nwarning: email after {message.received - posted:.2f}s")


def test_info_goes_to_email_only(stack: Stack) -> None:
    name = "DeploymentFinished"
    alert = make_alert(name, "info", service="api", ends_in=ENDS_IN)
    post_alerts(stack.alertmanager_url, [alert])

    stack.smtp.wait_for(lambda message: name in message.subject and "RESOLVED" in message.subject)

    assert len(_emails(stack, name, "FIRING")) == 1
    assert stack.slack.received(_about(name)) == []  # type: ignore[arg-type]
    assert stack.pagerduty.received(_about(name)) == []  # type: ignore[arg-type]


def test_critical_inhibits_the_warning_of_the_same_alert_and_service_only(stack: Stack) -> None:
    name = "LatencyBudgetBurn"
    critical = make_alert(name, "critical", service="search")
    warning = make_alert(name, "warning", service="search")
    other_service = make_alert(name, "warning", service="billing")
    post_alerts(stack.alertmanager_url, [critical, warning, other_service])

    wait_for(lambda: _slack(stack, name, "FIRING"), 2, 30, "Slack firing")
    # The warning for billing proves the delivery path works; give search's warning the same time again.
    time.sleep(3)

    titles = sorted(request.json()["attachments"][0]["title"] for request in _slack(stack, name, "FIRING"))
    assert titles == [f"[FIRING:1] critical {name} (search)", f"[FIRING:1] warning {name} (billing)"]
    assert [message.subject for message in _emails(stack, name)] == [f"[FIRING:1] warning {name} (billing)"]


def test_relay_archives_firing_and_resolved_notifications(stack: Stack) -> None:
    name = "QueueBacklog"
    alert = make_alert(name, "warning", service="worker", ends_in=ENDS_IN)
    post_alerts(stack.alertmanager_url, [alert])

    since = datetime.now(UTC) - timedelta(minutes=5)
    entries = wait_for(
        lambda: [entry for entry in stack.history.query(since=since) if entry.alertname == name], 2, 30, "history"
    )

    assert [entry.status for entry in entries] == ["firing", "resolved"]
    firing, resolved = entries
    assert firing.fingerprint == resolved.fingerprint
    assert firing.receiver == "warning"
    assert firing.labels == alert["labels"]
    assert firing.annotations == alert["annotations"]
    assert firing.ends_at is None
    assert resolved.ends_at is not None and resolved.ends_at <= resolved.received_at


def test_watchdog_goes_to_the_heartbeat_url_only(stack: Stack) -> None:
    alert = make_alert("Watchdog", "none", service="prometheus")
    post_alerts(stack.alertmanager_url, [alert])

    pings = stack.heartbeat.wait_for(_about("Watchdog"))  # type: ignore[arg-type]

    assert pings[0].path == "/ping"
    assert pings[0].json()["receiver"] == "heartbeat"
    assert stack.slack.received(_about("Watchdog")) == []  # type: ignore[arg-type]
    archived = stack.history.query(since=datetime.now(UTC) - timedelta(minutes=5))
    assert all(entry.alertname != "Watchdog" for entry in archived)


def _run_cli(stack: Stack, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.environ = {"ALERTMANAGER_URL": stack.alertmanager_url}
    status: int = args.func(args)
    return status


def test_alerts_list_and_silence_talk_to_alertmanager(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    name = "SilencedNoise"
    post_alerts(stack.alertmanager_url, [make_alert(name, "info", service="noise")])

    assert _run_cli(stack, "alerts", "list", "--filter", f"alertname={name}") == 0
    listing = capsys.readouterr().out
    assert name in listing and "noise" in listing and f"{name} summary for noise" in listing

    status = _run_cli(
        stack, "alerts", "silence", "--matcher", f"alertname={name}", "--duration", "2h", "--comment", "known noise"
    )
    assert status == 0
    silence_id = capsys.readouterr().out.split()[1]
    silence = httpx.get(f"{stack.alertmanager_url}/api/v2/silence/{silence_id}", timeout=5).json()
    assert silence["status"]["state"] == "active"
    assert silence["matchers"] == [{"name": "alertname", "value": name, "isRegex": False, "isEqual": True}]
    assert silence["comment"] == "known noise"
    ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
    starts = datetime.fromisoformat(silence["startsAt"].replace("Z", "+00:00"))
    assert abs((ends - starts) - timedelta(hours=2)) < timedelta(seconds=5)
