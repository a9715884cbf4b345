"""Alerts about the monitoring itself: scrape targets down, the Watchdog, cardinality overflow and Pushgateway
groups that stopped being pushed."""

from __future__ import annotations

from otel_monitoring.rules.model import Alert, RuleGroup
from otel_monitoring.rules.pack._context import PackContext

STALE_PUSHES = 10  # missed pushes before a Pushgateway group is stale
STALE_FLOOR_SECONDS = 300  # never sooner than this: a batch job's last push is not stale at once


def stale_push_seconds(ctx: PackContext) -> int:
    return max(STALE_FLOOR_SECONDS, round(STALE_PUSHES * ctx.push_interval_seconds))


def group(ctx: PackContext) -> RuleGroup:
    stale = stale_push_seconds(ctx)
    return RuleGroup(
        name="otel-monitoring-targets",
        rules=[
            ctx.alert(
                "TargetDown",
                "up == 0",
                "warning",
                for_="5m",
                summary="{{ $labels.job }}: target {{ $labels.instance }} is down",
                description=(
                    "Prometheus has failed to scrape {{ $labels.instance }} of job {{ $labels.job }} for 5 minutes: "
                    "its metrics, and every alert computed from them, are missing."
                ),
                dashboard="app-overview",
                variables=("job", "instance"),
            ),
            Alert(
                name="Watchdog",
                query="vector(1)",
                severity="none",
                annotations={
                    "summary": "The alerting pipeline works",
                    "description": (
                        "Always firing. It proves that Prometheus evaluates rules and that Alertmanager receives them; "
                        "a dead man's switch (alerting.heartbeat_url) raises an alarm when it stops arriving."
                    ),
                    "dashboard_url": ctx.dashboard_url("app-overview", ()),
                },
                runbook_url=ctx.runbook_url("Watchdog"),
            ),
            ctx.alert(
                "CardinalityOverflow",
                "sum by (job, metric) (increase(otel_monitoring_cardinality_overflow_points_total[10m])) > 0",
                "warning",
                summary="{{ $labels.job }}: {{ $labels.metric }} has more label sets than its limit",
                description=(
                    "{{ $value | humanize }} points of {{ $labels.metric }} in {{ $labels.job }} went to the "
                    'otel_metric_overflow="true" series in the last 10 minutes: new label sets past the cardinality '
                    "limit are merged, so per-label figures of that metric are incomplete."
                ),
                dashboard="app-overview",
            ),
            ctx.alert(
                "PushgatewayJobStale",
                f"time() - max by (job) (push_time_seconds) > {stale}",
                "warning",
                summary="{{ $labels.job }}: no push to the Pushgateway for {{ $value | humanizeDuration }}",
                description=(
                    "The Pushgateway group of job {{ $labels.job }} was last pushed {{ $value | humanizeDuration }} "
                    f"ago (stale after {stale}s: {STALE_PUSHES} push intervals, at least {STALE_FLOOR_SECONDS}s). "
                    "The Pushgateway keeps serving its last values, so dashboards look fine while they are old."
                ),
                dashboard="app-overview",
            ),
        ],
    )
