"""Service dashboards, RED for every service (rate, errors, duration): ``app-overview``, ``app-performance``
(latency, throughput, resources and bottlenecks: queries, cache, outgoing calls) and ``app-errors``.

Heavy series (histogram quantiles, per-route rates, per-host and per-query figures) come from the recording rules of
otel_monitoring/rules/pack/recording.py; those are per service, so the ``instance`` variable filters only the panels
that read raw series.
"""

from __future__ import annotations

from otel_monitoring.dashboards._panels import (
    ALERTS_FIRING,
    DashboardSpec,
    Query,
    Variable,
    bar_panel,
    data_link,
    heatmap_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
    with_data_links,
)
from otel_monitoring.rules.pack import recording

__all__ = ["errors", "overview", "performance"]

AREA = "app"
JOB = 'job=~"$job"'
INSTANCE = 'job=~"$job", instance=~"$instance"'
ROUTE = 'job=~"$job", http_route=~"$route"'
RATE = "[$__rate_interval]"
REQUESTS = "http_server_request_duration_seconds_count"

JOB_RATE = f"job:http_server_requests:rate5m{{{JOB}}}"
JOB_ERRORS = f"job:http_server_request_errors:ratio_rate5m{{{JOB}}}"
ROUTE_RATE = f"job_http_route:http_server_requests:rate5m{{{ROUTE}}}"
ROUTE_ERRORS = f"job_http_route:http_server_request_errors:ratio_rate5m{{{ROUTE}}}"
CALL_ERRORS = f"{recording.CALL_ERRORS_RECORD}{{{JOB}}}"

SERVICE = Variable("job", "Service", REQUESTS, "job", "the scrape job of the service (its service.name)")
VARIABLES = (
    SERVICE,
    Variable("instance", "Instance", f"{REQUESTS}{{{JOB}}}", "instance"),
    Variable("route", "Route", f'{REQUESTS}{{{JOB}, instance=~"$instance"}}', "http_route"),
)
LINKS = ("app-overview", "app-performance", "app-errors", "system-resources", "business-kpis")
TO_PERFORMANCE = data_link("Performance of ${__field.labels.job}", "app-performance", [("job", "job")])
TO_ERRORS = data_link("Errors of ${__field.labels.job}", "app-errors", [("job", "job")])
WARN_1_CRIT_10 = ((None, "green"), (0.01, "orange"), (0.1, "red"))


def _quantile(q: str, selector: str) -> str:
    return f"histogram_quantile({q}, sum by (le) ({recording.BUCKET_RATE}{{{selector}}}))"


def _job_quantile(q: str) -> str:
    return f'{recording.JOB_QUANTILE_RECORD}{{{JOB}, quantile="{q}"}}'


