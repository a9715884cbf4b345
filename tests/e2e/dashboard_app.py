"""A content-generation service with everything the dashboards draw, for test_dashboard_queries.py.

The monitoring code is what a user writes: the middleware and ``/metrics``, ``instrument_engine`` on a SQLite
engine, the httpx instrumentor, a named cache and the business API. System, process and container metrics start
with the embedded pipeline.

Routes: ``GET /items/{id}`` (cache, then a SELECT), ``GET /report`` (a query that takes 20 ms, past the
slow-query threshold of 10 ms; a missing table during the failure episode), ``POST /generate`` (calls the "model
provider" ``/provider/v1/chat`` over httpx on ``localhost``, then records a generation, usage, and a CSAT and an
NPS answer for the customer), ``PUT /fault?failing=true`` (the provider answers 503 and ``/generate`` answers 503
slowly: the failure episode), ``GET /health``.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, insert, select, text
from sqlalchemy.exc import OperationalError
from starlette.responses import JSONResponse

from otel_monitoring import business, exporter, metrics
from otel_monitoring.collectors.database import instrument_engine
from otel_monitoring.collectors.http_client import HTTPXClientInstrumentor

SLOW_QUERY_SECONDS = 0.01
PORT = int(os.environ.get("DASHBOARD_APP_PORT", "8000"))

engine = create_engine(f"sqlite:///{os.environ.get('DASHBOARD_APP_DB', ':memory:')}")


@event.listens_for(engine, "connect")
def _add_pause(dbapi_connection: Any, _record: Any) -> None:
    # A query that takes a known time, so the slow-query panels have something to show.
    dbapi_connection.create_function("pause", 1, lambda seconds: time.sleep(seconds) or 0)


instrument_engine(engine, slow_query_seconds=SLOW_QUERY_SECONDS)
HTTPXClientInstrumentor().instrument()

tables = MetaData()
items = Table("items", tables, Column("id", Integer, primary_key=True), Column("name", String))
tables.create_all(engine)
with engine.begin() as connection:
    connection.execute(insert(items), [{"name": f"item-{number}"} for number in range(20)])

REPORT = "SELECT count(*) FROM items WHERE pause(:s) = 0"
REPORT_DURING_FAULT = "SELECT count(*) FROM items_archive WHERE pause(:s) = 0"

item_cache = metrics.cache("items")
_cached: dict[int, dict[str, object]] = {}


@dataclass
class Fault:
    failing: bool = False


fault = Fault()
app = FastAPI()
app.add_middleware(exporter.PrometheusMiddleware)
app.add_route("/metrics", exporter.metrics_endpoint)


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> JSONResponse:
    cached = _cached.get(item_id)
    if cached is not None:
        item_cache.hit()
        return JSONResponse(cached)
    item_cache.miss()
    with engine.connect() as connection:
        row = connection.execute(select(items).where(items.c.id == item_id)).first()
    if row is None:
        return JSONResponse({"error": "no such item"}, status_code=404)
    _cached[item_id] = found = {"id": row.id, "name": row.name}
    item_cache.set()
    if len(_cached) > 10:  # a small cache: the oldest entry goes
        _cached.pop(next(iter(_cached)))
        item_cache.evict()
    return JSONResponse(found)


@app.get("/report")
async def report() -> JSONResponse:
    # During the failure episode the report reads an archive table that is not there: a database error.
    statement = REPORT_DURING_FAULT if fault.failing else REPORT
    try:
        with engine.connect() as connection:
            count = connection.execute(text(statement), {"s": 0.02}).scalar()
    except OperationalError:
        return JSONResponse({"error": "report unavailable"}, status_code=500)
    return JSONResponse({"items": int(count or 0)})


@app.post("/provider/v1/chat")
async def provider() -> JSONResponse:
    if fault.failing:
        return JSONResponse({"error": "overloaded"}, status_code=503)
    return JSONResponse({"usage": {"prompt_tokens": 900, "completion_tokens": 300}})


@app.post("/generate")
async def generate(
    client_id: str, model: str = "gpt-4o", provider_name: str = "openai", score: int = 4
) -> JSONResponse:
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=f"http://localhost:{PORT}") as client:
        answer = await client.post("/provider/v1/chat", json={"model": model})
    ok = answer.status_code == 200
    usage = answer.json().get("usage", {"prompt_tokens": 900, "completion_tokens": 0})
    business.record_generation(
        client_id=client_id,
        model=model,
        provider=provider_name,
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage["completion_tokens"],
        content_type="article",
        status="ok" if ok else "error",
        duration=time.perf_counter() - started,
    )
    if not ok:
        await asyncio.sleep(0.2)  # the client's retry that gives up
        return JSONResponse({"error": "model provider unavailable"}, status_code=503)
    business.record_usage(client_id=client_id, feature="article_export", units=2)
    business.record_satisfaction(score, client_id=client_id, channel="web")
    business.record_satisfaction(min(10, score * 2), client_id=client_id, channel="email", scale="nps")
    return JSONResponse({"text": "generated"})


@app.put("/fault")
async def set_fault(failing: bool) -> dict[str, bool]:
    fault.failing = failing
    return {"failing": failing}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
