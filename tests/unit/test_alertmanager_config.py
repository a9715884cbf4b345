"""The Alertmanager config rendered from settings: amtool accepts it, and routes each alert where the issue says."""

from __future__ import annotations

import argparse
import doctest
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_monitoring import alertmanager_config
from otel_monitoring.alerting_cli import add_commands
from otel_monitoring.alertmanager_config import (
    GROUP_BY,
    TEMPLATE_FILE_NAME,
    RouteTiming,
    render_alertmanager_config,
    write_alertmanager_config,
)
from otel_monitoring.settings import Settings, SettingsError, load_settings

AMTOOL = Path("/usr/bin/amtool")
needs_amtool = pytest.mark.skipif(not AMTOOL.exists(), reason="apt-get install -y prometheus-alertmanager")

SLACK = {"slack_webhook": "https://hooks.slack.com/services/T0/B0/secret-slack"}
EMAIL = {
    "email": ["ops@example.com", "oncall@example.com"],
    "smtp_host": "smtp.example.com",
    "smtp_from": "am@example.com",
}
SMTP_AUTH = {"smtp_username": "am", "smtp_password": "secret-smtp"}
PAGERDUTY = {"pagerduty_routing_key": "secret-pagerduty-key-0000000000"}
SMS = {
    "sms_account_sid": "AC123",
    "sms_auth_token": "secret-sms",
    "sms_from": "+15550001111",
    "sms_to": ["+15551230001"],
    "relay_url": "http://alert-relay:9095",
}
RELAY_ONLY = {"relay_url": "http://alert-relay:9095", "relay_token": "secret-relay"}
HEARTBEAT = {"heartbeat_url": "https://hc-ping.example.com/secret-uuid"}

COMBINATIONS = {
    "nothing": {},
    "slack": SLACK,
    "email": EMAIL,
    "email_with_auth": {**EMAIL, **SMTP_AUTH},
    "pagerduty": PAGERDUTY,
    "sms": SMS,
    "relay_only": RELAY_ONLY,
    "everything": {**SLACK, **EMAIL, **SMTP_AUTH, **PAGERDUTY, **SMS, **RELAY_ONLY, **HEARTBEAT},
}
SECRETS = ("secret-slack", "secret-smtp", "secret-pagerduty", "secret-relay")


def _settings(alerting: dict[str, Any]) -> Settings:
    return load_settings(environ={}, overrides={"alerting": alerting}, strict=True)


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AMTOOL), *args], capture_output=True, text=True, timeout=30)


def _write(tmp_path: Path, alerting: dict[str, Any], **kwargs: Any) -> Path:
    out = tmp_path / "alertmanager.yml"
    write_alertmanager_config(_settings(alerting), out, **kwargs)
    return out


def _route(config: Path, *labels: str) -> str:
    result = _amtool("config", "routes", "test", f"--config.file={config}", *labels)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_defaults_render_a_valid_config_with_every_route_and_no_channel() -> None:
    rendered = render_alertmanager_config(Settings().alerting, dashboard_url="http://grafana:3000")
    document = yaml.safe_load(rendered.config)

    assert {receiver["name"] for receiver in document["receivers"]} == {
        "critical",
        "warning",
        "info",
        "heartbeat",
        "null",
    }
    assert all(set(receiver) == {"name"} for receiver in document["receivers"])
    assert all(names == [] for names in rendered.channels.values())


@needs_amtool
@pytest.mark.parametrize("alerting", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_amtool_accepts_the_config_for_every_combination_of_channels(tmp_path: Path, alerting: dict[str, Any]) -> None:
    config = _write(tmp_path, alerting)

    result = _amtool("check-config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout  # the template file beside the config was found and parsed


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=HighErrorRate", "service=checkout"], "critical"),
        (["severity=warning", "alertname=HighLatency"], "warning"),
        (["severity=info", "alertname=DeploymentFinished"], "info"),
        (["alertname=Watchdog", "severity=none"], "heartbeat"),
        (["alertname=Watchdog", "severity=critical"], "heartbeat"),
        (["alertname=MaintenanceWindow", "severity=none", "service=checkout"], "null"),
        (["alertname=NoSeverityGiven"], "warning"),
        (["severity=page"], "warning"),
    ],
)
def test_amtool_routes_each_severity_to_its_receiver(tmp_path: Path, labels: list[str], receiver: str) -> None:
    config = _write(tmp_path, COMBINATIONS["everything"])

    assert _route(config, *labels) == receiver