def overview() -> DashboardSpec:
    status = [
        stat_panel("Requests", Query(f"sum({JOB_RATE})"), unit="reqps"),
        stat_panel(
            "Server errors",
            Query(f"sum({JOB_ERRORS} * {JOB_RATE}) / sum({JOB_RATE})"),
            unit="percentunit",
            thresholds=WARN_1_CRIT_10,
            description="Share of requests answered 5xx over 5 minutes.",
        ),
        stat_panel(
            "Latency p95",
            Query(f"max({_job_quantile('0.95')})"),
            unit="s",
            thresholds=((None, "green"), (0.5, "orange"), (1, "red")),
        ),
        stat_panel("In flight", Query(f"sum(http_server_active_requests{{{INSTANCE}}})")),
        stat_panel(
            "Targets up",
            Query(f"sum(up{{{JOB}}}) / count(up{{{JOB}}})"),
            unit="percentunit",
            thresholds=((None, "red"), (1, "green")),
        ),
        stat_panel(
            "Alerts firing",
            Query(f"count({ALERTS_FIRING}) or vector(0)"),
            thresholds=((None, "green"), (1, "red")),
        ),
    ]
    services = [
        table_panel(
            "Service status",
            Query(f"up{{{JOB}}}", "up"),
            Query(JOB_RATE, "requests/s"),
            Query(JOB_ERRORS, "5xx ratio"),
            Query(_job_quantile("0.95"), "p95 (s)"),
            merge=True,
            width=24,
            height=6,
            description="One row per scrape target: up (1) or down (0), and its service's RED figures.",
        )
    ]
    red = [
        with_data_links(
            timeseries_panel("Requests per service", Query(JOB_RATE, "{{job}}"), unit="reqps", width=8),
            TO_PERFORMANCE,
        ),
        with_data_links(
            timeseries_panel(
                "Server error ratio per service", Query(JOB_ERRORS, "{{job}}"), unit="percentunit", width=8
            ),
            TO_ERRORS,
        ),
        with_data_links(
            timeseries_panel(
                "Latency per service",
                *(Query(_job_quantile(q), f"{{{{job}}}} p{q.removeprefix('0.')}") for q in recording.QUANTILES),
                unit="s",
                width=8,
            ),
            TO_PERFORMANCE,
        ),
    ]
    pipeline = [
        timeseries_panel(
            "Sidecar: points received",
            Query(
                f"sum by (job, instance) (rate(otelcol_receiver_accepted_metric_points_total{RATE}))",
                "{{instance}} accepted",
            ),
            Query(
                f"sum by (job, instance) (rate(otelcol_receiver_refused_metric_points_total{RATE}))",
                "{{instance}} refused",
            ),
            unit="short",
            description="Points per second the collector sidecars accepted and refused (memory limit, full queue).",
            width=6,
        ),
        timeseries_panel(
            "Sidecar: points exported",
            Query(
                f"sum by (instance, exporter) (rate(otelcol_exporter_sent_metric_points_total{RATE}))",
                "{{instance}} {{exporter}} sent",
            ),
            Query(
                f"sum by (instance, exporter) (rate(otelcol_exporter_send_failed_metric_points_total{RATE}))",
                "{{instance}} {{exporter}} failed",
            ),
            width=6,
        ),
        timeseries_panel(
            "Sidecar: export queues",
            Query("otelcol_exporter_queue_size", "{{instance}} {{exporter}} size"),
            Query("otelcol_exporter_queue_capacity", "{{instance}} {{exporter}} capacity"),
            description="Requests waiting in each exporter's sending queue: never empty means the backend is slow "
            "or unreachable.",
            width=6,
        ),
        timeseries_panel(
            "Pushgateway: time since last push",
            Query("time() - max by (job) (push_time_seconds)", "{{job}}"),
            unit="s",
            description="Per pushed job; the Pushgateway keeps serving old values, so watch this grow.",
            width=6,
        ),
    ]
    alerts = [table_panel("Alerts firing", Query(ALERTS_FIRING), width=24, height=6)]
    return DashboardSpec(
        uid="app-overview",
        title="Application overview",
        description="Every service at a glance: status, requests, errors and latency (RED), the telemetry pipeline "
        "(sidecars, Pushgateway) and the alerts firing.",
        area=AREA,
        variables=VARIABLES[:2],
        sections=[
            ("Main figures", status),
            ("Service status", services),
            ("Rate, errors, duration", red),
            ("Telemetry pipeline", pipeline),
            ("Alerts", alerts),
        ],
        links=LINKS,
    )


