"""business: cost from tokens x prices, usage per customer (top N + other), generations, satisfaction."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from pydantic import ValidationError

from otel_monitoring.metrics import MetricsRegistry
from processors.business import (
    BUSINESS_SCOPE,
    COST_METRIC,
    COST_OUTPUT,
    FACTORY,
    GENERATIONS_METRIC,
    GENERATIONS_OUTPUT,
    OTHER_CUSTOMER,
    SATISFACTION_BUCKETS,
    SATISFACTION_MEAN_OUTPUT,
    SATISFACTION_METRIC,
    SATISFACTION_OUTPUT,
    TOKEN_USAGE_METRIC,
    TOKENS_OUTPUT,
    UNPRICED_OUTPUT,
    BusinessConfig,
    BusinessProcessor,
    ModelPrice,
    PriceTable,
    PriceTableError,
    load_price_table,
)
from processors.component import ProcessorContext

SECOND = 1_000_000_000
CUMULATIVE = AggregationTemporality.CUMULATIVE
DELTA = AggregationTemporality.DELTA
RESOURCE = Resource({"service.name": "content-api"})
SCOPE = InstrumentationScope("otel_monitoring.business_api")
SHIPPED_TABLE = Path(__file__).resolve().parents[3] / "processors" / "prices.yaml"
PRICE_FIELDS = {"input", "output", "cached_input", "cache_write"}
REQUIRED_PRICE_FIELDS = {"input", "output", "cached_input"}

# Per-token prices of the shipped table, written out so a test fails if the table or the matching changes.
GPT_4O = {"input": 2.50e-6, "output": 10.00e-6, "cached_input": 1.25e-6}
HAIKU_35 = {"input": 0.80e-6, "output": 4.00e-6, "cached_input": 0.08e-6, "cache_write": 1.00e-6}
FLASH_20 = {"input": 0.10e-6, "output": 0.40e-6}


class FakeClock:
    """Unix nanoseconds that only move when a test says so."""

    def __init__(self, start: int = 1_700_000_000 * SECOND) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


def make_processor(
    clock: FakeClock | None = None, registry: MetricsRegistry | None = None, **config: Any
) -> BusinessProcessor:
    context = ProcessorContext(
        registry=registry if registry is not None else MetricsRegistry(),
        clock=clock if clock is not None else FakeClock(),
        component_id="business",
    )
    processor = FACTORY.create_from(config, context)
    assert isinstance(processor, BusinessProcessor)
    return processor


def token_point(
    model: str | None,
    token_type: str,
    tokens: float,
    *,
    start: int = 1,
    count: int = 1,
    customer: str | None = None,
    provider: str | None = "openai",
    time: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> HistogramDataPoint:
    attributes: dict[str, Any] = {"gen_ai.token.type": token_type, "gen_ai.operation.name": "chat", **(extra or {})}
    if model is not None:
        attributes["gen_ai.request.model"] = model
    if provider is not None:
        attributes["gen_ai.provider.name"] = provider
    if customer is not None:
        attributes["client_id"] = customer
    return HistogramDataPoint(attributes, start, time, count, tokens, [count], [], 0.0, float(tokens))


def cost_point(
    model: str, usd: float, *, customer: str | None = None, start: int = 1, time: int = 2
) -> NumberDataPoint:
    attributes = {"gen_ai.request.model": model, "gen_ai.provider.name": "openai"}
    if customer is not None:
        attributes["client_id"] = customer
    return NumberDataPoint(attributes, start, time, usd)


def tokens_metric(points: Sequence[HistogramDataPoint], temporality: AggregationTemporality = CUMULATIVE) -> Metric:
    return Metric(
        TOKEN_USAGE_METRIC, "Number of input and output tokens used.", "{token}", Histogram(points, temporality)
    )


def cost_metric(points: Sequence[NumberDataPoint]) -> Metric:
    return Metric(COST_METRIC, "Cost", "USD", Sum(points, CUMULATIVE, True))


def batch(*metrics: Metric, resource: Resource = RESOURCE) -> MetricsData:
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(SCOPE, list(metrics), "")], "")])


def derived(data: MetricsData, resource_index: int = 0) -> dict[str, Metric]:
    """The processor's outputs for one resource, by name."""
    scopes = data.resource_metrics[resource_index].scope_metrics
    business = [scope for scope in scopes if scope.scope.name == BUSINESS_SCOPE]
    assert len(business) <= 1
    return {metric.name: metric for scope in business for metric in scope.metrics}


