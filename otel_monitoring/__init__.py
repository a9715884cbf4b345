"""otel-monitoring: monitoring for Python web services on OpenTelemetry.

>>> from otel_monitoring import metrics, exporter, alerts, config
"""

__version__ = "0.1.0"
