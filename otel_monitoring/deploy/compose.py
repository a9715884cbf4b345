"""The docker compose stack: the service and its sidecar, Prometheus, Alertmanager, Pushgateway, the alert relay and
Grafana, with health checks, restart policies, named volumes and ports published on 127.0.0.1 by default.

Secrets are compose secrets read from environment variables when the stack starts; the file names the variables,
never their values. Grafana's generic OAuth settings (``GF_AUTH_GENERIC_OAUTH_*``) are passed through from the
environment the same way.

>>> from otel_monitoring.settings import Settings
>>> sorted(compose_document(Settings(), alertmanager_secrets={})["services"])[:3]
['alert-relay', 'alertmanager', 'grafana']
"""

from __future__ import annotations

import json
from typing import Any

from otel_monitoring.deploy._yaml import GENERATED, dump_yaml
from otel_monitoring.deploy.grafana import DASHBOARDS_DIR
from otel_monitoring.deploy.prometheus import PASSWORD_SECRET_PATH, WEB_CONFIG_PATH, prometheus_flags
from otel_monitoring.deploy.stack import (
    BIND_ADDRESS_VARIABLE,
    GRAFANA_ORG_NAME,
    IMAGES,
    MODEL_API_DEFAULT,
    MODEL_API_VARIABLE,
    PORTS,
    SERVICE_IMAGE,
    WEB_USERNAME,
    service_command,
)
from otel_monitoring.settings import Settings

__all__ = [
    "GRAFANA_OAUTH_VARIABLES",
    "PASSWORD_VARIABLES",
    "compose_document",
    "render_compose",
    "render_dockerfile",
    "render_env_example",
]

PASSWORD_VARIABLES = {
    "prometheus_web_password": "OTEL_MONITORING_PROMETHEUS_PASSWORD",
    "grafana_admin_password": "GRAFANA_ADMIN_PASSWORD",
}
"""Compose secrets every stack needs -> the environment variable each is read from at ``docker compose up``."""

GRAFANA_OAUTH_VARIABLES = (
    "GF_AUTH_GENERIC_OAUTH_ENABLED",
    "GF_AUTH_GENERIC_OAUTH_NAME",
    "GF_AUTH_GENERIC_OAUTH_CLIENT_ID",
    "GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET",
    "GF_AUTH_GENERIC_OAUTH_SCOPES",
    "GF_AUTH_GENERIC_OAUTH_AUTH_URL",
    "GF_AUTH_GENERIC_OAUTH_TOKEN_URL",
    "GF_AUTH_GENERIC_OAUTH_API_URL",
    "GF_AUTH_GENERIC_OAUTH_ALLOW_SIGN_UP",
    "GF_AUTH_GENERIC_OAUTH_ALLOWED_DOMAINS",
    "GF_AUTH_GENERIC_OAUTH_ALLOWED_GROUPS",
    "GF_AUTH_GENERIC_OAUTH_USE_PKCE",
    "GF_AUTH_GENERIC_OAUTH_EMAIL_ATTRIBUTE_PATH",
    "GF_AUTH_GENERIC_OAUTH_LOGIN_ATTRIBUTE_PATH",
    "GF_AUTH_GENERIC_OAUTH_GROUPS_ATTRIBUTE_PATH",
    "GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_PATH",
    "GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_STRICT",
    "GF_AUTH_GENERIC_OAUTH_ORG_MAPPING",
    "GF_AUTH_GENERIC_OAUTH_AUTO_LOGIN",
    "GF_AUTH_DISABLE_LOGIN_FORM",
)
"""Passed through to Grafana unchanged when set in the environment (a bare name in compose's ``environment``)."""

# Settings the service and the sidecar share with whoever runs `docker compose up`: names only, never values.
_PASSED_THROUGH = ("OTEL_MONITORING_PSEUDONYM_KEY",)
_RELAY_PASSED_THROUGH = (
    "OTEL_MONITORING_SMS_URL",
    "OTEL_MONITORING_SMS_ACCOUNT_SID",
    "OTEL_MONITORING_SMS_AUTH_TOKEN",
    "OTEL_MONITORING_SMS_FROM",
    "OTEL_MONITORING_SMS_TO",
)


