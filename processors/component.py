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

from opentelemetry.sdk.metrics.export import MetricsData
from pydantic import BaseModel, ConfigDict

from otel_monitoring._instruments import MetricsRegistry

__all__ = ["ComponentConfig", "Processor", "ProcessorContext", "ProcessorFactory"]


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
