"""A FastAPI service run with many workers (``uvicorn --workers``, gunicorn) under ``opentelemetry-instrument``,
exporting OTLP to the collector sidecar. Its only monitoring code is one facade counter, as a user would write;
HTTP metrics come from the instrumentation. Every answer names the worker's pid, so a test can tell which
worker served it and kill that one."""

import os

from fastapi import FastAPI

from otel_monitoring import metrics

jobs_done = metrics.counter("jobs_done_total", "Jobs done, by kind", ["kind"])

app = FastAPI()


@app.get("/jobs/{kind}")
async def do_job(kind: str) -> dict[str, int]:
    jobs_done.labels(kind=kind).inc()
    return {"pid": os.getpid()}


@app.get("/health")
async def health() -> dict[str, int]:
    return {"pid": os.getpid()}
