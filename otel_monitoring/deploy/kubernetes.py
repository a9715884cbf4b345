"""Kubernetes manifests: the service Deployment with the collector sidecar, its ConfigMap, the Service, a
ServiceMonitor and PrometheusRules for the Prometheus Operator, the Alertmanager config Secret, a NetworkPolicy,
and the kustomization that lists them.

The sidecar is a native sidecar (an init container with ``restartPolicy: Always``, Kubernetes 1.29 and later): it
is ready before the service starts exporting, and stops after it, so the last export of a terminating pod lands.

>>> from otel_monitoring.settings import Settings
>>> deployment(Settings())["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"]
'Always'
"""

from __future__ import annotations

from typing import Any

from otel_monitoring.deploy.stack import (
    APP_CONTAINER,
    MODEL_API_DEFAULT,
    MODEL_API_VARIABLE,
    PORTS,
    SERVICE_IMAGE,
    SIDECAR_CONTAINER,
    kubernetes_name,
    service_command,
)
from otel_monitoring.settings import Settings

__all__ = [
    "ALERTMANAGER_SECRETS_DIR",
    "ALERT_CHANNEL_SECRET",
    "alertmanager_secret",
    "deployment",
    "kustomization",
    "network_policy",
    "service",
    "service_monitor",
    "sidecar_config_map",
]

ALERT_CHANNEL_SECRET = "otel-monitoring-alert-channels"  # noqa: S105 - a Secret object's name
"""Secret holding the alert channels' credentials, created by hand (``kubectl create secret``), never rendered."""

ALERTMANAGER_SECRETS_DIR = f"/etc/alertmanager/secrets/{ALERT_CHANNEL_SECRET}"
"""Where the Prometheus Operator mounts a Secret listed in the Alertmanager resource's ``spec.secrets``."""

PSEUDONYM_SECRET = "otel-monitoring-pseudonym-key"  # noqa: S105 - a Secret object's name
METRICS_PORT_NAME = "metrics"


def _labels(settings: Settings) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": kubernetes_name(settings.service.name),
        "app.kubernetes.io/part-of": "otel-monitoring",
    }


def _metadata(settings: Settings, name: str | None = None) -> dict[str, Any]:
    return {"name": name or kubernetes_name(settings.service.name), "labels": _labels(settings)}


