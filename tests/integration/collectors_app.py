"""A FastAPI service with SQLAlchemy on SQLite, a cache, an upstream call and business calls, for
``opentelemetry-instrument``. Its only monitoring code is what the product asks a user to write: the cache
API and the business API. HTTP, database, outgoing-call and system metrics come from instrumentation.
"""

import os

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

from otel_monitoring import business, metrics

engine = create_engine(f"sqlite:///{os.environ['COLLECTORS_APP_DB']}")
tables = MetaData()
items = Table("items", tables, Column("id", Integer, primary_key=True), Column("name", String), Column("owner", String))
tables.create_all(engine)

item_cache = metrics.cache("items")
_cached: dict[int, dict[str, object]] = {}

app = FastAPI()


class NewItem(BaseModel):
    name: str
    owner: str


class Generation(BaseModel):
    client_id: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int


@app.post("/items")
async def create_item(item: NewItem) -> dict[str, int]:
    with engine.begin() as connection:
        result = connection.execute(insert(items).values(name=item.name, owner=item.owner))
    return {"id": int(result.inserted_primary_key[0])}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, object]:
    cached = _cached.get(item_id)
    if cached is not None:
        item_cache.hit()
        return cached
    item_cache.miss()
    with engine.connect() as connection:
        row = connection.execute(select(items).where(items.c.id == item_id)).first()
    if row is None:
        raise HTTPException(status_code=404, detail="no such item")
    _cached[item_id] = found = {"id": row.id, "name": row.name}
    item_cache.set()
    return found


@app.post("/generate")
async def generate(generation: Generation) -> dict[str, str]:
    business.record_generation(
        client_id=generation.client_id,
        model=generation.model,
        provider=generation.provider,
        input_tokens=generation.input_tokens,
        output_tokens=generation.output_tokens,
        content_type="article",
        duration=0.5,
    )
    business.record_usage(client_id=generation.client_id, feature="article_export", units=2)
    business.record_satisfaction(4, client_id=generation.client_id, channel="web")
    return {"status": "ok"}


@app.get("/upstream/{item_id}")
async def upstream(item_id: int) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=os.environ["COLLECTORS_APP_UPSTREAM"]) as client:
        response = await client.get(f"/items/{item_id}")
    return {"status": response.status_code}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