@needs_amtool
def test_routes_stay_the_same_when_channels_are_missing(tmp_path: Path) -> None:
    config = _write(tmp_path, {})

    assert [_route(config, f"severity={severity}") for severity in ("critical", "warning", "info")] == [
        "critical",
        "warning",
        "info",
    ]


def test_severity_none_reaches_a_receiver_with_no_channel_whatever_is_configured() -> None:
    document = yaml.safe_load(
        render_alertmanager_config(_settings(COMBINATIONS["everything"]).alerting, dashboard_url="http://g").config
    )
    routes = document["route"]["routes"]
    (none_route,) = [route for route in routes if 'severity="none"' in route["matchers"]]
    receivers = {receiver["name"]: receiver for receiver in document["receivers"]}

    assert receivers[none_route["receiver"]] == {"name": none_route["receiver"]}
    # The Watchdog (severity none too) must still reach the heartbeat: its route comes first.
    assert routes.index(none_route) == 1 and routes[0]["receiver"] == "heartbeat"


def test_channels_follow_severity_and_what_is_configured() -> None:
    everything = render_alertmanager_config(_settings(COMBINATIONS["everything"]).alerting, dashboard_url="http://g")
    slack_only = render_alertmanager_config(_settings(SLACK).alerting, dashboard_url="http://g")
    relay_without_sms = render_alertmanager_config(_settings(RELAY_ONLY).alerting, dashboard_url="http://g")

    assert everything.channels == {
        "critical": ["pagerduty", "slack", "sms", "history"],
        "warning": ["slack", "email", "history"],
        "info": ["email", "history"],
        "Watchdog": ["heartbeat"],
    }
    assert slack_only.channels == {"critical": ["slack"], "warning": ["slack"], "info": [], "Watchdog": []}
    assert relay_without_sms.channels["critical"] == ["history"]


def test_sms_goes_through_the_relay_sms_path_and_history_through_the_plain_one() -> None:
    rendered = render_alertmanager_config(_settings({**SMS, **RELAY_ONLY}).alerting, dashboard_url="http://g")
    receivers = {receiver["name"]: receiver for receiver in yaml.safe_load(rendered.config)["receivers"]}

    assert receivers["critical"]["webhook_configs"][0]["url"] == "http://alert-relay:9095/webhook/sms"
    assert receivers["warning"]["webhook_configs"][0]["url"] == "http://alert-relay:9095/webhook"
    assert receivers["warning"]["webhook_configs"][0]["http_config"]["authorization"]["credentials"] == "secret-relay"


def test_every_channel_sends_resolved_notifications() -> None:
    rendered = render_alertmanager_config(_settings(COMBINATIONS["everything"]).alerting, dashboard_url="http://g")
    configs = [
        config
        for receiver in yaml.safe_load(rendered.config)["receivers"]
        if receiver["name"] != "heartbeat"
        for key, configs in receiver.items()
        if key.endswith("_configs")
        for config in configs
    ]

    assert len(configs) == 8
    assert all(config["send_resolved"] is True for config in configs)


def test_critical_inhibits_warning_and_info_with_the_same_alertname_and_service() -> None:
    document = yaml.safe_load(render_alertmanager_config(Settings().alerting, dashboard_url="http://g").config)

    assert document["inhibit_rules"] == [
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity=~"warning|info"'],
            "equal": list(GROUP_BY),
        }
    ]
    assert {"alertname", "service"} <= set(GROUP_BY)
    assert document["route"]["group_by"] == list(GROUP_BY)


def test_timing_reaches_the_route_tree() -> None:
    timing = RouteTiming(group_wait="1s", group_interval="2s", repeat_interval="3m", critical_repeat_interval="4m")
    route = yaml.safe_load(render_alertmanager_config(Settings().alerting, dashboard_url="x", timing=timing).config)[
        "route"
    ]
    critical = next(child for child in route["routes"] if child["receiver"] == "critical")

    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("1s", "2s", "3m")
    assert critical["repeat_interval"] == "4m"