def by_attributes(metric: Metric) -> dict[frozenset[tuple[str, Any]], float]:
    values: dict[frozenset[tuple[str, Any]], float] = {}
    for point in metric.data.data_points:
        key = frozenset((point.attributes or {}).items())
        assert key not in values, f"{metric.name}: two points for {dict(key)}"
        values[key] = point.value if isinstance(point, NumberDataPoint) else point.sum
    return values


def value_of(metric: Metric, **attributes: Any) -> float:
    return by_attributes(metric)[frozenset(attributes.items())]


# --- cost ---------------------------------------------------------------------------------------------------


def test_costs_tokens_at_the_table_price_per_token_type() -> None:
    processor = make_processor()
    data = batch(tokens_metric([token_point("gpt-4o", "input", 1000), token_point("gpt-4o", "output", 500)]))
    outputs = derived(processor.process(data))
    assert value_of(outputs[COST_OUTPUT], model="gpt-4o", provider="openai") == pytest.approx(
        1000 * GPT_4O["input"] + 500 * GPT_4O["output"]
    )
    assert value_of(outputs[TOKENS_OUTPUT], model="gpt-4o", provider="openai", token_type="output") == 500
    assert UNPRICED_OUTPUT not in outputs
    cost = outputs[COST_OUTPUT]
    assert cost.unit == "USD"
    assert isinstance(cost.data, Sum) and cost.data.is_monotonic and cost.data.aggregation_temporality is CUMULATIVE


def test_leaves_the_inputs_as_they_came_and_adds_one_business_scope() -> None:
    processor = make_processor()
    metric = tokens_metric([token_point("gpt-4o", "input", 10)])
    data = batch(metric)
    result = processor.process(data)
    scopes = result.resource_metrics[0].scope_metrics
    assert scopes[0] is data.resource_metrics[0].scope_metrics[0]
    assert scopes[0].metrics[0] is metric
    assert [scope.scope.name for scope in scopes] == [SCOPE.name, BUSINESS_SCOPE]
    assert result.resource_metrics[0].resource is RESOURCE


def test_prices_the_response_model_before_the_request_model() -> None:
    processor = make_processor()
    point = token_point("gpt-4o", "output", 1_000_000, extra={"gen_ai.response.model": "gpt-4o-mini-2024-07-18"})
    outputs = derived(processor.process(batch(tokens_metric([point]))))
    assert value_of(outputs[COST_OUTPUT], model="gpt-4o-mini-2024-07-18", provider="openai") == pytest.approx(0.60)


def test_reads_the_provider_from_the_older_gen_ai_system_attribute() -> None:
    processor = make_processor()
    point = token_point("llama-3.1-8b-instant", "input", 1_000_000, provider=None, extra={"gen_ai.system": "groq"})
    outputs = derived(processor.process(batch(tokens_metric([point]))))
    assert value_of(outputs[COST_OUTPUT], model="llama-3.1-8b-instant", provider="groq") == pytest.approx(0.05)


def test_prices_cache_reads_and_writes_apart_from_plain_input() -> None:
    processor = make_processor()
    model = "claude-3-5-haiku-20241022"
    points = [
        token_point(model, "input", 1000, provider="anthropic"),
        token_point(model, "input", 2000, provider="anthropic", extra={"gen_ai.token.cache": "none"}),
        token_point(model, "input", 30_000, provider="anthropic", extra={"gen_ai.token.cache": "read"}),
        token_point(model, "input", 4000, provider="anthropic", extra={"gen_ai.token.cache": "creation"}),
        token_point(model, "cached_input", 50_000, provider="anthropic"),  # our extension: the same as cache=read
    ]
    outputs = derived(processor.process(batch(tokens_metric(points))))
    expected = 3000 * HAIKU_35["input"] + 80_000 * HAIKU_35["cached_input"] + 4000 * HAIKU_35["cache_write"]
    assert value_of(outputs[COST_OUTPUT], model=model, provider="anthropic") == pytest.approx(expected)
    tokens = outputs[TOKENS_OUTPUT]
    assert value_of(tokens, model=model, provider="anthropic", token_type="input") == 3000
    assert value_of(tokens, model=model, provider="anthropic", token_type="cached_input") == 80_000
    assert value_of(tokens, model=model, provider="anthropic", token_type="cache_write") == 4000


