"""Starlette hello-world apps, one per HTTP metrics middleware, for bench/middleware_throughput.py.

    BENCH_VARIANT=otel_monitoring uvicorn bench.apps:create_app_from_env --factory

Every variant has the same two routes in the same order: ``GET /hello/{name}`` (a templated route, so
that route templating is part of what each middleware pays for) and ``/metrics``, so the router does
the same work everywhere. Each middleware is configured as its documentation shows, with defaults
otherwise; :data:`CONFIGURATION` says exactly what, and the results files repeat it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["CONFIGURATION", "REQUEST_COUNTS", "VARIANTS", "create_app", "create_app_from_env"]

VARIANT_ENV = "BENCH_VARIANT"
HELLO_ROUTE = "/hello/{name}"
Endpoint = Callable[[Request], Response | Awaitable[Response]]

CONFIGURATION: dict[str, str] = {
    "bare": "Starlette app, no middleware; /metrics returns an empty body.",
    "otel_monitoring": (
        "otel_monitoring.asgi.HTTPServerMetricsMiddleware(registry=MetricsRegistry(), buckets=Settings().http."
        "duration_buckets, excluded_paths=['/metrics']); /metrics renders the Prometheus exposition through "
        "Telemetry(Settings(), registry, start_exporters=False) and otel_monitoring.exporter.render_exposition."
    ),
    "starlette_exporter": (
        "starlette_exporter.PrometheusMiddleware with defaults (group_paths=True, filter_unhandled_paths=True, "
        "prometheus_client default buckets, global REGISTRY); /metrics is starlette_exporter.handle_metrics."
    ),
    "prometheus_fastapi_instrumentator": (
        "Instrumentator().instrument(app).expose(app) with defaults (the default metrics: requests total, "
        "request and response sizes, latency high- and low-resolution histograms) on the Starlette app; "
        "expose() adds /metrics with app.add_route when the app is not FastAPI."
    ),
    "opentelemetry_asgi": (
        "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware(tracer_provider=TracerProvider(), "
        "meter_provider=MeterProvider(metric_readers=[PrometheusMetricReader()])): SDK providers, default "
        "sampler (ParentBased(AlwaysOn)), no span processor or exporter (spans are created, recorded and "
        "dropped), no views; default semantic conventions (OTEL_SEMCONV_STABILITY_OPT_IN unset: "
        "http.server.duration in milliseconds); /metrics is prometheus_client.generate_latest."
    ),
    "opentelemetry_asgi_no_tracing": (
        "as opentelemetry_asgi, but tracer_provider=opentelemetry.trace.NoOpTracerProvider() (the API's "
        "default when no SDK TracerProvider is installed): metrics only, spans are non-recording."
    ),
    "opentelemetry_asgi_semconv_http": (
        "as opentelemetry_asgi, with OTEL_SEMCONV_STABILITY_OPT_IN=http (stable conventions: "
        "http.server.request.duration in seconds; this middleware alone records no http.route in that mode)."
    ),
}
VARIANTS: tuple[str, ...] = tuple(CONFIGURATION)

# Where each instrumented variant counts the requests to the hello route in its /metrics: a sample
# name and a label that must appear on the line (None: every series of that name), so a benchmark
# can check after load that the middleware recorded what it was sent.
REQUEST_COUNTS: dict[str, tuple[str, str | None]] = {
    "otel_monitoring": ("http_server_request_duration_seconds_count", 'http_route="/hello/{name}"'),
    "starlette_exporter": ("starlette_requests_total", 'path="/hello/{name}"'),
    "prometheus_fastapi_instrumentator": ("http_requests_total", 'handler="/hello/{name}"'),
    "opentelemetry_asgi": ("http_server_duration_milliseconds_count", 'http_target="/hello/{name}"'),
    "opentelemetry_asgi_no_tracing": ("http_server_duration_milliseconds_count", 'http_target="/hello/{name}"'),
    "opentelemetry_asgi_semconv_http": ("http_server_request_duration_seconds_count", None),
}


async def hello(request: Request) -> Response:
    return PlainTextResponse(f"Hello, {request.path_params['name']}!")


async def no_metrics(request: Request) -> Response:
    return PlainTextResponse("")


def _prometheus_client_endpoint() -> Endpoint:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return metrics


def _make_otel_monitoring(app: Starlette) -> Endpoint:
    from otel_monitoring.asgi import HTTPServerMetricsMiddleware
    from otel_monitoring.exporter import render_exposition
    from otel_monitoring.metrics import MetricsRegistry
    from otel_monitoring.settings import Settings
    from otel_monitoring.telemetry import Telemetry

    settings = Settings()
    registry = MetricsRegistry()
    telemetry = Telemetry(settings, registry, start_exporters=False)
    app.add_middleware(
        HTTPServerMetricsMiddleware,
        registry=registry,
        buckets=settings.http.duration_buckets,
        excluded_paths=["/metrics"],
    )

    def metrics(request: Request) -> Response:
        body, headers = render_exposition(telemetry.prometheus_registry, request.headers.get("accept"), None)
        return Response(body, headers=headers)

    return metrics


def _make_starlette_exporter(app: Starlette) -> Endpoint:
    from starlette_exporter import PrometheusMiddleware, handle_metrics

    app.add_middleware(PrometheusMiddleware)
    return handle_metrics


def _make_opentelemetry_asgi(app: Starlette, *, stable_semconv: bool, tracing: bool) -> Endpoint:
    # The instrumentation reads OTEL_SEMCONV_STABILITY_OPT_IN once per process, when the first
    # middleware is built; every variant is served by a process of its own.
    if stable_semconv:
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    else:
        os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NoOpTracerProvider

    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    tracer_provider = TracerProvider() if tracing else NoOpTracerProvider()
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=tracer_provider, meter_provider=meter_provider)
    return _prometheus_client_endpoint()


def create_app(variant: str) -> Starlette:
    """The hello-world app with ``variant``'s middleware; one of :data:`VARIANTS`."""
    if variant not in CONFIGURATION:
        raise ValueError(f"unknown variant {variant!r} (valid: {', '.join(VARIANTS)})")
    app = Starlette(routes=[Route(HELLO_ROUTE, hello, methods=["GET"])])
    metrics: Endpoint | None
    if variant == "bare":
        metrics = no_metrics
    elif variant == "otel_monitoring":
        metrics = _make_otel_monitoring(app)
    elif variant == "starlette_exporter":
        metrics = _make_starlette_exporter(app)
    elif variant == "prometheus_fastapi_instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator().instrument(app).expose(app)  # expose() adds the /metrics route itself
        metrics = None
    else:
        metrics = _make_opentelemetry_asgi(
            app,
            stable_semconv=variant == "opentelemetry_asgi_semconv_http",
            tracing=variant != "opentelemetry_asgi_no_tracing",
        )
    if metrics is not None:
        app.add_route("/metrics", metrics, methods=["GET"])
    return app


def create_app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory``: the variant named by ``BENCH_VARIANT``."""
    return create_app(os.environ.get(VARIANT_ENV, "bare"))