def _downward_env(container: str) -> list[dict[str, Any]]:
    """docs/system-metrics.md: the pod's identity and this container's requests and limits. CPU in millicores
    (``divisor: 1m``; the default divisor would round 250m up to 1), memory in bytes."""

    def field(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    def resource(name: str, which: str, divisor: str | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"containerName": container, "resource": which}
        if divisor is not None:
            ref["divisor"] = divisor
        return {"name": name, "valueFrom": {"resourceFieldRef": ref}}

    return [
        field("K8S_POD_NAME", "metadata.name"),
        field("K8S_NAMESPACE_NAME", "metadata.namespace"),
        field("K8S_NODE_NAME", "spec.nodeName"),
        {"name": "K8S_CONTAINER_NAME", "value": container},
        resource("K8S_CPU_REQUEST_MILLICORES", "requests.cpu", "1m"),
        resource("K8S_CPU_LIMIT_MILLICORES", "limits.cpu", "1m"),
        resource("K8S_MEMORY_REQUEST", "requests.memory"),
        resource("K8S_MEMORY_LIMIT", "limits.memory"),
    ]


def _pseudonym_key() -> dict[str, Any]:
    # Optional: without the Secret the processes warn and use a random key (pseudonyms change on restart).
    return {
        "name": "OTEL_MONITORING_PSEUDONYM_KEY",
        "valueFrom": {"secretKeyRef": {"name": PSEUDONYM_SECRET, "key": "pseudonym-key", "optional": True}},
    }


_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def deployment(settings: Settings) -> dict[str, Any]:
    """The service's Deployment: the app under ``opentelemetry-instrument`` exporting OTLP to the sidecar on
    loopback, and the sidecar probed on its ``health_check`` port."""
    name = kubernetes_name(settings.service.name)
    health = {"httpGet": {"path": "/", "port": PORTS["sidecar_health"]}}
    sidecar = {
        "name": SIDECAR_CONTAINER,
        "image": SERVICE_IMAGE,
        "restartPolicy": "Always",
        "args": ["otel-monitoring", "collector", "--config", "/etc/otel-monitoring/sidecar.yaml"],
        "env": [_pseudonym_key()],
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": PORTS["sidecar_metrics"]},
            {"name": "health", "containerPort": PORTS["sidecar_health"]},
        ],
        "startupProbe": {**health, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**health, "periodSeconds": 10},
        "livenessProbe": {**health, "periodSeconds": 20, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _RESTRICTED,
        "volumeMounts": [{"name": "sidecar-config", "mountPath": "/etc/otel-monitoring", "readOnly": True}],
    }
    app = {
        "name": APP_CONTAINER,
        "image": SERVICE_IMAGE,
        "args": service_command(model_api=f"$({MODEL_API_VARIABLE})"),  # the kubelet expands $(VAR)
        "env": [
            {"name": MODEL_API_VARIABLE, "value": MODEL_API_DEFAULT},
            {"name": "OTEL_SERVICE_NAME", "value": settings.service.name},
            {"name": "OTEL_METRICS_EXPORTER", "value": "otlp"},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": f"http://127.0.0.1:{PORTS['otlp_http']}"},
            {"name": "OTEL_METRIC_EXPORT_INTERVAL", "value": "10000"},
            {"name": "OTEL_TRACES_EXPORTER", "value": "none"},
            {"name": "OTEL_LOGS_EXPORTER", "value": "none"},
            _pseudonym_key(),
            *_downward_env(APP_CONTAINER),
        ],
        "ports": [{"name": "http", "containerPort": PORTS["service"]}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 20},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": _RESTRICTED,
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's own scratch
            {"name": "data", "mountPath": "/data"},  # the sample's SQLite database
        ],
    }
    selector = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(settings),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": _labels(settings)},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    # The sidecar drains its batch and exporters within 3 s of SIGTERM (docs/sidecar.md).
                    "terminationGracePeriodSeconds": 30,
                    "initContainers": [sidecar],
                    "containers": [app],
                    "volumes": [
                        {"name": "sidecar-config", "configMap": {"name": f"{name}-otel-sidecar"}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "data", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def sidecar_config_map(settings: Settings, sidecar_yaml: str) -> dict[str, Any]:
    """The ConfigMap holding the sidecar's config file."""
    name = f"{kubernetes_name(settings.service.name)}-otel-sidecar"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(settings, name),
        "data": {"sidecar.yaml": sidecar_yaml},
    }


def service(settings: Settings) -> dict[str, Any]:
    """The Service: the app's HTTP port and the sidecar's metrics port (the ServiceMonitor's endpoint)."""
    metadata = _metadata(settings)
    # The ServiceMonitor's jobLabel: `job` is service.name exactly, even where the object name had to change.
    metadata["labels"]["otel-monitoring/job"] = settings.service.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": {"app.kubernetes.io/name": kubernetes_name(settings.service.name)},
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": METRICS_PORT_NAME, "port": PORTS["sidecar_metrics"], "targetPort": METRICS_PORT_NAME},
            ],
        },
    }


def service_monitor(settings: Settings) -> dict[str, Any]:
    """A ``monitoring.coreos.com/v1`` ServiceMonitor scraping the sidecar, with ``job`` = ``service.name`` (the
    rule pack and the dashboards select services by ``job``)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(settings),
        "spec": {
            "selector": {"matchLabels": _labels(settings)},
            "jobLabel": "otel-monitoring/job",
            # honorLabels: the sidecar's series carry the service's `job` already (the jobLabel's value too).
            "endpoints": [
                {
                    "port": METRICS_PORT_NAME,
                    "path": "/metrics",
                    "interval": "15s",
                    "scrapeTimeout": "10s",
                    "honorLabels": True,
                }
            ],
        },
    }


def alertmanager_secret(config: str, template: str, template_name: str) -> dict[str, Any]:
    """The config Secret of an Alertmanager resource named ``otel-monitoring`` (the Operator reads
    ``alertmanager-<name>``). It holds no credential: those are files of :data:`ALERT_CHANNEL_SECRET`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "alertmanager-otel-monitoring",
            "labels": {"app.kubernetes.io/part-of": "otel-monitoring"},
        },
        "type": "Opaque",
        "stringData": {"alertmanager.yaml": config, template_name: template},
    }


def network_policy(settings: Settings) -> dict[str, Any]:
    """Ingress to the pods: HTTP from anywhere in the cluster, metrics from the ``monitoring`` namespace only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(settings),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": kubernetes_name(settings.service.name)}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": "http"}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "ports": [{"port": METRICS_PORT_NAME}],
                },
            ],
        },
    }


def kustomization(resources: list[str]) -> dict[str, Any]:
    """The kustomization listing every manifest (``kubectl apply -k deploy/kubernetes``)."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": [{"name": SERVICE_IMAGE.split(":")[0], "newTag": SERVICE_IMAGE.split(":")[1]}],
    }
