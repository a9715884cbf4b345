"""Outgoing HTTP calls made with httpx: ``http.client.request.duration`` by the stable semantic conventions.

https://opentelemetry.io/docs/specs/semconv/http/http-metrics/#metric-httpclientrequestduration

Attributes: ``http.request.method``, ``server.address``, ``server.port``, ``url.scheme``,
``http.response.status_code``, ``error.type`` (the exception's class name when no response came back, the
status code as a string for 4xx and 5xx responses, as the conventions ask of clients) and ``url.template``,
derived from the path: segments that look like identifiers, and any segment after a collection of people or
accounts (``users``, ``customers``, ``tenants`` ...), become ``{id}`` and the query string is dropped, so
``/v1/customers/cus_8f3k2j9/invoices?limit=10`` is recorded as ``/v1/customers/{id}/invoices``.

Requests are measured at the transport (``httpx.HTTPTransport.handle_request`` and
``httpx.AsyncHTTPTransport.handle_async_request``): every request that goes on the network is one
measurement, including each redirect hop and each retry of a retrying wrapper transport, as the conventions
count them; the duration ends when the response headers arrive (the body is read by the caller). A request
whose extensions carry ``UNMEASURED`` (the library's own network probes) is passed through unrecorded.

>>> HTTPXClientInstrumentor().instrument()       # opentelemetry-instrument does this
>>> client = httpx.Client(transport=MetricsTransport(httpx.HTTPTransport()))  # or measure one client
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable
from typing import Any

import httpx
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_monitoring._instruments import HistogramFamily, MetricsRegistry
from otel_monitoring.metrics import default_registry
from otel_monitoring.settings import HTTP_CLIENT_DURATION_BUCKETS

__all__ = [
    "DEFAULT_MAX_HOSTS",
    "DEFAULT_MAX_TEMPLATES_PER_HOST",
    "HTTP_CLIENT_DURATION_BUCKETS",
    "HTTP_CLIENT_REQUEST_DURATION",
    "OVERFLOW_VALUE",
    "UNMEASURED",
    "HTTPClientRecorder",
    "HTTPXClientInstrumentor",
    "MetricsTransport",
    "host_template",
    "url_template",
]

HTTP_CLIENT_REQUEST_DURATION = "http.client.request.duration"
UNMEASURED = "otel_monitoring.unmeasured"
"""Request extension key: a request that carries it with a true value is not measured. httpx hands extensions
down to httpcore, which reads only the keys it knows (``timeout``, ``trace``, ``sni_hostname`` ...), and copies
them onto redirect hops, so every hop of such a request stays unmeasured.

