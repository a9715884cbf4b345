"""HTTP server alerts, from the middleware's ``http.server.request.duration`` histogram: the seed's HighLatency
and high_error_rate, per service (``job``)."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext

REQUESTS = "http_server_request_duration_seconds"
SERVER_ERRORS = 'http_response_status_code=~"5.."'
LATENCY_SECONDS = 1.0  # the seed's HighLatency threshold
ERROR_RATIO = 0.1  # the seed's high_error_rate: errors > 10% over 5 minutes


def group(ctx: PackContext) -> RuleGroup:
    return RuleGroup(
        name="otel-monitoring-http",
        rules=[
            ctx.alert(
                "HighLatency",
                f"histogram_quantile(0.95, sum by (job, http_route, le) (rate({REQUESTS}_bucket[5m])))"
                f" > {LATENCY_SECONDS:g}",
                "warning",
                for_="5m",
                summary="{{ $labels.job }}: high latency on {{ $labels.http_route }}",
                description=(
                    "The 95th percentile of {{ $labels.job }} requests to {{ $labels.http_route }} is "
                    f"{{{{ $value | humanizeDuration }}}} over the last 5 minutes (threshold {LATENCY_SECONDS:g}s)."
                ),
                dashboard="app-performance",
            ),
            ctx.alert(
                "high_error_rate",
                f"sum by (job) (rate({REQUESTS}_count{{{SERVER_ERRORS}}}[5m]))\n"
                f"/\nsum by (job) (rate({REQUESTS}_count[5m]))\n> {ERROR_RATIO:g}",
                "critical",
                for_="2m",
                summary="{{ $labels.job }}: high error rate",
                description=(
                    "{{ $value | humanizePercentage }} of {{ $labels.job }} requests failed with a server error "
                    f"(5xx) over the last 5 minutes (threshold {ERROR_RATIO:.0%})."
                ),
                dashboard="app-errors",
            ),
        ],
    )
