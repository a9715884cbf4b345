"""Grafana dashboards as code: the nine dashboards of otel-monitoring, built with grafana-foundation-sdk.

>>> from otel_monitoring.dashboards import build_dashboards
>>> sorted(build_dashboards())[:3]
['app-errors', 'app-overview', 'app-performance']
>>> build_dashboards()["app-errors"]["title"]
'Application errors'

``build_dashboards()`` returns Grafana dashboard JSON (dicts) by UID; ``otel-monitoring dashboards render`` writes
them for provisioning and ``dashboards push`` sends them to Grafana's HTTP API (docs/dashboards.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_monitoring._dashboard_uids import DASHBOARD_UIDS
from otel_monitoring.dashboards import app, business, system
from otel_monitoring.dashboards._panels import TAG, DashboardSpec, Variable, build_dashboard

__all__ = ["DASHBOARD_UIDS", "TAG", "DashboardSpec", "Variable", "build_dashboards", "dashboard_specs"]

_FACTORIES: tuple[Callable[[], DashboardSpec], ...] = (
    system.overview,
    system.resources,
    system.network,
    app.overview,
    app.performance,
    app.errors,
    business.kpis,
    business.costs,
    business.usage,
)


def dashboard_specs() -> list[DashboardSpec]:
    """Every dashboard's spec (title, variables, panels), in :data:`DASHBOARD_UIDS` order."""
    return [factory() for factory in _FACTORIES]


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by UID."""
    specs = dashboard_specs()
    titles = {spec.uid: spec.title for spec in specs}
    return {spec.uid: build_dashboard(spec, titles) for spec in specs}
