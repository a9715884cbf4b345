"""Outgoing httpx requests: ``http.client.request.duration`` with semconv attributes and a url.template."""

from __future__ import annotations

import asyncio
import logging
import string
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_monitoring.collectors.http_client import (
    OVERFLOW_VALUE,
    UNMEASURED,
    HTTPClientRecorder,
    HTTPXClientInstrumentor,
    MetricsTransport,
    url_template,
)
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from tests.support import free_port

KEYS = ("method", "address", "port", "scheme", "template", "status", "error")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/users/7")
        elif path.startswith("/status/"):
            self.send_response(int(path.rsplit("/", 1)[1]))
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def registry() -> Iterator[MetricsRegistry]:
    registry = MetricsRegistry()
    HTTPXClientInstrumentor().instrument(registry=registry, settings=load_settings(environ={}))
    try:
        yield registry
    finally:
        HTTPXClientInstrumentor().uninstrument()


def recorded(registry: MetricsRegistry) -> list[dict[str, Any]]:
    """One dict per series, with the series' request count under "count"."""
    family = registry.get("http.client.request.duration")
    if family is None:
        return []
    return [
        {**dict(zip(KEYS, series.label_values, strict=True)), "count": sum(series.cell.snapshot()[0])}  # type: ignore[union-attr]
        for series in family.series()
    ]


