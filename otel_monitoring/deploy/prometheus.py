"""Prometheus for the compose stack: the server config, its command-line flags, and the web config (basic auth).

The web config holds a bcrypt hash of the password, so it is made where the password is, when the stack starts
(``otel-monitoring deploy web-config``), never at render time: no password and no hash is ever committed.

>>> from otel_monitoring.settings import Settings
>>> prometheus_flags(Settings())[2]
'--storage.tsdb.retention.time=15d'
"""

from __future__ import annotations

from typing import Any

from otel_monitoring.deploy._yaml import dump_yaml
from otel_monitoring.deploy.stack import PORTS
from otel_monitoring.settings import Settings

__all__ = [
    "PASSWORD_SECRET_PATH",
    "WEB_CONFIG_PATH",
    "hash_password",
    "prometheus_config",
    "prometheus_flags",
    "promtool_http_config",
    "render_prometheus_config",
    "render_web_config",
]

WEB_CONFIG_PATH = "/etc/prometheus-web/web.yml"
"""Where the one-shot job writes the web config, on a volume Prometheus mounts."""

PASSWORD_SECRET_PATH = "/run/secrets/prometheus_web_password"  # noqa: S105 - a path, not a password
"""The compose secret holding Prometheus's basic-auth password (from ``$OTEL_MONITORING_PROMETHEUS_PASSWORD``)."""

BCRYPT_ROUNDS = 12
"""bcrypt cost: about 0.2 s per check here. Prometheus caches successful checks, so a scrape or query pays it once."""


def prometheus_flags(settings: Settings) -> list[str]:
    """Command-line flags of the Prometheus container; retention from ``prometheus.retention_days``."""
    return [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
        f"--storage.tsdb.retention.time={settings.prometheus.retention_days}d",
        f"--web.config.file={WEB_CONFIG_PATH}",
        f"--web.listen-address=:{PORTS['prometheus']}",
        f"--web.external-url={settings.prometheus.url}",
        "--web.enable-lifecycle",  # POST /-/reload after re-rendering rules
    ]


def prometheus_config(settings: Settings, *, username: str) -> dict[str, Any]:
    """The server config: the sidecar as the service's target (``job`` = ``service.name``, as the rule pack and the
    dashboards expect), Pushgateway with its labels kept, Alertmanager, Prometheus itself, and the rule files."""

    def target(host: str, port: str) -> list[dict[str, Any]]:
        return [{"targets": [f"{host}:{PORTS[port]}"]}]

    return {
        "global": {
            "scrape_interval": "15s",
            "evaluation_interval": "15s",
            "external_labels": {"monitor": "otel-monitoring"},
        },
        "rule_files": ["rules/*.rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": target("alertmanager", "alertmanager")}]},
        "scrape_configs": [
            # The sidecar sums every worker of the service into one target (docs/sidecar.md). Its series carry the
            # service's own `job` (the same name): honor_labels keeps it rather than adding an exported_job copy.
            {
                "job_name": settings.service.name,
                "honor_labels": True,
                "static_configs": target("sidecar", "sidecar_metrics"),
            },
            # Pushed series carry their own job and instance: keep them (honor_labels).
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": target("pushgateway", "pushgateway")},
            {"job_name": "alertmanager", "static_configs": target("alertmanager", "alertmanager")},
            {
                "job_name": "prometheus",
                "basic_auth": {"username": username, "password_file": PASSWORD_SECRET_PATH},
                "static_configs": target("localhost", "prometheus"),
            },
        ],
    }


def render_prometheus_config(settings: Settings, *, username: str) -> str:
    """:func:`prometheus_config` as YAML text."""
    return dump_yaml(prometheus_config(settings, username=username))


def promtool_http_config(*, username: str) -> str:
    """The HTTP client config the container's health check gives ``promtool check healthy`` (it needs the auth)."""
    return dump_yaml({"basic_auth": {"username": username, "password_file": PASSWORD_SECRET_PATH}})


def hash_password(password: str, *, rounds: int = BCRYPT_ROUNDS) -> str:
    """A bcrypt hash of ``password`` as Prometheus's web config wants it (``$2b$...``).

    Needs the ``bcrypt`` package (pinned in the service image).

    >>> import bcrypt
    >>> bcrypt.checkpw(b"s3cret", hash_password("s3cret", rounds=4).encode())
    True
    """
    try:
        import bcrypt
    except ImportError as error:  # pragma: no cover - the image installs it
        raise RuntimeError("the bcrypt package is needed to hash the password: pip install bcrypt==5.0.0") from error
    if not password:
        raise ValueError("the password is empty")
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def render_web_config(username: str, password_hash: str) -> str:
    """Prometheus's ``--web.config.file``: basic auth for ``username`` with a bcrypt hash (:func:`hash_password`).

    >>> print(render_web_config("admin", "$2b$04$x").splitlines()[-2:])
    ['basic_auth_users:', '  admin: $2b$04$x']
    """
    header = "Written by `otel-monitoring deploy web-config` when the stack starts; never commit it."
    return dump_yaml({"basic_auth_users": {username: password_hash}}, header=header)
