"""Service level objectives as code: an SLI (an error ratio, or a latency threshold on a histogram), an objective,
and the recording rules and multi-window, multi-burn-rate alerts of the Google SRE workbook
(https://sre.google/workbook/alerting-on-slos/, "Multiwindow, Multi-Burn-Rate Alerts").

>>> slo = SLO(name="checkout-availability", objective=99.9,
...           total="http_server_request_duration_seconds_count",
...           good='http_server_request_duration_seconds_count{http_response_status_code!~"5.."}')
>>> slo.burn_threshold(14.4)
'0.0144'
>>> [rule.record for rule in slo.recording_rules()][:2]
['slo:sli_error:ratio_rate5m', 'slo:sli_error:ratio_rate30m']

The error budget is ``1 - objective``. A burn rate of N spends it N times as fast as the objective allows:
at 14.4x, 2% of a 30-day budget goes in one hour. Each alert fires when both a long window (is the burn
significant?) and a short window (is it still happening?) are above the same burn rate:

=========  =========  ============  =============
severity   burn rate  long window   short window
=========  =========  ============  =============
critical   14.4x      1h            5m
critical   6x         6h            30m
warning    3x         1d            2h
warning    1x         3d            6h
=========  =========  ============  =============

Both severities share one alert name, so Alertmanager's inhibition (a critical silences the warning of the
same alert and service) keeps a page from also opening a ticket.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from otel_monitoring.rules.model import Alert, RecordingRule, RuleGroup, Severity

__all__ = ["BURN_RATE_ALERTS", "SLI_WINDOWS", "SLO", "BurnRateAlert"]

SLI_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""The windows the error ratio is recorded over: every window a burn-rate alert reads."""


class BurnRateAlert(NamedTuple):
    severity: Severity
    factor: float
    long_window: str
    short_window: str


BURN_RATE_ALERTS: tuple[BurnRateAlert, ...] = (
    BurnRateAlert("critical", 14.4, "1h", "5m"),
    BurnRateAlert("critical", 6, "6h", "30m"),
    BurnRateAlert("warning", 3, "1d", "2h"),
    BurnRateAlert("warning", 1, "3d", "6h"),
)
"""Page (critical) and ticket (warning) conditions, as the SRE workbook recommends for a 30-day budget."""

SLI_RECORD = "slo:sli_error:ratio_rate{window}"
OBJECTIVE_RECORD = "slo:objective:ratio"
ERROR_BUDGET_RECORD = "slo:error_budget:ratio"

_SELECTOR = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?$", re.DOTALL)
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _number(value: Decimal) -> str:
    """A threshold as PromQL reads it, without binary float noise (14.4 x 0.001 is 0.0144, not 0.014400000000000001)."""
    text = format(value.normalize(), "f")
    return text


def le_matcher(threshold_seconds: float) -> str:
    r"""A matcher for the histogram bucket whose upper bound is ``threshold_seconds``.

    Exporters write a bound as ``0.5`` or ``1.0`` (prometheus_client) and some as ``1``; Prometheus 3 rewrites
    classic-histogram ``le`` values to their float form. A regular expression accepts every spelling.

    >>> print(le_matcher(0.5), le_matcher(1.0))
    le=~"0\\.5" le=~"1(\\.0)?"
    """
    value = float(threshold_seconds)
    pattern = f"{int(value)}(\\.0)?" if value.is_integer() else re.escape(repr(value))
    return 'le=~"' + pattern.replace("\\", "\\\\") + '"'


def _with_matchers(selector: str, matchers: str) -> str:
    """``name{a="b"}`` plus ``c="d"`` gives ``name{a="b",c="d"}``."""
    if not matchers:
        return selector
    if selector.endswith("}"):
        inside = selector[selector.index("{") + 1 : -1].strip()
        return f"{selector[: selector.index('{')]}{{{inside + ',' if inside else ''}{matchers}}}"
    return f"{selector}{{{matchers}}}"


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^a-zA-Z0-9]+", name) if part)


