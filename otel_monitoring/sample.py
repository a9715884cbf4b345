"""A small instrumented service, the demo's subject: a content-generation API on Starlette.

It uses only the public API, as a user's service would: the seed's metrics, the middleware and
``/metrics``. ``otel-monitoring demo`` serves it with uvicorn and drives traffic at it.
"""

from __future__ import annotations

import asyncio
import random

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otel_monitoring import exporter, metrics

__all__ = ["create_app"]

requests_total = metrics.counter("http_requests_total", "Total HTTP requests handled by the sample service")
request_latency = metrics.histogram(
    "http_request_duration_seconds", "Latency of the sample service's handlers", buckets=[0.01, 0.05, 0.1, 0.5, 1.0]
)
active_requests = metrics.gauge("http_requests_active", "Requests in progress in the sample service")
generations = metrics.counter(
    "content_generations_total", "Content generations by type and outcome", labelnames=("content_type", "status")
)

_CONTENT_TYPES = ("article", "caption", "summary")


async def generate(request: Request) -> JSONResponse:
    content_type = request.path_params["content_type"]
    requests_total.inc()
    with active_requests.track_inprogress(), request_latency.time():
        await asyncio.sleep(random.uniform(0.002, 0.03))  # the simulated model call
        if content_type not in _CONTENT_TYPES:
            generations.labels(content_type="unknown", status="rejected").inc()
            return JSONResponse({"error": f"unknown content type {content_type!r}"}, status_code=404)
        failed = random.random() < 0.05
        generations.labels(content_type=content_type, status="error" if failed else "ok").inc()
        if failed:
            return JSONResponse({"error": "model provider timed out"}, status_code=503)
    return JSONResponse({"content_type": content_type, "text": "lorem ipsum"})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/generate/{content_type}", generate, methods=["POST"]), Route("/health", health)])
    app.add_middleware(exporter.PrometheusMiddleware)
    app.add_route("/metrics", exporter.metrics_endpoint)
    return app
