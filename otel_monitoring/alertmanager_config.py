"""An Alertmanager configuration rendered from settings: routes by severity, grouping, inhibition, templates.

Severity decides the channels (docs/alertmanager.md):

========  =====================================================
critical  PagerDuty (Events API v2), Slack, SMS (through the alert relay)
warning   Slack, email
info      email
Watchdog  the heartbeat URL (a dead man's switch), else nowhere
none      nowhere (the ``null`` receiver): such alerts never notify
========  =====================================================

An alert without a known severity is treated as a warning, so nothing is lost. When the alert relay is
configured (``alerting.relay_url``), every severity also goes to it so that its history holds every
notification. A channel whose settings are absent is left out; a receiver left with no channel is valid and
delivers nothing. A critical alert inhibits the warning and info alerts with the same ``alertname``,
``service`` and ``job``.

The output targets Alertmanager 0.25 (Debian 12's); ``amtool check-config`` accepts it.

>>> from otel_monitoring.settings import AlertingConfig
>>> rendered = render_alertmanager_config(
...     AlertingConfig(slack_webhook="https://hooks.slack.com/services/T0/B0/x"), dashboard_url="http://grafana:3000"
... )
>>> rendered.channels["critical"], rendered.channels["info"]
(['slack'], [])
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from otel_monitoring.rules.model import DURATION_PATTERN
from otel_monitoring.settings import AlertingConfig, Settings, SettingsError

__all__ = [
    "ROUTED_SEVERITIES",
    "TEMPLATE_FILE_NAME",
    "RenderedAlertmanagerConfig",
    "RouteTiming",
    "render_alertmanager_config",
    "write_alertmanager_config",
]

ROUTED_SEVERITIES = ("critical", "warning", "info")
"""The severities that notify, each routed to the receiver of the same name. ``none`` (also a severity of
:data:`otel_monitoring.rules.model.SEVERITIES`) goes to :data:`NULL_RECEIVER` instead."""

HEARTBEAT_RECEIVER = "heartbeat"
NULL_RECEIVER = "null"
"""Receiver with no channel, for ``severity="none"``: documented as never notifying."""
WATCHDOG_ALERT = "Watchdog"
GROUP_BY = ("alertname", "service", "job")
"""Labels a notification groups alerts by: one message per alert name and service."""

TEMPLATE_FILE_NAME = "otel-monitoring.tmpl"
"""Name of the template file written next to the config (Alertmanager resolves it relative to the config)."""

RELAY_WEBHOOK_PATH = "/webhook"
RELAY_SMS_WEBHOOK_PATH = "/webhook/sms"

_DASHBOARD_PLACEHOLDER = '"__OTEL_MONITORING_DASHBOARD_URL__"'


@dataclass(frozen=True, slots=True)
class RouteTiming:
    """How long Alertmanager waits before, between and when repeating notifications of one group.

    The defaults are Alertmanager's usual ones; critical alerts are repeated hourly, info daily. Tests shorten
    them all.

    >>> RouteTiming(group_wait="1s").group_wait
    '1s'
    """

    group_wait: str = "30s"
    """Wait before the first notification of a new group, to batch alerts firing together."""
    group_interval: str = "5m"
    """Wait before notifying about alerts added to (or resolved in) a group already notified."""
    repeat_interval: str = "4h"
    """Resend a still-firing warning after this long."""
    critical_repeat_interval: str = "1h"
    """Resend a still-firing critical alert after this long."""
    info_repeat_interval: str = "24h"
    """Resend a still-firing info alert after this long."""
    heartbeat_interval: str = "5m"
    """How often the always-firing Watchdog is posted to the heartbeat URL."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not DURATION_PATTERN.match(value):
                raise SettingsError(name, "must be a duration such as 30s, 5m or 1h", repr(value))


@dataclass(frozen=True, slots=True)
class RenderedAlertmanagerConfig:
    """The config YAML, the template text, which channels each severity reaches, and any secret files.

    ``secret_files`` maps file names (inside the secrets directory) to their content; it is empty unless
    secrets are rendered as files.
    """

    config: str
    template: str
    channels: dict[str, list[str]]
    secret_files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per severity naming its channels, for the CLI (never a secret)."""
        lines = [f"{severity}: {', '.join(names) or 'no channel'}" for severity, names in self.channels.items()]
        return "\n".join(lines)


def _missing(key: str, needed_by: str) -> SettingsError:
    env = _env_name(key)
    return SettingsError(f"alerting.{key}", f"must be set when {needed_by} ({env})")


def _env_name(key: str) -> str:
    # The field's own environment variable, so the message tells the user exactly what to set.
    for item in AlertingConfig.model_fields[key].metadata:
        names = getattr(item, "names", None)
        if names:
            return str(names[0])
    return key


class _Secrets:
    """Puts a secret inline, or in a file of the secrets directory referenced by the ``*_file`` field."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.files: dict[str, str] = {}

    def field(self, key: str, value: str, file_name: str) -> dict[str, str]:
        if self.directory is None:
            return {key: value}
        self.files[file_name] = value
        return {f"{key}_file": str(self.directory / file_name)}


