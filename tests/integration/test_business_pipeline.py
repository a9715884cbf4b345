"""A real service records business metrics with the API; /metrics shows exact tokens, the table's cost, no raw ids;
a call without token usage (a streamed response that reported none) still answers and records nothing.

The app below is served by uvicorn in a subprocess (``tests.integration.test_business_pipeline:app``) and
records into the process-wide registry, as an application does, through the default pipeline.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from otel_monitoring import business, exporter
from processors.business import load_price_table
from tests.support import free_port, running, uvicorn_argv

MODEL, PROVIDER = "gpt-4o-mini", "openai"
CUSTOMERS = ("acme-corp-4711", "globex-0815")


async def generate(request: Request) -> PlainTextResponse:
    query = request.query_params
    # A streamed LLM response may end without usage: the app passes None, as real code does.
    input_tokens: Any = int(query["input"]) if "input" in query else None
    output_tokens: Any = int(query["output"]) if "output" in query else None
    business.record_generation(
        client_id=query["client"],
        model=MODEL,
        provider=PROVIDER,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        content_type="article",
        duration=float(query["seconds"]),
    )
    return PlainTextResponse("ok")


async def feedback(request: Request) -> PlainTextResponse:
    query = request.query_params
    business.record_satisfaction(float(query["score"]), client_id=query["client"], channel="web")
    business.record_usage(client_id=query["client"], feature="feedback_form")
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/generate", generate), Route("/feedback", feedback)])
app.add_route("/metrics", exporter.metrics_endpoint)


def samples(exposition: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    ]


def test_service_exports_exact_tokens_table_cost_and_no_raw_customer_id() -> None:
    rng = random.Random(7)
    calls = [(rng.choice(CUSTOMERS), rng.randrange(1, 30_000), rng.randrange(0, 4_000)) for _ in range(60)]
    scores = [rng.randint(1, 5) for _ in range(10)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = running(uvicorn_argv("tests.integration.test_business_pipeline:app", port), f"{base}/metrics")
    with server, httpx.Client(base_url=base) as client:
        for customer, input_tokens, output_tokens in calls:
            params = {"client": customer, "input": input_tokens, "output": output_tokens, "seconds": 0.3}
            assert client.get("/generate", params=params).status_code == 200
        for score in scores:
            assert client.get("/feedback", params={"client": CUSTOMERS[0], "score": score}).status_code == 200
        for _ in range(3):  # no usage: the request still succeeds, and nothing below counts it
            assert client.get("/generate", params={"client": CUSTOMERS[1], "seconds": 0.3}).status_code == 200
        first = client.get("/metrics").text
        second = client.get("/metrics").text  # a second scrape must not count anything again

    for exposition in (first, second):
        for customer in CUSTOMERS:
            assert customer not in exposition
    found = samples(second)

    tokens: dict[str, float] = defaultdict(float)
    for name, labels, value in found:
        if name == "gen_ai_client_token_usage_sum":
            tokens[labels["gen_ai_token_type"]] += value
    assert tokens == {"input": sum(c[1] for c in calls), "output": sum(c[2] for c in calls)}

    generations = sum(value for name, _, value in found if name == "content_generations_total")
    assert generations == len(calls)

    price = load_price_table().lookup(MODEL, PROVIDER)
    assert price is not None
    expected_cost = sum(i * price.input + o * price.output for _, i, o in calls) / 1_000_000
    costs = {
        labels["client_id"]: value for name, labels, value in found if name == "otel_monitoring_business_cost_USD_total"
    }
    assert sum(costs.values()) == pytest.approx(expected_cost, rel=1e-9)
    assert len(costs) == len(CUSTOMERS) and all(pseudonym.startswith("u_") for pseudonym in costs)
    assert costs == {
        labels["client_id"]: value
        for name, labels, value in samples(first)
        if name == "otel_monitoring_business_cost_USD_total"
    }

    [mean] = [value for name, _, value in found if name == "otel_monitoring_business_satisfaction_mean"]
    assert mean == sum(scores) / len(scores)
