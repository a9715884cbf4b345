"""The Alertmanager config of the deployed stack, rendered by ``otel_monitoring.alertmanager_config`` with every
secret referenced as a file, so the rendered text can be committed.

The secret files come from the environment when the stack starts (compose secrets; a Kubernetes Secret mounted
by the Alertmanager resource). Which ones are needed depends on the channels set in settings at render time.

>>> from otel_monitoring.settings import Settings
>>> rendered = render_stack_alertmanager(Settings(), secrets_dir="/run/secrets")
>>> rendered.secrets, rendered.warnings
({}, [])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otel_monitoring.alertmanager_config import RenderedAlertmanagerConfig, render_alertmanager_config
from otel_monitoring.settings import AlertingConfig, Settings

__all__ = ["SECRET_FIELDS", "StackAlertmanager", "render_stack_alertmanager"]

SECRET_FIELDS = {
    "slack-webhook": "slack_webhook",
    "smtp-password": "smtp_password",
    "pagerduty-routing-key": "pagerduty_routing_key",
    "relay-token": "relay_token",
}
"""Secret file name (as ``render_alertmanager_config`` names it) -> the ``alerting`` setting it holds."""


@dataclass(frozen=True, slots=True)
class StackAlertmanager:
    """The rendered config, the secret files it reads (file name -> environment variable that supplies it), and
    warnings about settings left out because they cannot be referenced as a file."""

    rendered: RenderedAlertmanagerConfig
    secrets: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _env_name(key: str) -> str:
    for item in AlertingConfig.model_fields[key].metadata:
        names = getattr(item, "names", None)
        if names:
            return str(names[0])
    raise KeyError(key)  # every secret field has an environment variable; a new one without is a bug here


def render_stack_alertmanager(
    settings: Settings, *, secrets_dir: str, relay_url: str | None = None
) -> StackAlertmanager:
    """Render from ``settings.alerting`` with secrets as files in ``secrets_dir``.

    ``relay_url`` is used when ``alerting.relay_url`` is unset (the compose stack runs the relay). The heartbeat
    URL is a secret that Alertmanager reads from the config only, so it is left out, with a warning.
    """
    alerting = settings.alerting
    warnings = []
    updates: dict[str, object] = {}
    if alerting.heartbeat_url is not None:
        updates["heartbeat_url"] = None
        warnings.append(
            f"alerting.heartbeat_url ({_env_name('heartbeat_url')}) is left out of the deploy files: Alertmanager "
            "reads a webhook URL from its config only, and rendered files are committed"
        )
    if alerting.relay_url is None and relay_url is not None:
        updates["relay_url"] = relay_url
    if updates:
        alerting = alerting.model_copy(update=updates)
    dashboard_url = alerting.dashboard_url or settings.grafana.url
    rendered = render_alertmanager_config(alerting, dashboard_url=dashboard_url, secrets_dir=secrets_dir)
    secrets = {name: _env_name(SECRET_FIELDS[name]) for name in rendered.secret_files}
    # The values are never kept: only the names of the files the config reads.
    bare = RenderedAlertmanagerConfig(rendered.config, rendered.template, rendered.channels)
    return StackAlertmanager(bare, secrets, warnings)