def performance() -> DashboardSpec:
    latency = [
        timeseries_panel(
            "Latency percentiles",
            *(Query(_quantile(q, ROUTE), f"p{q.removeprefix('0.')}") for q in recording.QUANTILES),
            unit="s",
            description="Over the selected routes, from the recorded per-route bucket rates.",
        ),
        heatmap_panel("Latency distribution", Query(f"sum by (le) ({recording.BUCKET_RATE}{{{ROUTE}}})")),
        timeseries_panel(
            "Latency p95 per route",
            Query(f'{recording.QUANTILE_RECORD}{{{ROUTE}, quantile="0.95"}}', "{{job}} {{http_route}}"),
            unit="s",
        ),
        bar_panel(
            "Slowest routes (p95)",
            Query(f'topk(10, {recording.QUANTILE_RECORD}{{{ROUTE}, quantile="0.95"}})', "{{job}} {{http_route}}"),
            unit="s",
        ),
    ]
    throughput = [
        timeseries_panel("Requests per route", Query(ROUTE_RATE, "{{job}} {{http_route}}"), unit="reqps", width=8),
        timeseries_panel(
            "Requests by status code",
            Query(
                f'sum by (http_response_status_code) (rate({REQUESTS}{{{INSTANCE}, http_route=~"$route"}}{RATE}))',
                "{{http_response_status_code}}",
            ),
            unit="reqps",
            stacked=True,
            width=8,
        ),
        timeseries_panel(
            "In-flight requests",
            Query(
                f"sum by (instance, http_request_method) (http_server_active_requests{{{INSTANCE}}})",
                "{{instance}} {{http_request_method}}",
            ),
            width=8,
        ),
    ]
    resources = [
        timeseries_panel(
            "Process CPU",
            Query(f"sum by (instance) (rate(process_cpu_time_seconds_total{{{INSTANCE}}}{RATE}))", "{{instance}}"),
            width=8,
        ),
        timeseries_panel(
            "Process memory (RSS)",
            Query(f"process_memory_usage_bytes{{{INSTANCE}}}", "{{instance}}"),
            unit="bytes",
            width=8,
        ),
        timeseries_panel(
            "Database connections",
            Query(
                "sum by (instance, db_client_connection_pool_name, db_client_connection_state) "
                f"(db_client_connection_count{{{INSTANCE}}})",
                "{{instance}} {{db_client_connection_pool_name}} {{db_client_connection_state}}",
            ),
            description="Connections checked out (used) and waiting in the pool (idle), per pool.",
            width=8,
        ),
    ]
    queries = f"{JOB}"
    database = [
        timeseries_panel(
            "Queries per shape",
            Query(f"{recording.QUERY_RATE_RECORD}{{{queries}}}", "{{db_system_name}} {{db_query_summary}}"),
            unit="ops",
            width=8,
        ),
        timeseries_panel(
            "Query latency p95 per shape",
            Query(f"{recording.QUERY_P95_RECORD}{{{queries}}}", "{{db_system_name}} {{db_query_summary}}"),
            unit="s",
            width=8,
        ),
        timeseries_panel(
            "Slow queries",
            Query(f"{recording.SLOW_QUERY_RECORD}{{{queries}}} > 0", "{{db_system_name}} {{db_query_summary}}"),
            unit="percentunit",
            description="Share of each query shape's executions above collectors.slow_query_seconds.",
            width=8,
        ),
        bar_panel(
            "Slowest query shapes (p95)",
            Query(f"topk(10, {recording.QUERY_P95_RECORD}{{{queries}}})", "{{db_query_summary}}"),
            unit="s",
            width=24,
            height=6,
        ),
    ]
    cache = [
        timeseries_panel(
            "Cache hit ratio",
            Query(f"job_cache_name:cache_operations_hit:ratio_rate5m{{{JOB}}}", "{{job}} {{cache_name}}"),
            unit="percentunit",
            min_value=0,
            max_value=1,
        ),
        timeseries_panel(
            "Cache operations",
            Query(
                f"sum by (cache_name, cache_operation_result) (rate(cache_operations_total{{{INSTANCE}}}{RATE}))",
                "{{cache_name}} {{cache_operation_result}}",
            ),
            unit="ops",
        ),
    ]
    calls = [
        timeseries_panel(
            "Outgoing calls per host",
            Query(f"{recording.CALL_RATE_RECORD}{{{JOB}}}", "{{server_address}}"),
            unit="reqps",
            width=8,
        ),
        timeseries_panel(
            "Outgoing call latency p95 per host",
            Query(f'{recording.CALL_QUANTILE_RECORD}{{{JOB}, quantile="0.95"}}', "{{server_address}}"),
            unit="s",
            width=8,
        ),
        timeseries_panel(
            "Model latency p95",
            Query(
                "histogram_quantile(0.95, sum by (gen_ai_provider_name, gen_ai_request_model, le) "
                f"(rate(gen_ai_client_operation_duration_seconds_bucket{{{INSTANCE}}}{RATE})))",
                "{{gen_ai_provider_name}} {{gen_ai_request_model}}",
            ),
            unit="s",
            description="Duration of LLM calls as business.record_generation(duration=...) recorded them.",
            width=8,
        ),
    ]
    return DashboardSpec(
        uid="app-performance",
        title="Application performance",
        description="Where the time goes: latency per route, throughput, the process's resources, and the "
        "bottlenecks (database queries, caches, outgoing calls and models).",
        area=AREA,
        variables=VARIABLES,
        sections=[
            ("Latency", latency),
            ("Throughput", throughput),
            ("Resources", resources),
            ("Bottlenecks: database", database),
            ("Bottlenecks: cache", cache),
            ("Bottlenecks: outgoing calls", calls),
        ],
        links=LINKS,
    )


