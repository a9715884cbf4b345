"""The built-in SLOs: HTTP availability (no server error) and latency (faster than a threshold), per service,
with objectives from the settings (``alerting.slo_*``)."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext
from otel_monitoring.rules.slo import SLO

REQUESTS = "http_server_request_duration_seconds"


def slos(ctx: PackContext) -> list[SLO]:
    availability = SLO(
        name="http-availability",
        objective=ctx.availability_objective,
        description=f"{ctx.availability_objective:g}% of HTTP requests without a server error",
        total=f"{REQUESTS}_count",
        good=f'{REQUESTS}_count{{http_response_status_code!~"5.."}}',
        alert_name="HTTPAvailabilityBudgetBurn",
        runbook_url=ctx.runbook_url("HTTPAvailabilityBudgetBurn"),
        annotations={"dashboard_url": ctx.dashboard_url("app-errors")},
    )
    latency = SLO(
        name="http-latency",
        objective=ctx.latency_objective,
        description=f"{ctx.latency_objective:g}% of HTTP requests served within {ctx.latency_threshold_seconds:g}s",
        histogram=REQUESTS,
        threshold_seconds=ctx.latency_threshold_seconds,
        alert_name="HTTPLatencyBudgetBurn",
        runbook_url=ctx.runbook_url("HTTPLatencyBudgetBurn"),
        annotations={"dashboard_url": ctx.dashboard_url("app-performance")},
    )
    return [availability, latency]


def groups(ctx: PackContext) -> list[RuleGroup]:
    return [slo.rule_group() for slo in slos(ctx)]
