"""Stand-ins for the SaaS end of alerting, and Debian's Alertmanager, for tests on 127.0.0.1.

- :class:`HTTPSink` records every request (Slack's incoming webhook, PagerDuty's Events API v2, a Twilio-compatible
  SMS gateway, a heartbeat URL), with the time it arrived.
- :class:`SMTPSink` is an aiosmtpd server recording every message.
- :func:`start_alertmanager` runs ``/usr/bin/prometheus-alertmanager`` with a rendered config.
- :func:`serve_app` runs an ASGI app (the alert relay) under uvicorn in a thread.
- :func:`start_program` runs a program (``otel-monitoring alert-relay``, a service under uvicorn) as a subprocess
  whose output goes to a log file, shown when it fails to start.
- :func:`post_alerts` posts alerts to Alertmanager's v2 API.

Importing the fixtures (``slack_sink``, ``pagerduty_sink``, ``sms_gateway_sink``, ``heartbeat_sink``,
``smtp_sink``) into a test module makes them available there. Sinks are shared per module, so each test uses its
own alert names and filters on them.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.support import ROOT, free_port, stop_process_group

ALERTMANAGER_BINARY = Path("/usr/bin/prometheus-alertmanager")
AMTOOL_BINARY = Path("/usr/bin/amtool")


@dataclass(frozen=True)
class SinkRequest:
    """One request a sink received: the time (``time.monotonic()``), path, headers and decoded body."""

    received: float
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(self.body.decode()).items()}


class HTTPSink:
    """An HTTP server on 127.0.0.1 that records every POST and answers ``status`` with ``reply`` (JSON)."""

    def __init__(self, name: str, *, status: int = 200, reply: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.status = status
        self.reply = json.dumps(reply or {"ok": True}).encode()
        self.requests: list[SinkRequest] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink._lock:
                    sink.requests.append(SinkRequest(time.monotonic(), self.path, dict(self.headers.items()), body))
                self.send_response(sink.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(sink.reply)))
                self.end_headers()
                self.wfile.write(sink.reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{name}-sink", daemon=True)
        self._thread.start()

    def received(self, predicate: Callable[[SinkRequest], bool] = lambda request: True) -> list[SinkRequest]:
        with self._lock:
            return [request for request in self.requests if predicate(request)]

    def wait_for(
        self, predicate: Callable[[SinkRequest], bool], count: int = 1, timeout: float = 20.0
    ) -> list[SinkRequest]:
        """Wait until ``count`` matching requests arrived; returns them all."""
        return wait_for(lambda: self.received(predicate), count, timeout, f"{self.name} sink")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_for(collect: Callable[[], list[Any]], count: int, timeout: float, what: str) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = collect()
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {len(found)} of {count} expected items within {timeout}s: {found!r}")
        time.sleep(0.05)


@dataclass(frozen=True)
class ReceivedEmail:
    received: float
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        """Every text part (plain and HTML), decoded."""
        parts = [part.get_content() for part in self.message.walk() if part.get_content_maintype() == "text"]
        return "\n".join(str(part) for part in parts)


class SMTPSink:
    """An aiosmtpd server on 127.0.0.1 that records every message (no TLS, no auth: a local relay)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[ReceivedEmail] = []
        self._lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                received = ReceivedEmail(time.monotonic(), envelope.mail_from, list(envelope.rcpt_tos), message)
                with sink._lock:
                    sink.messages.append(received)
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def received(self, predicate: Callable[[ReceivedEmail], bool] = lambda message: True) -> list[ReceivedEmail]:
        with self._lock:
            return [message for message in self.messages if predicate(message)]

    def wait_for(
        self, predicate: Callable[[ReceivedEmail], bool], count: int = 1, timeout: float = 20.0
    ) -> list[ReceivedEmail]:
        return wait_for(lambda: self.received(predicate), count, timeout, "SMTP sink")

    def close(self) -> None:
        self._controller.stop()


# --- Alertmanager ---------------------------------------------------------------------------------------------


@dataclass
class AlertmanagerServer:
    url: str
    log_file: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""


