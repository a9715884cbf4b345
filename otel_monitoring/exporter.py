"""Serving and pushing the exposition: the seed's ``PrometheusMiddleware`` and ``metrics_endpoint``.

>>> app.add_middleware(exporter.PrometheusMiddleware)
>>> app.add_route("/metrics", exporter.metrics_endpoint)

The exposition is the Prometheus text format, or OpenMetrics when the scraper's ``Accept`` asks for
it, gzip-compressed when ``Accept-Encoding`` allows. Access control comes from the settings
(``OTEL_MONITORING_METRICS_*``). For processes without an ASGI app, ``start_http_server(port)``.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from otel_monitoring._access import log_scrape
from otel_monitoring.asgi import HTTPServerMetricsMiddleware
from otel_monitoring.telemetry import Telemetry, get_telemetry

__all__ = [
    "MetricsHTTPServer",
    "PrometheusMiddleware",
    "make_metrics_wsgi_app",
    "metrics_endpoint",
    "push",
    "render_exposition",
    "start_http_server",
]

PrometheusMiddleware = HTTPServerMetricsMiddleware
"""The seed's name for the HTTP server metrics middleware."""


def render_exposition(
    registry: CollectorRegistry, accept: str | None, accept_encoding: str | None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of one scrape, negotiated like prometheus_client's own handlers."""
    encoder, content_type = choose_encoder(accept or "")
    body = encoder(registry)
    headers = {"Content-Type": content_type}
    if accept_encoding and "gzip" in accept_encoding.lower():
        body = gzip.compress(body, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return body, headers


async def metrics_endpoint(request: Request) -> Response:
    """Starlette endpoint serving the process's metrics: ``app.add_route("/metrics", metrics_endpoint)``."""
    started = time.perf_counter()
    telemetry = get_telemetry()
    policy = telemetry.access_policy
    client = request.client.host if request.client else None
    denied = policy.check(client, request.headers.get("authorization"))
    if denied is not None:
        response = Response(denied.reason + "\n", status_code=denied.status, headers=denied.headers)
    else:
        # Rendering thousands of series takes milliseconds of CPU: keep it off the event loop.
        body, headers = await run_in_threadpool(
            render_exposition,
            telemetry.prometheus_registry,
            request.headers.get("accept"),
            request.headers.get("accept-encoding"),
        )
        response = Response(body, headers=headers)
    if policy.access_log:
        log_scrape(client, request.url.path, response.status_code, len(response.body), time.perf_counter() - started)
    return response


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_metrics_wsgi_app(telemetry: Telemetry | None = None) -> WSGIApp:
    """A WSGI app serving the exposition with the same negotiation and access control as the endpoint."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        pipeline = telemetry or get_telemetry()
        policy = pipeline.access_policy
        client = environ.get("REMOTE_ADDR")
        denied = policy.check(client, environ.get("HTTP_AUTHORIZATION"))
        if denied is not None:
            status, body, headers = f"{denied.status} Denied", (denied.reason + "\n").encode(), denied.headers
        elif environ.get("PATH_INFO", "/") in ("/", "/metrics"):
            body, headers = render_exposition(
                pipeline.prometheus_registry, environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING")
            )
            status = "200 OK"
        else:
            status, body, headers = "404 Not Found", b"not found; metrics are at /metrics\n", {}
        if policy.access_log:
            log_scrape(client, environ.get("PATH_INFO", "/"), int(status[:3]), len(body), time.perf_counter() - started)
        start_response(status, [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged by the access log setting, not on stderr."""


class MetricsHTTPServer:
    """A standalone metrics endpoint on its own thread; ``shutdown()`` stops it."""

    def __init__(self, port: int, addr: str, telemetry: Telemetry | None) -> None:
        self._server = make_server(
            addr, port, make_metrics_wsgi_app(telemetry), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="otel-monitoring-metrics", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_http_server(port: int, addr: str = "0.0.0.0", *, telemetry: Telemetry | None = None) -> MetricsHTTPServer:
    """Serve ``/metrics`` from a background thread, as prometheus_client's ``start_http_server``; port 0 picks one."""
    return MetricsHTTPServer(port, addr, telemetry)


def push(*, telemetry: Telemetry | None = None) -> bool:
    """Push the metrics to the configured Pushgateway now; False (with a warning logged) when it failed."""
    from otel_monitoring.pushgateway import push_now

    return push_now(telemetry or get_telemetry())
