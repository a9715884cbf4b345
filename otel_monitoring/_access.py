"""Access control for metrics endpoints: bearer token or basic auth, an IP allowlist, an access log."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
from dataclasses import dataclass

from otel_monitoring.settings import MetricsEndpointConfig

__all__ = ["AccessDenied", "MetricsAccessPolicy", "log_scrape"]

access_logger = logging.getLogger("otel_monitoring.access")


@dataclass(frozen=True)
class AccessDenied:
    status: int
    reason: str
    headers: dict[str, str]


class MetricsAccessPolicy:
    """Decides whether a scrape may read the metrics; secrets are compared in constant time."""

    def __init__(self, config: MetricsEndpointConfig) -> None:
        self._token = config.bearer_token.get_secret_value().encode() if config.bearer_token else None
        self._basic: bytes | None = None
        if config.basic_auth_username and config.basic_auth_password:
            pair = f"{config.basic_auth_username}:{config.basic_auth_password.get_secret_value()}"
            self._basic = base64.b64encode(pair.encode())
        self._networks = [ipaddress.ip_network(network, strict=False) for network in config.allowed_networks]
        self.access_log = config.access_log

    def check(self, client_host: str | None, authorization: str | None) -> AccessDenied | None:
        if self._networks and not self._allowed_address(client_host):
            return AccessDenied(403, "client address not allowed", {})
        if self._token is None and self._basic is None:
            return None
        scheme, _, credentials = (authorization or "").partition(" ")
        given = credentials.strip().encode()
        if self._token is not None and scheme.lower() == "bearer" and hmac.compare_digest(given, self._token):
            return None
        if self._basic is not None and scheme.lower() == "basic" and hmac.compare_digest(given, self._basic):
            return None
        challenge = 'Basic realm="metrics"' if self._basic is not None else 'Bearer realm="metrics"'
        return AccessDenied(401, "missing or wrong credentials", {"WWW-Authenticate": challenge})

    def _allowed_address(self, client_host: str | None) -> bool:
        if not client_host:
            return False
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.1.2.3 from a dual-stack listener is 10.1.2.3
        return any(address in network for network in self._networks)


def log_scrape(client_host: str | None, path: str, status: int, size: int, seconds: float) -> None:
    access_logger.info("%s %s %d %d bytes %.1f ms", client_host or "-", path, status, size, seconds * 1000)