def test_a_bad_duration_names_the_timing_field() -> None:
    with pytest.raises(SettingsError, match="group_wait: must be a duration"):
        RouteTiming(group_wait="soon")


@pytest.mark.parametrize(
    ("alerting", "key", "env"),
    [
        (
            {"email": ["ops@example.com"], "smtp_from": "am@example.com"},
            "alerting.smtp_host",
            "OTEL_MONITORING_SMTP_HOST",
        ),
        ({"email": ["ops@example.com"], "smtp_host": "smtp"}, "alerting.smtp_from", "OTEL_MONITORING_SMTP_FROM"),
        ({"smtp_username": "am"}, "alerting.smtp_password", "OTEL_MONITORING_SMTP_PASSWORD"),
        (
            {k: v for k, v in SMS.items() if k != "sms_auth_token"},
            "alerting.sms_auth_token",
            "OTEL_MONITORING_SMS_AUTH_TOKEN",
        ),
        ({k: v for k, v in SMS.items() if k != "relay_url"}, "alerting.relay_url", "OTEL_MONITORING_ALERT_RELAY_URL"),
    ],
)
def test_a_channel_configured_by_halves_names_the_missing_key(alerting: dict[str, Any], key: str, env: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        render_alertmanager_config(_settings(alerting).alerting, dashboard_url="http://g")

    assert excinfo.value.key == key
    assert env in str(excinfo.value)


def test_config_file_is_private_and_holds_secrets_inline_by_default(tmp_path: Path) -> None:
    config = _write(tmp_path, COMBINATIONS["everything"])

    text = config.read_text()
    assert all(secret in text for secret in SECRETS)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_secrets_dir_moves_every_secret_out_of_the_config(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    config = _write(tmp_path, COMBINATIONS["everything"], secrets_dir=secrets_dir)

    text = config.read_text()
    assert not any(secret in text for secret in SECRETS)
    stored = {path.name: path.read_text() for path in secrets_dir.iterdir()}
    assert all(any(secret in value for value in stored.values()) for secret in SECRETS)
    assert all(stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600 for name in stored)
    for name in stored:
        assert str((secrets_dir / name).resolve()) in text


@needs_amtool
def test_amtool_accepts_secrets_as_files(tmp_path: Path) -> None:
    config = _write(tmp_path, COMBINATIONS["everything"], secrets_dir=tmp_path / "secrets")

    assert _amtool("check-config", str(config)).returncode == 0


def test_dashboard_link_is_the_alerting_setting_else_grafana(tmp_path: Path) -> None:
    write_alertmanager_config(_settings({"dashboard_url": "https://dash.example.com/d/1"}), tmp_path / "a" / "am.yml")
    grafana = load_settings(environ={"GRAFANA_URL": "https://grafana.example.com"}, strict=True)
    write_alertmanager_config(grafana, tmp_path / "b" / "am.yml")

    assert '"https://dash.example.com/d/1"' in (tmp_path / "a" / TEMPLATE_FILE_NAME).read_text()
    assert '"https://grafana.example.com"' in (tmp_path / "b" / TEMPLATE_FILE_NAME).read_text()


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.environ = {"ALERT_SLACK_WEBHOOK": "https://hooks.slack.com/services/T/B/cli-secret"}
    status: int = args.func(args)
    return status


def test_cli_render_writes_both_files_and_prints_channels_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "am" / "alertmanager.yml"

    assert _cli("alertmanager", "render", "--out", str(out), "--group-wait", "5s") == 0

    printed = capsys.readouterr().out
    assert "critical: slack" in printed and "cli-secret" not in printed
    assert yaml.safe_load(out.read_text())["route"]["group_wait"] == "5s"
    assert (out.parent / TEMPLATE_FILE_NAME).exists()


def test_cli_render_rejects_a_bad_duration_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = _cli("alertmanager", "render", "--out", str(tmp_path / "am.yml"), "--group-interval", "often")

    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1 and "--group-interval" in error and "'often'" in error
    assert not (tmp_path / "am.yml").exists()


def test_module_docstring_examples_run() -> None:
    result = doctest.testmod(alertmanager_config)

    assert result.attempted > 0 and result.failed == 0