def test_cache_writes_cost_the_input_price_when_the_table_gives_no_cache_write_price() -> None:
    processor = make_processor()
    point = token_point("gpt-4o", "input", 1_000_000, extra={"gen_ai.token.cache": "creation"})
    outputs = derived(processor.process(batch(tokens_metric([point]))))
    assert value_of(outputs[COST_OUTPUT], model="gpt-4o", provider="openai") == pytest.approx(2.50)


SERIES = [
    ("gpt-4o", "input"),
    ("gpt-4o", "output"),
    ("claude-3-5-haiku-latest", "output"),
    ("gemini-2.0-flash-001", "input"),
]
PER_TOKEN = [GPT_4O["input"], GPT_4O["output"], HAIKU_35["output"], FLASH_20["input"]]
step_strategy = st.lists(
    st.tuples(st.integers(0, 50_000), st.booleans(), st.booleans()),  # (new tokens, restart first, reported)
    min_size=len(SERIES),
    max_size=len(SERIES),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(step_strategy, min_size=1, max_size=25))
def test_cost_stays_monotonic_and_equals_the_true_total_across_input_restarts(
    steps: list[list[tuple[int, bool, bool]]],
) -> None:
    clock = FakeClock()
    processor = make_processor(clock)
    starts = [1] * len(SERIES)
    current = [0] * len(SERIES)  # the input's cumulative value since its start
    reported_before_restart = [0] * len(SERIES)  # what earlier lives of the series showed the processor
    last_reported = [0] * len(SERIES)
    previous_cost: dict[frozenset[tuple[str, Any]], float] = {}
    for step_number, step in enumerate(steps):
        clock.advance(10)
        points = []
        for index, (tokens, restart, reported) in enumerate(step):
            if restart and reported:
                # The process restarted: what it had shown before is kept; what it never showed is lost, as in
                # any cumulative pipeline, so the true total counts only what was reported.
                reported_before_restart[index] += last_reported[index]
                last_reported[index] = 0
                starts[index] = 1 + step_number * 10 + index + 1
                current[index] = 0
            current[index] += tokens
            if reported:
                model, token_type = SERIES[index]
                points.append(
                    token_point(model, token_type, current[index], start=starts[index], time=clock.now, provider=None)
                )
                last_reported[index] = current[index]
        outputs = derived(processor.process(batch(tokens_metric(points))))
        cost = by_attributes(outputs[COST_OUTPUT]) if COST_OUTPUT in outputs else {}
        for attributes, value in cost.items():
            assert value >= previous_cost.get(attributes, 0.0) - 1e-12, "a cost series went down"
        previous_cost.update(cost)
        true_total = sum((reported_before_restart[i] + last_reported[i]) * PER_TOKEN[i] for i in range(len(SERIES)))
        assert sum(previous_cost.values()) == pytest.approx(true_total, rel=1e-9, abs=1e-12)


def test_model_with_no_price_goes_to_unpriced_tokens_and_never_to_cost() -> None:
    registry = MetricsRegistry()
    processor = make_processor(registry=registry)
    points = [token_point("acme-secret-model", "input", 700), token_point("acme-secret-model", "output", 300)]
    for _ in range(3):  # the self-metric counts series once, not once per batch
        outputs = derived(processor.process(batch(tokens_metric(points))))
    assert COST_OUTPUT not in outputs
    unpriced = outputs[UNPRICED_OUTPUT]
    assert value_of(unpriced, model="acme-secret-model", provider="openai", token_type="input") == 700
    assert value_of(unpriced, model="acme-secret-model", provider="openai", token_type="output") == 300
    assert value_of(outputs[TOKENS_OUTPUT], model="acme-secret-model", provider="openai", token_type="input") == 700
    family = registry.get("otel_monitoring_business_unpriced_series_total")
    assert family is not None
    assert family.labels(component="business").get() == 2  # type: ignore[union-attr]


def test_unknown_token_type_and_missing_model_are_unpriced_too() -> None:
    processor = make_processor()
    points = [token_point("gpt-4o", "audio_input", 40), token_point(None, "input", 5)]
    outputs = derived(processor.process(batch(tokens_metric(points))))
    assert COST_OUTPUT not in outputs
    unpriced = by_attributes(outputs[UNPRICED_OUTPUT])
    assert unpriced == {
        frozenset({"model": "gpt-4o", "provider": "openai", "token_type": "other"}.items()): 40,
        frozenset({"provider": "openai", "token_type": "input"}.items()): 5,
    }


