"""Processing components for the OpenTelemetry metrics data model, shared by the in-process path and the sidecar.

A processor is a pure ``MetricsData -> MetricsData`` step built by a factory from a typed config; a
pipeline runs them in order. In-process, the pipeline is the export-time hook of
``otel_monitoring._bridge.RecordingBridge``, which every reader's collection passes through. This
package stays free of web, CLI and I/O code so both paths can use it. docs/processors.md describes
the components and the default order.
"""

from processors.component import ComponentConfig, Processor, ProcessorContext, ProcessorFactory
from processors.pipeline import DEFAULT_PIPELINE, Pipeline, PipelineConfigError, build_pipeline

__all__ = [
    "DEFAULT_PIPELINE",
    "ComponentConfig",
    "Pipeline",
    "PipelineConfigError",
    "Processor",
    "ProcessorContext",
    "ProcessorFactory",
    "build_pipeline",
]