def errors() -> DashboardSpec:
    availability = 'slo="http-availability"'
    rates = [
        stat_panel(
            "Server errors",
            Query(f"sum({JOB_ERRORS} * {JOB_RATE}) / sum({JOB_RATE})"),
            unit="percentunit",
            thresholds=WARN_1_CRIT_10,
            width=6,
        ),
        stat_panel(
            "Availability budget burn (1h)",
            Query(
                f"max(slo:sli_error:ratio_rate1h{{{availability}, {JOB}}} "
                f"/ on (slo) group_left slo:error_budget:ratio{{{availability}}})"
            ),
            thresholds=((None, "green"), (1, "orange"), (14.4, "red")),
            description="How many times faster than allowed the error budget is being spent (1 = exactly on "
            "budget; the page fires at 14.4 over 1h and 5m).",
            width=6,
        ),
        timeseries_panel(
            "Server error ratio per service", Query(JOB_ERRORS, "{{job}}"), unit="percentunit", width=12, height=4
        ),
        timeseries_panel(
            "Server error ratio per route", Query(ROUTE_ERRORS, "{{job}} {{http_route}}"), unit="percentunit"
        ),
        timeseries_panel(
            "Errors by route and status",
            Query(
                f"sum by (http_route, http_response_status_code) "
                f'(rate({REQUESTS}{{{INSTANCE}, http_route=~"$route", http_response_status_code=~"[45].."}}{RATE}))',
                "{{http_route}} {{http_response_status_code}}",
            ),
            unit="reqps",
            description="4xx (the client's) and 5xx (the service's) answers per second.",
        ),
    ]
    dependencies = [
        timeseries_panel(
            "Outgoing call failures per host", Query(CALL_ERRORS, "{{server_address}}"), unit="percentunit", width=6
        ),
        timeseries_panel(
            "Outgoing call failures by type",
            Query(
                "sum by (server_address, error_type) "
                f'(rate(http_client_request_duration_seconds_count{{{INSTANCE}, error_type!=""}}{RATE}))',
                "{{server_address}} {{error_type}}",
            ),
            unit="reqps",
            width=6,
        ),
        timeseries_panel(
            "Database errors",
            Query(
                "sum by (db_query_summary, error_type) "
                f'(rate(db_client_operation_duration_seconds_count{{{INSTANCE}, error_type!=""}}{RATE}))',
                "{{db_query_summary}} {{error_type}}",
            ),
            unit="ops",
            width=6,
        ),
        timeseries_panel(
            "Failed generations",
            Query(
                f'sum(rate(otel_monitoring_business_generations_total{{{INSTANCE}, status!="ok"}}{RATE})) '
                f"/ sum(rate(otel_monitoring_business_generations_total{{{INSTANCE}}}{RATE}))",
                "failed",
            ),
            unit="percentunit",
            width=6,
        ),
    ]
    slos = [
        timeseries_panel(
            "Availability SLI: server errors",
            Query(f"slo:sli_error:ratio_rate5m{{{availability}, {JOB}}}", "{{job}} 5m"),
            Query(f"slo:sli_error:ratio_rate1h{{{availability}, {JOB}}}", "{{job}} 1h"),
            Query(f"slo:error_budget:ratio{{{availability}}}", "budget"),
            unit="percentunit",
        ),
        timeseries_panel(
            "Latency SLI: requests over the threshold",
            Query(f'slo:sli_error:ratio_rate5m{{slo="http-latency", {JOB}}}', "{{job}} 5m"),
            Query(f'slo:sli_error:ratio_rate1h{{slo="http-latency", {JOB}}}', "{{job}} 1h"),
            Query('slo:error_budget:ratio{slo="http-latency"}', "budget"),
            unit="percentunit",
        ),
    ]
    alerts = [
        table_panel(
            "Alerts of the service",
            Query(f'ALERTS{{alertstate=~"firing|pending", {JOB}}}'),
            description="Firing and pending alerts carrying this service's job label.",
            width=12,
            height=6,
        ),
        table_panel("All alerts firing", Query(ALERTS_FIRING), width=12, height=6),
    ]
    return DashboardSpec(
        uid="app-errors",
        title="Application errors",
        description="Which requests fail, where and why: error ratios per service and route, failing dependencies, "
        "the SLOs' error budgets, and the alerts.",
        area=AREA,
        variables=VARIABLES,
        sections=[
            ("Error rates", rates),
            ("Dependencies", dependencies),
            ("SLOs", slos),
            ("Alerts", alerts),
        ],
        links=LINKS,
    )