def test_explicit_cost_wins_over_the_price_table_for_its_account() -> None:
    processor = make_processor()
    first = batch(
        tokens_metric(
            [
                token_point("gpt-4o", "output", 1_000_000, customer="c-explicit"),
                token_point("gpt-4o", "output", 1_000_000, customer="c-priced"),
                token_point("acme-secret-model", "output", 1000, customer="c-explicit"),
            ]
        ),
        cost_metric(
            [
                cost_point("gpt-4o", 0.5, customer="c-explicit"),
                cost_point("acme-secret-model", 0.01, customer="c-explicit"),
            ]
        ),
    )
    outputs = derived(processor.process(first))
    cost = outputs[COST_OUTPUT]
    assert value_of(cost, model="gpt-4o", provider="openai", client_id="c-explicit") == pytest.approx(0.5)
    assert value_of(cost, model="gpt-4o", provider="openai", client_id="c-priced") == pytest.approx(10.0)
    assert value_of(cost, model="acme-secret-model", provider="openai", client_id="c-explicit") == pytest.approx(0.01)
    assert UNPRICED_OUTPUT not in outputs  # the unpriced model has an explicit cost: it is costed
    second = batch(
        tokens_metric([token_point("gpt-4o", "output", 3_000_000, customer="c-explicit")]),
        cost_metric([cost_point("gpt-4o", 0.75, customer="c-explicit")]),
    )
    cost = derived(processor.process(second))[COST_OUTPUT]
    assert value_of(cost, model="gpt-4o", provider="openai", client_id="c-explicit") == pytest.approx(0.75)


# --- customers --------------------------------------------------------------------------------------------