def _smarthost(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_channels(alerting: AlertingConfig) -> tuple[bool, bool, bool, bool]:
    """Which channels are configured; a channel configured by halves is an error naming the missing key."""
    email = bool(alerting.email)
    if email:
        for key in ("smtp_host", "smtp_from"):
            if getattr(alerting, key) is None:
                raise _missing(key, "alerting.email is set")
    if (alerting.smtp_username is None) != (alerting.smtp_password is None):
        key = "smtp_password" if alerting.smtp_username is not None else "smtp_username"
        raise _missing(key, f"alerting.{'smtp_username' if key == 'smtp_password' else 'smtp_password'} is set")
    sms_keys = ("sms_to", "sms_account_sid", "sms_auth_token", "sms_from")
    given = [key for key in sms_keys if getattr(alerting, key)]
    sms = bool(given)
    if sms:
        for key in sms_keys:
            if not getattr(alerting, key):
                raise _missing(key, f"alerting.{given[0]} is set (SMS)")
        if alerting.relay_url is None:
            raise _missing("relay_url", "SMS is configured: Alertmanager reaches SMS through the alert relay")
    return alerting.slack_webhook is not None, email, alerting.pagerduty_routing_key is not None, sms


def render_alertmanager_config(
    alerting: AlertingConfig,
    *,
    dashboard_url: str,
    timing: RouteTiming | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
) -> RenderedAlertmanagerConfig:
    """Render the Alertmanager config and its notification templates from the ``alerting`` settings.

    ``dashboard_url`` is linked from every notification whose alert has no ``dashboard_url`` annotation.
    With ``secrets_dir``, the Slack webhook, the PagerDuty key, the SMTP password and the relay token are
    referenced as files in that directory (``api_url_file``...) instead of written into the config; the
    heartbeat URL stays inline, as Alertmanager 0.25 reads webhook URLs from the config only.

    Raises :class:`SettingsError` naming the key when a channel is configured by halves (email without an
    SMTP server, part of the SMS account, SMS without the relay URL).
    """
    timing = timing or RouteTiming()
    slack, email, pagerduty, sms = _check_channels(alerting)
    secrets = _Secrets(None if secrets_dir is None else Path(secrets_dir).resolve())
    relay_url = alerting.relay_url.rstrip("/") if alerting.relay_url else None

    global_section: dict[str, Any] = {"resolve_timeout": "5m"}
    if slack and alerting.slack_webhook is not None:
        global_section.update(
            secrets.field("slack_api_url", alerting.slack_webhook.get_secret_value(), "slack-webhook")
        )
    if email:
        global_section["smtp_smarthost"] = _smarthost(str(alerting.smtp_host), alerting.smtp_port)
        global_section["smtp_from"] = alerting.smtp_from
        global_section["smtp_require_tls"] = alerting.smtp_require_tls
        if alerting.smtp_username is not None and alerting.smtp_password is not None:
            global_section["smtp_auth_username"] = alerting.smtp_username
            password = alerting.smtp_password.get_secret_value()
            global_section.update(secrets.field("smtp_auth_password", password, "smtp-password"))
    if pagerduty:
        global_section["pagerduty_url"] = alerting.pagerduty_url

    def relay_webhook(path: str) -> dict[str, Any]:
        webhook: dict[str, Any] = {"url": f"{relay_url}{path}", "send_resolved": True, "max_alerts": 0}
        if alerting.relay_token is not None:
            token = alerting.relay_token.get_secret_value()
            webhook["http_config"] = {"authorization": secrets.field("credentials", token, "relay-token")}
        return webhook

    slack_config = {
        "send_resolved": True,
        "title": '{{ template "otel.slack.title" . }}',
        "title_link": '{{ template "otel.dashboard_base" }}',
        "text": '{{ template "otel.slack.text" . }}',
        "color": '{{ template "otel.slack.color" . }}',
    }
    email_config = {
        "to": ", ".join(alerting.email),
        "send_resolved": True,
        "headers": {"Subject": '{{ template "otel.email.subject" . }}'},
        "html": '{{ template "otel.email.html" . }}',
        "text": '{{ template "otel.email.text" . }}',
    }

    receivers: list[dict[str, Any]] = []
    channels: dict[str, list[str]] = {}
    for severity in ROUTED_SEVERITIES:
        receiver: dict[str, Any] = {"name": severity}
        names: list[str] = []
        if severity == "critical" and pagerduty and alerting.pagerduty_routing_key is not None:
            key = alerting.pagerduty_routing_key.get_secret_value()
            pagerduty_config = {
                **secrets.field("routing_key", key, "pagerduty-routing-key"),
                "send_resolved": True,
                "severity": "critical",
                "description": '{{ template "otel.pagerduty.description" . }}',
                "client_url": '{{ template "otel.dashboard_base" }}',
                "details": {
                    "summary": "{{ .CommonAnnotations.summary }}",
                    "description": "{{ .CommonAnnotations.description }}",
                    "runbook_url": "{{ .CommonAnnotations.runbook_url }}",
                    "service": "{{ .CommonLabels.service }}",
                    "job": "{{ .CommonLabels.job }}",
                },
            }
            receiver["pagerduty_configs"] = [pagerduty_config]
            names.append("pagerduty")
        if slack and severity in ("critical", "warning"):
            receiver["slack_configs"] = [copy.deepcopy(slack_config)]
            names.append("slack")
        if email and severity in ("warning", "info"):
            receiver["email_configs"] = [copy.deepcopy(email_config)]
            names.append("email")
        if relay_url is not None:
            sends_sms = severity == "critical" and sms
            receiver["webhook_configs"] = [relay_webhook(RELAY_SMS_WEBHOOK_PATH if sends_sms else RELAY_WEBHOOK_PATH)]
            names += ["sms", "history"] if sends_sms else ["history"]
        receivers.append(receiver)
        channels[severity] = names

    heartbeat: dict[str, Any] = {"name": HEARTBEAT_RECEIVER}
    if alerting.heartbeat_url is not None:
        url = alerting.heartbeat_url.get_secret_value()
        heartbeat["webhook_configs"] = [{"url": url, "send_resolved": False}]
    receivers.append(heartbeat)
    receivers.append({"name": NULL_RECEIVER})
    channels[WATCHDOG_ALERT] = ["heartbeat"] if alerting.heartbeat_url is not None else []

    repeat = {"critical": timing.critical_repeat_interval, "info": timing.info_repeat_interval}
    routes: list[dict[str, Any]] = [
        {
            "receiver": HEARTBEAT_RECEIVER,
            "matchers": [f'alertname="{WATCHDOG_ALERT}"'],
            "group_wait": "0s",
            "group_interval": timing.heartbeat_interval,
            "repeat_interval": timing.heartbeat_interval,
        },
        # After the Watchdog's route (severity none too), before the fallback that treats unknown severities as
        # warnings: "none" is a known severity that must never notify.
        {"receiver": NULL_RECEIVER, "matchers": ['severity="none"']},
    ]
    for severity in ROUTED_SEVERITIES:
        route: dict[str, Any] = {"receiver": severity, "matchers": [f'severity="{severity}"']}
        if severity in repeat:
            route["repeat_interval"] = repeat[severity]
        routes.append(route)

    document: dict[str, Any] = {
        "global": global_section,
        "templates": [TEMPLATE_FILE_NAME],
        "route": {
            # Alerts with no known severity are treated as warnings rather than dropped.
            "receiver": "warning",
            "group_by": list(GROUP_BY),
            "group_wait": timing.group_wait,
            "group_interval": timing.group_interval,
            "repeat_interval": timing.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            {
                # A critical alert already pages: its warning and info siblings would only add noise.
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity=~"warning|info"'],
                "equal": list(GROUP_BY),
            }
        ],
        "receivers": receivers,
    }
    header = "# Rendered by `otel-monitoring alertmanager render` from settings; docs/alertmanager.md.\n"
    config = header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)
    return RenderedAlertmanagerConfig(config, render_template(dashboard_url), channels, dict(secrets.files))


