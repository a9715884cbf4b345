"""``render_deploy``: every file of deploy/ from settings, as a mapping of relative path to text, and
``write_deploy`` to write them. Rendering is pure (no clock, no randomness, no environment): the committed
files can be compared with a fresh render.

>>> from otel_monitoring.settings import Settings
>>> rendered = render_deploy(Settings())
>>> "compose/compose.yaml" in rendered.files and "kubernetes/kustomization.yaml" in rendered.files
True
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from otel_monitoring.alertmanager_config import TEMPLATE_FILE_NAME
from otel_monitoring.dashboards.provisioning import dashboard_provider
from otel_monitoring.deploy import compose, grafana, kubernetes, prometheus
from otel_monitoring.deploy._yaml import GENERATED, dump_yaml
from otel_monitoring.deploy.alertmanager import render_stack_alertmanager
from otel_monitoring.deploy.sidecar import render_sidecar_config
from otel_monitoring.deploy.stack import PORTS, WEB_USERNAME
from otel_monitoring.settings import Settings

__all__ = ["GENERATED_DIRS", "RenderedDeploy", "render_deploy", "stale_files", "write_deploy"]

GENERATED_DIRS = ("compose", "kubernetes")
"""The subdirectories of deploy/ that ``deploy render`` owns; anything else there (README.md) is left alone."""


@dataclass(frozen=True, slots=True)
class RenderedDeploy:
    """The files (path relative to the output directory -> text) and warnings for the user."""

    files: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def _rule_files(settings: Settings, rule_format: str) -> dict[str, str]:
    """What ``otel-monitoring rules render`` writes for these settings (built-in pack, alerting.app, rule files)."""
    from otel_monitoring.rules.render import write_rule_files
    from otel_monitoring.rules_cli import collect_groups

    groups = collect_groups(settings, search_path=os.getcwd())
    with tempfile.TemporaryDirectory(prefix="otel-monitoring-deploy-") as scratch:
        paths = write_rule_files(groups, scratch, rule_format=rule_format)  # type: ignore[arg-type]
        return {path.name: path.read_text(encoding="utf-8") for path in paths}


def _compose_files(settings: Settings) -> tuple[dict[str, str], list[str]]:
    stack = render_stack_alertmanager(
        settings, secrets_dir="/run/secrets", relay_url=f"http://alert-relay:{PORTS['alert_relay']}"
    )
    files = {
        "Dockerfile": compose.render_dockerfile(),
        "compose.yaml": compose.render_compose(settings, alertmanager_secrets=stack.secrets),
        "env.example": compose.render_env_example(alertmanager_secrets=stack.secrets),
        "sidecar/sidecar.yaml": render_sidecar_config(receiver_host="0.0.0.0"),
        "prometheus/prometheus.yml": prometheus.render_prometheus_config(settings, username=WEB_USERNAME),
        "prometheus/promtool-http.yml": prometheus.promtool_http_config(username=WEB_USERNAME),
        "alertmanager/alertmanager.yml": stack.rendered.config,
        f"alertmanager/{TEMPLATE_FILE_NAME}": stack.rendered.template,
        "grafana/provisioning/datasources/prometheus.yaml": dump_yaml(
            grafana.datasource_provisioning(username=WEB_USERNAME)
        ),
        "grafana/provisioning/dashboards/otel-monitoring.yaml": dump_yaml(
            dashboard_provider(path=grafana.DASHBOARDS_DIR)
        ),
    }
    files.update({f"prometheus/rules/{name}": text for name, text in _rule_files(settings, "prometheus").items()})
    files.update({f"grafana/dashboards/{name}": text for name, text in grafana.dashboard_files().items()})
    return files, list(stack.warnings)


def _kubernetes_files(settings: Settings) -> tuple[dict[str, str], list[str]]:
    stack = render_stack_alertmanager(settings, secrets_dir=kubernetes.ALERTMANAGER_SECRETS_DIR)
    files = {
        "deployment.yaml": dump_yaml(kubernetes.deployment(settings)),
        "sidecar-configmap.yaml": dump_yaml(
            kubernetes.sidecar_config_map(settings, render_sidecar_config(receiver_host="127.0.0.1"))
        ),
        "service.yaml": dump_yaml(kubernetes.service(settings)),
        "servicemonitor.yaml": dump_yaml(kubernetes.service_monitor(settings)),
        "networkpolicy.yaml": dump_yaml(kubernetes.network_policy(settings)),
        "alertmanager-secret.yaml": dump_yaml(
            kubernetes.alertmanager_secret(stack.rendered.config, stack.rendered.template, TEMPLATE_FILE_NAME)
        ),
    }
    files.update({f"rules/{name}": text for name, text in _rule_files(settings, "prometheusrule").items()})
    header = f"{GENERATED}\nApply: kubectl apply -k deploy/kubernetes (namespace: `kustomize edit set namespace`)."
    files["kustomization.yaml"] = dump_yaml(kubernetes.kustomization(sorted(files)), header=header)
    return files, list(stack.warnings)


def render_deploy(settings: Settings) -> RenderedDeploy:
    """Every generated file of deploy/ for ``settings``: ``compose/...`` and ``kubernetes/...``."""
    compose_files, compose_warnings = _compose_files(settings)
    kubernetes_files, kubernetes_warnings = _kubernetes_files(settings)
    files = {f"compose/{path}": text for path, text in compose_files.items()}
    files.update({f"kubernetes/{path}": text for path, text in kubernetes_files.items()})
    warnings = list(dict.fromkeys([*compose_warnings, *kubernetes_warnings]))
    return RenderedDeploy(dict(sorted(files.items())), warnings)


def write_deploy(rendered: RenderedDeploy, out: str | os.PathLike[str]) -> list[Path]:
    """Write the files under ``out`` (directories created) and return their paths."""
    written = []
    for relative, text in rendered.files.items():
        path = Path(out, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(rendered: RenderedDeploy, out: str | os.PathLike[str]) -> list[str]:
    """Files under the generated directories of ``out`` that this render did not produce (left by an older one)."""
    root = Path(out)
    found = {
        path.relative_to(root).as_posix()
        for directory in GENERATED_DIRS
        for path in (root / directory).rglob("*")
        if path.is_file()
    }
    return sorted(found - set(rendered.files))
