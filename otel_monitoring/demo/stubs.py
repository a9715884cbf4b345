"""The two outside services the demo plays itself, on 127.0.0.1 in threads of the demo's process:

- :class:`FakeModelProvider`, an LLM API answering ``POST /v1/chat/completions`` in OpenAI's shape, with token
  usage; the current :class:`~otel_monitoring.demo.traffic.Phase` makes it slow and failing during an episode.
- :class:`AlertSink`, Slack's incoming webhook: records every notification Alertmanager posts.

Both are stand-ins for SaaS the demo cannot reach; everything else in the demo is the real thing.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from otel_monitoring.demo.traffic import NORMAL, Phase

__all__ = ["AlertSink", "FakeModelProvider", "Notification"]


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0: any free one) serving in a daemon thread until ``close``."""

    def __init__(self, name: str, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class FakeModelProvider:
    """An LLM provider's chat completions API: answers in 40 to 120 ms with token usage, unless ``phase()`` says
    otherwise (an episode adds latency and fails a share of the calls with 503, as an overloaded provider does).

    >>> provider = FakeModelProvider(lambda: NORMAL, rng=random.Random(1))
    >>> import httpx
    >>> body = httpx.post(provider.url + "/v1/chat/completions", json={"model": "gpt-4o", "max_tokens": 100}).json()
    >>> body["usage"]["completion_tokens"] <= 100
    True
    >>> provider.close()
    """

    def __init__(
        self,
        phase: Callable[[], Phase] = lambda: NORMAL,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.phase = phase
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # random.Random is not safe across the server's threads
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                status, body, delay = provider.answer(request)
                sleep(delay)
                _reply(self, status, body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server("fake-model-provider", Handler)
        self.url = self._server.url

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """Status, body and delay for one chat completion request, drawn for the current phase."""
        phase = self.phase()
        with self._lock:
            delay = self._rng.uniform(0.04, 0.12) + phase.extra_latency * self._rng.uniform(0.5, 1.5)
            failed = self._rng.random() < phase.error_ratio
            max_tokens = int(request.get("max_tokens", 256))
            prompt = self._rng.randint(200, 1200)
            completion = self._rng.randint(max(1, max_tokens // 2), max(1, max_tokens))
            cached = self._rng.choice((0, 0, prompt // 2))
        if failed:
            return 503, {"error": {"type": "overloaded_error", "message": "the model is overloaded"}}, delay
        model = str(request.get("model", "gpt-4o"))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
        return 200, {"object": "chat.completion", "model": model, "usage": usage}, delay

    def close(self) -> None:
        self._server.close()


@dataclass(frozen=True)
class Notification:
    """One notification the sink received: when (``time.monotonic()``), its title and its status."""

    received: float
    title: str
    """Slack attachment title, as Alertmanager's template writes it: ``[FIRING:1] critical Name (job)``."""
    text: str

    @property
    def status(self) -> str:
        """``firing`` or ``resolved``."""
        return "resolved" if self.title.startswith("[RESOLVED") else "firing"


class AlertSink:
    """Slack's incoming webhook on 127.0.0.1: records each notification Alertmanager posts and answers ``ok``.

    >>> sink = AlertSink()
    >>> import httpx
    >>> _ = httpx.post(sink.url + "/services/demo", json={"attachments": [{"title": "[FIRING:1] critical X (api)"}]})
    >>> [(n.status, n.title) for n in sink.notifications()]
    [('firing', '[FIRING:1] critical X (api)')]
    >>> sink.close()
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._received: list[Notification] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.record(clock(), body)
                data = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server("alert-sink", Handler)
        self.url = self._server.url
        self.webhook_url = f"{self.url}/services/T0DEMO/B0DEMO/demo"
        """What Alertmanager is given as the Slack webhook."""

    def record(self, received: float, body: bytes) -> None:
        """Keep one posted body: one notification per attachment (Alertmanager sends one per group)."""
        try:
            message = json.loads(body)
            attachments = message.get("attachments") or [{"title": message.get("text", ""), "text": ""}]
        except (ValueError, AttributeError):
            attachments = [{"title": body[:200].decode(errors="replace"), "text": ""}]
        with self._lock:
            for attachment in attachments:
                title, text = str(attachment.get("title", "")), str(attachment.get("text", ""))
                self._received.append(Notification(received, title, text))

    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._received)

    def close(self) -> None:
        self._server.close()