def _relay_token(alertmanager_secrets: dict[str, str]) -> list[str]:
    # The relay refuses requests without its token (401), so it gets one only when Alertmanager was rendered to
    # send it (a relay-token secret file); setting the variable alone must not cut Alertmanager off.
    return [variable for name, variable in alertmanager_secrets.items() if name == "relay-token"]


def _published(port: int) -> list[str]:
    return [f"${{{BIND_ADDRESS_VARIABLE}:-127.0.0.1}}:{port}:{port}"]


def _python_probe(url: str) -> list[str]:
    # The service image is python:slim, which has neither curl nor wget.
    return ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=3)"]


def _wget_probe(url: str) -> list[str]:
    # The prom/* and grafana images are busybox/alpine based: wget is there.
    return ["CMD", "wget", "-q", "-O", "/dev/null", url]


def _health(test: list[str], *, start_period: str = "10s") -> dict[str, Any]:
    return {"test": test, "interval": "15s", "timeout": "5s", "retries": 5, "start_period": start_period}


def _service_image() -> dict[str, Any]:
    # One image for the sample service, the sidecar, the relay and the set-up jobs: it is otel-monitoring installed.
    return {"image": SERVICE_IMAGE, "build": {"context": "../..", "dockerfile": "deploy/compose/Dockerfile"}}


