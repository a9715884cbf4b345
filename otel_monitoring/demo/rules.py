"""The demo's own alerts: the built-in pack's error-rate and latency alerts, on windows short enough for a demo.

The built-in ``high_error_rate`` looks at 5 minutes and waits 2 more before it fires; a demo that lasts 30 seconds
would never see it. These two watch 10 seconds of traffic, so the failure episode fires them within seconds and
their resolution follows soon after the episode ends. They are rendered with the built-in pack, as a user's own
alerts are (``otel-monitoring rules render --app otel_monitoring.demo.rules:demo_rules``).

>>> [alert.name for alert in demo_rules.alerts()]
['DemoHighErrorRate', 'DemoHighLatency']
"""

from __future__ import annotations

from otel_monitoring import alerts

__all__ = ["ERROR_RATIO", "LATENCY_SECONDS", "WINDOW", "demo_rules"]

WINDOW = "10s"
"""Rate window of both alerts (the built-in pack's is 5m)."""
ERROR_RATIO = 0.1
"""The built-in ``high_error_rate`` threshold: more than 10% of requests answered 5xx."""
LATENCY_SECONDS = 0.25
"""p95 of generations above this fires the latency alert (the model provider answers in about 0.1 s)."""

_REQUESTS = "http_server_request_duration_seconds"

demo_rules = alerts.RuleGroup(
    name="demo",
    rules=[
        alerts.Alert(
            name="DemoHighErrorRate",
            query=(
                f'sum by (job) (rate({_REQUESTS}_count{{http_response_status_code=~"5.."}}[{WINDOW}]))\n'
                f"/\nsum by (job) (rate({_REQUESTS}_count[{WINDOW}]))\n> {ERROR_RATIO:g}"
            ),
            severity="critical",
            for_="2s",
            annotations={
                "summary": "High error rate in {{ $labels.job }}",
                "description": f"More than {ERROR_RATIO:.0%} of the requests to {{{{ $labels.job }}}} failed in the "
                f"last {WINDOW} ({{{{ $value | humanizePercentage }}}}). The demo's copy of high_error_rate.",
            },
        ),
        alerts.Alert(
            name="DemoHighLatency",
            query=(
                f"histogram_quantile(0.95, sum by (job, le) "
                f'(rate({_REQUESTS}_bucket{{http_route="/v1/generations"}}[{WINDOW}])))\n> {LATENCY_SECONDS:g}'
            ),
            severity="warning",
            for_="2s",
            annotations={
                "summary": "Slow generations in {{ $labels.job }}",
                "description": f"p95 of /v1/generations in {{{{ $labels.job }}}} is above {LATENCY_SECONDS * 1000:.0f}"
                f" ms over the last {WINDOW} ({{{{ $value | humanizeDuration }}}}). The demo's copy of HighLatency.",
            },
        ),
    ],
)
