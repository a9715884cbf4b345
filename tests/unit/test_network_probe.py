"""Network latency probes against real sockets and an HTTP server on 127.0.0.1; failures counted by type."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from otel_monitoring.collectors.http_client import HTTPXClientInstrumentor
from otel_monitoring.collectors.probe import NetworkProbe, ProbeTarget
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings


def outgoing_calls(registry: MetricsRegistry) -> int:
    family = registry.get("http.client.request.duration")
    if family is None:
        return 0
    calls = 0
    for series in family.series():
        calls += sum(series.cell.snapshot()[0])  # type: ignore[union-attr]
    return calls


def durations(registry: MetricsRegistry) -> dict[tuple[Any, ...], int]:
    family = registry.get("network.probe.duration")
    assert family is not None
    return {series.label_values: sum(series.cell.snapshot()[0]) for series in family.series()}  # type: ignore[union-attr]


def failures(registry: MetricsRegistry) -> dict[tuple[Any, ...], float]:
    family = registry.get("network.probe.failures")
    assert family is not None
    return {series.label_values: series.cell.get() for series in family.series()}  # type: ignore[union-attr]


@pytest.fixture
def listening() -> Iterator[tuple[str, int]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        host, port = server.getsockname()[:2]
        yield host, port


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # bound, then released: nothing listens there


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path == "/down" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tcp_probe_records_connect_time_with_target_attributes(listening: tuple[str, int]) -> None:
    host, port = listening
    registry = MetricsRegistry()
    probe = NetworkProbe({"database": f"tcp://{host}:{port}"}, interval=30, timeout=2, registry=registry)

    result = probe.probe_once()
    probe.probe_once()

    assert isinstance(result["database"], float) and 0 < result["database"] < 2
    assert durations(registry) == {("database", host, port, "tcp", "tcp"): 2}


def test_closed_port_is_counted_as_a_failure_and_records_no_duration(closed_port: int) -> None:
    registry = MetricsRegistry()
    probe = NetworkProbe({"cache": f"tcp://127.0.0.1:{closed_port}"}, interval=30, timeout=2, registry=registry)

    result = probe.probe_once()

    assert result == {"cache": "ConnectionRefusedError"}
    assert failures(registry) == {("cache", "127.0.0.1", closed_port, "tcp", "tcp", "ConnectionRefusedError"): 1}
    assert durations(registry) == {}


def test_a_timeout_is_counted_with_error_type_timeout() -> None:
    def hang(address: tuple[str, int], timeout: float) -> socket.socket:
        raise TimeoutError(f"no answer from {address} in {timeout}s")

    registry = MetricsRegistry()
    probe = NetworkProbe({"upstream": "tcp://10.0.0.1:443"}, interval=30, timeout=0.5, registry=registry, connect=hang)

    probe.probe_once()

    assert failures(registry) == {("upstream", "10.0.0.1", 443, "tcp", "tcp", "timeout"): 1}


def test_connect_time_comes_from_the_injected_clock(listening: tuple[str, int]) -> None:
    host, port = listening
    ticks = iter([10.0, 10.25])
    registry = MetricsRegistry()
    probe = NetworkProbe(
        {"db": f"tcp://{host}:{port}"}, interval=30, timeout=2, registry=registry, clock=lambda: next(ticks)
    )

    result = probe.probe_once()

    assert result == {"db": 0.25}


def test_http_probe_records_time_to_response_headers(http_server: str) -> None:
    registry = MetricsRegistry()
    probe = NetworkProbe({"api": f"{http_server}/health"}, interval=30, timeout=2, registry=registry)
    try:
        result = probe.probe_once()
    finally:
        probe.stop()

    port = int(http_server.rsplit(":", 1)[1])
    assert isinstance(result["api"], float) and result["api"] > 0
    assert durations(registry) == {("api", "127.0.0.1", port, "tcp", "http"): 1}


def test_http_probes_are_not_counted_as_the_apps_outgoing_calls(http_server: str) -> None:
    registry = MetricsRegistry()
    HTTPXClientInstrumentor().instrument(registry=registry, settings=load_settings(environ={}))
    try:
        targets = {"api": f"{http_server}/health", "down": f"{http_server}/down"}
        probe = NetworkProbe(targets, interval=30, timeout=2, registry=registry)
        try:
            rounds = [probe.probe_once() for _ in range(3)]
        finally:
            probe.stop()
        after_probes = outgoing_calls(registry)
        assert httpx.get(f"{http_server}/health").status_code == 200  # an ordinary request of the app
        after_app_call = outgoing_calls(registry)
    finally:
        HTTPXClientInstrumentor().uninstrument()

    assert [sorted(result) for result in rounds] == [["api", "down"]] * 3
    assert all(isinstance(result["api"], float) and result["down"] == "503" for result in rounds)
    assert after_probes == 0
    assert after_app_call == 1


def test_http_5xx_answer_is_a_failure_with_the_status_code(http_server: str) -> None:
    registry = MetricsRegistry()
    probe = NetworkProbe({"api": f"{http_server}/down"}, interval=30, timeout=2, registry=registry)
    try:
        result = probe.probe_once()
    finally:
        probe.stop()

    port = int(http_server.rsplit(":", 1)[1])
    assert result == {"api": "503"}
    assert failures(registry) == {("api", "127.0.0.1", port, "tcp", "http", "503"): 1}
    assert durations(registry) == {}


def test_http_probe_to_a_closed_port_counts_a_connect_error(closed_port: int) -> None:
    registry = MetricsRegistry()
    probe = NetworkProbe({"api": f"http://127.0.0.1:{closed_port}/"}, interval=30, timeout=2, registry=registry)
    try:
        result = probe.probe_once()
    finally:
        probe.stop()

    assert result == {"api": "ConnectError"}
    assert sum(failures(registry).values()) == 1


def test_thread_probes_every_target_and_stops(listening: tuple[str, int]) -> None:
    host, port = listening
    probed = threading.Event()
    seen_threads: list[str] = []

    def connect(address: tuple[str, int], timeout: float) -> socket.socket:
        seen_threads.append(threading.current_thread().name)
        connection = socket.create_connection(address, timeout=timeout)
        probed.set()
        return connection

    registry = MetricsRegistry()
    probe = NetworkProbe({"db": f"tcp://{host}:{port}"}, interval=0.01, timeout=2, registry=registry, connect=connect)
    probe.start()
    probe.start()  # idempotent: still one thread
    try:
        assert probed.wait(timeout=10)
    finally:
        probe.stop()

    assert not probe.running
    assert set(seen_threads) == {"otel-monitoring-probe"}
    assert sum(durations(registry).values()) >= 1


def test_a_probe_without_targets_starts_no_thread() -> None:
    probe = NetworkProbe({}, interval=1, timeout=1, registry=MetricsRegistry())

    probe.start()

    assert not probe.running


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://db:5432", ("tcp", "db", 5432)),
        ("https://api.openai.com/v1/models", ("https", "api.openai.com", 443)),
        ("http://cache:8080/ping", ("http", "cache", 8080)),
    ],
)
def test_targets_parse_scheme_host_and_default_port(url: str, expected: tuple[str, str, int]) -> None:
    target = ProbeTarget.parse("t", url)

    assert (target.scheme, target.host, target.port) == expected


def test_a_target_that_is_not_tcp_or_http_is_refused() -> None:
    with pytest.raises(ValueError, match="'bad'"):
        NetworkProbe({"bad": "udp://dns:53"}, interval=1, timeout=1, registry=MetricsRegistry())
