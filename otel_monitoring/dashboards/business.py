"""Business dashboards (docs/business-api.md): ``business-kpis`` (generations, success, satisfaction, NPS, cost,
active customers, and their trends), ``business-costs`` (spend per model and per customer, tokens, unpriced
models) and ``business-usage`` (usage per customer and feature, top and unhappy customers).

Customers appear as their pseudonyms (``u_...``): the sanitize processor replaces ``client_id`` before any
exporter. Per-customer figures read the hourly recording rules; the business processor's derived series (a few
series: top customers, then ``other``) are read directly.
"""

from __future__ import annotations

from otel_monitoring.dashboards._panels import (
    DashboardSpec,
    Query,
    Variable,
    bar_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from otel_monitoring.rules.pack import recording

__all__ = ["costs", "kpis", "usage"]

AREA = "business"
JOB = 'job=~"$job"'
INSTANCE = 'job=~"$job", instance=~"$instance"'
RATE = "[$__rate_interval]"
GENERATIONS = "otel_monitoring_business_generations_total"
COST = "otel_monitoring_business_cost_USD_total"
TOKENS = "otel_monitoring_business_tokens_total"

VARIABLES = (
    Variable("job", "Service", GENERATIONS, "job", "the service recording business figures"),
    Variable("instance", "Instance", f"{GENERATIONS}{{{JOB}}}", "instance"),
)
LINKS = ("business-kpis", "business-costs", "business-usage", "app-overview")
CUSTOMER_COST = f"{recording.CUSTOMER_COST_RECORD}{{{JOB}}}"
MODEL_COST = f"{recording.MODEL_COST_RECORD}{{{JOB}}}"
CUSTOMER_GENERATIONS = f"{recording.CUSTOMER_GENERATIONS_RECORD}{{{JOB}}}"
ACTIVE_CUSTOMERS = f"count(sum by (client_id) ({CUSTOMER_GENERATIONS}) > 0)"


def _nps(window: str) -> str:
    # Answers 0 to 10, one bucket each: detractors are le="6", passives le="8" minus le="6", promoters the rest.
    def bucket(le: str) -> str:
        return f'sum(increase(user_nps_bucket{{{INSTANCE}, le=~"{le}(\\\\.0)?"}}[{window}]))'

    total = f"sum(increase(user_nps_count{{{INSTANCE}}}[{window}]))"
    return f"100 * (({total} - {bucket('8')}) - {bucket('6')}) / {total}"


def kpis() -> DashboardSpec:
    figures = [
        stat_panel("Generations", Query(f"sum(increase({GENERATIONS}{{{INSTANCE}}}[$__range]))"), width=4),
        stat_panel(
            "Success ratio",
            Query(
                f'sum(increase({GENERATIONS}{{{INSTANCE}, status="ok"}}[$__range])) '
                f"/ sum(increase({GENERATIONS}{{{INSTANCE}}}[$__range]))"
            ),
            unit="percentunit",
            thresholds=((None, "red"), (0.9, "orange"), (0.99, "green")),
            width=4,
        ),
        stat_panel(
            "Satisfaction (1-5)",
            Query(
                f"sum(increase(otel_monitoring_business_satisfaction_sum{{{INSTANCE}}}[$__range])) "
                f"/ sum(increase(otel_monitoring_business_satisfaction_count{{{INSTANCE}}}[$__range]))"
            ),
            thresholds=((None, "red"), (3, "orange"), (4, "green")),
            description="Mean CSAT score of the answers in the time range.",
            width=4,
        ),
        stat_panel(
            "NPS",
            Query(_nps("$__range")),
            thresholds=((None, "red"), (0, "orange"), (30, "green")),
            description="Net Promoter Score of the answers in the time range: % promoters (9-10) - % detractors (0-6).",
            width=4,
        ),
        stat_panel("Model cost (last hour)", Query(f"sum({CUSTOMER_COST})"), unit="currencyUSD", width=4),
        stat_panel(
            "Active customers (last hour)",
            Query(ACTIVE_CUSTOMERS),
            description="Customers with at least one generation in the last hour.",
            width=4,
        ),
    ]
    trends = [
        timeseries_panel(
            "Generations by status",
            Query(f"sum by (status) (rate({GENERATIONS}{{{INSTANCE}}}{RATE}))", "{{status}}"),
            unit="ops",
            stacked=True,
        ),
        timeseries_panel(
            "Generations by content type",
            Query(f"sum by (content_type) (rate({GENERATIONS}{{{INSTANCE}}}{RATE}))", "{{content_type}}"),
            unit="ops",
            stacked=True,
        ),
        timeseries_panel(
            "Satisfaction by channel",
            Query(f"avg by (channel) (otel_monitoring_business_satisfaction_mean{{{INSTANCE}}})", "{{channel}}"),
            min_value=1,
            max_value=5,
            description="Mean score since each series started, from the business processor.",
        ),
        timeseries_panel(
            "Model cost per hour",
            Query(f"sum by (model, provider) (rate({COST}{{{INSTANCE}}}{RATE})) * 3600", "{{provider}} {{model}}"),
            unit="currencyUSD",
            stacked=True,
        ),
    ]
    return DashboardSpec(
        uid="business-kpis",
        title="Business KPIs",
        description="The figures product and finance follow: generations and their success, user satisfaction and "
        "NPS, model cost and active customers, and how they move.",
        area=AREA,
        variables=VARIABLES,
        sections=[("KPIs", figures), ("Trends", trends)],
        links=LINKS,
    )


def costs() -> DashboardSpec:
    spend = [
        stat_panel("Cost (last hour)", Query(f"sum({MODEL_COST})"), unit="currencyUSD", width=6),
        stat_panel(
            "Projected per day",
            Query(f"sum(rate({COST}{{{INSTANCE}}}[1h])) * 86400"),
            unit="currencyUSD",
            description="The last hour's spending rate over 24 hours.",
            width=6,
        ),
        stat_panel(
            "Cost per generation (last hour)",
            Query(f'sum({MODEL_COST}) / sum(increase({GENERATIONS}{{{JOB}, status="ok"}}[1h]))'),
            unit="currencyUSD",
            width=6,
        ),
        stat_panel(
            "Unpriced tokens",
            Query(
                f"sum(increase(otel_monitoring_business_unpriced_tokens_total{{{INSTANCE}}}[$__range])) or vector(0)"
            ),
            thresholds=((None, "green"), (1, "orange")),
            description="Tokens of models missing from the price table, never costed at zero: add their prices "
            "(processing.processors.business.prices).",
            width=6,
        ),
    ]
    breakdown = [
        timeseries_panel(
            "Cost per hour by model",
            Query(f"sum by (model, provider) (rate({COST}{{{INSTANCE}}}{RATE})) * 3600", "{{provider}} {{model}}"),
            unit="currencyUSD",
            stacked=True,
        ),
        bar_panel(
            "Cost by model (last hour)", Query(f"sort_desc({MODEL_COST})", "{{provider}} {{model}}"), unit="currencyUSD"
        ),
        bar_panel(
            "Top customers by cost (last hour)",
            Query(f"topk(10, {CUSTOMER_COST})", "{{client_id}}"),
            unit="currencyUSD",
            description="Pseudonymized customers; beyond the business processor's top N they are summed as 'other'.",
        ),
        timeseries_panel(
            "Cost per hour by customer (top 10)",
            Query(f"topk(10, sum by (client_id) (rate({COST}{{{INSTANCE}}}{RATE}))) * 3600", "{{client_id}}"),
            unit="currencyUSD",
        ),
        timeseries_panel(
            "Tokens by model and type",
            Query(f"sum by (model, token_type) (rate({TOKENS}{{{INSTANCE}}}{RATE}))", "{{model}} {{token_type}}"),
            description="Tokens per second.",
            width=24,
        ),
    ]
    return DashboardSpec(
        uid="business-costs",
        title="Business costs",
        description="What the model APIs cost: spend per hour, per model and per customer, the projection for the "
        "day, cost per generation, tokens, and models without a price.",
        area=AREA,
        variables=VARIABLES,
        sections=[("Spend", spend), ("Breakdown", breakdown)],
        links=LINKS,
    )


def usage() -> DashboardSpec:
    customers = [
        stat_panel("Active customers (last hour)", Query(ACTIVE_CUSTOMERS), width=6),
        stat_panel(
            "Feature units (last hour)",
            Query(f"sum({recording.CUSTOMER_USAGE_RECORD}{{{JOB}}})"),
            width=6,
        ),
        stat_panel(
            "Customers with failures (last hour)",
            Query(
                f'count(sum by (client_id) ({recording.CUSTOMER_GENERATIONS_RECORD}{{{JOB}, status!="ok"}}) > 0)'
                " or vector(0)"
            ),
            thresholds=((None, "green"), (1, "orange")),
            width=6,
        ),
        stat_panel(
            "Least satisfied customer (last hour)",
            Query(f"min({recording.CUSTOMER_SATISFACTION_RECORD}{{{JOB}}})"),
            thresholds=((None, "red"), (3, "orange"), (4, "green")),
            width=6,
        ),
    ]
    per_customer = [
        table_panel(
            "Usage per customer and feature (last hour)",
            Query(f"sort_desc({recording.CUSTOMER_USAGE_RECORD}{{{JOB}}})", "units"),
            description="Units of each feature (business.record_usage) per pseudonymized customer.",
        ),
        timeseries_panel(
            "Usage by feature (units per hour)",
            Query(f"sum by (feature_name) ({recording.CUSTOMER_USAGE_RECORD}{{{JOB}}})", "{{feature_name}}"),
        ),
        bar_panel(
            "Top customers by generations (last hour)",
            Query(f"topk(10, sum by (client_id) ({CUSTOMER_GENERATIONS}))", "{{client_id}}"),
        ),
        bar_panel(
            "Customers with failed generations (last hour)",
            Query(
                f'topk(10, sum by (client_id) ({recording.CUSTOMER_GENERATIONS_RECORD}{{{JOB}, status!="ok"}}))',
                "{{client_id}}",
            ),
        ),
        bar_panel(
            "Least satisfied customers (last hour)",
            Query(f"bottomk(10, {recording.CUSTOMER_SATISFACTION_RECORD}{{{JOB}}})", "{{client_id}}"),
            description="Mean CSAT score (1-5) per customer over the last hour.",
        ),
        timeseries_panel(
            "Tokens per customer (top 10)",
            Query(f"topk(10, sum by (client_id) (rate({TOKENS}{{{INSTANCE}}}{RATE})))", "{{client_id}}"),
        ),
    ]
    return DashboardSpec(
        uid="business-usage",
        title="Business usage",
        description="Who uses what: feature usage, generations, tokens and satisfaction per (pseudonymized) customer.",
        area=AREA,
        variables=VARIABLES,
        sections=[("Customers", customers), ("Per customer", per_customer)],
        links=LINKS,
    )
