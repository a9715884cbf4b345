"""A processing component: a pure ``MetricsData -> MetricsData`` step, built by a factory from a typed config.

As in the OpenTelemetry Collector, a component type (``sanitize``) has one factory holding its config
class; an instance id is ``type[/name]`` and a pipeline lists ids in order. A processor never calls the
next stage; the pipeline does.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry.sdk.metrics.export import Metric, MetricsData, ResourceMetrics, ScopeMetrics
from pydantic import BaseModel, ConfigDict

from otel_monitoring._instruments import MetricsRegistry

__all__ = ["ComponentConfig", "MetricTransform", "Processor", "ProcessorContext", "ProcessorFactory", "map_metrics"]


class ComponentConfig(BaseModel):
    """Base of every processor's config: unknown keys are refused, and ``Config()`` is always valid."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


ConfigT = TypeVar("ConfigT", bound=ComponentConfig)


@dataclass(frozen=True)
class ProcessorContext:
    """What a processor gets from its host (the in-process pipeline or the sidecar).

    ``registry`` receives the pipeline's own metrics (redactions, overflows), never labels from user
    data. ``clock`` gives Unix nanoseconds; ``secrets`` carries keys such as the pseudonym key, so no
    processor reads the environment itself.
    """

    registry: MetricsRegistry = field(default_factory=MetricsRegistry)
    clock: Callable[[], int] = time.time_ns
    secrets: dict[str, str] = field(default_factory=dict)
    component_id: str = ""


class Processor(ABC):
    """A pure batch transformation. ``start`` and ``shutdown`` are optional; ``shutdown`` may be called twice."""

    def start(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Called once before the first batch."""

    @abstractmethod
    def process(self, data: MetricsData) -> MetricsData:
        """Return the transformed batch; the input is never modified (the SDK's points are frozen)."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release what the processor holds."""


@dataclass(frozen=True)
class ProcessorFactory(Generic[ConfigT]):
    """Builds one component type from its typed config."""

    type_name: str
    config_class: type[ConfigT]
    create: Callable[[ConfigT, ProcessorContext], Processor]

    def create_from(self, raw: dict[str, Any] | None, context: ProcessorContext) -> Processor:
        return self.create(self.config_class.model_validate(raw or {}), context)


MetricTransform = Callable[[Metric, ResourceMetrics, ScopeMetrics], "Metric | None"]


def map_metrics(data: MetricsData, transform: MetricTransform) -> MetricsData:
    """Apply ``transform`` to every metric (None drops it), rebuilding only the scopes and resources that changed.

    Unchanged metrics, scopes, resources and the batch itself are returned as the same objects, so a
    processor with nothing to do costs one call per metric and allocates nothing.
    """
    resources: list[ResourceMetrics] = []
    changed = False
    for resource_metrics in data.resource_metrics:
        scopes: list[ScopeMetrics] = []
        resource_changed = False
        for scope_metrics in resource_metrics.scope_metrics:
            metrics: list[Metric] = []
            scope_changed = False
            for metric in scope_metrics.metrics:
                result = transform(metric, resource_metrics, scope_metrics)
                scope_changed = scope_changed or result is not metric
                if result is not None:
                    metrics.append(result)
            if scope_changed:
                resource_changed = True
                scopes.append(ScopeMetrics(scope_metrics.scope, metrics, scope_metrics.schema_url))
            else:
                scopes.append(scope_metrics)
        if resource_changed:
            changed = True
            resources.append(ResourceMetrics(resource_metrics.resource, scopes, resource_metrics.schema_url))
        else:
            resources.append(resource_metrics)
    return MetricsData(resources) if changed else data
