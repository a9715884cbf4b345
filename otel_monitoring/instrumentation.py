"""Adds the HTTP server metrics middleware to every Starlette and FastAPI app, for ``opentelemetry-instrument``.

The OpenTelemetry ASGI middleware has no entry point of its own, and FastAPI and Starlette build their
middleware stack lazily on the first request. Wrapping ``build_middleware_stack`` puts our middleware
outermost (it sees exceptions the app turns into 500s) without touching the app's code, and leaves an
app alone when its author already added the middleware by hand.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_monitoring.asgi import HTTPServerMetricsMiddleware

__all__ = ["StarletteMiddlewareInstrumentor"]

_ORIGINAL = "_otel_monitoring_original_build_middleware_stack"
_logger = logging.getLogger(__name__)


def _patched_classes() -> list[type]:
    classes: list[type] = []
    try:
        from starlette.applications import Starlette

        classes.append(Starlette)
    except ImportError:  # pragma: no cover - starlette is a dependency
        return classes
    try:
        from fastapi import FastAPI

        if "build_middleware_stack" in vars(FastAPI):  # FastAPI overrides it; patch both definitions
            classes.append(FastAPI)
    except ImportError:
        pass
    return classes


def _instrumented(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(original)
    def build_middleware_stack(app: Any) -> Any:
        stack = original(app)
        if any(getattr(m, "cls", None) is HTTPServerMetricsMiddleware for m in getattr(app, "user_middleware", ())):
            return stack
        try:
            return HTTPServerMetricsMiddleware(stack)
        except Exception:
            # Telemetry never breaks the app: without the middleware the app still serves every request.
            _logger.warning("could not add the HTTP metrics middleware to %r; serving without it", app, exc_info=True)
            return stack

    return build_middleware_stack


class StarletteMiddlewareInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``opentelemetry_instrumentor`` entry point ``otel_monitoring_asgi``."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("starlette >= 0.37",)

    def _instrument(self, **kwargs: Any) -> None:
        for cls in _patched_classes():
            if _ORIGINAL not in vars(cls):
                original = vars(cls)["build_middleware_stack"]
                setattr(cls, _ORIGINAL, original)
                cls.build_middleware_stack = _instrumented(original)  # type: ignore[attr-defined]

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls in _patched_classes():
            original = vars(cls).get(_ORIGINAL)
            if original is not None:
                cls.build_middleware_stack = original  # type: ignore[attr-defined]
                delattr(cls, _ORIGINAL)
