"""The built-in rule pack: one group per concern, for everything otel-monitoring measures.

>>> from otel_monitoring.rules.pack import builtin_groups
>>> [group.name for group in builtin_groups()][:3]
['otel-monitoring-http', 'otel-monitoring-targets', 'otel-monitoring-sidecar']

Every alert carries ``summary``, ``description``, ``runbook_url`` (``docs/runbooks/<AlertName>.md``) and
``dashboard_url`` (a Grafana dashboard with its variables set from the alert's labels). docs/alerts.md lists them.
"""

from __future__ import annotations

from typing import Any

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack import business, container, dependencies, host, http, meta, recording, sidecar, slos
from otel_monitoring.rules.pack._context import DEFAULT_RUNBOOK_BASE_URL, PackContext
from otel_monitoring.rules.slo import SLO

__all__ = ["DEFAULT_RUNBOOK_BASE_URL", "PackContext", "builtin_groups", "builtin_slos"]


def _context(settings: Any | None) -> PackContext:
    if settings is None:
        return PackContext()
    if isinstance(settings, PackContext):
        return settings
    return PackContext.from_settings(settings)


def builtin_slos(settings: Any | None = None) -> list[SLO]:
    """The default SLOs (HTTP availability and latency) with the objectives in ``settings``."""
    return slos.slos(_context(settings))


def builtin_groups(settings: Any | None = None) -> list[RuleGroup]:
    """Every built-in rule group. ``settings`` (a :class:`~otel_monitoring.settings.Settings` or a
    :class:`PackContext`) gives the SLO objectives, the Grafana URL and the runbook base URL; without it the
    settings' defaults apply."""
    ctx = _context(settings)
    concerns = (http, meta, sidecar, host, container, dependencies, business)
    return [
        *(concern.group(ctx) for concern in concerns),
        recording.group(),
        *slos.groups(ctx),
    ]
