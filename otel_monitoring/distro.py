"""The OpenTelemetry distro and configurator: ``opentelemetry-instrument uvicorn app:app`` needs no code.

``opentelemetry-instrument`` loads the distro and the configurator from the entry-point groups
``opentelemetry_distro`` and ``opentelemetry_configurator`` (pyproject.toml). The configurator builds
the process's ``Telemetry`` from the settings, so ``OTEL_METRICS_EXPORTER=prometheus`` and ``otlp``
keep their standard meaning while the data goes through our views and processing; the
``otel_monitoring_asgi`` instrumentor (``instrumentation.py``) adds the HTTP server middleware to
every Starlette and FastAPI app.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

__all__ = ["OtelMonitoringConfigurator", "OtelMonitoringDistro", "configure_from_settings"]

_logger = logging.getLogger(__name__)


class OtelMonitoringDistro(BaseDistro):  # type: ignore[misc]
    """Sets the environment defaults our pipeline expects before instrumentors load."""

    def _configure(self, **kwargs: Any) -> None:
        from otel_monitoring.settings import apply_instrumentation_defaults

        apply_instrumentation_defaults()


class OtelMonitoringConfigurator(_BaseConfigurator):
    """Builds the MeterProvider (our views, readers and the facade bridge) and makes it global."""

    def _configure(self, **kwargs: Any) -> None:
        configure_from_settings()


def configure_from_settings() -> None:
    """Install the process-wide pipeline and the global MeterProvider; metrics only, traces are untouched."""
    from otel_monitoring import config
    from otel_monitoring.metrics import default_registry
    from otel_monitoring.telemetry import Telemetry, set_telemetry

    settings = config.get_settings()
    if settings.exporters.metrics is None:
        # Embedded mode is the default: serve a standalone endpoint rather than send OTLP to nobody.
        settings = settings.model_copy(
            update={"exporters": settings.exporters.model_copy(update={"metrics": ["prometheus"]})}
        )
    telemetry = Telemetry(settings, default_registry())
    set_telemetry(telemetry)
    otel_metrics.set_meter_provider(telemetry.meter_provider)
    _logger.debug("otel-monitoring configured with metrics exporters %s", settings.exporters.metrics)
