"""Network latency probes: TCP connect time, or time to an HTTP response's headers, to configured targets.

Probes are the one collector with a timer of their own: a scrape must never wait on a slow network, so
one daemon thread measures every target each ``interval`` and records into the metrics facade, which the
next collection reads like any other metric.

- ``network.probe.duration`` (histogram, s): ``probe.target`` (the configured name), ``server.address``,
  ``server.port``, ``network.transport`` (``tcp``) and ``url.scheme`` (``tcp``, ``http``, ``https``).
  Only probes that succeeded are recorded, so timeouts do not distort the latency.
- ``network.probe.failures`` (counter): the same attributes and ``error.type`` (``timeout``, the exception
  class such as ``ConnectionRefusedError``, or the HTTP status code for a 5xx answer).

A TCP probe's time includes name resolution and the three-way handshake; an HTTP probe's includes both
plus TLS and the server's time to its first response line (a new connection each time, no keep-alive,
redirects not followed). Any HTTP answer below 500 counts as reachable (401 from an API without a key is).
HTTP probes carry the ``UNMEASURED`` request extension, so the httpx collector does not count them as the
application's outgoing calls in ``http.client.request.duration``.

Fork safety: a thread does not survive ``fork()``. A probe that was running restarts its thread in the
forked child, as the SDK's periodic reader does, so every worker of a pre-forking server keeps measuring.

>>> from otel_monitoring.metrics import MetricsRegistry
>>> probe = NetworkProbe({"db": "tcp://db:5432"}, interval=30, timeout=2, registry=MetricsRegistry())
>>> probe.start()  # probes every 30 s until probe.stop(); probe.probe_once() measures now
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from otel_monitoring._instruments import MetricsRegistry
from otel_monitoring.collectors.http_client import UNMEASURED
from otel_monitoring.metrics import default_registry

__all__ = ["PROBE_BUCKETS", "NetworkProbe", "ProbeTarget"]

_logger = logging.getLogger(__name__)

# Network round trips: from a loopback connect (~0.1 ms) to a slow TLS handshake across continents.
PROBE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ATTRIBUTES = ("probe.target", "server.address", "server.port", "network.transport", "url.scheme")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEADERS = {"User-Agent": "otel-monitoring-probe"}
# A probe is not one of the application's upstream calls: keep it out of http.client.request.duration.
_EXTENSIONS = {UNMEASURED: True}

Connect = Callable[[tuple[str, int], float], socket.socket]


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One configured target: ``name`` and its ``tcp://host:port`` or ``http(s)://`` URL."""

    name: str
    url: str
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, url: str) -> ProbeTarget:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
        if scheme not in ("tcp", "http", "https") or not parts.hostname or port is None:
            raise ValueError(f"probe target {name!r}: {url!r} is not a tcp://host:port or http(s) URL")
        return cls(name, url, scheme, parts.hostname, port)


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def _error_type(error: BaseException) -> str:
    if isinstance(error, (TimeoutError, socket.timeout, httpx.TimeoutException)):
        return "timeout"
    return type(error).__name__


class NetworkProbe:
    """Measures every target each ``interval`` seconds on one daemon thread; ``probe_once()`` measures now.

    ``clock`` (seconds, monotonic), ``connect`` (as ``socket.create_connection``) and ``http_client`` are
    injectable; the thread waits on an event, so ``stop()`` ends it at once.

    >>> from otel_monitoring.metrics import MetricsRegistry
    >>> probe = NetworkProbe({}, interval=1.0, timeout=1.0, registry=MetricsRegistry())
    >>> probe.start(); probe.stop(); probe.running
    False
    """

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        interval: float,
        timeout: float,
        registry: MetricsRegistry | None = None,
        clock: Callable[[], float] = time.perf_counter,
        connect: Connect = _connect,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.targets = [ProbeTarget.parse(name, url) for name, url in targets.items()]
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._connect = connect
        self._http_client = http_client
        self._owns_http_client = http_client is None
        registry = registry or default_registry()
        self._duration = registry.semconv_histogram(
            "network.probe.duration",
            "Time to connect to a probe target (TCP), or to its response headers (HTTP).",
            _ATTRIBUTES,
            "s",
            PROBE_BUCKETS,
        )
        self._failures = registry.semconv_counter(
            "network.probe.failures", "Probes that failed, by error type.", (*_ATTRIBUTES, "error.type"), "{probe}"
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        weak_restart = weakref.WeakMethod(self._restart_in_child)
        os.register_at_fork(after_in_child=lambda: (method := weak_restart()) and method())

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the probe thread (idempotent)."""
        with self._lock:
            if self.running or not self.targets:
                return
            self._stopping = threading.Event()
            self._thread = threading.Thread(target=self._run, name="otel-monitoring-probe", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (a probe under way finishes first, at most ``self.timeout``)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout + 1.0 if timeout is None else timeout)
        if self._owns_http_client and self._http_client is not None:
            self._http_client.close()
            self._http_client = None

    def _restart_in_child(self) -> None:
        # The parent's thread does not exist in the child and the locks may be held by it: start afresh.
        was_running = self._thread is not None
        self._lock = threading.Lock()
        self._thread = None
        self._http_client = None if self._owns_http_client else self._http_client
        if was_running and not self._stopping.is_set():
            self.start()

    def _run(self) -> None:
        stopping = self._stopping
        next_round = self._clock()
        while not stopping.is_set():
            try:
                self.probe_once()
            except Exception:  # never let the thread die: the next round may work
                _logger.warning("network probe round failed", exc_info=True)
            next_round += self.interval
            # A round longer than the interval starts the next one at once rather than catching up in a burst.
            next_round = max(next_round, self._clock())
            stopping.wait(max(0.0, next_round - self._clock()))

    def probe_once(self) -> dict[str, float | str]:
        """Measure every target now; returns each target's duration in seconds, or its error type."""
        results: dict[str, float | str] = {}
        for target in self.targets:
            attributes = (target.name, target.host, target.port, "tcp", target.scheme)
            try:
                seconds = self._probe_tcp(target) if target.scheme == "tcp" else self._probe_http(target)
            except Exception as error:
                error_type = _error_type(error)
                self._failures.labels(*attributes, error_type).inc()
                results[target.name] = error_type
                continue
            if isinstance(seconds, str):  # an HTTP 5xx answer
                self._failures.labels(*attributes, seconds).inc()
                results[target.name] = seconds
                continue
            self._duration.labels(*attributes).observe(seconds)
            results[target.name] = seconds
        return results

    def _probe_tcp(self, target: ProbeTarget) -> float:
        started = self._clock()
        connection = self._connect((target.host, target.port), self.timeout)
        elapsed = self._clock() - started
        connection.close()
        return elapsed

    def _client(self) -> httpx.Client:
        if self._http_client is None:
            # No keep-alive: every probe opens a new connection, so the figure includes connect and TLS.
            self._http_client = httpx.Client(
                timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=0), follow_redirects=False
            )
        return self._http_client

    def _probe_http(self, target: ProbeTarget) -> float | str:
        client = self._client()
        started = self._clock()
        with client.stream("GET", target.url, headers=_HEADERS, extensions=_EXTENSIONS) as response:
            elapsed = self._clock() - started  # headers received; the body is never read
            status: Any = response.status_code
        return str(status) if status >= 500 else elapsed
