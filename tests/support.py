"""Helpers for tests that run real servers on 127.0.0.1: free ports, subprocesses, readiness."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered:\n{output}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError as error:
            last_error = error
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last_error}")


@contextlib.contextmanager
def running(
    argv: Sequence[str], ready_url: str, env: Mapping[str, str] | None = None, timeout: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until the block ends; its output is shown if it fails to start."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen(
        list(argv), cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until_ready(ready_url, process, timeout)
        yield process
    finally:
        stop_process_group(process)
        if process.stdout:
            process.stdout.close()


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process and its children (started with ``start_new_session``), SIGKILL after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def uvicorn_argv(app: str, port: int, *extra: str) -> list[str]:
    server = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    return [*server, "--log-level", "warning", *extra]


class OTLPRecorder:
    """A stand-in OTLP/HTTP metrics receiver on 127.0.0.1 that keeps every decoded request.

    The collector sidecar is a later component; here the test only needs to see what the SDK's
    stock OTLP exporter sent, decoded with the official protobuf bindings.
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )

        recorder = self
        self.requests: list[ExportMetricsServiceRequest] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                with recorder._lock:
                    recorder.requests.append(ExportMetricsServiceRequest.FromString(body))
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}/v1/metrics"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def points(self, metric_name: str) -> list[tuple[dict[str, str], object, object]]:
        """(resource attributes, scope, data point) for every point of one metric received so far."""
        found = []
        with self._lock:
            requests = list(self.requests)
        for request in requests:
            for resource_metrics in request.resource_metrics:
                resource = {kv.key: _any_value(kv.value) for kv in resource_metrics.resource.attributes}
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != metric_name:
                            continue
                        data = getattr(metric, metric.WhichOneof("data"))
                        found.extend((resource, scope_metrics.scope, point) for point in data.data_points)
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _any_value(value: object) -> str:
    field = value.WhichOneof("value")  # type: ignore[attr-defined]
    return str(getattr(value, field)) if field else ""
