"""Recording rules the dashboards read, so heavy panels stay fast. Names follow Prometheus's
``level:metric:operations``: the labels kept, the metric, the operations.

Every series a dashboard panel would otherwise aggregate from raw, high-cardinality data (histogram buckets, one
series per customer) has a rule here; otel_monitoring/dashboards reads them by these names.
"""

from __future__ import annotations

from otel_monitoring.rules.model import Alert, RecordingRule, RuleGroup
from otel_monitoring.rules.pack.dependencies import FAILED_CALLS

REQUESTS = "http_server_request_duration_seconds"
SERVER_ERRORS = 'http_response_status_code=~"5.."'
COST = "otel_monitoring_business_cost_USD_total"
QUANTILES = ("0.5", "0.95", "0.99")

BUCKET_RATE = f"job_http_route:{REQUESTS}_bucket:rate5m"
QUANTILE_RECORD = f"job_http_route_quantile:{REQUESTS}:histogram_quantile_rate5m"
JOB_QUANTILE_RECORD = f"job_quantile:{REQUESTS}:histogram_quantile_rate5m"
CPU_BUSY_RECORD = "job_instance:system_cpu_busy:ratio_rate5m"

CALLS = "http_client_request_duration_seconds"
CALL_RATE_RECORD = "job_server_address:http_client_requests:rate5m"
CALL_ERRORS_RECORD = "job_server_address:http_client_request_errors:ratio_rate5m"
CALL_QUANTILE_RECORD = f"job_server_address_quantile:{CALLS}:histogram_quantile_rate5m"

QUERIES = "db_client_operation_duration_seconds"
QUERY_LEVEL = "job, db_system_name, db_query_summary"
QUERY_RATE_RECORD = "job_db_system_name_db_query_summary:db_client_operations:rate5m"
SLOW_QUERY_RECORD = "job_db_system_name_db_query_summary:db_client_operation_slow:ratio_rate5m"
QUERY_P95_RECORD = f"job_db_system_name_db_query_summary_quantile:{QUERIES}:histogram_quantile_rate5m"

CUSTOMER_COST_RECORD = "job_client_id:otel_monitoring_business_cost_USD:increase1h"
MODEL_COST_RECORD = "job_model_provider:otel_monitoring_business_cost_USD:increase1h"
CUSTOMER_USAGE_RECORD = "job_client_id_feature_name:feature_usage:increase1h"
CUSTOMER_GENERATIONS_RECORD = "job_client_id_status:content_generations:increase1h"
CUSTOMER_SATISFACTION_RECORD = "job_client_id:user_satisfaction:mean_rate1h"


def _rule(record: str, expr: str, **labels: str) -> RecordingRule:
    return RecordingRule(record=record, expr=expr, labels=labels)


def _http_server() -> list[RecordingRule]:
    rules: list[RecordingRule] = []
    for level in ("job", "job, http_route"):
        name = level.replace(", ", "_")
        total = f"sum by ({level}) (rate({REQUESTS}_count[5m]))"
        errors = f"sum by ({level}) (rate({REQUESTS}_count{{{SERVER_ERRORS}}}[5m]))"
        rules.append(_rule(f"{name}:http_server_requests:rate5m", total))
        # Over all requests, so that a route without errors reads 0 rather than nothing.
        rules.append(_rule(f"{name}:http_server_request_errors:ratio_rate5m", f"({errors} or {total} * 0) / {total}"))
    rules.append(_rule(BUCKET_RATE, f"sum by (job, http_route, le) (rate({REQUESTS}_bucket[5m]))"))
    rules.extend(_rule(QUANTILE_RECORD, f"histogram_quantile({q}, {BUCKET_RATE})", quantile=q) for q in QUANTILES)
    # Per service, from the per-route bucket rates already recorded: no second pass over the raw buckets.
    rules.extend(
        _rule(JOB_QUANTILE_RECORD, f"histogram_quantile({q}, sum by (job, le) ({BUCKET_RATE}))", quantile=q)
        for q in QUANTILES
    )
    return rules


def _dependencies() -> list[RecordingRule]:
    calls = f"sum by (job, server_address) (rate({CALLS}_count[5m]))"
    failed = f"sum by (job, server_address) (rate({CALLS}_count{{{FAILED_CALLS}}}[5m]))"
    queries = f"sum by ({QUERY_LEVEL}) (rate({QUERIES}_count[5m]))"
    slow = f"sum by ({QUERY_LEVEL}) (rate(db_client_operation_slow_total[5m]))"
    return [
        _rule(CALL_RATE_RECORD, calls),
        # Failed as the IntegrationError alert counts them (404 aside), 0 when none failed.
        _rule(CALL_ERRORS_RECORD, f"({failed} or {calls} * 0) / {calls}"),
        *(
            _rule(
                CALL_QUANTILE_RECORD,
                f"histogram_quantile({q}, sum by (job, server_address, le) (rate({CALLS}_bucket[5m])))",
                quantile=q,
            )
            for q in QUANTILES
        ),
        _rule(QUERY_RATE_RECORD, queries),
        _rule(SLOW_QUERY_RECORD, f"{slow} / {queries}"),
        _rule(
            QUERY_P95_RECORD,
            f"histogram_quantile(0.95, sum by ({QUERY_LEVEL}, le) (rate({QUERIES}_bucket[5m])))",
            quantile="0.95",
        ),
        _rule(
            "job_cache_name:cache_operations_hit:ratio_rate5m",
            'sum by (job, cache_name) (rate(cache_operations_total{cache_operation_result="hit"}[5m]))\n/\n'
            'sum by (job, cache_name) (rate(cache_operations_total{cache_operation_result=~"hit|miss"}[5m]))',
        ),
    ]


def _host() -> list[RecordingRule]:
    cpu = "system_cpu_time_seconds_total"
    idle = f'sum by (job, instance) (rate({cpu}{{cpu_mode="idle"}}[5m]))'
    return [_rule(CPU_BUSY_RECORD, f"1 - {idle} / sum by (job, instance) (rate({cpu}[5m]))")]


def _business() -> list[RecordingRule]:
    satisfaction = "user_satisfaction"
    by_customer = "job, client_id"
    return [
        _rule("client_id:otel_monitoring_business_cost_USD:increase1h", f"sum by (client_id) (increase({COST}[1h]))"),
        _rule(
            "model_provider:otel_monitoring_business_cost_USD:increase1h",
            f"sum by (model, provider) (increase({COST}[1h]))",
        ),
        # The same per service, for dashboards filtered by job.
        _rule(CUSTOMER_COST_RECORD, f"sum by ({by_customer}) (increase({COST}[1h]))"),
        _rule(MODEL_COST_RECORD, f"sum by (job, model, provider) (increase({COST}[1h]))"),
        # The API's inputs keep every customer (up to the facade's 2,000 label sets): summed once here.
        _rule(CUSTOMER_USAGE_RECORD, "sum by (job, client_id, feature_name) (increase(feature_usage_total[1h]))"),
        _rule(CUSTOMER_GENERATIONS_RECORD, "sum by (job, client_id, status) (increase(content_generations_total[1h]))"),
        _rule(
            CUSTOMER_SATISFACTION_RECORD,
            f"sum by ({by_customer}) (rate({satisfaction}_sum[1h])) / sum by ({by_customer}) "
            f"(rate({satisfaction}_count[1h]))",
        ),
    ]


def group() -> RuleGroup:
    rules: list[Alert | RecordingRule] = [*_http_server(), *_dependencies(), *_host(), *_business()]
    return RuleGroup(name="otel-monitoring-recording", rules=rules)