def render_template(dashboard_url: str) -> str:
    """The notification template file with the dashboard base URL filled in.

    >>> 'http://grafana:3000' in render_template("http://grafana:3000")
    True
    """
    text = resources.files("otel_monitoring").joinpath("templates/alertmanager.tmpl").read_text(encoding="utf-8")
    # A JSON string is a valid Go string literal for any URL: quotes and backslashes stay escaped.
    return text.replace(_DASHBOARD_PLACEHOLDER, json.dumps(dashboard_url))


def _write_private(path: Path, text: str) -> None:
    # The config holds secrets unless they are rendered as files: readable by its owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode on open


def write_alertmanager_config(
    settings: Settings,
    out: str | os.PathLike[str],
    *,
    timing: RouteTiming | None = None,
    secrets_dir: str | os.PathLike[str] | None = None,
) -> RenderedAlertmanagerConfig:
    """Render from ``settings`` and write the config to ``out`` and the template beside it (and the secret
    files into ``secrets_dir``). The dashboard link is ``alerting.dashboard_url``, else ``grafana.url``.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     rendered = write_alertmanager_config(Settings(), pathlib.Path(tmp, "alertmanager.yml"))
    ...     sorted(path.name for path in pathlib.Path(tmp).iterdir())
    ['alertmanager.yml', 'otel-monitoring.tmpl']
    """
    alerting = settings.alerting
    dashboard_url = alerting.dashboard_url or settings.grafana.url
    rendered = render_alertmanager_config(alerting, dashboard_url=dashboard_url, timing=timing, secrets_dir=secrets_dir)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if secrets_dir is not None:
        directory = Path(secrets_dir)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, content in rendered.secret_files.items():
            _write_private(directory / name, content)
    _write_private(target, rendered.config)
    (target.parent / TEMPLATE_FILE_NAME).write_text(rendered.template, encoding="utf-8")
    return rendered
