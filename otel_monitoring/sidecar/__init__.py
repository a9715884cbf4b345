"""The collector sidecar: one process per pod that receives OTLP from every worker, runs the processors and exports.

Only the configuration layer exists so far (:mod:`otel_monitoring.sidecar.config`); the receiver, exporters, queues
and service are built from its models. docs/sidecar-config.md describes the file format.

>>> from otel_monitoring.sidecar import load_collector_config
>>> load_collector_config(None).service.pipelines["metrics"].exporters
['prometheus']
"""

from otel_monitoring.sidecar.config import CollectorConfig, CollectorConfigError, load_collector_config

__all__ = ["CollectorConfig", "CollectorConfigError", "load_collector_config"]
