"""Alerts as code, as in the seed: ``alerts.register(alerts.Alert(...))``, rendered as Prometheus rules.

>>> from otel_monitoring import alerts
>>> alerts.register(alerts.Alert(
...     name="high_error_rate",
...     query="rate(http_errors_total[5m]) > 0.1",
...     severity="critical",
...     annotations={"summary": "High error rate", "description": "Errors > 10% over 5 minutes"},
... ))
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Alert", "AlertRegistry", "register", "registered", "render_rule_file"]

Severity = Literal["critical", "warning", "info"]
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")  # Prometheus duration syntax
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Alert(BaseModel):
    """One alerting rule. ``severity``: critical needs action now, warning soon, info is informative."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The alert's name (the alertname label).")
    query: str = Field(min_length=1, description="The PromQL expression; the alert fires while it returns series.")
    severity: Severity = Field(description="critical, warning or info; routes the notification.")
    annotations: dict[str, str] = Field(default_factory=dict, description="summary, description and the like.")
    for_: str = Field(default="0s", description="How long the expression must hold before firing.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels attached to the alert.")
    runbook_url: str | None = Field(default=None, description="Where the responder finds the fix.")

    @field_validator("for_")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        if not _DURATION.match(value):
            raise ValueError(f"must be a Prometheus duration such as 30s, 5m or 1h (got {value!r})")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"invalid label name {key!r}")
        if "severity" in value:
            raise ValueError("set the severity with severity=..., not in labels")
        return value

    def to_rule(self) -> dict[str, Any]:
        """The rule in Prometheus's rule-file shape."""
        annotations = dict(self.annotations)
        if self.runbook_url:
            annotations["runbook_url"] = self.runbook_url
        rule: dict[str, Any] = {"alert": self.name, "expr": self.query}
        if self.for_ not in ("0s", "0m"):
            rule["for"] = self.for_
        rule["labels"] = {**self.labels, "severity": self.severity}
        if annotations:
            rule["annotations"] = annotations
        return rule


class AlertRegistry:
    """Alerts registered by the application; registering the same name twice with a different rule is refused."""

    def __init__(self) -> None:
        self._alerts: dict[str, Alert] = {}
        self._lock = threading.Lock()

    def register(self, alert: Alert) -> Alert:
        with self._lock:
            existing = self._alerts.get(alert.name)
            if existing is not None and existing != alert:
                raise ValueError(f"alert {alert.name!r} is already registered with a different rule")
            self._alerts[alert.name] = alert
        return alert

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts.values())


_DEFAULT = AlertRegistry()


def register(alert: Alert, *, registry: AlertRegistry | None = None) -> Alert:
    """Register an alert so that rule rendering includes it."""
    return (registry or _DEFAULT).register(alert)


def registered(*, registry: AlertRegistry | None = None) -> list[Alert]:
    return (registry or _DEFAULT).alerts()


def render_rule_file(alerts: Iterable[Alert], group: str = "otel-monitoring") -> str:
    """A Prometheus rule file (YAML) with one group holding the alerts."""
    document = {"groups": [{"name": group, "rules": [alert.to_rule() for alert in alerts]}]}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