@contextlib.contextmanager
def start_alertmanager(config_file: Path, data_dir: Path, timeout: float = 30.0) -> Iterator[AlertmanagerServer]:
    """Debian's Alertmanager on a free port with ``config_file``, skipped when not installed.

    ``--cluster.listen-address=`` (empty) turns clustering off, without which it waits for peers.
    """
    if not ALERTMANAGER_BINARY.exists():
        pytest.skip(f"{ALERTMANAGER_BINARY} is not installed (apt-get install -y prometheus-alertmanager)")
    address = f"127.0.0.1:{free_port()}"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = data_dir / "alertmanager.log"
    argv = [
        str(ALERTMANAGER_BINARY),
        f"--config.file={config_file}",
        f"--storage.path={data_dir}",
        f"--web.listen-address={address}",
        "--cluster.listen-address=",
        "--log.level=debug",
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = AlertmanagerServer(f"http://{address}", log_file, process)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"alertmanager exited with {process.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/-/ready", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"alertmanager not ready within {timeout}s:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        stop_process_group(process)


def make_alert(
    name: str,
    severity: str,
    *,
    service: str = "checkout",
    summary: str | None = None,
    description: str | None = None,
    ends_in: timedelta | None = None,
    extra_labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An alert in the v2 API's shape (``postableAlert``), as Prometheus sends it."""
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "severity": severity, "service": service, "job": service, **(extra_labels or {})},
        "annotations": {
            "summary": summary or f"{name} summary for {service}",
            "description": description or f"{name} description: {severity} on {service}",
            **(annotations or {}),
        },
        "startsAt": now.isoformat(),
        "generatorURL": f"http://prometheus.test/graph?g0.expr={name}",
    }
    if ends_in is not None:
        alert["endsAt"] = (now + ends_in).isoformat()
    return alert


def post_alerts(alertmanager_url: str, alerts: Sequence[Mapping[str, Any]]) -> float:
    """Post alerts to Alertmanager's v2 API; returns the ``time.monotonic()`` of the post."""
    posted = time.monotonic()
    response = httpx.post(f"{alertmanager_url}/api/v2/alerts", json=list(alerts), timeout=5.0)
    response.raise_for_status()
    return posted


# --- ASGI apps in a thread --------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_app(app: Any, timeout: float = 10.0) -> Iterator[str]:
    """Serve an ASGI app under uvicorn on a free port in a thread (lifespan on); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {port}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


# --- Programs in a subprocess ----------------------------------------------------------------------------------


@dataclass
class Program:
    """A running subprocess: its output goes to ``log_file`` (a pipe nobody reads would block it once full)."""

    process: subprocess.Popen[bytes] = field(repr=False)
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Wait until ``url`` answers 200; raise with the program's output if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args!r} exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within {timeout}s:\n{self.log()}")
            time.sleep(0.05)


@contextlib.contextmanager
def start_program(
    argv: Sequence[str], log_file: Path, *, env: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[Program]:
    """Start ``argv`` in its own process group (the repository on ``PYTHONPATH``) and stop it when the block ends.

    It does not wait for readiness, so several programs can start side by side; call :meth:`Program.wait_ready`.
    """
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Program(process, log_file)
    finally:
        stop_process_group(process)


# --- Fixtures ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sink(name: str, **kwargs: Any) -> Iterator[HTTPSink]:
    sink = HTTPSink(name, **kwargs)
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture(scope="module")
def slack_sink() -> Iterator[HTTPSink]:
    """Slack's incoming webhook: records the JSON Alertmanager posts, answers ``ok``."""
    with _sink("slack") as sink:
        yield sink


@pytest.fixture(scope="module")
def pagerduty_sink() -> Iterator[HTTPSink]:
    """PagerDuty's Events API v2 (``/v2/enqueue``): answers 202 as PagerDuty does."""
    with _sink("pagerduty", status=202, reply={"status": "success", "message": "Event processed"}) as sink:
        yield sink


@pytest.fixture(scope="module")
def sms_gateway_sink() -> Iterator[HTTPSink]:
    """A Twilio-compatible Messages API: answers 201 with a message resource."""
    with _sink("sms", status=201, reply={"sid": "SM0000", "status": "queued"}) as sink:
        yield sink


@pytest.fixture(scope="module")
def heartbeat_sink() -> Iterator[HTTPSink]:
    """A dead man's switch URL."""
    with _sink("heartbeat") as sink:
        yield sink


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SMTPSink]:
    sink = SMTPSink()
    try:
        yield sink
    finally:
        sink.close()
