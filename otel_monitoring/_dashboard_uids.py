"""The seed's dashboard UIDs, in one place: the dashboards package builds them, ``doctor`` checks Grafana has them.

A leaf module with no import, so ``doctor`` can name the dashboards without loading the Grafana SDK.

>>> DASHBOARD_UIDS[0]
'system-overview'
"""

from __future__ import annotations

__all__ = ["DASHBOARD_UIDS"]

DASHBOARD_UIDS = (
    "system-overview",
    "system-resources",
    "system-network",
    "app-overview",
    "app-performance",
    "app-errors",
    "business-kpis",
    "business-costs",
    "business-usage",
)
"""The seed's UIDs; alert annotations link to ``/d/<uid>`` (otel_monitoring/rules/pack/_context.py)."""