def test_records_duration_with_semconv_attributes_and_a_template(registry: MetricsRegistry, server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with httpx.Client(base_url=server) as client:
        assert client.get("/users/123", params={"token": "s3cr3t"}).status_code == 200
        assert client.get("/users/456").status_code == 200

    [series] = recorded(registry)
    assert series == {
        "method": "GET",
        "address": "127.0.0.1",
        "port": port,
        "scheme": "http",
        "template": "/users/{id}",
        "status": 200,
        "error": "",
        "count": 2,
    }


@pytest.mark.parametrize("status", [404, 503])
def test_error_type_is_the_status_code_for_4xx_and_5xx(registry: MetricsRegistry, server: str, status: int) -> None:
    with httpx.Client(base_url=server) as client:
        assert client.get(f"/status/{status}").status_code == status

    [series] = recorded(registry)
    assert (series["status"], series["error"]) == (status, str(status))


def test_refused_connection_records_the_exception_class_and_the_app_still_gets_it(registry: MetricsRegistry) -> None:
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{free_port()}/users/1")

    [series] = recorded(registry)
    assert series["error"] == "ConnectError"
    assert series["status"] == ""  # no response: the attribute is left out of the exported point
    assert series["template"] == "/users/{id}"


def test_each_redirect_hop_is_one_request(registry: MetricsRegistry, server: str) -> None:
    with httpx.Client(base_url=server, follow_redirects=True) as client:
        assert client.get("/redirect").status_code == 200

    hops = {(series["template"], series["status"]): series["count"] for series in recorded(registry)}
    assert hops == {("/redirect", 302): 1, ("/users/{id}", 200): 1}


def test_async_client_requests_are_recorded(registry: MetricsRegistry, server: str) -> None:
    async def fetch() -> list[int]:
        async with httpx.AsyncClient(base_url=server) as client:
            responses = await asyncio.gather(*(client.get(f"/orders/{n}/lines") for n in range(10, 15)))
        return [response.status_code for response in responses]

    assert asyncio.run(fetch()) == [200] * 5
    [series] = recorded(registry)
    assert (series["template"], series["count"]) == ("/orders/{id}/lines", 5)


def test_no_raw_identifier_reaches_any_attribute(registry: MetricsRegistry, server: str) -> None:
    identifiers = ["8812345", str(uuid.uuid4()), "cus_NffrFeUfNV2Hib", "ana@example.com", "5f2b9c0d1e3a4b6c7d8e9f00"]
    with httpx.Client(base_url=server) as client:
        for identifier in identifiers:
            client.get(f"/customers/{identifier}/invoices", params={"customer": identifier})

    values = [str(value) for series in recorded(registry) for value in series.values()]
    assert [identifier for identifier in identifiers if any(identifier in value for value in values)] == []
    assert {series["template"] for series in recorded(registry)} == {"/customers/{id}/invoices"}


def test_templates_past_the_per_host_cap_share_one_overflow_value(server: str) -> None:
    registry = MetricsRegistry()
    HTTPXClientInstrumentor().instrument(
        registry=registry, settings=load_settings(environ={}), max_templates_per_host=2
    )
    try:
        with httpx.Client(base_url=server) as client:
            for word in ("alpha", "beta", "gamma", "delta"):
                client.get(f"/{word}")
    finally:
        HTTPXClientInstrumentor().uninstrument()

    counts = {series["template"]: series["count"] for series in recorded(registry)}
    assert counts == {"/alpha": 1, "/beta": 1, OVERFLOW_VALUE: 2}


def test_setting_off_leaves_httpx_untouched(server: str) -> None:
    registry = MetricsRegistry()
    original = httpx.HTTPTransport.handle_request
    off = load_settings(environ={"OTEL_MONITORING_HTTP_CLIENT_METRICS": "false"})
    HTTPXClientInstrumentor().instrument(registry=registry, settings=off)
    try:
        patched = httpx.HTTPTransport.handle_request
        httpx.get(f"{server}/users/1")
    finally:
        HTTPXClientInstrumentor().uninstrument()

    assert patched is original
    assert recorded(registry) == []


def test_uninstrument_restores_the_transports(server: str) -> None:
    originals = (httpx.HTTPTransport.handle_request, httpx.AsyncHTTPTransport.handle_async_request)
    registry = MetricsRegistry()
    HTTPXClientInstrumentor().instrument(registry=registry, settings=load_settings(environ={}))
    patched = (httpx.HTTPTransport.handle_request, httpx.AsyncHTTPTransport.handle_async_request)
    HTTPXClientInstrumentor().uninstrument()
    httpx.get(f"{server}/users/1")

    assert patched != originals
    assert (httpx.HTTPTransport.handle_request, httpx.AsyncHTTPTransport.handle_async_request) == originals
    assert recorded(registry) == []


def test_metrics_transport_measures_one_client_and_steps_aside_under_the_instrumentor(server: str) -> None:
    own = MetricsRegistry()
    transport = MetricsTransport(httpx.HTTPTransport(), recorder=HTTPClientRecorder(own))
    with httpx.Client(base_url=server, transport=transport) as client:
        client.get("/users/1")
        global_registry = MetricsRegistry()
        HTTPXClientInstrumentor().instrument(registry=global_registry, settings=load_settings(environ={}))
        try:
            client.get("/users/2")
        finally:
            HTTPXClientInstrumentor().uninstrument()

    assert [series["count"] for series in recorded(own)] == [1]
    assert [series["count"] for series in recorded(global_registry)] == [1]


def test_metrics_transport_wraps_async_transports(server: str) -> None:
    own = MetricsRegistry()
    transport = MetricsTransport(httpx.AsyncHTTPTransport(), recorder=HTTPClientRecorder(own))

    async def fetch() -> int:
        async with httpx.AsyncClient(base_url=server, transport=transport) as client:
            return (await client.get("/users/3")).status_code

    assert asyncio.run(fetch()) == 200
    assert [(series["template"], series["count"]) for series in recorded(own)] == [("/users/{id}", 1)]


def test_requests_marked_unmeasured_are_passed_through_and_not_recorded(registry: MetricsRegistry, server: str) -> None:
    own = MetricsRegistry()
    wrapped = MetricsTransport(httpx.AsyncHTTPTransport(), recorder=HTTPClientRecorder(own))
    skip = {UNMEASURED: True}

    async def fetch_async() -> list[int]:
        async with (
            httpx.AsyncClient(base_url=server) as plain,
            httpx.AsyncClient(base_url=server, transport=wrapped) as measured,
        ):
            first = await plain.get("/users/1", extensions=skip)
            second = await measured.get("/users/2", extensions=skip)
        return [first.status_code, second.status_code]

    with httpx.Client(base_url=server, follow_redirects=True) as client:
        statuses = [client.get("/status/204", extensions=skip).status_code]
        statuses.append(client.get("/redirect", extensions=skip).status_code)  # both hops carry the key
        statuses += asyncio.run(fetch_async())
        client.get("/users/3")  # an ordinary request is still measured

    assert statuses == [204, 200, 200, 200]
    assert [(series["template"], series["count"]) for series in recorded(registry)] == [("/users/{id}", 1)]
    assert recorded(own) == []


def test_a_recording_failure_is_logged_once_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    recorder = HTTPClientRecorder(MetricsRegistry())
    not_a_request: Any = object()
    with caplog.at_level(logging.WARNING, logger="otel_monitoring.collectors.http_client"):
        recorder.record(not_a_request, 200, None, 0.1)
        recorder.record(not_a_request, 200, None, 0.1)

    assert [record.getMessage() for record in caplog.records] == [
        "could not record an outgoing HTTP request; the request is unaffected"
    ]


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1beta1/projects", "/v1beta1/projects"),
        ("/oauth2/token?grant_type=client_credentials", "/oauth2/token"),
        ("/v1/files/file-9x82kd7:download", "/v1/files/{id}:download"),
        ("/users/ana%40example.com/", "/users/{id}/"),
        ("/search/caf%C3%A9", "/search/{id}"),
        ("/v1/users/john.smith/profile", "/v1/users/{id}/profile"),
        ("/customers/maria-silva/orders", "/customers/{id}/orders"),
        ("/api/Accounts/acme/invoices/2024", "/api/Accounts/{id}/invoices/{id}"),
        ("/orgs/openai/members/alice", "/orgs/{id}/members/{id}"),
        ("/tenant/globex/people/bob:disable", "/tenant/{id}/people/{id}:disable"),
        ("/users/users/orders", "/users/{id}/orders"),  # a user named "users" does not hide the next segment
        ("/users/", "/users/"),
        ("/v1/models/claude", "/v1/models/claude"),  # not a collection of people: kept
        ("", "/"),
    ],
)
def test_template_keeps_route_words_and_replaces_identifiers(path: str, template: str) -> None:
    assert url_template(path) == template


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
identifiers = st.one_of(
    st.integers(min_value=0).map(str),
    st.uuids().map(str),
    st.uuids().map(lambda value: value.hex),
    st.text("0123456789abcdef", min_size=16, max_size=40),
    st.emails(),
    # Long generated tokens mixing letters and digits, with or without a prefix such as cus_ or sk-
    st.tuples(
        st.sampled_from(["", "cus_", "sk-", "inv_", "u-"]),
        st.text(_ALNUM, min_size=8, max_size=32).filter(lambda t: any(c.isdigit() for c in t)),
    ).map("".join),
)


