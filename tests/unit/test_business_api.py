"""The business API: what it records, with which attributes, what it refuses (with one warning, never an
exception into the host app), and what leaves the process."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Metric, MetricsData, Sum
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring import business
from otel_monitoring._cells import CounterCell, HistogramCell
from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import MetricsRegistry, default_registry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry
from processors.business import (
    BUSINESS_SCOPE,
    CONTENT_TYPE_ATTRIBUTE,
    COST_METRIC,
    COST_OUTPUT,
    CUSTOMER_ATTRIBUTE,
    GENERATIONS_METRIC,
    GENERATIONS_OUTPUT,
    PROVIDER_ATTRIBUTE,
    REQUEST_MODEL_ATTRIBUTE,
    RESPONSE_MODEL_ATTRIBUTE,
    SATISFACTION_BUCKETS,
    SATISFACTION_MEAN_OUTPUT,
    SATISFACTION_METRIC,
    STATUS_ATTRIBUTE,
    TOKEN_CACHE_ATTRIBUTE,
    TOKEN_TYPE_ATTRIBUTE,
    TOKEN_USAGE_METRIC,
    BusinessProcessor,
    ModelPrice,
)

CUSTOMER = "acme-corp-4711"
GPT = {"model": "gpt-4o", "provider": "openai"}


def generation(registry: MetricsRegistry, **overrides: Any) -> None:
    arguments: dict[str, Any] = {
        "client_id": CUSTOMER,
        **GPT,
        "input_tokens": 100,
        "output_tokens": 20,
        "content_type": "article",
        "registry": registry,
    }
    arguments.update(overrides)
    business.record_generation(**arguments)


def histograms(registry: MetricsRegistry, name: str) -> dict[frozenset[tuple[str, Any]], HistogramCell]:
    family = registry.get(name)
    assert family is not None, f"{name} was never declared"
    cells = {frozenset(series.attributes.items()): series.cell for series in family.series()}
    assert all(isinstance(cell, HistogramCell) for cell in cells.values())
    return cells  # type: ignore[return-value]


def counters(registry: MetricsRegistry, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    family = registry.get(name)
    assert family is not None, f"{name} was never declared"
    values = {}
    for series in family.series():
        assert isinstance(series.cell, CounterCell)
        values[frozenset(series.attributes.items())] = series.cell.get()
    return values


def token_attributes(token_type: str, customer: str = CUSTOMER, **extra: str) -> frozenset[tuple[str, Any]]:
    return frozenset(
        {
            "gen_ai.operation.name": "chat",
            PROVIDER_ATTRIBUTE: GPT["provider"],
            REQUEST_MODEL_ATTRIBUTE: GPT["model"],
            TOKEN_TYPE_ATTRIBUTE: token_type,
            CUSTOMER_ATTRIBUTE: customer,
            **extra,
        }.items()
    )


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first refusal of every argument, whatever ran before it."""
    monkeypatch.setattr(business, "_warned", set())


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == business.__name__ and r.levelname == "WARNING"]


def snapshot(registry: MetricsRegistry) -> dict[str, Any]:
    """Every series of every family with its value: what must not change when a call is refused."""
    values: dict[str, Any] = {}
    for family in registry.families():
        for series in family.series():
            cell: Any = series.cell
            values[f"{family.name}{series.label_values}"] = (
                cell.snapshot() if isinstance(cell, HistogramCell) else cell.get()
            )
    return values


# --- record_generation ------------------------------------------------------------------------------------------


def test_sums_tokens_exactly_by_token_type_over_many_calls() -> None:
    registry = MetricsRegistry()
    rng = random.Random(4)
    calls = [(rng.randrange(0, 200_000), rng.randrange(0, 50_000)) for _ in range(5_000)]
    for input_tokens, output_tokens in calls:
        generation(registry, input_tokens=input_tokens, output_tokens=output_tokens)

    cells = histograms(registry, TOKEN_USAGE_METRIC)
    assert set(cells) == {token_attributes("input"), token_attributes("output")}
    input_cell, output_cell = cells[token_attributes("input")], cells[token_attributes("output")]
    assert input_cell.snapshot()[1] == sum(i for i, _ in calls)
    assert output_cell.snapshot()[1] == sum(o for _, o in calls)
    assert sum(input_cell.snapshot()[0]) == sum(output_cell.snapshot()[0]) == len(calls)


