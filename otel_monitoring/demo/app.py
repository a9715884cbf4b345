"""The demo's sample service: a content-generation API on FastAPI, with SQLite, a cache and a model provider.

Its only monitoring code is what the README asks a user to write: one cache (``metrics.cache``) and the business
API (``business.record_generation``, ``record_usage``, ``record_satisfaction``). Everything else is measured with
no code by ``opentelemetry-instrument``: HTTP requests (the middleware), SQLAlchemy queries, outgoing httpx
calls, host and process resources. The demo runs it as a user would, exporting OTLP to the collector sidecar::

    OTEL_SERVICE_NAME=content-api OTEL_METRICS_EXPORTER=otlp \\
    opentelemetry-instrument python -m otel_monitoring.demo.app \\
        --port 8000 --database sqlite:///content.db --model-api http://127.0.0.1:9000

Routes:

- ``POST /v1/generations`` ``{"customer": "acme-media", "content_type": "article"}``: finds the customer (cache,
  then SQLite), calls the model provider (``POST {model-api}/v1/chat/completions``), stores the generation and
  records its tokens. 502 when the provider fails or times out.
- ``POST /v1/feedback`` ``{"customer": "acme-media", "score": 4}``: one satisfaction answer.
- ``GET /v1/customers/{customer}/usage``: the customer's generations and tokens, from SQLite.
- ``GET /health``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)

from otel_monitoring import business, metrics
from otel_monitoring.demo.customers import CUSTOMERS

__all__ = ["create_app", "main"]

_tables = MetaData()
customers_table = Table(
    "customers",
    _tables,
    Column("id", String, primary_key=True),
    Column("model", String, nullable=False),
    Column("provider", String, nullable=False),
)
generations_table = Table(
    "generations",
    _tables,
    Column("id", Integer, primary_key=True),
    Column("customer", String, nullable=False),
    Column("content_type", String, nullable=False),
    Column("model", String, nullable=False),
    Column("status", String, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("created", Float, nullable=False),
)

CONTENT_TYPES = ("article", "caption", "summary", "translation")
_PROFILE_TTL_SECONDS = 5.0  # short, so the demo shows misses and evictions as well as hits


class GenerationRequest(BaseModel):
    customer: str
    content_type: str = "article"
    words: int = Field(default=300, ge=1, le=5000)


class Feedback(BaseModel):
    customer: str
    score: int = Field(ge=1, le=5)


@dataclass(frozen=True)
class _Profile:
    id: str
    model: str
    provider: str


class _ProfileCache:
    """Customer profiles kept for a few seconds, measured with the cache API as the README shows."""

    def __init__(self) -> None:
        self._metrics = metrics.cache("customer_profiles")
        self._entries: dict[str, tuple[float, _Profile]] = {}

    def get(self, customer: str) -> _Profile | None:
        entry = self._entries.get(customer)
        if entry is not None and entry[0] < time.monotonic():
            del self._entries[customer]
            self._metrics.evict()
            entry = None
        if entry is None:
            self._metrics.miss()
            return None
        self._metrics.hit()
        return entry[1]

    def set(self, profile: _Profile) -> None:
        self._entries[profile.id] = (time.monotonic() + _PROFILE_TTL_SECONDS, profile)
        self._metrics.set()


def _create_engine(database_url: str) -> Engine:
    engine = create_engine(database_url, connect_args={"check_same_thread": False})

    # WAL lets the batch job read while the service writes; without it readers and writers lock each other out.
    @event.listens_for(engine, "connect")
    def _wal(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    _tables.create_all(engine)
    with engine.begin() as connection:
        known = set(connection.scalars(select(customers_table.c.id)))
        rows = [{"id": c.id, "model": c.model, "provider": c.provider} for c in CUSTOMERS if c.id not in known]
        if rows:
            connection.execute(insert(customers_table), rows)
    return engine


def create_app(database_url: str, model_api: str, *, model_timeout: float = 2.0) -> FastAPI:
    """The sample service on ``database_url`` (SQLAlchemy URL), calling the model provider at ``model_api``.

    >>> app = create_app("sqlite://", "http://127.0.0.1:9")
    >>> sorted(route.path for route in app.routes if route.path.startswith("/v1"))
    ['/v1/customers/{customer}/usage', '/v1/feedback', '/v1/generations']
    """
    engine = _create_engine(database_url)
    profiles = _ProfileCache()
    # One client for the process: connection reuse, as a real service would do.
    model_client = httpx.Client(base_url=model_api, timeout=model_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        model_client.close()
        engine.dispose()

    app = FastAPI(title="content-api (otel-monitoring demo)", lifespan=lifespan)

    def find_customer(customer: str) -> _Profile:
        profile = profiles.get(customer)
        if profile is None:
            with engine.connect() as connection:
                row = connection.execute(select(customers_table).where(customers_table.c.id == customer)).first()
            if row is None:
                raise HTTPException(status_code=404, detail="unknown customer")
            profile = _Profile(row.id, row.model, row.provider)
            profiles.set(profile)
        return profile

    # Plain `def` routes: FastAPI runs them in its thread pool, like most services using a sync driver.
    @app.post("/v1/generations")
    def generate(request: GenerationRequest) -> JSONResponse:
        profile = find_customer(request.customer)
        started = time.perf_counter()
        prompt = f"Write a {request.content_type} of about {request.words} words."
        status, usage, answered_by = "ok", {}, None
        try:
            response = model_client.post(
                "/v1/chat/completions",
                json={"model": profile.model, "messages": [{"role": "user", "content": prompt}],
                      "max_tokens": request.words * 2},
            )  # fmt: skip
            if response.status_code >= 400:
                status = "rate_limited" if response.status_code == 429 else "error"
            else:
                body = response.json()
                usage, answered_by = body["usage"], body.get("model")
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.HTTPError:
            status = "error"
        input_tokens, output_tokens = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        business.record_generation(
            client_id=profile.id,
            model=profile.model,
            provider=profile.provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=int(usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)),
            content_type=request.content_type,
            status=status,
            duration=time.perf_counter() - started,
            response_model=answered_by,
        )
        with engine.begin() as connection:
            connection.execute(
                insert(generations_table),
                {"customer": profile.id, "content_type": request.content_type, "model": profile.model,
                 "status": status, "input_tokens": input_tokens, "output_tokens": output_tokens,
                 "created": time.time()},
            )  # fmt: skip
        if status != "ok":
            # Answered, not raised: the provider's failure is this service's 502, without a traceback per request.
            return JSONResponse({"error": f"model provider: {status}"}, status_code=502)
        business.record_usage(client_id=profile.id, feature=f"{request.content_type}_generation")
        return JSONResponse({"customer": profile.id, "model": answered_by, "output_tokens": output_tokens})

    @app.post("/v1/feedback")
    def feedback(answer: Feedback) -> dict[str, str]:
        profile = find_customer(answer.customer)
        business.record_satisfaction(answer.score, client_id=profile.id, channel="web")
        return {"status": "thanks"}

    @app.get("/v1/customers/{customer}/usage")
    def usage(customer: str) -> dict[str, object]:
        profile = find_customer(customer)
        with engine.connect() as connection:
            row = connection.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(generations_table.c.input_tokens), 0),
                    func.coalesce(func.sum(generations_table.c.output_tokens), 0),
                ).where(generations_table.c.customer == profile.id)
            ).one()
        return {"customer": profile.id, "generations": row[0], "input_tokens": row[1], "output_tokens": row[2]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m otel_monitoring.demo.app --port P --database URL --model-api URL``: serve with uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m otel_monitoring.demo.app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database", required=True, help="SQLAlchemy URL, e.g. sqlite:///content.db")
    parser.add_argument("--model-api", required=True, help="base URL of the model provider's API")
    args = parser.parse_args(argv)
    app = create_app(args.database, args.model_api)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
