"""Grafana for the compose stack: the provisioned Prometheus datasource, the dashboards from
``otel_monitoring.dashboards``, and naming the main organization.

>>> datasource_provisioning(username="admin")["datasources"][0]["uid"]
'prometheus'
"""

from __future__ import annotations

from typing import Any

import httpx

from otel_monitoring.dashboards import build_dashboards
from otel_monitoring.dashboards.provisioning import dashboard_text
from otel_monitoring.deploy.prometheus import PASSWORD_SECRET_PATH
from otel_monitoring.deploy.stack import PORTS

__all__ = [
    "DASHBOARDS_DIR",
    "DATASOURCE_UID",
    "GrafanaOrgError",
    "dashboard_files",
    "datasource_provisioning",
    "set_grafana_org_name",
]

DATASOURCE_UID = "prometheus"
"""UID of the provisioned datasource; dashboards refer to it."""

DASHBOARDS_DIR = "/etc/grafana/dashboards"
"""Where the container reads the dashboard JSON files (``deploy/compose/grafana/dashboards``)."""


def datasource_provisioning(*, username: str) -> dict[str, Any]:
    """``provisioning/datasources``: Prometheus through its basic auth; Grafana reads the password from the compose
    secret file when it starts (``$__file{...}``), so the provisioning file holds none."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "orgId": 1,
                "url": f"http://prometheus:{PORTS['prometheus']}",
                "isDefault": True,
                "editable": False,
                "basicAuth": True,
                "basicAuthUser": username,
                "secureJsonData": {"basicAuthPassword": f"$__file{{{PASSWORD_SECRET_PATH}}}"},
                "jsonData": {"httpMethod": "POST", "timeInterval": "15s", "prometheusType": "Prometheus"},
            }
        ],
    }


def dashboard_files() -> dict[str, str]:
    """Dashboard JSON files by name (``<uid>.json``): what ``otel-monitoring dashboards render`` writes, so the two
    never disagree."""
    return {f"{uid}.json": dashboard_text(dashboard) for uid, dashboard in build_dashboards().items()}


class GrafanaOrgError(RuntimeError):
    """Grafana could not be reached or refused to rename the organization; the message says which."""


def set_grafana_org_name(
    url: str, name: str, *, username: str, password: str, org_id: int = 1, client: httpx.Client | None = None
) -> bool:
    """Give Grafana's organization ``org_id`` the name ``name`` through the HTTP API; ``True`` if it changed.

    Grafana has no setting for the main organization's name, so the stack runs this once Grafana is healthy.
    Idempotent: an organization already so named is left alone.
    """
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    auth = (username, password)
    endpoint = f"{url.rstrip('/')}/api/orgs/{org_id}"
    try:
        current = http.get(endpoint, auth=auth)
        if current.status_code != 200:
            raise GrafanaOrgError(f"GET {endpoint}: HTTP {current.status_code}: {current.text[:200]}")
        if current.json().get("name") == name:
            return False
        changed = http.put(endpoint, auth=auth, json={"name": name})
        if changed.status_code != 200:
            raise GrafanaOrgError(f"PUT {endpoint}: HTTP {changed.status_code}: {changed.text[:200]}")
        return True
    except httpx.HTTPError as error:
        raise GrafanaOrgError(f"{endpoint}: {error}") from error
    finally:
        if own:
            http.close()