customer_steps = st.lists(
    st.lists(st.integers(0, 200_000), min_size=8, max_size=8),  # new output tokens per customer and batch
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(customer_steps, st.integers(0, 9))
def test_top_customers_plus_other_never_decrease_and_sum_to_the_total(steps: list[list[int]], top: int) -> None:
    clock = FakeClock()
    processor = make_processor(clock, top_customers=top)
    totals = [0] * 8
    latest_cost: dict[frozenset[tuple[str, Any]], float] = {}
    latest_tokens: dict[frozenset[tuple[str, Any]], float] = {}
    for step in steps:
        clock.advance(10)
        for index, tokens in enumerate(step):
            totals[index] += tokens
        points = [
            token_point("gpt-4o", "output", total, customer=f"c{index}", time=clock.now)
            for index, total in enumerate(totals)
        ]
        outputs = derived(processor.process(batch(tokens_metric(points))))
        for latest, name in ((latest_cost, COST_OUTPUT), (latest_tokens, TOKENS_OUTPUT)):
            for attributes, value in by_attributes(outputs[name]).items():
                assert value >= latest.get(attributes, 0.0) - 1e-9, f"{name} {dict(attributes)} went down"
                latest[attributes] = value
        named = {dict(a)["client_id"] for a in by_attributes(outputs[COST_OUTPUT])} - {OTHER_CUSTOMER}
        assert len(named) <= top
        assert sum(latest_tokens.values()) == sum(totals)
        assert sum(latest_cost.values()) == pytest.approx(sum(totals) * GPT_4O["output"], rel=1e-9)


def test_the_biggest_customers_keep_their_pseudonym_and_the_rest_become_other() -> None:
    processor = make_processor(top_customers=2)
    points = [
        token_point("gpt-4o", "output", tokens, customer=customer)
        for customer, tokens in (("c-small", 10), ("c-big", 1000), ("c-mid", 100), ("c-tiny", 1))
    ]
    outputs = derived(processor.process(batch(tokens_metric(points))))
    customers = {
        dict(attributes)["client_id"]: value for attributes, value in by_attributes(outputs[COST_OUTPUT]).items()
    }
    assert set(customers) == {"c-big", "c-mid", OTHER_CUSTOMER}
    assert customers[OTHER_CUSTOMER] == pytest.approx(11 * GPT_4O["output"])


def test_a_custom_customer_attribute_is_ranked_and_kept() -> None:
    processor = make_processor(top_customers=1, customer_attribute="tenant_id")
    points = [
        token_point("gpt-4o", "input", 500, extra={"tenant_id": "t-a"}),
        token_point("gpt-4o", "input", 5, extra={"tenant_id": "t-b"}),
    ]
    outputs = derived(processor.process(batch(tokens_metric(points))))
    assert {dict(a)["tenant_id"] for a in by_attributes(outputs[COST_OUTPUT])} == {"t-a", OTHER_CUSTOMER}


# --- generations and satisfaction -----------------------------------------------------------------------


def test_generations_are_totalled_by_content_type_and_status_without_the_customer() -> None:
    processor = make_processor()
    points = [
        NumberDataPoint({"content.type": "blog_post", "status": "ok", "client_id": "c1"}, 1, 2, 3),
        NumberDataPoint({"content.type": "blog_post", "status": "ok", "client_id": "c2"}, 1, 2, 4),
        NumberDataPoint({"content.type": "blog_post", "status": "error", "client_id": "c2"}, 1, 2, 1),
    ]
    metric = Metric(GENERATIONS_METRIC, "Generations", "{generation}", Sum(points, CUMULATIVE, True))
    outputs = derived(processor.process(batch(metric)))
    generations = outputs[GENERATIONS_OUTPUT]
    assert by_attributes(generations) == {
        frozenset({"content.type": "blog_post", "status": "ok"}.items()): 7,
        frozenset({"content.type": "blog_post", "status": "error"}.items()): 1,
    }
    assert generations.unit == "{generation}"


def test_satisfaction_keeps_the_distribution_and_adds_the_mean() -> None:
    processor = make_processor()
    bounds = list(SATISFACTION_BUCKETS)
    points = [
        # scores 5, 5, 4 from c1 and 1 from c2, on the web channel
        HistogramDataPoint({"client_id": "c1", "channel": "web"}, 1, 2, 3, 14.0, [0, 0, 0, 1, 2, 0], bounds, 4.0, 5.0),
        HistogramDataPoint({"client_id": "c2", "channel": "web"}, 1, 2, 1, 1.0, [1, 0, 0, 0, 0, 0], bounds, 1.0, 1.0),
    ]
    metric = Metric(SATISFACTION_METRIC, "Satisfaction", "{score}", Histogram(points, CUMULATIVE))
    outputs = derived(processor.process(batch(metric)))
    distribution = outputs[SATISFACTION_OUTPUT].data
    assert isinstance(distribution, Histogram)
    (point,) = distribution.data_points
    assert point.attributes == {"channel": "web"}
    assert list(point.bucket_counts) == [1, 0, 0, 1, 2, 0]
    mean = outputs[SATISFACTION_MEAN_OUTPUT].data
    assert isinstance(mean, Gauge)
    assert [(p.attributes, p.value) for p in mean.data_points] == [({"channel": "web"}, 15.0 / 4)]


@pytest.mark.parametrize(
    ("first_scope", "second_scope"),
    [
        (InstrumentationScope("content_api.facade"), InstrumentationScope("content_api.sdk")),
        (InstrumentationScope("content_api", "1.0"), InstrumentationScope("content_api", "2.0")),
    ],
    ids=["two-scope-names", "one-name-two-versions"],
)
def test_generations_and_satisfaction_from_two_scopes_with_equal_attributes_are_two_inputs(
    first_scope: InstrumentationScope, second_scope: InstrumentationScope
) -> None:
    # Bug fixed in business.py (reviewer's repro): the points of every scope of a resource went to one merge
    # keyed by attributes only, so two meters (two modules each calling get_meter(__name__)) recording equal
    # attributes looked like ONE input whose start time kept changing: every batch counted a restart again
    # and true totals 11, 22, 33, 44 came out 11, 33, 66, 110.
    clock = FakeClock()
    processor = make_processor(clock)
    attributes = {"content.type": "text", "status": "ok", "client_id": "c1"}
    bounds = list(SATISFACTION_BUCKETS)
    for step in range(1, 5):
        clock.advance(10)
        time = clock.now
        scopes = []
        for scope, start, per_step, score in ((first_scope, 111, 10, 5.0), (second_scope, 222, 1, 1.0)):
            generations = Sum([NumberDataPoint(attributes, start, time, per_step * step)], CUMULATIVE, True)
            count = per_step * step
            buckets = [count, 0, 0, 0, 0, 0] if score == 1.0 else [0, 0, 0, 0, count, 0]
            scores = HistogramDataPoint(attributes, start, time, count, score * count, buckets, bounds, score, score)
            metrics = [
                Metric(GENERATIONS_METRIC, "Generations", "{generation}", generations),
                Metric(SATISFACTION_METRIC, "Satisfaction", "{score}", Histogram([scores], CUMULATIVE)),
            ]
            scopes.append(ScopeMetrics(scope, metrics, ""))
        outputs = derived(processor.process(MetricsData([ResourceMetrics(RESOURCE, scopes, "")])))
        assert value_of(outputs[GENERATIONS_OUTPUT], **{"content.type": "text", "status": "ok"}) == 11 * step
        distribution = outputs[SATISFACTION_OUTPUT].data
        assert isinstance(distribution, Histogram)
        (point,) = distribution.data_points
        assert (point.count, point.sum) == (11 * step, 51.0 * step)
        assert list(point.bucket_counts) == [step, 0, 0, 0, 10 * step, 0]
        mean = outputs[SATISFACTION_MEAN_OUTPUT].data
        assert isinstance(mean, Gauge)
        assert [p.value for p in mean.data_points] == [pytest.approx(51.0 / 11)]


# --- temporality, resources, idempotence, state -----------------------------------------------------------


def test_delta_token_usage_gives_delta_outputs_of_each_batch() -> None:
    processor = make_processor()
    for tokens in (1000, 3000):
        data = batch(tokens_metric([token_point("gpt-4o", "input", tokens)], DELTA))
        cost = derived(processor.process(data))[COST_OUTPUT]
        assert isinstance(cost.data, Sum) and cost.data.aggregation_temporality is DELTA
        assert value_of(cost, model="gpt-4o", provider="openai") == pytest.approx(tokens * GPT_4O["input"])


def test_outputs_follow_the_token_usage_temporality_even_when_the_explicit_cost_differs() -> None:
    processor = make_processor()
    data = batch(
        cost_metric([cost_point("gpt-4o", 0.25, customer="c1")]),
        tokens_metric([token_point("gpt-4o", "input", 1000, customer="c2")], DELTA),
    )
    outputs = derived(processor.process(data))
    for name in (COST_OUTPUT, TOKENS_OUTPUT):
        assert outputs[name].data.aggregation_temporality is DELTA  # type: ignore[union-attr]
    assert value_of(outputs[COST_OUTPUT], model="gpt-4o", provider="openai", client_id="c1") == pytest.approx(0.25)


def test_two_resources_with_equal_attributes_are_two_inputs() -> None:
    registry = MetricsRegistry()
    processor = make_processor(registry=registry)
    worker_a, worker_b = Resource({"service.instance.id": "a"}), Resource({"service.instance.id": "b"})
    for tokens_a, tokens_b in ((1000, 50), (2000, 60)):
        data = MetricsData(
            [
                ResourceMetrics(
                    resource, [ScopeMetrics(SCOPE, [tokens_metric([token_point("gpt-4o", "input", t)])], "")], ""
                )
                for resource, t in ((worker_a, tokens_a), (worker_b, tokens_b))
            ]
        )
        result = processor.process(data)
    assert value_of(derived(result, 0)[TOKENS_OUTPUT], model="gpt-4o", provider="openai", token_type="input") == 2000
    assert value_of(derived(result, 1)[TOKENS_OUTPUT], model="gpt-4o", provider="openai", token_type="input") == 60
    resets = registry.get("otel_monitoring_business_input_resets_total")
    assert resets is not None and resets.labels(component="business").get() == 0  # type: ignore[union-attr]


def test_counts_input_restarts_in_its_own_metrics() -> None:
    registry = MetricsRegistry()
    processor = make_processor(registry=registry)
    processor.process(batch(tokens_metric([token_point("gpt-4o", "input", 100, start=1)])))
    outputs = derived(processor.process(batch(tokens_metric([token_point("gpt-4o", "input", 30, start=5)]))))
    assert value_of(outputs[TOKENS_OUTPUT], model="gpt-4o", provider="openai", token_type="input") == 130
    resets = registry.get("otel_monitoring_business_input_resets_total")
    assert resets is not None and resets.labels(component="business").get() == 1  # type: ignore[union-attr]


def test_a_batch_without_business_metrics_is_returned_as_the_same_object() -> None:
    processor = make_processor()
    other = Metric("http.server.request.duration", "", "s", Sum([NumberDataPoint({}, 1, 2, 1.0)], CUMULATIVE, True))
    data = batch(other)
    assert processor.process(data) is data
    empty = MetricsData([])
    assert processor.process(empty) is empty


def test_a_resource_derived_upstream_is_passed_through_once() -> None:
    processor = make_processor()
    upstream = make_processor().process(batch(tokens_metric([token_point("gpt-4o", "input", 10)])))
    assert processor.process(upstream) is upstream


def test_forgets_series_not_seen_for_the_expiry() -> None:
    clock = FakeClock()
    processor = make_processor(clock, expiry_seconds=60)
    processor.process(
        batch(tokens_metric([token_point(f"gpt-4o-{n}", "input", 1, customer=f"c{n}") for n in range(50)]))
    )
    remembered = processor.series_count()
    assert remembered >= 50
    clock.advance(120)
    processor.process(batch(tokens_metric([token_point("gpt-4o", "input", 1, customer="c-new")])))
    assert processor.series_count() < 10


# --- config and price table ---------------------------------------------------------------------------------


def test_default_config_is_valid_and_builds_a_working_processor() -> None:
    config = BusinessConfig()
    assert config.top_customers == 20
    assert config.customer_attribute == "client_id"
    processor = FACTORY.create_from(None, ProcessorContext())
    processor.start()
    assert processor.process(MetricsData([])).resource_metrics == []
    processor.shutdown()
    processor.shutdown()
    assert FACTORY.type_name == "business"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"top_customers": -1}, "greater than or equal to 0"),
        (
            {"cost_metric": TOKEN_USAGE_METRIC},
            "cost_metric: 'gen_ai.client.token.usage' is already the token_usage_metric",
        ),
        (
            {"generations_metric": COST_OUTPUT},
            "generations_metric: 'otel_monitoring.business.cost' is one of the processor",
        ),
        ({"prices": {"gpt-4o": {"input": 1, "output": 2}}}, "cached_input"),
        ({"prices": {"gpt-4o": {"input": -1, "output": 2, "cached_input": 1}}}, "greater than or equal to 0"),
        ({"top_n": 5}, "Extra inputs are not permitted"),
    ],
)
def test_rejects_bad_config_naming_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BusinessConfig.model_validate(raw)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "cannot be read: No such file or directory"),
        ("models:\n  gpt-x: {input: 1, output: 2\n", "is not valid YAML at line 3"),
        ("- gpt-x\n", "must be a mapping with 'models' and optionally 'providers' (got list)"),
        (
            "models:\n  gpt-x: {input: -1, output: 2, cached_input: 1}\n",
            "models.gpt-x.input: Input should be greater than or equal to 0 (got -1)",
        ),
        ("models:\n  gpt-x: {input: 1, output: 2}\n", "models.gpt-x.cached_input: Field required"),
        (
            "models:\n  gpt-x: {input: 1, output: 2, cached_input: .nan}\n",
            "models.gpt-x.cached_input: Input should be a finite number",
        ),
        ("model:\n  gpt-x: {input: 1, output: 2, cached_input: 1}\n", "model: Extra inputs are not permitted"),
        (
            "models:\n  GPT-x: {input: 1, output: 2, cached_input: 1}\n"
            "  gpt-x: {input: 1, output: 2, cached_input: 1}\n",
            "'GPT-x' and 'gpt-x' name the same model (matching ignores case)",
        ),
    ],
)
def test_a_bad_price_file_fails_the_build_naming_the_file_and_the_problem(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    path = tmp_path / "missing.yaml" if text is None else write(tmp_path, text)
    with pytest.raises(PriceTableError) as caught:
        FACTORY.create_from({"prices_file": str(path)}, ProcessorContext())
    message = str(caught.value)
    assert message.startswith("prices_file: ")
    assert str(path) in message
    assert problem in message
    assert "\n" not in message


def test_a_valid_price_file_replaces_the_shipped_table(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  house-model: {input: 1, output: 2, cached_input: 0.5}\n")
    processor = make_processor(prices_file=str(path))
    assert processor.prices.lookup("house-model-v2") == ModelPrice(input=1, output=2, cached_input=0.5)
    assert processor.prices.lookup("gpt-4o") is None


def test_overrides_in_settings_replace_entries_of_the_file() -> None:
    override = {"input": 1.0, "output": 1.0, "cached_input": 1.0}
    processor = make_processor(prices={"GPT-4o": override}, provider_prices={"groq": {"house-llama": override}})
    assert processor.prices.lookup("gpt-4o-2024-08-06") == ModelPrice(**override)
    assert processor.prices.lookup("house-llama", "groq") == ModelPrice(**override)
    assert processor.prices.lookup("gpt-4o-mini") == ModelPrice(input=0.15, output=0.60, cached_input=0.075)


@pytest.mark.parametrize(
    ("model", "provider", "expected_input"),
    [
        ("gpt-4o", "openai", 2.50),
        ("gpt-4o-2024-08-06", "openai", 2.50),
        ("gpt-4o-2024-05-13", "openai", 5.00),  # an exact entry beats the prefix
        ("gpt-4o-mini-2024-07-18", "openai", 0.15),  # the longest prefix wins
        ("GPT-4.1-Mini", None, 0.40),  # case is ignored
        ("gpt-4.1-nano-2025-04-14", "azure.ai.openai", 0.10),
        ("o3-mini-2025-01-31", "openai", 1.10),
        ("claude-opus-4-5-20251101", "anthropic", 5.00),
        ("claude-opus-4-20250514", "anthropic", 15.00),
        ("claude-3-5-sonnet-v2@20241022", "gcp.vertex_ai", 3.00),
        ("gemini-2.5-flash-lite", "gcp.gemini", 0.10),
        ("gemini-1.5-pro-002", "gcp.vertex_ai", 1.25),
        ("mistral-large-latest", "mistral_ai", 2.00),
        ("llama-3.3-70b-versatile", "groq", 0.59),
        ("meta.llama3-3-70b-instruct-v1:0", "aws.bedrock", 0.72),
        ("gpt-4ox", "openai", None),  # a prefix must end at a non-alphanumeric character
        ("gpt-4", "openai", None),
        ("llama-3.3-70b-versatile", "openai", None),  # Llama is priced per provider only
        ("", None, None),
    ],
)
def test_matches_models_exactly_then_by_longest_prefix(
    model: str, provider: str | None, expected_input: float | None
) -> None:
    price = load_price_table().lookup(model, provider)
    assert (price.input if price is not None else None) == expected_input


def test_the_provider_section_wins_over_the_table_of_all_providers() -> None:
    general = ModelPrice(input=1, output=1, cached_input=1)
    special = ModelPrice(input=9, output=9, cached_input=9)
    table = PriceTable({"llama-3": general}, {"groq": {"llama-3": special}})
    assert table.lookup("llama-3-8b", "groq") == special
    assert table.lookup("llama-3-8b", "together_ai") == general
    assert table.lookup("llama-3-8b") == general


def test_the_shipped_price_table_loads_and_every_entry_is_well_formed() -> None:
    raw = yaml.safe_load(SHIPPED_TABLE.read_text(encoding="utf-8"))
    assert set(raw) == {"models", "providers"}
    sections: dict[str, Mapping[str, Any]] = {"models": raw["models"]}
    sections.update({f"providers.{name}": entries for name, entries in raw["providers"].items()})
    count = 0
    for section, entries in sections.items():
        assert entries, f"{section} is empty"
        for model, price in entries.items():
            where = f"{section}.{model}"
            assert model == model.lower(), f"{where}: write keys in lower case (matching ignores case)"
            assert set(price) >= REQUIRED_PRICE_FIELDS, f"{where}: missing {sorted(REQUIRED_PRICE_FIELDS - set(price))}"
            assert set(price) <= PRICE_FIELDS, f"{where}: unknown {sorted(set(price) - PRICE_FIELDS)}"
            for field, value in price.items():
                assert isinstance(value, int | float) and not isinstance(value, bool), f"{where}.{field}: not a number"
                assert math.isfinite(value) and value >= 0, f"{where}.{field}: {value} is not a price"
            assert price["cached_input"] <= price["input"], f"{where}: a cache read costs more than plain input"
            count += 1
    table = load_price_table()
    assert len(table) == count
    for family in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3", "o4-mini", "claude-sonnet-4", "claude-3-5-haiku",
                   "claude-opus-4", "gemini-1.5-pro", "gemini-2.5-flash", "mistral-large"):  # fmt: skip
        assert table.lookup(family) is not None, f"the shipped table has no price for {family}"
    header = SHIPPED_TABLE.read_text(encoding="utf-8").split("\nmodels:")[0]
    assert re.search(r"Written on \d{4}-\d{2}-\d{2}", header), "the header must say when the prices were taken"
    assert "Check every model" in header and "override" in header
