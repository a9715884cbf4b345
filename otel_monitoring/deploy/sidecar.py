"""The collector sidecar's config for the deployed stack, as the ``otel-monitoring collector`` runtime reads it.

In Kubernetes the sidecar shares the pod's network with the service, so OTLP is received on loopback only; in
compose it is a container of its own, reached by name on the compose network (never published on the host).

>>> "127.0.0.1:4318" in render_sidecar_config(receiver_host="127.0.0.1")
True
"""

from __future__ import annotations

from typing import Any

from otel_monitoring.deploy._yaml import dump_yaml
from otel_monitoring.deploy.stack import PORTS

__all__ = ["render_sidecar_config", "sidecar_config"]


def sidecar_config(*, receiver_host: str) -> dict[str, Any]:
    """The config as a mapping: OTLP in, memory limiter, sanitize, business, cardinality, batch, Prometheus out."""
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "http": {"endpoint": f"{receiver_host}:{PORTS['otlp_http']}"},
                    "grpc": {"endpoint": f"{receiver_host}:{PORTS['otlp_grpc']}"},
                }
            }
        },
        "processors": {
            # First: refuse data (503, senders retry) before the container's memory limit is reached.
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            "sanitize": None,
            "business": {"top_customers": 20},
            "cardinality": {"limit": 2000},
            "batch": {"timeout": "200ms"},
        },
        "exporters": {
            "prometheus": {"endpoint": f"0.0.0.0:{PORTS['sidecar_metrics']}", "metric_expiration": "5m"},
        },
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{PORTS['sidecar_health']}", "path": "/"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "sanitize", "business", "cardinality", "batch"],
                    "exporters": ["prometheus"],
                }
            },
        },
    }


def render_sidecar_config(*, receiver_host: str) -> str:
    """The config as YAML text (``otel-monitoring collector validate --config`` accepts it)."""
    return dump_yaml(sidecar_config(receiver_host=receiver_host))
