"""Recording rules the dashboards read, so heavy panels stay fast. Names follow Prometheus's
``level:metric:operations``: the labels kept, the metric, the operations."""

from __future__ import annotations

from otel_monitoring.rules.model import Alert, RecordingRule, RuleGroup

REQUESTS = "http_server_request_duration_seconds"
SERVER_ERRORS = 'http_response_status_code=~"5.."'
COST = "otel_monitoring_business_cost_USD_total"
QUANTILES = ("0.5", "0.95", "0.99")

BUCKET_RATE = f"job_http_route:{REQUESTS}_bucket:rate5m"
QUANTILE_RECORD = f"job_http_route_quantile:{REQUESTS}:histogram_quantile_rate5m"


def _rule(record: str, expr: str, **labels: str) -> RecordingRule:
    return RecordingRule(record=record, expr=expr, labels=labels)


def group() -> RuleGroup:
    rules: list[Alert | RecordingRule] = []
    for level in ("job", "job, http_route"):
        name = level.replace(", ", "_")
        total = f"sum by ({level}) (rate({REQUESTS}_count[5m]))"
        errors = f"sum by ({level}) (rate({REQUESTS}_count{{{SERVER_ERRORS}}}[5m]))"
        rules.append(_rule(f"{name}:http_server_requests:rate5m", total))
        # Over all requests, so that a route without errors reads 0 rather than nothing.
        rules.append(_rule(f"{name}:http_server_request_errors:ratio_rate5m", f"({errors} or {total} * 0) / {total}"))
    rules.append(_rule(BUCKET_RATE, f"sum by (job, http_route, le) (rate({REQUESTS}_bucket[5m]))"))
    rules.extend(_rule(QUANTILE_RECORD, f"histogram_quantile({q}, {BUCKET_RATE})", quantile=q) for q in QUANTILES)
    rules.append(
        _rule(
            "job_cache_name:cache_operations_hit:ratio_rate5m",
            'sum by (job, cache_name) (rate(cache_operations_total{cache_operation_result="hit"}[5m]))\n/\n'
            'sum by (job, cache_name) (rate(cache_operations_total{cache_operation_result=~"hit|miss"}[5m]))',
        )
    )
    rules.append(
        _rule("client_id:otel_monitoring_business_cost_USD:increase1h", f"sum by (client_id) (increase({COST}[1h]))")
    )
    rules.append(
        _rule(
            "model_provider:otel_monitoring_business_cost_USD:increase1h",
            f"sum by (model, provider) (increase({COST}[1h]))",
        )
    )
    return RuleGroup(name="otel-monitoring-recording", rules=rules)