@given(identifier=identifiers, query=st.booleans())
def test_property_no_identifier_survives_in_a_template(identifier: str, query: bool) -> None:
    encoded = quote(identifier, safe="@:-._~")  # what a client puts on the wire
    path = f"/api/customers/{encoded}/invoices" + (f"?customer={encoded}" if query else "")

    assert url_template(path) == "/api/customers/{id}/invoices"


PERSONAL_COLLECTIONS = [
    "users", "user", "customers", "customer", "clients", "client", "accounts", "account", "tenants", "tenant",
    "members", "member", "people", "person", "profiles", "profile", "employees", "employee", "patients",
    "patient", "contacts", "contact", "subscribers", "subscriber", "orgs", "org", "organizations", "organization",
]  # fmt: skip
names = st.one_of(
    st.text(string.ascii_letters, min_size=1, max_size=30),  # alice, JohnSmith
    st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=12), min_size=2, max_size=4).flatmap(
        lambda words: st.sampled_from(".-_").map(lambda separator: separator.join(words))  # john.smith, maria-silva
    ),
    st.text(st.characters(categories=["L"]), min_size=1, max_size=20).map(lambda name: quote(name, safe="")),
)


@given(noun=st.sampled_from(PERSONAL_COLLECTIONS), capitalised=st.booleans(), name=names, rest=st.booleans())
def test_property_names_after_a_collection_of_people_never_appear(
    noun: str, capitalised: bool, name: str, rest: bool
) -> None:
    noun = noun.capitalize() if capitalised else noun
    path = f"/v1/{noun}/{name}" + ("/orders?page=2" if rest else "")

    assert url_template(path) == f"/v1/{noun}/{{id}}" + ("/orders" if rest else "")


def test_instrumentor_takes_duration_buckets_from_the_settings() -> None:
    registry = MetricsRegistry()
    settings = load_settings(environ={"OTEL_MONITORING_HTTP_CLIENT_DURATION_BUCKETS": "0.5,30,90"})
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(registry=registry, settings=settings)
    try:
        family = registry.get("http.client.request.duration")
    finally:
        instrumentor.uninstrument()

    assert family is not None and family.shape()["buckets"] == (0.5, 30.0, 90.0)
