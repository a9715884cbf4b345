"""Processing components for the OpenTelemetry metrics data model, shared by the in-process path and the sidecar.

A processor is a pure ``MetricsData -> MetricsData`` step that never calls the next stage; a pipeline
runs them in order. In-process, the pipeline is the export-time hook of
``otel_monitoring._bridge.RecordingBridge`` (``Telemetry(processor=...)``), which every reader's
collection passes through. This package stays free of web, CLI and I/O code so both paths can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics.export import MetricsData

__all__ = ["MetricsProcessor", "chain"]

MetricsProcessor = Callable[[MetricsData], MetricsData]


def chain(processors: Sequence[MetricsProcessor]) -> MetricsProcessor:
    """One processor that runs ``processors`` in order."""
    steps = tuple(processors)

    def run(data: MetricsData) -> MetricsData:
        for step in steps:
            data = step(data)
        return data

    return run
