"""Pipelines of processors, built from a Collector-style ``processors`` section and an ordered ``pipeline`` list.

Every reference is checked when the pipeline is built, and errors name the key and the valid choices:
``processing.pipeline[1]: unknown processor type 'sanitise' for id 'sanitise/pii' (valid: aggregate, business,
cardinality, sanitize)``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricsData
from pydantic import ValidationError

from processors.component import Processor, ProcessorContext, ProcessorFactory

__all__ = [
    "COMPONENT_ID_PATTERN",
    "DEFAULT_PIPELINE",
    "Pipeline",
    "PipelineConfigError",
    "build_pipeline",
    "factories",
    "factory_for",
    "parse_component_id",
]

# Why this order: docs/processors.md. Nothing downstream of sanitize sees personal data; business derives
# from clean, pseudonymized data; cardinality bounds everything, the derived series included.
DEFAULT_PIPELINE: tuple[str, ...] = ("sanitize", "business", "cardinality")

# Component type -> module holding its FACTORY. Imported on first use, so a host that never builds a
# pipeline pays nothing for the detectors' regular expressions.
_MODULES = {
    "aggregate": "processors.aggregate",
    "business": "processors.business",
    "cardinality": "processors.cardinality",
    "sanitize": "processors.sanitize",
}
# A component id, as in the OpenTelemetry Collector: ``type[/name]``.
COMPONENT_ID_PATTERN = re.compile(r"^(?P<type>[a-z][a-z0-9_]*)(?:/(?P<name>[A-Za-z0-9_.\-]+))?$")


class PipelineConfigError(ValueError):
    """A processors section or pipeline list that cannot be built; the message is one line naming the key."""


def factory_for(type_name: str) -> ProcessorFactory[Any]:
    factory: ProcessorFactory[Any] = importlib.import_module(_MODULES[type_name]).FACTORY
    return factory


def factories() -> dict[str, ProcessorFactory[Any]]:
    """Every registered component type, by type name."""
    return {type_name: factory_for(type_name) for type_name in _MODULES}


def parse_component_id(component_id: str, key: str) -> tuple[str, str]:
    """``type[/name]`` -> (type, name); the type must be registered."""
    match = COMPONENT_ID_PATTERN.match(component_id) if isinstance(component_id, str) else None
    if match is None:
        raise PipelineConfigError(f"{key}: {component_id!r} is not a component id of the form type[/name]")
    type_name = match.group("type")
    if type_name not in _MODULES:
        valid = ", ".join(sorted(_MODULES))
        raise PipelineConfigError(
            f"{key}: unknown processor type {type_name!r} for id {component_id!r} (valid: {valid})"
        )
    return type_name, match.group("name") or ""


class Pipeline(Processor):
    """Runs its processors in order; ``start`` and ``shutdown`` reach each once."""

    def __init__(self, steps: Sequence[tuple[str, Processor]]) -> None:
        self.steps = list(steps)
        self._started = False
        self._shut_down = False

    @property
    def ids(self) -> list[str]:
        return [component_id for component_id, _ in self.steps]

    def start(self) -> None:
        if not self._started:
            self._started = True
            for _, step in self.steps:
                step.start()

    def process(self, data: MetricsData) -> MetricsData:
        for _, step in self.steps:
            data = step.process(data)
        return data

    def shutdown(self) -> None:
        if not self._shut_down:
            self._shut_down = True
            for _, step in self.steps:
                step.shutdown()


def build_pipeline(
    processors: Mapping[str, Any],
    pipeline: Sequence[str] | None,
    context: ProcessorContext,
    *,
    key_prefix: str = "processing",
) -> Pipeline:
    """Build the pipeline; an id listed in ``pipeline`` without an entry in ``processors`` uses its type's defaults."""
    for component_id in processors:
        parse_component_id(component_id, f"{key_prefix}.processors.{component_id}")
    order = list(DEFAULT_PIPELINE if pipeline is None else pipeline)
    seen: set[str] = set()
    steps: list[tuple[str, Processor]] = []
    for index, component_id in enumerate(order):
        type_name, _ = parse_component_id(component_id, f"{key_prefix}.pipeline[{index}]")
        if component_id in seen:
            raise PipelineConfigError(f"{key_prefix}.pipeline[{index}]: {component_id!r} is listed twice")
        seen.add(component_id)
        raw = processors.get(component_id)
        if raw is not None and not isinstance(raw, Mapping):
            raise PipelineConfigError(f"{key_prefix}.processors.{component_id}: must be a mapping (got {raw!r})")
        step_context = ProcessorContext(context.registry, context.clock, context.secrets, component_id)
        try:
            steps.append((component_id, factory_for(type_name).create_from(dict(raw or {}), step_context)))
        except ValidationError as error:
            raise PipelineConfigError(_first_error(f"{key_prefix}.processors.{component_id}", error)) from None
        except ValueError as error:
            raise PipelineConfigError(f"{key_prefix}.processors.{component_id}: {error}") from None
    unused = sorted(set(processors) - seen)
    if unused:
        raise PipelineConfigError(
            f"{key_prefix}.processors.{unused[0]}: configured but not in {key_prefix}.pipeline ({', '.join(order)})"
        )
    return Pipeline(steps)


def _first_error(prefix: str, error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{prefix}{'.' + location if location else ''}: {message}{shown}"