>>> client.get("http://db:8080/health", extensions={UNMEASURED: True})   # a health check, not an upstream call
"""
_ATTRIBUTES = (
    "http.request.method",
    "server.address",
    "server.port",
    "url.scheme",
    "url.template",
    "http.response.status_code",
    "error.type",
)
# The semantic conventions' advice for http.client.request.duration, as on the server side.
# https://opentelemetry.io/docs/specs/semconv/registry/attributes/http/#http-request-method
_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Values past a cap share this one, as the conventions do for unknown methods.
OVERFLOW_VALUE = "_OTHER"
DEFAULT_MAX_TEMPLATES_PER_HOST = 100
DEFAULT_MAX_HOSTS = 200
_MEMO_SIZE = 4096

ID_PLACEHOLDER = "{id}"
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_LONG_HEX = re.compile(r"[0-9a-fA-F]{16,}")
# An email or percent-encoding (names, queries, non-ASCII text), two adjacent digits, or three digits in all.
# Short route words carry at most a lone digit or two (v1, v1beta1, oauth2, gpt-4o, s3); numbers, "acme-42",
# "user42" and "a1b2c3" do not. The two [^0-9]* cannot overlap a digit, so matching is linear.
_IDENTIFIER_MARKS = re.compile(r"[@%]|[0-9]{2}|[0-9][^0-9]*[0-9][^0-9]*[0-9]")
_DIGIT = re.compile(r"[0-9]")
_LOWER_THEN_UPPER = re.compile(r"[a-z][A-Z]")
# Longer segments are data (tokens, slugs, encoded blobs) far more often than route words.
_MAX_WORD = 40
# Collections whose members are people, accounts or organisations: the segment after one is a name or a handle
# (``/users/john.smith``, ``/customers/maria-silva``) whatever it looks like, so it always becomes {id}.
_PERSONAL_COLLECTIONS = frozenset(
    {
        "users", "user", "customers", "customer", "clients", "client", "accounts", "account", "tenants", "tenant",
        "members", "member", "people", "person", "persons", "profiles", "profile", "employees", "employee",
        "patients", "patient", "contacts", "contact", "subscribers", "subscriber", "orgs", "org",
        "organizations", "organization", "organisations", "organisation",
    }
)  # fmt: skip

_logger = logging.getLogger(__name__)


def _is_identifier(segment: str) -> bool:
    """Whether one path segment looks like data rather than part of a route.

    Conservative on purpose: a false positive (``gpt-4o-mini`` becomes ``{id}``) only merges two routes, a false
    negative puts a customer's identifier in a label.
    """
    if segment.isdigit() or len(segment) > _MAX_WORD or _IDENTIFIER_MARKS.search(segment) is not None:
        return True
    if len(segment) < 8:
        return False
    if _DIGIT.search(segment) is not None:
        return True  # a long token with a digit: generated ids such as cus_NffrFeUfNV2Hib
    if len(segment) >= 10 and len(_LOWER_THEN_UPPER.findall(segment)) >= 3:
        return True  # random mixed case (NffrFeUfNVHib), unlike camelCase route words (generateContent)
    return len(segment) >= 16 and (_LONG_HEX.fullmatch(segment) is not None or _UUID.fullmatch(segment) is not None)


def host_template(host: str) -> str:
    """The host with identifier-like labels replaced, for per-tenant hostnames; IP addresses are kept.

    >>> host_template("acme-4821.shop.example.com")
    '{id}.shop.example.com'
    """
    if ":" in host or host.replace(".", "").isdigit():
        return host  # an IPv6 or IPv4 literal names a server, not a customer
    labels = host.split(".")
    return ".".join(ID_PLACEHOLDER if _is_identifier(label) else label for label in labels)


def url_template(path: str) -> str:
    """A low-cardinality template of a URL path: identifier-like segments become ``{id}``, the query goes.

    The segment after a collection of people or accounts (``users``, ``customers``, ``accounts``, ``tenants``,
    ``members``, ``orgs`` ... and their singulars) becomes ``{id}`` whatever it looks like, because names and
    handles (``john.smith``) look like route words.

    >>> url_template("/v1/users/42/orders/0b9f1c4e-5d1a-4c8e-9f7a-2b3c4d5e6f70?expand=items")
    '/v1/users/{id}/orders/{id}'
    >>> url_template("/customers/maria-silva/orders")
    '/customers/{id}/orders'
    >>> url_template("/v1/files/file-9x82kd7:download")
    '/v1/files/{id}:download'
    """
    path = path.partition("?")[0].partition("#")[0]
    if not path or path == "/":
        return "/"
    segments = path.split("/")
    after_person = False  # the previous segment, as kept in the template, names a collection of people
    for index, segment in enumerate(segments):
        if not segment:
            after_person = False
            continue
        if ":" in segment:  # Google-style custom methods: keep the verb, template the resource
            parts = segment.split(":")
            segments[index] = ":".join(
                ID_PLACEHOLDER if (after_person and position == 0) or _is_identifier(part) else part
                for position, part in enumerate(parts)
            )
        elif after_person or _is_identifier(segment):
            segments[index] = ID_PLACEHOLDER
        # Judged on the kept value: in /users/users/orders the middle "users" is a name, so "orders" stays.
        after_person = segments[index].lower() in _PERSONAL_COLLECTIONS
    template = "/".join(segments)
    return template if template.startswith("/") else "/" + template


class HTTPClientRecorder:
    """Records one request into ``http.client.request.duration``; shared by the patched transports and
    ``MetricsTransport``. Never raises: a failure is logged once and the request goes on.

    ``max_templates_per_host`` bounds the distinct ``url.template`` values of one host and ``max_hosts`` the
    distinct ``server.address`` values; past them, new values are recorded as ``_OTHER``.
    """

    def __init__(
        self,
        registry: MetricsRegistry | None = None,
        *,
        buckets: Iterable[float] = HTTP_CLIENT_DURATION_BUCKETS,
        max_templates_per_host: int = DEFAULT_MAX_TEMPLATES_PER_HOST,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        registry = default_registry() if registry is None else registry
        self._duration: HistogramFamily = registry.semconv_histogram(
            HTTP_CLIENT_REQUEST_DURATION, "Duration of HTTP client requests.", _ATTRIBUTES, "s", buckets
        )
        self.clock = clock
        self._max_templates = max_templates_per_host
        self._max_hosts = max_hosts
        self._templates: dict[str, set[str]] = {}  # host -> templates admitted for it
        self._memo: dict[tuple[str, bytes], tuple[str, str]] = {}  # (host, raw path) -> (address, template)
        self._hosts: dict[str, str] = {}  # host -> host_template(host)
        self._lock = threading.Lock()
        self._failed = False
        _live_recorders.add(self)

    def record(self, request: httpx.Request, status: int, error: BaseException | None, seconds: float) -> None:
        """Record one request: ``status`` 0 when no response arrived, ``error`` the exception it raised."""
        # Hot path: written for speed on purpose (one memo lookup, one family lookup, one observe).
        try:
            url = request.url
            host = url.host
            raw_path = url.raw_path
            named = self._memo.get((host, raw_path))
            if named is None:
                named = self._name(host, raw_path)
            method = request.method
            if method not in _KNOWN_METHODS:
                method = "_OTHER"
            scheme = url.scheme
            port = url.port or _DEFAULT_PORTS.get(scheme, 0)
            if error is not None:
                error_type = type(error).__qualname__
            elif status >= 400:  # for a client, 4xx is an error too
                error_type = str(status)
            else:
                error_type = ""
            self._duration.labels(method, named[0], port, scheme, named[1], status or "", error_type).observe(seconds)
        except Exception:
            if not self._failed:
                self._failed = True
                _logger.warning("could not record an outgoing HTTP request; the request is unaffected", exc_info=True)

    def _name(self, raw_host: str, raw_path: bytes) -> tuple[str, str]:
        template = url_template(raw_path.decode("ascii", "replace"))
        host = self._hosts.get(raw_host)
        if host is None:
            if len(self._hosts) >= _MEMO_SIZE:
                self._hosts = {}
            host = self._hosts[raw_host] = host_template(raw_host)
        with self._lock:
            templates = self._templates.get(host)
            if templates is None:
                if len(self._templates) >= self._max_hosts:
                    named = (OVERFLOW_VALUE, OVERFLOW_VALUE)
                    self._remember((raw_host, raw_path), named)
                    return named
                templates = self._templates[host] = set()
            if template not in templates:
                if len(templates) >= self._max_templates:
                    template = OVERFLOW_VALUE
                else:
                    templates.add(template)
            named = (host, template)
            self._remember((raw_host, raw_path), named)
            return named

    def _remember(self, key: tuple[str, bytes], named: tuple[str, str]) -> None:
        if len(self._memo) >= _MEMO_SIZE:
            self._memo = {}  # paths with identifiers never repeat; start over rather than grow
        self._memo[key] = named


_live_recorders: weakref.WeakSet[HTTPClientRecorder] = weakref.WeakSet()


def _reset_locks_in_child() -> None:
    # A worker forked (gunicorn --preload) while another thread held a recorder's lock would wait forever.
    for recorder in list(_live_recorders):
        recorder._lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_locks_in_child)


class MetricsTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Wraps one httpx transport to measure the requests of the clients that use it.

    >>> client = httpx.Client(transport=MetricsTransport(httpx.HTTPTransport(retries=2)))
    >>> async_client = httpx.AsyncClient(transport=MetricsTransport(httpx.AsyncHTTPTransport()))

    When ``HTTPXClientInstrumentor`` already measures the wrapped transport, the wrapper steps aside, so a
    request is never recorded twice.
    """

    def __init__(self, transport: Any, *, recorder: HTTPClientRecorder | None = None) -> None:
        self._transport = transport
        self._recorder = recorder or HTTPClientRecorder()

    def _measured_below(self, method: str) -> bool:
        return _recorder is not None and getattr(getattr(type(self._transport), method, None), _WRAPPED, False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(UNMEASURED) or self._measured_below("handle_request"):
            response: httpx.Response = self._transport.handle_request(request)
            return response
        recorder = self._recorder
        start = recorder.clock()
        try:
            response = self._transport.handle_request(request)
        except BaseException as error:
            recorder.record(request, 0, error, recorder.clock() - start)
            raise
        recorder.record(request, response.status_code, None, recorder.clock() - start)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.extensions.get(UNMEASURED) or self._measured_below("handle_async_request"):
            response: httpx.Response = await self._transport.handle_async_request(request)
            return response
        recorder = self._recorder
        start = recorder.clock()
        try:
            response = await self._transport.handle_async_request(request)
        except BaseException as error:
            recorder.record(request, 0, error, recorder.clock() - start)
            raise
        recorder.record(request, response.status_code, None, recorder.clock() - start)
        return response

    def close(self) -> None:
        self._transport.close()

    async def aclose(self) -> None:
        await self._transport.aclose()


_recorder: HTTPClientRecorder | None = None
_WRAPPED = "_otel_monitoring_wrapped"
_ORIGINAL = "_otel_monitoring_original"


def _wrap_sync(original: Callable[..., httpx.Response]) -> Callable[..., httpx.Response]:
    @functools.wraps(original)
    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        recorder = _recorder
        if recorder is None or request.extensions.get(UNMEASURED):
            return original(self, request)
        start = recorder.clock()
        try:
            response = original(self, request)
        except BaseException as error:
            recorder.record(request, 0, error, recorder.clock() - start)
            raise
        recorder.record(request, response.status_code, None, recorder.clock() - start)
        return response

    setattr(handle_request, _WRAPPED, True)
    return handle_request


def _wrap_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def handle_async_request(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        recorder = _recorder
        if recorder is None or request.extensions.get(UNMEASURED):
            response: httpx.Response = await original(self, request)
            return response
        start = recorder.clock()
        try:
            response = await original(self, request)
        except BaseException as error:
            recorder.record(request, 0, error, recorder.clock() - start)
            raise
        recorder.record(request, response.status_code, None, recorder.clock() - start)
        return response

    setattr(handle_async_request, _WRAPPED, True)
    return handle_async_request


_TARGETS: tuple[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]], ...] = (
    (httpx.HTTPTransport, "handle_request", _wrap_sync),
    (httpx.AsyncHTTPTransport, "handle_async_request", _wrap_async),
)


class HTTPXClientInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Measures every ``httpx.Client`` and ``httpx.AsyncClient`` request; entry point ``otel_monitoring_httpx``.

    Does nothing when ``collectors.http_client`` is off (``OTEL_MONITORING_HTTP_CLIENT_METRICS=false``).
    Keyword arguments, all optional: ``registry``, ``settings``, ``buckets``, ``max_templates_per_host``,
    ``max_hosts``.

    >>> HTTPXClientInstrumentor().instrument()
    >>> httpx.get("https://api.example.com/v1/users/42")   # recorded with url.template /v1/users/{id}
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("httpx >= 0.24",)

    def _instrument(self, **kwargs: Any) -> None:
        global _recorder
        settings = kwargs.get("settings")
        if settings is None:
            from otel_monitoring import config

            settings = config.get_settings()
        if not settings.collectors.http_client:
            return
        registry = kwargs.get("registry") or default_registry()
        options = {key: kwargs[key] for key in ("buckets", "max_templates_per_host", "max_hosts") if key in kwargs}
        options.setdefault("buckets", settings.collectors.http_client_duration_buckets)
        _recorder = HTTPClientRecorder(registry, **options)
        for cls, method, wrap in _TARGETS:
            if _ORIGINAL + method not in vars(cls):  # instrumenting twice never records twice
                original = vars(cls)[method]
                setattr(cls, _ORIGINAL + method, original)
                setattr(cls, method, wrap(original))
        if registry is default_registry():
            from otel_monitoring.telemetry import start_if_exporting

            start_if_exporting()

    def _uninstrument(self, **kwargs: Any) -> None:
        global _recorder
        _recorder = None
        for cls, method, _wrap in _TARGETS:
            original = vars(cls).get(_ORIGINAL + method)
            if original is not None:
                setattr(cls, method, original)
                delattr(cls, _ORIGINAL + method)