def test_token_usage_has_the_semconv_unit_and_advice_buckets() -> None:
    registry = MetricsRegistry()
    generation(registry)
    family = registry.get(TOKEN_USAGE_METRIC)
    duration = registry.get("gen_ai.client.operation.duration")

    # https://github.com/open-telemetry/semantic-conventions/blob/main/docs/gen-ai/gen-ai-metrics.md
    assert family is not None and family.kind == "histogram" and family.unit == "{token}"
    assert family.buckets == tuple(float(4**power) for power in range(14))  # type: ignore[union-attr]
    assert duration is not None and duration.kind == "histogram" and duration.unit == "s"
    assert duration.buckets == tuple(0.01 * 2**power for power in range(14))  # type: ignore[union-attr]


def test_response_model_and_operation_become_attributes_when_given() -> None:
    registry = MetricsRegistry()
    generation(registry, response_model="gpt-4o-2024-08-06", operation="generate_content")

    [attributes, _] = [dict(key) for key in histograms(registry, TOKEN_USAGE_METRIC)]
    assert attributes[RESPONSE_MODEL_ATTRIBUTE] == "gpt-4o-2024-08-06"
    assert attributes["gen_ai.operation.name"] == "generate_content"


def test_splits_cached_prompt_tokens_and_keeps_every_prompt_token_under_input() -> None:
    registry = MetricsRegistry()
    generation(registry, input_tokens=1_000, cached_input_tokens=600, cache_write_tokens=150, output_tokens=7)

    sums = {key: cell.snapshot()[1] for key, cell in histograms(registry, TOKEN_USAGE_METRIC).items()}
    assert sums == {
        token_attributes("input"): 1_000 - 600 - 150,
        token_attributes("input", **{TOKEN_CACHE_ATTRIBUTE: "read"}): 600,
        token_attributes("input", **{TOKEN_CACHE_ATTRIBUTE: "creation"}): 150,
        token_attributes("output"): 7,
    }
    assert sum(value for key, value in sums.items() if (TOKEN_TYPE_ATTRIBUTE, "input") in key) == 1_000


def test_duration_lands_in_its_semconv_bucket_and_a_failure_carries_error_type() -> None:
    registry = MetricsRegistry()
    generation(registry, duration=0.03)
    generation(registry, duration=0.03)
    generation(registry, duration=90.0, status="timeout")
    generation(registry)  # no duration given: nothing recorded for it

    cells = histograms(registry, "gen_ai.client.operation.duration")
    ok_key = frozenset(
        {"gen_ai.operation.name": "chat", PROVIDER_ATTRIBUTE: "openai", REQUEST_MODEL_ATTRIBUTE: "gpt-4o"}.items()
    )
    failed_key = ok_key | {("error.type", "timeout")}
    assert set(cells) == {ok_key, failed_key}
    ok_counts, ok_sum, _, _ = cells[ok_key].snapshot()
    bounds = business.OPERATION_DURATION_BUCKETS
    assert ok_counts[bounds.index(0.04)] == 2 and sum(ok_counts) == 2 and ok_sum == pytest.approx(0.06)
    failed_counts, _, _, _ = cells[failed_key].snapshot()
    assert failed_counts[len(bounds)] == 1  # past the last bound: the +Inf bucket


def test_counts_generations_by_content_type_status_and_customer() -> None:
    registry = MetricsRegistry()
    for _ in range(3):
        generation(registry, content_type="article")
    generation(registry, content_type="image")
    generation(registry, content_type="article", status="error")
    generation(registry, content_type="article", client_id="globex")

    def key(content_type: str, status: str, customer: str) -> frozenset[tuple[str, Any]]:
        return frozenset(
            {CONTENT_TYPE_ATTRIBUTE: content_type, STATUS_ATTRIBUTE: status, CUSTOMER_ATTRIBUTE: customer}.items()
        )

    assert counters(registry, GENERATIONS_METRIC) == {
        key("article", "ok", CUSTOMER): 3,
        key("image", "ok", CUSTOMER): 1,
        key("article", "error", CUSTOMER): 1,
        key("article", "ok", "globex"): 1,
    }


