"""HTTP server metrics for any ASGI application, by the stable semantic conventions.

``http.server.request.duration`` (seconds) and ``http.server.active_requests``, with ``http.route``
from the matched route template, never the raw path.
https://opentelemetry.io/docs/specs/semconv/http/http-metrics/#http-server
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otel_monitoring._instruments import MetricsRegistry
from otel_monitoring.metrics import default_registry
from otel_monitoring.telemetry import start_if_exporting

__all__ = ["HTTPServerMetricsMiddleware"]

# https://opentelemetry.io/docs/specs/semconv/registry/attributes/http/#http-request-method
_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
_DURATION_ATTRIBUTES = ("http.request.method", "url.scheme", "http.route", "http.response.status_code", "error.type")
_ACTIVE_ATTRIBUTES = ("http.request.method", "url.scheme")
# Requests no route matched share one value, so scanners probing random paths add no series.
UNMATCHED_ROUTE = ""
_RECORDED = "otel_monitoring.recorded"  # scope key: set by the middleware that records this request
_NO_FASTAPI: dict[str, Any] = {}


class HTTPServerMetricsMiddleware:
    """Pure ASGI middleware: ``app.add_middleware(HTTPServerMetricsMiddleware)`` in Starlette or FastAPI.

    Its per-request cost is one dictionary lookup and one cell update per instrument; the throughput
    against the bare app is measured in bench/middleware_throughput.py.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: MetricsRegistry | None = None,
        buckets: Iterable[float] | None = None,
        excluded_paths: Iterable[str] | None = None,
    ) -> None:
        self.app = app
        if registry is None or buckets is None or excluded_paths is None:
            from otel_monitoring import config

            settings = config.get_settings().http
            registry = registry or default_registry()
            buckets = settings.duration_buckets if buckets is None else buckets
            excluded_paths = settings.excluded_paths if excluded_paths is None else excluded_paths
        self._excluded = frozenset(excluded_paths)
        self._duration = registry.semconv_histogram(
            "http.server.request.duration", "Duration of HTTP server requests.", _DURATION_ATTRIBUTES, "s", buckets
        )
        self._active = registry.semconv_updowncounter(
            "http.server.active_requests", "Number of active HTTP server requests.", _ACTIVE_ATTRIBUTES, "{request}"
        )
        if registry is default_registry():
            start_if_exporting()  # a service exporting OTLP must not wait for a scrape that never comes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._excluded or _RECORDED in scope:
            # A mounted sub-app has its own middleware stack (under opentelemetry-instrument, our middleware
            # too): the outermost one records the request, once.
            await self.app(scope, receive, send)
            return
        scope[_RECORDED] = True
        # Hot path: written for speed on purpose (local names, one closure, no per-request dicts).
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        scheme = scope.get("scheme", "http")
        root_path = scope.get("root_path", "")
        outer_app = scope.get("app") or self.app  # a mounted Starlette app replaces scope["app"] with itself
        active = self._active.labels(method, scheme)
        active.add(1)
        status = 0

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error_type = ""
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException as error:
            error_type = type(error).__qualname__
            if status == 0:
                status = 500
            raise
        finally:
            elapsed = time.perf_counter() - start
            active.add(-1)
            if not error_type and status >= 500:
                error_type = str(status)
            route = _route_template(scope, root_path, outer_app, status)
            self._duration.labels(method, scheme, route, status, error_type).observe(elapsed)


def _route_template(scope: Scope, root_path: str, outer_app: Any, status: int) -> str:
    """The matched route's template, with the template of the mounts it sits under, if any."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    prefix = ""
    mounted_at = scope.get("root_path", "")
    if mounted_at != root_path:
        prefix = _mount_template(outer_app, mounted_at[len(root_path) :])
        if not prefix:
            return UNMATCHED_ROUTE
    if hasattr(route, "routes"):
        # The last match was a mount (static files, or a sub-app none of whose routes matched): its own
        # prefix is already in root_path, so the template is the prefix and whatever path follows it.
        return prefix + "/{path}" if status != 404 else UNMATCHED_ROUTE
    # FastAPI serves an included router's route as the original object, without the include prefix;
    # its effective route context carries the full template.
    effective = scope.get("fastapi", _NO_FASTAPI).get("effective_route_context")
    template = getattr(effective, "path_format", None) or getattr(route, "path_format", None)
    return prefix + str(template or getattr(route, "path", UNMATCHED_ROUTE))


@functools.lru_cache(maxsize=512)
def _mount_template(app: Any, mounted_path: str) -> str:
    """Turn a concrete mount prefix (``/tenants/42/v1``) back into its template (``/tenants/{tenant_id}/v1``).

    Walks nested mounts; a prefix it cannot explain becomes the unmatched value, never the raw path.
    """
    routes: Any = getattr(app, "routes", ())
    template = ""
    remaining = mounted_path
    while remaining:
        for route in routes:
            match = getattr(route, "path_regex", None) and route.path_regex.match(remaining + "/")
            if match and hasattr(route, "routes") and "path" in match.groupdict():
                template += route.path_format.removesuffix("/{path}")  # a Mount's own path, convertors dropped
                rest = match.group("path")
                remaining = "/" + rest[:-1] if rest else ""
                routes = route.routes
                break
        else:
            return UNMATCHED_ROUTE
    return template
