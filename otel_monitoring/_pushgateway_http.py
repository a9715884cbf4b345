"""What pushing to a Pushgateway over HTTP needs in both places that push: the embedded mode
(:mod:`otel_monitoring.pushgateway`) and the sidecar's ``pushgateway`` exporter. Private: no API promise."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client.exposition import basic_auth_handler, default_handler

from otel_monitoring.settings import MASK

__all__ = ["Gateway", "describe_error", "wait_on_event"]


def wait_on_event(seconds: float, wake: threading.Event) -> bool:
    """The default wait between pushes: ``seconds``, or less once ``wake`` is set."""
    return wake.wait(seconds)


@dataclass(frozen=True, slots=True)
class Gateway:
    """A configured gateway URL split into what is sent, what is logged and what must never be logged."""

    url: str
    """The URL without user info: urllib cannot send ``user:password@`` itself, so credentials go in a header."""
    shown: str
    """Scheme, host, port and path only: what log lines name."""
    handler: Callable[..., Any]
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Gateway:
        parts = urlsplit(url)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
        # The query and fragment could carry a token too, and a gateway URL has no use for either in a log line.
        shown = urlunsplit((parts.scheme, hostport, parts.path, "", ""))
        if not userinfo:
            return cls(bare, shown, default_handler, None)
        username, _, password = userinfo.partition(":")
        user, secret = unquote(username), unquote(password)

        def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes) -> Any:
            return basic_auth_handler(url, method, timeout, headers, data, user, secret)

        return cls(bare, shown, handler, secret or None)

    def scrub(self, text: str) -> str:
        # An error message could echo the password (a proxy's error page, a custom push function). Very short
        # passwords are left alone: masking every "a" would garble the message and protect nothing.
        if self.password and len(self.password) >= 4:
            return text.replace(self.password, MASK)
        return text


def describe_error(error: BaseException) -> str:
    """One line saying why a push failed: the Pushgateway's own reason for a refusal, else the error."""
    if isinstance(error, HTTPError):
        # The Pushgateway says why it refused a push in the body ("pushed metrics are invalid or inconsistent
        # with existing metrics: ..."): the one line an operator needs.
        try:
            body = error.read(500).decode("utf-8", "replace").strip()
        except Exception:
            body = ""
        first_line = body.splitlines()[0] if body else ""
        return f"HTTP {error.code} {error.reason}" + (f": {first_line}" if first_line else "")
    if isinstance(error, URLError):
        return str(error.reason)
    return str(error) or type(error).__name__
