"""HTTP server metrics by the semantic conventions, from the ASGI messages of a Starlette app."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from otel_monitoring.asgi import HTTPServerMetricsMiddleware
from otel_monitoring.instrumentation import StarletteMiddlewareInstrumentor
from otel_monitoring.metrics import MetricsRegistry

BUCKETS = [0.01, 0.1, 1.0]


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def fail(request: Request) -> PlainTextResponse:
    raise KeyError("missing")


def make_app(registry: MetricsRegistry) -> Starlette:
    items = Starlette(routes=[Route("/items/{item_id:int}", hello)])
    app = Starlette(
        routes=[
            Route("/hello/{name}", hello),
            Route("/fail", fail),
            Route("/metrics", hello),
            Mount("/tenants/{tenant_id}", app=items),
        ]
    )
    app.add_middleware(HTTPServerMetricsMiddleware, registry=registry, buckets=BUCKETS, excluded_paths=["/metrics"])
    return app


def request(app: Any, method: str, path: str) -> int:
    async def send() -> int:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.request(method, path)).status_code

    return asyncio.run(send())


def recorded(registry: MetricsRegistry) -> dict[tuple[Any, ...], int]:
    family = registry.get("http.server.request.duration")
    assert family is not None
    return {s.label_values: sum(s.cell.snapshot()[0]) for s in family.series()}  # type: ignore[union-attr]


def test_records_route_templates_not_raw_paths_including_mounts() -> None:
    registry = MetricsRegistry()
    app = make_app(registry)
    assert request(app, "GET", "/hello/ana") == 200
    assert request(app, "GET", "/hello/bob") == 200
    assert request(app, "GET", "/tenants/42/items/7") == 200
    assert request(app, "GET", "/nothing/here") == 404
    assert recorded(registry) == {
        ("GET", "http", "/hello/{name}", 200, ""): 2,
        ("GET", "http", "/tenants/{tenant_id}/items/{item_id}", 200, ""): 1,
        ("GET", "http", "", 404, ""): 1,
    }


def test_exceptions_record_500_with_error_type_and_release_active_requests() -> None:
    registry = MetricsRegistry()
    app = make_app(registry)
    assert request(app, "GET", "/fail") == 500
    assert recorded(registry) == {("GET", "http", "/fail", 500, "KeyError"): 1}
    active = registry.get("http.server.active_requests")
    assert active is not None and [s.cell.get() for s in active.series()] == [0]


def test_excluded_paths_and_unknown_methods() -> None:
    registry = MetricsRegistry()
    app = make_app(registry)
    request(app, "GET", "/metrics")
    request(app, "BREW", "/hello/tea")
    assert recorded(registry) == {("_OTHER", "http", "/hello/{name}", 405, ""): 1}


def test_instrumentor_adds_the_middleware_once_and_uninstruments_cleanly() -> None:
    registry = MetricsRegistry()
    instrumentor = StarletteMiddlewareInstrumentor()
    instrumentor.instrument()
    try:
        plain = Starlette(routes=[Route("/hello/{name}", hello)])
        by_hand = make_app(registry)
        stack = plain.build_middleware_stack()
        assert isinstance(stack, HTTPServerMetricsMiddleware)
        assert not isinstance(by_hand.build_middleware_stack(), HTTPServerMetricsMiddleware)  # already has it inside
    finally:
        instrumentor.uninstrument()
    assert not isinstance(Starlette(routes=[]).build_middleware_stack(), HTTPServerMetricsMiddleware)


@pytest.mark.parametrize("path", ["/hello/x"])
def test_status_codes_are_integers_for_otlp(path: str) -> None:
    registry = MetricsRegistry()
    request(make_app(registry), "GET", path)
    [labels] = recorded(registry)
    assert labels[3] == 200 and isinstance(labels[3], int)


def test_fastapi_included_routers_keep_their_prefixes() -> None:
    from fastapi import APIRouter, FastAPI

    registry = MetricsRegistry()
    users = APIRouter()

    @users.get("/{user_id}")
    async def get_user(user_id: int) -> dict[str, int]:
        return {"user_id": user_id}

    admin = APIRouter()
    admin.include_router(users, prefix="/members")
    app = FastAPI()
    app.include_router(users, prefix="/users")
    app.include_router(admin, prefix="/api/admin")
    app.add_middleware(HTTPServerMetricsMiddleware, registry=registry, buckets=BUCKETS, excluded_paths=[])

    assert request(app, "GET", "/users/1") == 200
    assert request(app, "GET", "/api/admin/members/2") == 200
    assert recorded(registry) == {
        ("GET", "http", "/users/{user_id}", 200, ""): 1,
        ("GET", "http", "/api/admin/members/{user_id}", 200, ""): 1,
    }


def test_mount_that_serves_or_misses_is_recorded_once_without_doubling_its_prefix() -> None:
    async def static_files(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("body { }")(scope, receive, send)

    registry = MetricsRegistry()
    api = Starlette(routes=[Route("/users/{user_id}", hello)])
    app = Starlette(routes=[Mount("/api", app=api), Mount("/static", app=static_files)])
    app.add_middleware(HTTPServerMetricsMiddleware, registry=registry, buckets=BUCKETS, excluded_paths=[])

    assert request(app, "GET", "/api/nothing/here") == 404
    assert request(app, "GET", "/static/site.css") == 200
    assert request(app, "GET", "/api/users/3") == 200
    assert recorded(registry) == {
        ("GET", "http", "", 404, ""): 1,
        ("GET", "http", "/static/{path}", 200, ""): 1,
        ("GET", "http", "/api/users/{user_id}", 200, ""): 1,
    }


def test_instrumented_sub_app_is_counted_once() -> None:
    registry = MetricsRegistry()
    sub = Starlette(routes=[Route("/s/{k}", hello)])
    sub.add_middleware(HTTPServerMetricsMiddleware, registry=registry, buckets=BUCKETS, excluded_paths=[])
    app = Starlette(routes=[Mount("/sub", app=sub)])
    app.add_middleware(HTTPServerMetricsMiddleware, registry=registry, buckets=BUCKETS, excluded_paths=[])

    assert request(app, "GET", "/sub/s/1") == 200
    assert recorded(registry) == {("GET", "http", "/sub/s/{k}", 200, ""): 1}


def test_auto_installed_middleware_that_cannot_start_leaves_the_app_serving(caplog: pytest.LogCaptureFixture) -> None:
    from otel_monitoring import metrics

    registry = metrics.default_registry()
    registry.unregister("http.server.request.duration")
    registry.semconv_updowncounter("http.server.request.duration", "a clashing declaration", (), "s")
    instrumentor = StarletteMiddlewareInstrumentor()
    instrumentor.instrument()
    try:
        app = Starlette(routes=[Route("/hello/{name}", hello)])
        assert request(app, "GET", "/hello/x") == 200
    finally:
        instrumentor.uninstrument()
        registry.unregister("http.server.request.duration")
    assert "could not add the HTTP metrics middleware" in caplog.text
