"""Pipelines are built from a Collector-style config; every registered component honours the lifecycle contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.metrics.export import MetricsData

from otel_monitoring.metrics import MetricsRegistry
from processors import DEFAULT_PIPELINE, PipelineConfigError, ProcessorContext, build_pipeline
from processors.pipeline import factories

BAD_PIPELINES = yaml.safe_load((Path(__file__).parent / "testdata" / "pipelines.yaml").read_text())


def context() -> ProcessorContext:
    return ProcessorContext(registry=MetricsRegistry(), clock=lambda: 1_000, secrets={"pseudonym_key": "k" * 32})


@pytest.mark.parametrize("type_name", sorted(factories()))
def test_every_component_builds_from_defaults_processes_an_empty_batch_and_shuts_down_twice(type_name: str) -> None:
    factory = factories()[type_name]
    assert factory.type_name == type_name
    assert factory.config_class() == factory.config_class.model_validate({})  # Config() with no arguments is valid
    processor = factory.create_from({}, context())
    processor.start()
    assert processor.process(MetricsData([])) == MetricsData([])
    processor.shutdown()
    processor.shutdown()


def test_default_pipeline_runs_sanitize_business_cardinality_in_that_order() -> None:
    pipeline = build_pipeline({}, None, context())
    assert pipeline.ids == list(DEFAULT_PIPELINE) == ["sanitize", "business", "cardinality"]


def test_named_instances_get_their_own_config() -> None:
    processors = {
        "cardinality/tight": {"limit": 5},
        "aggregate/no_pod": {"rules": [{"metrics": ["*"], "remove": ["pod"]}]},
    }
    pipeline = build_pipeline(processors, ["sanitize", "aggregate/no_pod", "cardinality/tight"], context())
    assert pipeline.ids == ["sanitize", "aggregate/no_pod", "cardinality/tight"]
    tight = dict(pipeline.steps)["cardinality/tight"]
    assert tight.limit_for("anything") == 5  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", BAD_PIPELINES, ids=[case["error"].split(":")[0] for case in BAD_PIPELINES])
def test_bad_pipelines_are_refused_with_one_line_naming_the_key(case: dict[str, Any]) -> None:
    with pytest.raises(PipelineConfigError) as raised:
        build_pipeline(case["processors"], case["pipeline"], context())
    assert str(raised.value) == case["error"]
