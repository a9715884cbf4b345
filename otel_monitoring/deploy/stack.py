"""Names, ports and images of the deployable stack, in one place: every generated file reads them from here.

>>> PORTS["sidecar_metrics"], IMAGES["prometheus"]
(8889, 'prom/prometheus:v2.53.3')
"""

from __future__ import annotations

import re

__all__ = [
    "APP_CONTAINER",
    "BIND_ADDRESS_VARIABLE",
    "GRAFANA_ORG_NAME",
    "IMAGES",
    "MODEL_API_DEFAULT",
    "MODEL_API_VARIABLE",
    "PORTS",
    "SERVICE_IMAGE",
    "SIDECAR_CONTAINER",
    "WEB_USERNAME",
    "kubernetes_name",
    "service_command",
]

PORTS = {
    "service": 8000,
    "otlp_http": 4318,
    "otlp_grpc": 4317,
    "sidecar_metrics": 8889,
    "sidecar_health": 13133,
    "prometheus": 9090,
    "alertmanager": 9093,
    "pushgateway": 9091,
    "alert_relay": 9095,
    "grafana": 3000,
}
"""The default ports of DESIGN.md."""

# Pinned so that a render is reproducible and an upgrade is a reviewed change. Not pulled here (no Docker on the
# build machine): the configs are checked with Debian's promtool 2.42 and amtool 0.25, which these accept.
IMAGES = {
    "prometheus": "prom/prometheus:v2.53.3",
    "alertmanager": "prom/alertmanager:v0.27.0",
    "pushgateway": "prom/pushgateway:v1.10.0",
    "grafana": "grafana/grafana:11.3.1",
}

SERVICE_IMAGE = "otel-monitoring-sample:0.1.0"
"""The image built from deploy/compose/Dockerfile: the sample service, and otel-monitoring for the sidecar,
the alert relay and the one-shot set-up jobs."""

MODEL_API_VARIABLE = "MODEL_API_URL"
"""Where the sample service's model provider is (an OpenAI-compatible ``POST /v1/chat/completions``)."""

MODEL_API_DEFAULT = "http://model-api:9000"
"""Nothing answers there unless you run a provider under that name: generations then fail with 502, and the
error alerts fire (the stack monitors itself)."""


def service_command(*, model_api: str) -> list[str]:
    """The service container's command: the demo's sample service (FastAPI, SQLite, a cache, a model provider)
    under ``opentelemetry-instrument``, served by uvicorn, exporting OTLP to the sidecar.

    >>> service_command(model_api="http://m:9000")[:4]
    ['opentelemetry-instrument', 'python', '-m', 'otel_monitoring.demo.app']
    """
    return [
        "opentelemetry-instrument",
        "python",
        "-m",
        "otel_monitoring.demo.app",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORTS["service"]),
        "--database",
        "sqlite:////data/content.sqlite3",
        "--model-api",
        model_api,
    ]


APP_CONTAINER = "app"
SIDECAR_CONTAINER = "otel-sidecar"

GRAFANA_ORG_NAME = "AIAgency"
"""Name given to Grafana's main organization (the seed's)."""

WEB_USERNAME = "admin"
"""User of Prometheus's basic auth (web config); its password comes from the environment at start."""

BIND_ADDRESS_VARIABLE = "OTEL_MONITORING_BIND_ADDRESS"
"""Compose variable for the host address published ports bind to (default 127.0.0.1: this machine only)."""


def kubernetes_name(text: str) -> str:
    """A DNS-1123 label (Kubernetes object and container names) made from a service name.

    >>> kubernetes_name("aiagency_core")
    'aiagency-core'
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "service"