def test_records_cost_only_when_the_caller_gives_it() -> None:
    registry = MetricsRegistry()
    generation(registry)
    assert counters(registry, COST_METRIC) == {}

    generation(registry, cost=0.25)
    generation(registry, cost=0.5)
    expected_key = frozenset(
        {PROVIDER_ATTRIBUTE: "openai", REQUEST_MODEL_ATTRIBUTE: "gpt-4o", CUSTOMER_ATTRIBUTE: CUSTOMER}.items()
    )
    assert counters(registry, COST_METRIC) == {expected_key: 0.75}
    assert registry.get(COST_METRIC).unit == "USD"  # type: ignore[union-attr]


def test_an_int_customer_id_and_its_string_are_one_customer() -> None:
    registry = MetricsRegistry()
    generation(registry, client_id=42)
    generation(registry, client_id="42")

    assert list(counters(registry, GENERATIONS_METRIC).values()) == [2]


def test_a_missing_customer_leaves_the_attribute_out() -> None:
    registry = MetricsRegistry()
    generation(registry, client_id=None)

    assert all(CUSTOMER_ATTRIBUTE not in dict(key) for key in counters(registry, GENERATIONS_METRIC))


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("input_tokens", -1),
        ("output_tokens", -5),
        ("input_tokens", 2.5),
        ("output_tokens", True),
        ("cached_input_tokens", -3),
        ("cache_write_tokens", -3),
        ("cost", -0.01),
        ("cost", math.nan),
        ("cost", math.inf),
        ("duration", -1.0),
        ("model", ""),
        ("provider", None),
        ("content_type", ""),
        ("status", ""),
    ],
)
def test_refuses_bad_input_with_one_warning_naming_the_argument_and_keeps_what_was_recorded(
    argument: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = MetricsRegistry()
    generation(registry, duration=1.0, cost=0.1)
    before = snapshot(registry)

    generation(registry, **{"duration": 1.0, "cost": 0.1, argument: value})  # no exception into the host app

    assert snapshot(registry) == before
    [warning] = warnings_logged(caplog)
    assert re.match(rf"record_generation: {argument} must be .*\(got {re.escape(repr(value))}\); ", warning)
    assert "recorded nothing" in warning


def test_a_streamed_response_without_usage_records_nothing_and_warns_once_per_argument(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = MetricsRegistry()
    generation(registry)
    before = snapshot(registry)

    for _ in range(3):
        generation(registry, input_tokens=None, output_tokens=None)
    generation(registry, output_tokens=None)

    assert snapshot(registry) == before
    assert warnings_logged(caplog) == [
        "record_generation: input_tokens must be a whole number of tokens >= 0 (got None); "
        "the call recorded nothing (later problems with this argument are not logged)",
        "record_generation: output_tokens must be a whole number of tokens >= 0 (got None); "
        "the call recorded nothing (later problems with this argument are not logged)",
    ]


def test_a_good_call_after_a_refused_one_records_as_usual(caplog: pytest.LogCaptureFixture) -> None:
    registry = MetricsRegistry()
    generation(registry, input_tokens=None)
    generation(registry, input_tokens=70)

    assert histograms(registry, TOKEN_USAGE_METRIC)[token_attributes("input")].snapshot()[1] == 70
    assert len(warnings_logged(caplog)) == 1


def test_a_bad_customer_id_is_logged_by_type_never_by_value(caplog: pytest.LogCaptureFixture) -> None:
    registry = MetricsRegistry()
    secret_customer = b"acme-corp-4711"

    generation(registry, client_id=secret_customer)

    assert snapshot(registry) == {}
    [warning] = warnings_logged(caplog)
    assert "client_id must be a string, an int or None (got a bytes)" in warning
    assert "acme" not in warning


def test_refuses_cache_counts_above_the_prompt_tokens(caplog: pytest.LogCaptureFixture) -> None:
    registry = MetricsRegistry()
    generation(registry, input_tokens=100, cached_input_tokens=80, cache_write_tokens=20)
    before = snapshot(registry)

    generation(registry, input_tokens=100, cached_input_tokens=80, cache_write_tokens=30)

    assert snapshot(registry) == before
    [warning] = warnings_logged(caplog)
    assert re.search(r"cached_input_tokens \+ cache_write_tokens \(80 \+ 30\).*input_tokens \(100\)", warning)


def test_families_are_declared_once_per_registry() -> None:
    first, second = MetricsRegistry(), MetricsRegistry()
    generation(first)
    families = {family.name: family for family in first.families()}
    generation(first)
    business.record_usage(client_id=CUSTOMER, feature="export", registry=first)
    business.record_satisfaction(3, registry=first)
    generation(second)

    assert {family.name: family for family in first.families()} == families  # the same objects, none added
    assert first.get(TOKEN_USAGE_METRIC) is not second.get(TOKEN_USAGE_METRIC)
    assert counters(second, GENERATIONS_METRIC) != counters(first, GENERATIONS_METRIC)


def test_records_into_the_process_wide_registry_by_default() -> None:
    content_type = "unit-test-default-registry"
    business.record_generation(client_id=CUSTOMER, **GPT, input_tokens=1, output_tokens=2, content_type=content_type)
    family = default_registry().get(GENERATIONS_METRIC)
    try:
        assert family is not None
        assert [series.cell.get() for series in family.series() if series.label_values[0] == content_type] == [1]  # type: ignore[union-attr]
    finally:
        family.remove(content_type, "ok", CUSTOMER)  # type: ignore[union-attr]
        for token_type in ("input", "output"):
            default_registry().get(TOKEN_USAGE_METRIC).remove("chat", "openai", "gpt-4o", "", token_type, "", CUSTOMER)  # type: ignore[union-attr]


# --- record_usage -----------------------------------------------------------------------------------------------


def test_counts_feature_units_by_feature_and_customer() -> None:
    registry = MetricsRegistry()
    business.record_usage(client_id=CUSTOMER, feature="pdf_export", registry=registry)
    business.record_usage(client_id=CUSTOMER, feature="pdf_export", registry=registry)
    business.record_usage(client_id=CUSTOMER, feature="transcription_minutes", units=12.5, registry=registry)

    def key(feature: str) -> frozenset[tuple[str, Any]]:
        return frozenset({business.FEATURE_ATTRIBUTE: feature, CUSTOMER_ATTRIBUTE: CUSTOMER}.items())

    assert counters(registry, business.USAGE_METRIC) == {key("pdf_export"): 2, key("transcription_minutes"): 12.5}


@pytest.mark.parametrize(("argument", "value"), [("units", -1), ("units", math.nan), ("feature", "")])
def test_usage_refuses_bad_input_with_a_warning_naming_the_argument(
    argument: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = MetricsRegistry()
    business.record_usage(client_id=CUSTOMER, feature="pdf_export", registry=registry)
    before = snapshot(registry)
    arguments: dict[str, Any] = {"client_id": CUSTOMER, "feature": "pdf_export", argument: value}

    business.record_usage(**arguments, registry=registry)

    assert snapshot(registry) == before
    [warning] = warnings_logged(caplog)
    assert warning.startswith(f"record_usage: {argument} must be ") and f"(got {value!r})" in warning


# --- record_satisfaction ----------------------------------------------------------------------------------------


def test_scores_go_to_the_histogram_of_their_scale() -> None:
    registry = MetricsRegistry()
    for score in (5, 4, 4, 1):
        business.record_satisfaction(score, client_id=CUSTOMER, channel="web", registry=registry)
    for answer in (10, 9, 6, 0):
        business.record_satisfaction(answer, channel="email", scale=business.NPS_SCALE, registry=registry)

    key = frozenset({business.CHANNEL_ATTRIBUTE: "web", CUSTOMER_ATTRIBUTE: CUSTOMER}.items())
    [(csat_key, csat)] = histograms(registry, SATISFACTION_METRIC).items()
    counts, total, _, _ = csat.snapshot()
    assert csat_key == key and csat.bounds == SATISFACTION_BUCKETS
    assert total == 14 and counts[SATISFACTION_BUCKETS.index(4.0)] == 2 and sum(counts) == 4
    [(nps_key, nps)] = histograms(registry, business.NPS_METRIC).items()
    counts, total, _, _ = nps.snapshot()
    assert nps_key == frozenset({(business.CHANNEL_ATTRIBUTE, "email")})
    assert total == 25 and sum(counts[:7]) == 2 and counts[9] == counts[10] == 1  # two detractors, two promoters


@pytest.mark.parametrize(
    ("score", "scale", "described"),
    [
        (0, "csat", "a number from 1 to 5"),
        (6, "csat", "a number from 1 to 5"),
        (math.nan, "csat", "a number from 1 to 5"),
        (11, "nps", "a whole number from 0 to 10"),
        (-1, "nps", "a whole number from 0 to 10"),
        (7.5, "nps", "a whole number from 0 to 10"),
    ],
)
def test_refuses_a_score_outside_its_scale_naming_both(
    score: float, scale: str, described: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = MetricsRegistry()
    business.record_satisfaction(3, registry=registry)
    before = snapshot(registry)

    business.record_satisfaction(score, scale=scale, registry=registry)

    assert snapshot(registry) == before
    [warning] = warnings_logged(caplog)
    assert warning.startswith(f"record_satisfaction: score {score!r} is outside the {scale!r} scale ({described})")


def test_refuses_an_unknown_scale_listing_the_valid_ones(caplog: pytest.LogCaptureFixture) -> None:
    registry = MetricsRegistry()

    business.record_satisfaction(3, scale="stars", registry=registry)

    assert snapshot(registry) == {}
    [warning] = warnings_logged(caplog)
    assert warning.startswith("record_satisfaction: unknown scale 'stars' (valid: csat, nps);")


# --- Through the default pipeline -------------------------------------------------------------------------------


def exported(telemetry: Telemetry, reader: InMemoryMetricReader) -> tuple[MetricsData, str]:
    data = reader.get_metrics_data()
    assert data is not None
    return data, render_exposition(telemetry.prometheus_registry, None, None)[0].decode()


def metrics_named(data: MetricsData, name: str) -> Iterator[Metric]:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    yield metric


def points(data: MetricsData, name: str) -> list[tuple[dict[str, Any], Any]]:
    found = []
    for metric in metrics_named(data, name):
        assert isinstance(metric.data, Sum | Gauge | Histogram)
        for point in metric.data.data_points:
            found.append((dict(point.attributes or {}), point))
    return found


def business_processor(telemetry: Telemetry) -> BusinessProcessor:
    for pipeline in telemetry.pipelines:
        for _, step in pipeline.steps:
            if isinstance(step, BusinessProcessor):
                return step
    raise AssertionError("the default pipeline has no business processor")


@pytest.fixture
def pipeline() -> Iterator[tuple[Telemetry, InMemoryMetricReader, MetricsRegistry]]:
    registry, reader = MetricsRegistry(), InMemoryMetricReader()
    telemetry = Telemetry(load_settings(environ={}), registry, extra_readers=[reader], start_exporters=False)
    try:
        yield telemetry, reader, registry
    finally:
        telemetry.shutdown()


def test_the_raw_customer_id_never_leaves_the_process(
    pipeline: tuple[Telemetry, InMemoryMetricReader, MetricsRegistry],
) -> None:
    telemetry, reader, registry = pipeline
    generation(registry, duration=1.5, cost=0.02, cached_input_tokens=10, response_model="gpt-4o-2024-08-06")
    generation(registry, model="gpt-4o-mini", status="error")
    business.record_usage(client_id=CUSTOMER, feature="pdf_export", registry=registry)
    business.record_satisfaction(4, client_id=CUSTOMER, channel="web", registry=registry)
    business.record_satisfaction(9, client_id=CUSTOMER, scale="nps", registry=registry)

    for _ in range(2):  # the first and a later collection
        data, exposition = exported(telemetry, reader)
        assert CUSTOMER not in data.to_json() and CUSTOMER not in exposition

    pseudonyms = {
        attributes[CUSTOMER_ATTRIBUTE]
        for name in (TOKEN_USAGE_METRIC, COST_METRIC, GENERATIONS_METRIC, business.USAGE_METRIC, COST_OUTPUT)
        for attributes, _ in points(data, name)
    }
    assert len(pseudonyms) == 1 and next(iter(pseudonyms)).startswith("u_")  # one customer, still told apart


def test_derived_cost_is_the_tokens_times_the_price_table_of_the_processor(
    pipeline: tuple[Telemetry, InMemoryMetricReader, MetricsRegistry],
) -> None:
    telemetry, reader, registry = pipeline
    model = "gpt-4o-mini-2024-07-18"  # priced by the table's longest matching prefix
    calls = [(1_200, 0, 300), (15_000, 12_000, 2_000), (7, 0, 0)]  # (input, cached input, output)
    for input_tokens, cached, output_tokens in calls:
        generation(
            registry, model=model, input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output_tokens
        )
    data, exposition = exported(telemetry, reader)

    price = business_processor(telemetry).prices.lookup(model, "openai")
    assert isinstance(price, ModelPrice)
    expected = (
        sum(
            (input_tokens - cached) * price.input + cached * price.cached_input + output_tokens * price.output
            for input_tokens, cached, output_tokens in calls
        )
        / 1_000_000
    )
    [(attributes, point)] = points(data, COST_OUTPUT)
    assert point.value == pytest.approx(expected, rel=1e-12)
    assert attributes["model"] == model and attributes["provider"] == "openai"
    assert "otel_monitoring_business_cost_USD_total{" in exposition


def test_an_explicit_cost_wins_over_the_price_table(
    pipeline: tuple[Telemetry, InMemoryMetricReader, MetricsRegistry],
) -> None:
    telemetry, reader, registry = pipeline
    generation(registry, input_tokens=50_000, output_tokens=9_000, cost=0.0123)
    generation(registry, input_tokens=1_000, output_tokens=100, cost=0.0007)
    data, _ = exported(telemetry, reader)

    [(_, point)] = points(data, COST_OUTPUT)
    assert point.value == pytest.approx(0.0123 + 0.0007, rel=1e-12)


def test_satisfaction_mean_is_never_a_mix_of_scales(
    pipeline: tuple[Telemetry, InMemoryMetricReader, MetricsRegistry],
) -> None:
    telemetry, reader, registry = pipeline
    scores = [5, 4, 2, 5]
    for score in scores:
        business.record_satisfaction(score, client_id=CUSTOMER, channel="web", registry=registry)
    for answer in (0, 10, 10):
        business.record_satisfaction(answer, client_id=CUSTOMER, channel="web", scale="nps", registry=registry)
    data, _ = exported(telemetry, reader)

    [(attributes, point)] = points(data, SATISFACTION_MEAN_OUTPUT)
    assert point.value == sum(scores) / len(scores)
    assert attributes == {business.CHANNEL_ATTRIBUTE: "web"}  # the customer is not on the derived series


def test_generations_are_totalled_without_the_customer(
    pipeline: tuple[Telemetry, InMemoryMetricReader, MetricsRegistry],
) -> None:
    telemetry, reader, registry = pipeline
    for customer in ("a", "b", "c"):
        generation(registry, client_id=customer)
    generation(registry, client_id="a", status="error")
    data, _ = exported(telemetry, reader)

    totals = {(a[CONTENT_TYPE_ATTRIBUTE], a[STATUS_ATTRIBUTE]): p.value for a, p in points(data, GENERATIONS_OUTPUT)}
    assert totals == {("article", "ok"): 3, ("article", "error"): 1}
    assert any(scope.scope.name == BUSINESS_SCOPE for rm in data.resource_metrics for scope in rm.scope_metrics)


def test_prometheus_names_are_the_documented_ones(
    pipeline: tuple[Telemetry, InMemoryMetricReader, MetricsRegistry],
) -> None:
    telemetry, _, registry = pipeline
    generation(registry, duration=0.5, cost=0.01)
    business.record_usage(client_id=CUSTOMER, feature="pdf_export", registry=registry)
    business.record_satisfaction(4, registry=registry)
    business.record_satisfaction(8, scale="nps", registry=registry)
    text = render_exposition(telemetry.prometheus_registry, None, None)[0].decode()

    samples = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    documented = open_documented_names()
    assert documented <= samples, f"documented but not exposed: {sorted(documented - samples)}"


def open_documented_names() -> set[str]:
    """The Prometheus sample names listed in docs/business-api.md's table, so the doc cannot drift."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "business-api.md"
    names = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `") and "| `" in line[3:]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            for name in cells[1].replace("`", "").split(","):
                if name.strip():
                    names.add(name.strip())
    assert names, "no metric table found in docs/business-api.md"
    return names