def compose_document(settings: Settings, *, alertmanager_secrets: dict[str, str]) -> dict[str, Any]:
    """The ``compose.yaml`` document. ``alertmanager_secrets`` maps the secret files the Alertmanager config reads
    to the environment variables that supply them (``render_stack_alertmanager``)."""
    service_name = settings.service.name
    healthy = {"condition": "service_healthy"}
    services: dict[str, Any] = {
        "service": {
            **_service_image(),
            "command": service_command(model_api=f"${{{MODEL_API_VARIABLE}:-{MODEL_API_DEFAULT}}}"),
            "environment": {
                "OTEL_SERVICE_NAME": service_name,
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://sidecar:{PORTS['otlp_http']}",
                "OTEL_METRIC_EXPORT_INTERVAL": "10000",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "PROMETHEUS_PUSH_GATEWAY": f"http://pushgateway:{PORTS['pushgateway']}",
                **dict.fromkeys(_PASSED_THROUGH),
            },
            "volumes": ["service-data:/data"],
            "ports": _published(PORTS["service"]),
            "depends_on": {"sidecar": healthy},
            "healthcheck": _health(_python_probe(f"http://127.0.0.1:{PORTS['service']}/health")),
            "restart": "unless-stopped",
        },
        "sidecar": {
            **_service_image(),
            "command": ["otel-monitoring", "collector", "--config", "/etc/otel-monitoring/sidecar.yaml"],
            "environment": dict.fromkeys(_PASSED_THROUGH),
            "volumes": ["./sidecar/sidecar.yaml:/etc/otel-monitoring/sidecar.yaml:ro"],
            "expose": [str(PORTS["otlp_http"]), str(PORTS["otlp_grpc"]), str(PORTS["sidecar_metrics"])],
            "healthcheck": _health(_python_probe(f"http://127.0.0.1:{PORTS['sidecar_health']}/")),
            "restart": "unless-stopped",
        },
        "prometheus-web-config": {
            **_service_image(),
            # Hashes the password from the secret into the web config on a volume: no hash is ever committed.
            "command": [
                "otel-monitoring",
                "deploy",
                "web-config",
                "--username",
                WEB_USERNAME,
                "--password-file",
                PASSWORD_SECRET_PATH,
                "--out",
                WEB_CONFIG_PATH,
            ],
            "secrets": ["prometheus_web_password"],
            "volumes": ["prometheus-web:/etc/prometheus-web"],
            "restart": "no",
        },
        "prometheus": {
            "image": IMAGES["prometheus"],
            "command": prometheus_flags(settings),
            "volumes": [
                "./prometheus:/etc/prometheus:ro",
                "prometheus-web:/etc/prometheus-web:ro",
                "prometheus-data:/prometheus",
            ],
            "secrets": ["prometheus_web_password"],
            "ports": _published(PORTS["prometheus"]),
            "depends_on": {
                "prometheus-web-config": {"condition": "service_completed_successfully"},
                "sidecar": healthy,
            },
            "healthcheck": _health(
                [
                    "CMD",
                    "promtool",
                    "check",
                    "healthy",
                    f"--url=http://127.0.0.1:{PORTS['prometheus']}",
                    "--http.config.file=/etc/prometheus/promtool-http.yml",
                ],
                start_period="30s",
            ),
            "restart": "unless-stopped",
        },
        "alertmanager": {
            "image": IMAGES["alertmanager"],
            "command": [
                "--config.file=/etc/alertmanager/alertmanager.yml",
                "--storage.path=/alertmanager",
                f"--web.listen-address=:{PORTS['alertmanager']}",
                f"--web.external-url={settings.alerting.alertmanager_url}",
                "--cluster.listen-address=",  # one instance: no gossip port
            ],
            "volumes": ["./alertmanager:/etc/alertmanager:ro", "alertmanager-data:/alertmanager"],
            "ports": _published(PORTS["alertmanager"]),
            "healthcheck": _health(_wget_probe(f"http://127.0.0.1:{PORTS['alertmanager']}/-/healthy")),
            "restart": "unless-stopped",
        },
        "pushgateway": {
            "image": IMAGES["pushgateway"],
            "command": ["--persistence.file=/data/pushgateway.db", f"--web.listen-address=:{PORTS['pushgateway']}"],
            "volumes": ["pushgateway-data:/data"],
            "ports": _published(PORTS["pushgateway"]),
            "healthcheck": _health(_wget_probe(f"http://127.0.0.1:{PORTS['pushgateway']}/-/healthy")),
            "restart": "unless-stopped",
        },
        "alert-relay": {
            **_service_image(),
            "command": ["otel-monitoring", "alert-relay"],
            "environment": {
                "OTEL_MONITORING_ALERT_RELAY_LISTEN": f"0.0.0.0:{PORTS['alert_relay']}",
                "OTEL_MONITORING_ALERT_HISTORY_DATABASE_URL": "sqlite:////data/alert-history.sqlite3",
                **dict.fromkeys(_RELAY_PASSED_THROUGH),
                **dict.fromkeys(_relay_token(alertmanager_secrets)),
            },
            "volumes": ["alert-relay-data:/data"],
            "expose": [str(PORTS["alert_relay"])],
            "healthcheck": _health(_python_probe(f"http://127.0.0.1:{PORTS['alert_relay']}/healthz")),
            "restart": "unless-stopped",
        },
        "grafana": {
            "image": IMAGES["grafana"],
            "environment": {
                "GF_SERVER_ROOT_URL": settings.grafana.url,
                "GF_SECURITY_ADMIN_USER": "admin",
                "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana_admin_password",
                "GF_USERS_ALLOW_SIGN_UP": "false",
                "GF_USERS_AUTO_ASSIGN_ORG_ID": "1",
                "GF_AUTH_ANONYMOUS_ENABLED": "false",
                "GF_ANALYTICS_REPORTING_ENABLED": "false",
                **dict.fromkeys(GRAFANA_OAUTH_VARIABLES),
            },
            "volumes": [
                "./grafana/provisioning:/etc/grafana/provisioning:ro",
                f"./grafana/dashboards:{DASHBOARDS_DIR}:ro",
                "grafana-data:/var/lib/grafana",
            ],
            "secrets": ["grafana_admin_password", "prometheus_web_password"],
            "ports": _published(PORTS["grafana"]),
            "depends_on": {"prometheus": healthy},
            "healthcheck": _health(_wget_probe(f"http://127.0.0.1:{PORTS['grafana']}/api/health"), start_period="30s"),
            "restart": "unless-stopped",
        },
        "grafana-org": {
            **_service_image(),
            # Grafana has no setting for the main organization's name: set it through the API once it is up.
            "command": [
                "otel-monitoring",
                "deploy",
                "grafana-org",
                "--url",
                f"http://grafana:{PORTS['grafana']}",
                "--name",
                GRAFANA_ORG_NAME,
                "--username",
                "admin",
                "--password-file",
                "/run/secrets/grafana_admin_password",
            ],
            "secrets": ["grafana_admin_password"],
            "depends_on": {"grafana": healthy},
            "restart": "on-failure:5",
        },
    }
    if alertmanager_secrets:
        services["alertmanager"]["secrets"] = sorted(alertmanager_secrets)
    if settings.alerting.relay_url is None or "alert-relay" in settings.alerting.relay_url:
        services["alertmanager"]["depends_on"] = {"alert-relay": healthy}
    secrets = {name: {"environment": variable} for name, variable in PASSWORD_VARIABLES.items()}
    secrets.update({name: {"environment": variable} for name, variable in sorted(alertmanager_secrets.items())})
    volumes = [
        "service-data",
        "prometheus-data",
        "prometheus-web",
        "alertmanager-data",
        "pushgateway-data",
        "alert-relay-data",
    ]
    return {
        "name": "otel-monitoring",
        "services": services,
        "volumes": {name: {} for name in [*volumes, "grafana-data"]},
        "secrets": secrets,
    }


