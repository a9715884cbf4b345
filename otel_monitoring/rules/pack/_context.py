"""What the built-in rules take from the settings, and the one way every built-in alert is annotated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from otel_monitoring.rules.model import Alert, Severity

if TYPE_CHECKING:
    from otel_monitoring.settings import Settings

DEFAULT_RUNBOOK_BASE_URL = "docs/runbooks"
"""Runbooks live in this repository's ``docs/runbooks/<AlertName>.md``; set ``alerting.runbook_base_url`` to
where your copy is served so the link opens from a notification."""


@dataclass(frozen=True)
class PackContext:
    """Everything the built-in rules read from the settings, with the settings' defaults."""

    grafana_url: str = "http://localhost:3000"
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
    availability_objective: float = 99.9
    latency_objective: float = 99.0
    latency_threshold_seconds: float = 0.5
    push_interval_seconds: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PackContext:
        """Read from a :class:`otel_monitoring.settings.Settings`."""
        alerting = settings.alerting
        return cls(
            grafana_url=str(settings.grafana.url).rstrip("/"),
            runbook_base_url=str(alerting.runbook_base_url or DEFAULT_RUNBOOK_BASE_URL).rstrip("/"),
            availability_objective=float(alerting.slo_availability_objective),
            latency_objective=float(alerting.slo_latency_objective),
            latency_threshold_seconds=float(alerting.slo_latency_threshold_seconds),
            push_interval_seconds=float(settings.pushgateway.interval_seconds),
        )

    def runbook_url(self, alert_name: str) -> str:
        return f"{self.runbook_base_url}/{alert_name}.md"

    def dashboard_url(self, uid: str, variables: tuple[str, ...] = ("job",)) -> str:
        """A Grafana link to dashboard ``uid`` with its template variables set from the alert's labels."""
        query = "&".join(f"var-{name}={{{{ $labels.{name} }}}}" for name in variables)
        return f"{self.grafana_url}/d/{uid}" + (f"?{query}" if query else "")

    def alert(
        self,
        name: str,
        query: str,
        severity: Severity,
        *,
        summary: str,
        description: str,
        dashboard: str,
        variables: tuple[str, ...] = ("job",),
        for_: str = "0s",
        labels: dict[str, str] | None = None,
    ) -> Alert:
        """A built-in alert: summary, description, the runbook ``docs/runbooks/<name>.md`` and a dashboard link."""
        return Alert(
            name=name,
            query=query,
            severity=severity,
            for_=for_,
            labels=labels or {},
            annotations={
                "summary": summary,
                "description": description,
                "dashboard_url": self.dashboard_url(dashboard, variables),
            },
            runbook_url=self.runbook_url(name),
        )
