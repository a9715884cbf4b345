"""SLOs: burn-rate thresholds computed from the objective, and the generated rules checked by promtool with
synthetic traffic burning the error budget at 15x (pages and tickets) and at 2x (tickets only)."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from otel_monitoring import alerts
from otel_monitoring.rules.check import test_rules
from otel_monitoring.rules.pack import PackContext, builtin_slos
from otel_monitoring.rules.render import write_rule_files
from otel_monitoring.rules.slo import BURN_RATE_ALERTS, SLI_WINDOWS

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing")
REQUESTS_PER_MINUTE = 10_000


def availability(objective: float) -> alerts.SLO:
    return alerts.SLO(
        name="api-availability",
        objective=objective,
        total="http_server_request_duration_seconds_count",
        good='http_server_request_duration_seconds_count{http_response_status_code!~"5.."}',
    )


@pytest.mark.parametrize("objective", [99.9, 99.5, 99.0, 95.0, 99.99])
def test_burn_thresholds_are_the_factor_times_the_error_budget(objective: float) -> None:
    slo = availability(objective)
    budget = 1 - Fraction(str(objective)) / 100
    for condition in BURN_RATE_ALERTS:
        assert Fraction(slo.burn_threshold(condition.factor)) == Fraction(str(condition.factor)) * budget
    critical = next(alert for alert in slo.alerts() if alert.severity == "critical")
    assert f"> {slo.burn_threshold(14.4)}\n" in critical.query


def test_recording_rules_cover_every_window_of_every_burn_rate_alert() -> None:
    records = {rule.record for rule in availability(99.9).recording_rules()}
    windows = {w for c in BURN_RATE_ALERTS for w in (c.long_window, c.short_window)}
    assert windows <= set(SLI_WINDOWS)
    assert {f"slo:sli_error:ratio_rate{w}" for w in SLI_WINDOWS} <= records


def test_page_and_ticket_share_one_alert_name_so_the_page_inhibits_the_ticket() -> None:
    page, ticket = availability(99.9).alerts()
    assert (page.name, page.severity, ticket.name, ticket.severity) == (
        "ApiAvailabilityErrorBudgetBurn",
        "critical",
        "ApiAvailabilityErrorBudgetBurn",
        "warning",
    )
    assert page.labels == ticket.labels == {"slo": "api-availability"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"objective": 100}, "less than 100"),
        ({"objective": 0}, "greater than 0"),
        ({"total": "x_total", "good": "g", "bad": "b"}, "exactly one of good or bad"),
        ({"histogram": "h"}, "needs both histogram and threshold_seconds"),
        ({}, "give either an error ratio"),
        ({"total": "rate(x[5m])", "good": "g"}, "series selector"),
        ({"name": "has space", "total": "t", "good": "g"}, "letters, digits"),
    ],
)
def test_bad_slos_are_refused_saying_why(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        alerts.SLO(**{"name": "s", "objective": 99.9, **arguments})


def test_builtin_slos_take_their_objectives_and_threshold_from_the_settings() -> None:
    ctx = PackContext(availability_objective=99.5, latency_objective=98.0, latency_threshold_seconds=0.25)
    availability_slo, latency_slo = builtin_slos(ctx)
    assert (availability_slo.objective, latency_slo.objective) == (99.5, 98.0)
    assert 'le=~"0\\\\.25"' in latency_slo.error_ratio_expr("5m")
    from otel_monitoring.settings import load_settings

    settings = load_settings(environ={"OTEL_MONITORING_SLO_AVAILABILITY": "99.95"})
    assert builtin_slos(settings)[0].burn_threshold(14.4) == "0.0072"


def _series(name: str, labels: str, per_minute: int, minutes: int) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": f"0+{per_minute}x{minutes}"}


def expected_alert(slo: alerts.SLO, severity: str, ratio: str) -> dict[str, Any]:
    """The alert promtool must see for job "api", its templates filled in by hand from the SLO's fields."""
    what = slo.description or f"{slo.objective:g}% of events good"
    factors = " or ".join(
        f"{c.factor:g}x over {c.long_window} and {c.short_window}" for c in BURN_RATE_ALERTS if c.severity == severity
    )
    speed = "fast" if severity == "critical" else "steadily"
    annotations = {
        "summary": f"api: {slo.name} SLO error budget burning {speed}",
        "description": f"api: {ratio} of events are bad, which spends the error budget of the {slo.name} SLO "
        f"({what}; budget {100 - slo.objective:.10g}%) at {factors} its allowed rate.",
        **{key: value.replace("{{ $labels.job }}", "api") for key, value in slo.annotations.items()},
    }
    if slo.runbook_url:
        annotations["runbook_url"] = slo.runbook_url
    return {"exp_labels": {"severity": severity, "job": "api", "slo": slo.name}, "exp_annotations": annotations}