class SLO(BaseModel):
    """A service level objective over an error ratio (``total`` with ``good`` or ``bad``) or a latency threshold
    (``histogram`` with ``threshold_seconds``): ``objective`` percent of events must be good.

    The SLI is computed per ``by`` labels (default: per ``job``, that is per service) from counter selectors;
    a latency SLI counts a request as good when it lands in the bucket ``le=threshold_seconds``, which must be
    one of the histogram's bucket bounds.

    >>> latency = SLO(name="api-latency", objective=99.0, histogram="http_server_request_duration_seconds",
    ...               threshold_seconds=0.5, matchers='http_route!="/health"')
    >>> latency.alert_name, latency.burn_threshold(1)
    ('ApiLatencyErrorBudgetBurn', '0.01')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Short name such as http-availability; the slo label of every rule.")
    objective: float = Field(gt=0, lt=100, description="Percent of good events, such as 99.9.")
    description: str = Field(default="", description="What the SLO promises, in words; shown in notifications.")
    total: str | None = Field(default=None, description="Counter selector of all events.")
    good: str | None = Field(default=None, description="Counter selector of good events.")
    bad: str | None = Field(default=None, description="Counter selector of bad events (instead of good).")
    histogram: str | None = Field(default=None, description="Histogram name (without _bucket) of a latency SLI.")
    threshold_seconds: float | None = Field(default=None, gt=0, description="A latency SLI's bucket bound.")
    matchers: str = Field(default="", description='Label matchers added to the histogram\'s series: a="b",c!="d".')
    by: tuple[str, ...] = Field(default=("job",), description="Labels the SLI is computed per.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the alerts.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the alerts.")
    alert_name: str = Field(default="", description="Default: the name in CamelCase + ErrorBudgetBurn.")
    runbook_url: str | None = Field(default=None, description="Where the responder finds the fix.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be letters, digits, '-', '_' or '.', such as http-availability (got {value!r})")
        return value

    @field_validator("total", "good", "bad")
    @classmethod
    def _check_selector(cls, value: str | None) -> str | None:
        if value is not None and not _SELECTOR.match(value.strip()):
            raise ValueError(f'must be a series selector such as name{{label="value"}} (got {value!r})')
        return None if value is None else value.strip()

    @field_validator("by")
    @classmethod
    def _check_by(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for label in value:
            if not _LABEL_NAME.match(label):
                raise ValueError(f"invalid label name {label!r}")
        return value

    @model_validator(mode="after")
    def _one_sli(self) -> Self:
        ratio = self.total is not None or self.good is not None or self.bad is not None
        latency = self.histogram is not None or self.threshold_seconds is not None
        if ratio == latency:
            raise ValueError(
                "give either an error ratio (total with good or bad) or a latency (histogram with threshold_seconds)"
            )
        if ratio and (self.total is None or (self.good is None) == (self.bad is None)):
            raise ValueError("an error-ratio SLI needs total and exactly one of good or bad")
        if latency and (self.histogram is None or self.threshold_seconds is None):
            raise ValueError("a latency SLI needs both histogram and threshold_seconds")
        if not self.alert_name:
            object.__setattr__(self, "alert_name", _camel(self.name) + "ErrorBudgetBurn")
        return self

    @property
    def kind(self) -> Literal["ratio", "latency"]:
        return "latency" if self.histogram is not None else "ratio"

    def error_budget(self) -> Decimal:
        """The allowed fraction of bad events: 1 - objective (0.001 for 99.9), computed in decimal."""
        return (Decimal(100) - Decimal(str(self.objective))) / Decimal(100)

    def burn_threshold(self, factor: float) -> str:
        """The error ratio at which the budget burns ``factor`` times too fast, as written in the rules."""
        return _number(Decimal(str(factor)) * self.error_budget())

    def _selectors(self) -> tuple[str, str, bool]:
        """(total, good-or-bad, is_good) selectors."""
        if self.histogram is not None and self.threshold_seconds is not None:
            total = _with_matchers(f"{self.histogram}_count", self.matchers)
            bucket = ",".join(filter(None, [self.matchers, le_matcher(self.threshold_seconds)]))
            return total, _with_matchers(f"{self.histogram}_bucket", bucket), True
        # _one_sli guarantees total and exactly one of good or bad here.
        if self.good is not None:
            return self.total or "", self.good, True
        return self.total or "", self.bad or "", False

    def error_ratio_expr(self, window: str) -> str:
        """PromQL of the fraction of bad events over ``window``, per ``by`` labels."""
        total, part, is_good = self._selectors()
        by = ", ".join(self.by)
        total_rate = f"sum by ({by}) (rate({total}[{window}]))"
        part_rate = f"sum by ({by}) (rate({part}[{window}]))"
        if is_good:
            # total - good rather than 1 - good/total: both are defined whenever there is traffic.
            return f"({total_rate} - {part_rate}) / {total_rate}"
        return f"{part_rate} / {total_rate}"

    def recording_rules(self) -> list[RecordingRule]:
        """The error ratio over every window in :data:`SLI_WINDOWS`, plus the objective and budget as series."""
        labels = {"slo": self.name}
        rules = [
            RecordingRule(record=SLI_RECORD.format(window=window), expr=self.error_ratio_expr(window), labels=labels)
            for window in SLI_WINDOWS
        ]
        rules.append(
            RecordingRule(
                record=OBJECTIVE_RECORD, expr=f"vector({_number(Decimal(str(self.objective)) / 100)})", labels=labels
            )
        )
        rules.append(
            RecordingRule(record=ERROR_BUDGET_RECORD, expr=f"vector({_number(self.error_budget())})", labels=labels)
        )
        return rules

    def _burn_expr(self, conditions: list[BurnRateAlert]) -> str:
        selector = f'{{slo="{self.name}"}}'
        parts = []
        for condition in conditions:
            threshold = self.burn_threshold(condition.factor)
            long = SLI_RECORD.format(window=condition.long_window) + selector
            short = SLI_RECORD.format(window=condition.short_window) + selector
            parts.append(f"(\n  {long} > {threshold}\nand\n  {short} > {threshold}\n)")
        return "\nor\n".join(parts)

    def alerts(self) -> list[Alert]:
        """The page (critical) and ticket (warning) burn-rate alerts, under one alert name."""
        result = []
        severities: tuple[Severity, ...] = ("critical", "warning")
        for severity in severities:
            conditions = [c for c in BURN_RATE_ALERTS if c.severity == severity]
            rates = " or ".join(f"{c.factor:g}x over {c.long_window} and {c.short_window}" for c in conditions)
            who = " ".join(f"{{{{ $labels.{label} }}}}" for label in self.by)
            speed = "fast" if severity == "critical" else "steadily"
            what = self.description or f"{self.objective:g}% of events good"
            annotations = {
                "summary": f"{who}: {self.name} SLO error budget burning {speed}",
                "description": (
                    f"{who}: {{{{ $value | humanizePercentage }}}} of events are bad, which spends the error budget "
                    f"of the {self.name} SLO ({what}; budget {_number(self.error_budget() * 100)}%) at {rates} "
                    "its allowed rate."
                ),
                **self.annotations,
            }
            result.append(
                Alert(
                    name=self.alert_name,
                    query=self._burn_expr(conditions),
                    severity=severity,
                    labels={**self.labels, "slo": self.name},
                    annotations=annotations,
                    runbook_url=self.runbook_url,
                )
            )
        return result

    def rule_group(self, interval: str | None = None) -> RuleGroup:
        """Recording rules first, then the alerts that read them, in one group named ``slo-<name>``."""
        return RuleGroup(name=f"slo-{self.name}", interval=interval, rules=[*self.recording_rules(), *self.alerts()])
