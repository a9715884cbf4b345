"""The collector sidecar: one process per pod that receives OTLP from every worker, runs the processors and exports.

``otel-monitoring collector [--config FILE]`` runs it (:mod:`otel_monitoring.sidecar.service`): the OTLP/HTTP
receiver, the processors, the ``prometheus`` and ``prometheusremotewrite`` exporters, the memory limiter, batching
and the health check, all built from the config models (:mod:`otel_monitoring.sidecar.config`, docs/sidecar-config.md).
What is not built yet is listed in docs/sidecar.md.

>>> from otel_monitoring.sidecar import load_collector_config
>>> load_collector_config(None).service.pipelines["metrics"].exporters
['prometheus']
"""

from otel_monitoring.sidecar.config import CollectorConfig, CollectorConfigError, load_collector_config

__all__ = ["CollectorConfig", "CollectorConfigError", "load_collector_config"]