def _promtool_case(slo: alerts.SLO, burn: float, minutes: int, expected: list[str]) -> dict[str, Any]:
    """Traffic whose bad fraction is ``burn`` times the error budget, for ``minutes``; the alerts expected firing at
    the end are given by severity."""
    bad = round(REQUESTS_PER_MINUTE * burn * float(slo.error_budget()))
    if slo.kind == "latency":
        histogram = slo.histogram
        bound = f"{slo.threshold_seconds}"
        series = [
            _series(f"{histogram}_bucket", f'job="api",le="{bound}"', REQUESTS_PER_MINUTE - bad, minutes),
            _series(f"{histogram}_bucket", 'job="api",le="+Inf"', REQUESTS_PER_MINUTE, minutes),
            _series(f"{histogram}_count", 'job="api"', REQUESTS_PER_MINUTE, minutes),
        ]
    else:
        metric = "http_server_request_duration_seconds_count"
        series = [
            _series(metric, 'job="api",http_response_status_code="200"', REQUESTS_PER_MINUTE - bad, minutes),
            _series(metric, 'job="api",http_response_status_code="503"', bad, minutes),
        ]
    ratio = f"{100 * bad / REQUESTS_PER_MINUTE:g}%"
    exp_alerts = [expected_alert(slo, severity, ratio) for severity in expected]
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": f"{minutes}m", "alertname": slo.alert_name, "exp_alerts": exp_alerts}],
    }


def _run(tmp_path: Path, slo: alerts.SLO, cases: list[dict[str, Any]]) -> None:
    [rule_file] = write_rule_files([slo.rule_group()], tmp_path)
    test_file = tmp_path / "slo.test.yml"
    document = {"rule_files": [rule_file.name], "evaluation_interval": "1m", "tests": cases}
    test_file.write_text(yaml.safe_dump(document, sort_keys=False))
    result = test_rules([test_file])
    assert result.ok, result.output


SEVEN_HOURS = 7 * 60  # longer than the 6h short window of the slowest ticket


@needs_promtool
@pytest.mark.parametrize("slo", [availability(99.9), *builtin_slos()], ids=lambda slo: slo.name)
def test_a_15x_burn_pages_and_tickets_a_2x_burn_only_tickets(tmp_path: Path, slo: alerts.SLO) -> None:
    cases = [
        _promtool_case(slo, 15, 70, ["critical", "warning"]),  # 14.4x over 1h and 5m; 3x over 2h and 1d
        _promtool_case(slo, 2, SEVEN_HOURS, ["warning"]),  # 1x over 6h and 3d only
        _promtool_case(slo, 0.5, SEVEN_HOURS, []),  # within budget
    ]
    _run(tmp_path, slo, cases)


@needs_promtool
def test_a_spike_that_ended_stops_paging_but_still_tickets(tmp_path: Path) -> None:
    slo = availability(99.9)
    metric = "http_server_request_duration_seconds_count"
    bad = REQUESTS_PER_MINUTE // 10  # 10% errors (100x) for 10 minutes, then none for 50
    good = REQUESTS_PER_MINUTE - bad
    case = {
        "interval": "1m",
        "input_series": [
            {
                "series": f'{metric}{{job="api",http_response_status_code="200"}}',
                "values": f"0+{good}x10 {10 * good + REQUESTS_PER_MINUTE}+{REQUESTS_PER_MINUTE}x50",
            },
            {"series": f'{metric}{{job="api",http_response_status_code="503"}}', "values": f"0+{bad}x10 {10 * bad}x50"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": slo.alert_name,
                "exp_alerts": [expected_alert(slo, "critical", "10%"), expected_alert(slo, "warning", "10%")],
            },
            # The 1h and 6h windows still burn above 14.4x and 6x, but the 5m and 30m ones are clean: no page.
            # 1d and 2h still burn above 3x: a ticket, valued at the 1d ratio, 1/60 of the requests.
            {"eval_time": "60m", "alertname": slo.alert_name, "exp_alerts": [expected_alert(slo, "warning", "1.667%")]},
        ],
    }
    _run(tmp_path, slo, [case])
