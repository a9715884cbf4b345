"""The shapes of Prometheus rules: an alerting rule (:class:`Alert`, the seed's), a recording rule, a group.

>>> from otel_monitoring.rules.model import Alert, RecordingRule, RuleGroup
>>> group = RuleGroup(name="checkout", rules=[
...     RecordingRule(record="job:http_requests:rate5m", expr="sum by (job) (rate(http_requests_total[5m]))"),
...     Alert(name="NoTraffic", query="job:http_requests:rate5m == 0", severity="warning", for_="10m"),
... ])
>>> group.to_dict()["rules"][1]["labels"]
{'severity': 'warning'}
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DURATION_PATTERN",
    "SEVERITIES",
    "Alert",
    "RecordingRule",
    "Rule",
    "RuleGroup",
    "Severity",
    "parse_duration",
]

Severity = Literal["critical", "warning", "info", "none"]
"""critical needs action now, warning soon, info is informative; none never notifies (the Watchdog's)."""

SEVERITIES: tuple[str, ...] = ("critical", "warning", "info", "none")

_DURATION_PART = r"(\d+)(ms|s|m|h|d|w|y)"  # "ms" before "m": the longest unit wins
DURATION_PATTERN = re.compile(rf"^(?:{_DURATION_PART})+$")
"""Prometheus duration syntax (``30s``, ``1h30m``), also Alertmanager's; the one definition in the package."""
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> timedelta:
    """A positive Prometheus duration such as ``90s``, ``2h`` or ``1h30m``, surrounding blanks ignored.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    """
    value = text.strip()
    if not DURATION_PATTERN.match(value):
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 7d")
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in re.findall(_DURATION_PART, value))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _check_duration(value: str) -> str:
    if not DURATION_PATTERN.match(value):
        raise ValueError(f"must be a Prometheus duration such as 30s, 5m or 1h (got {value!r})")
    return value


def _check_label_names(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r}")
    return value


class Alert(BaseModel):
    """One alerting rule. ``severity``: critical needs action now, warning soon, info is informative, and none
    never notifies anyone (the always-firing Watchdog).

    >>> Alert(name="HighLatency", query="job:latency:p95 > 1", severity="warning", for_="5m",
    ...       runbook_url="https://wiki/runbooks/HighLatency").to_rule()["annotations"]
    {'runbook_url': 'https://wiki/runbooks/HighLatency'}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The alert's name (the alertname label).")
    query: str = Field(min_length=1, description="The PromQL expression; the alert fires while it returns series.")
    severity: Severity = Field(description="critical, warning, info or none; routes the notification.")
    annotations: dict[str, str] = Field(default_factory=dict, description="summary, description and the like.")
    for_: str = Field(default="0s", description="How long the expression must hold before firing.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels attached to the alert.")
    runbook_url: str | None = Field(default=None, description="Where the responder finds the fix.")

    @field_validator("for_")
    @classmethod
    def _check_for(cls, value: str) -> str:
        return _check_duration(value)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        _check_label_names(value)
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


class RecordingRule(BaseModel):
    """A recording rule: ``expr`` evaluated at every group interval and stored as the series ``record``.

    Name it ``level:metric:operations`` (Prometheus's convention): the labels it keeps, the metric, the
    operations applied, such as ``job_http_route:http_server_requests:rate5m``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    record: str = Field(min_length=1, description="Name of the series the result is stored as.")
    expr: str = Field(min_length=1, description="The PromQL expression.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to the result.")

    @field_validator("record")
    @classmethod
    def _check_record(cls, value: str) -> str:
        if not _METRIC_NAME.match(value):
            raise ValueError(f"must be a metric name such as job:http_requests:rate5m (got {value!r})")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_label_names(value)

    def to_rule(self) -> dict[str, Any]:
        """The rule in Prometheus's rule-file shape."""
        rule: dict[str, Any] = {"record": self.record, "expr": self.expr}
        if self.labels:
            rule["labels"] = dict(self.labels)
        return rule


Rule = Alert | RecordingRule


class RuleGroup(BaseModel):
    """A group of rules evaluated together, in order, every ``interval`` (default: Prometheus's global one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The group's name, unique among the groups rendered together.")
    rules: list[Rule] = Field(default_factory=list, description="Alerting and recording rules, in order.")
    interval: str | None = Field(default=None, description="Evaluation interval such as 30s.")

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: str | None) -> str | None:
        return None if value is None else _check_duration(value)

    def alerts(self) -> list[Alert]:
        return [rule for rule in self.rules if isinstance(rule, Alert)]

    def recording_rules(self) -> list[RecordingRule]:
        return [rule for rule in self.rules if isinstance(rule, RecordingRule)]

    def to_dict(self) -> dict[str, Any]:
        """The group in Prometheus's rule-file shape."""
        group: dict[str, Any] = {"name": self.name}
        if self.interval:
            group["interval"] = self.interval
        group["rules"] = [rule.to_rule() for rule in self.rules]
        return group
