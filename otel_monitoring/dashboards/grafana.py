"""Create or update dashboards through Grafana's HTTP API, idempotently.

``push_dashboards`` makes sure the folder exists (by UID), then for each dashboard reads what Grafana holds
(``GET /api/dashboards/uid/<uid>``) and saves ours (``POST /api/dashboards/db``, ``overwrite: true``) only when it
differs, so a second push reports every dashboard ``unchanged`` and creates no new version.

>>> client = GrafanaClient("http://localhost:3000", "glsa_example")   # doctest: +SKIP
>>> [result.status for result in push_dashboards(client, build_dashboards(), "otel-monitoring")]  # doctest: +SKIP
['created', 'created', ...]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from otel_monitoring.settings import hide_url_password

__all__ = ["GrafanaClient", "GrafanaError", "PushResult", "dashboard_fingerprint", "push_dashboards"]

PushStatus = Literal["created", "updated", "unchanged"]
# Grafana sets these on save; they say nothing about the content.
_SERVER_KEYS = ("id", "version")
_KEY_SETTING = "GRAFANA_API_KEY (grafana.api_key)"
_URL_SETTING = "GRAFANA_URL (grafana.url)"


class GrafanaError(Exception):
    """Grafana refused or could not be reached; the message names the setting or the request to fix."""


@dataclass(frozen=True)
class PushResult:
    uid: str
    status: PushStatus
    version: int | None
    url: str | None = None


def dashboard_fingerprint(dashboard: Mapping[str, Any], keys: Any = None) -> str:
    """SHA-256 of a dashboard's content, without the keys Grafana sets (``id``, ``version``); with ``keys``, only
    those top-level keys (Grafana may add keys of its own to what it stores)."""
    content = {
        key: value for key, value in dashboard.items() if key not in _SERVER_KEYS and (keys is None or key in keys)
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class GrafanaClient:
    """The few calls of Grafana's HTTP API a push needs, authenticated with a service-account token or API key."""

    def __init__(
        self, url: str, api_key: str, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GrafanaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Grafana's base URL as it may be shown: a password in it (``user:pass@``) masked."""
        return hide_url_password(str(self._client.base_url).rstrip("/"))

    def _request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as error:
            # httpx's message may quote the request URL, password included.
            reason = hide_url_password(str(error))
            raise GrafanaError(f"cannot reach Grafana at {self.url} ({_URL_SETTING}): {reason}") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 401:
            raise GrafanaError(f"Grafana at {self.url} refused the API key (401 Unauthorized): check {_KEY_SETTING}")
        if response.status_code == 403:
            raise GrafanaError(
                f"{method} {path}: the key in {_KEY_SETTING} lacks permission (403 Forbidden); it needs the Editor "
                "role (or dashboards:write and folders:create)"
            )
        if response.is_error:
            raise GrafanaError(f"{method} {path}: Grafana answered {response.status_code}: {_message(response)}")
        return response.json()

    def ensure_folder(self, uid: str, title: str) -> bool:
        """Create folder ``uid`` titled ``title`` if it does not exist; ``True`` when it was created."""
        if self._request("GET", f"/api/folders/{uid}", missing_ok=True) is not None:
            return False
        self._request("POST", "/api/folders", {"uid": uid, "title": title})
        return True

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        """``{"dashboard": ..., "meta": ...}`` as Grafana holds it, or ``None`` when there is none."""
        found: dict[str, Any] | None = self._request("GET", f"/api/dashboards/uid/{uid}", missing_ok=True)
        return found

    def save_dashboard(self, dashboard: Mapping[str, Any], folder_uid: str, message: str) -> dict[str, Any]:
        """Create or overwrite the dashboard with ``dashboard["uid"]`` in folder ``folder_uid``."""
        body = {
            # id null: Grafana finds the dashboard by uid (overwrite) rather than by a database id of another server.
            "dashboard": {**dashboard, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": message,
        }
        saved: dict[str, Any] = self._request("POST", "/api/dashboards/db", body)
        return saved


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:200]


def push_dashboards(
    client: GrafanaClient,
    dashboards: Mapping[str, Mapping[str, Any]],
    folder_uid: str,
    folder_title: str | None = None,
    *,
    message: str = "otel-monitoring dashboards push",
) -> list[PushResult]:
    """Create the folder if missing, then save each dashboard whose content or folder differs from Grafana's copy."""
    client.ensure_folder(folder_uid, folder_title or folder_uid)
    results = []
    for uid, dashboard in dashboards.items():
        stored = client.get_dashboard(uid)
        if stored is not None:
            held = stored.get("dashboard", {})
            same_folder = stored.get("meta", {}).get("folderUid") == folder_uid
            if same_folder and dashboard_fingerprint(held, dashboard) == dashboard_fingerprint(dashboard):
                results.append(PushResult(uid, "unchanged", held.get("version"), stored.get("meta", {}).get("url")))
                continue
        saved = client.save_dashboard(dashboard, folder_uid, message)
        status: PushStatus = "created" if stored is None else "updated"
        results.append(PushResult(uid, status, saved.get("version"), saved.get("url")))
    return results