def render_compose(settings: Settings, *, alertmanager_secrets: dict[str, str]) -> str:
    """``compose.yaml`` as text."""
    header = (
        f"{GENERATED}\n"
        "Start: set the variables of env.example (secrets included), then `docker compose up -d` in this directory.\n"
        f"Ports are published on 127.0.0.1 unless {BIND_ADDRESS_VARIABLE} says otherwise."
    )
    return dump_yaml(compose_document(settings, alertmanager_secrets=alertmanager_secrets), header=header)


def render_env_example(*, alertmanager_secrets: dict[str, str]) -> str:
    """``env.example``: every variable the stack reads from the environment, with no value (copy it to ``.env``)."""
    lines = [
        "# Variables `docker compose up` reads (docs/deploy.md). Copy to .env and fill in; never commit .env.",
        "# Generated by `otel-monitoring deploy render`.",
        "",
        "# Required: passwords, read as compose secrets.",
        *(f"{variable}=" for variable in PASSWORD_VARIABLES.values()),
        "",
        "# Host address the published ports bind to (default 127.0.0.1: this machine only).",
        f"# {BIND_ADDRESS_VARIABLE}=127.0.0.1",
        "",
        "# The sample service's model provider (OpenAI-compatible).",
        f"# {MODEL_API_VARIABLE}={MODEL_API_DEFAULT}",
        "",
        "# Pseudonym key shared by the service and the sidecar (at least 16 characters).",
        "OTEL_MONITORING_PSEUDONYM_KEY=",
    ]
    if alertmanager_secrets:
        lines += ["", "# Alert channels configured when the files were rendered (compose secrets)."]
        lines += [f"{variable}=" for variable in sorted(set(alertmanager_secrets.values()))]
    lines += ["", "# Alert relay: SMS through a Twilio-compatible API (optional)."]
    lines += [f"# {variable}=" for variable in _RELAY_PASSED_THROUGH]
    lines += ["", "# Grafana sign-in with OAuth2 (generic OAuth; optional)."]
    lines += [f"# {variable}=" for variable in GRAFANA_OAUTH_VARIABLES]
    return "\n".join(lines) + "\n"


def render_dockerfile() -> str:
    """The image of the sample service (and of otel-monitoring's own processes), built from the repository root."""
    return f"""\
# {GENERATED}
# Build context: the repository root (compose.yaml says so). One image for the sample service, the collector
# sidecar, the alert relay and the set-up jobs.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY otel_monitoring ./otel_monitoring
COPY processors ./processors
# bcrypt hashes Prometheus's basic-auth password at start (otel-monitoring deploy web-config).
# FastAPI for the sample service (otel_monitoring.demo.app).
RUN pip install . fastapi==0.165.0 bcrypt==5.0.0 \\
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin otel \\
    && mkdir -p /data /etc/prometheus-web && chown otel /data /etc/prometheus-web

USER 10001
WORKDIR /data
EXPOSE {PORTS["service"]}
CMD {json.dumps(service_command(model_api=MODEL_API_DEFAULT))}
"""
