"""Business figures (docs/business-api.md): API cost spikes and satisfaction drops, from the business processor's
derived series (no customer label, so a few series)."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext

COST = "otel_monitoring_business_cost_USD_total"
SATISFACTION = "otel_monitoring_business_satisfaction"
SPIKE_FACTOR = 2  # an hour costing more than twice the mean hour of the day before
COST_FLOOR_USD_PER_HOUR = 1.0  # below this a doubling is noise, not a bill
SATISFACTION_DROP = 0.5  # points on the 1-5 scale
MIN_ANSWERS_PER_HOUR = 10


def group(ctx: PackContext) -> RuleGroup:
    hourly = f"sum by (job) (increase({COST}[1h]))"
    return RuleGroup(
        name="otel-monitoring-business",
        rules=[
            ctx.alert(
                "APICostSpike",
                f"{hourly}\n> {SPIKE_FACTOR} * sum by (job) (increase({COST}[1d] offset 1h)) / 24\n"
                f"and\n{hourly} > {COST_FLOOR_USD_PER_HOUR:g}",
                "warning",
                for_="10m",
                summary="{{ $labels.job }}: LLM API cost spike",
                description=(
                    "{{ $labels.job }} spent ${{ $value | humanize }} on model APIs in the last hour, more than "
                    f"{SPIKE_FACTOR} times its mean hour over the day before."
                ),
                dashboard="business-costs",
            ),
            ctx.alert(
                "SatisfactionDrop",
                f"sum by (job) (rate({SATISFACTION}_sum[1h])) / sum by (job) (rate({SATISFACTION}_count[1h]))\n"
                f"< sum by (job) (rate({SATISFACTION}_sum[1d] offset 1h))"
                f" / sum by (job) (rate({SATISFACTION}_count[1d] offset 1h)) - {SATISFACTION_DROP:g}\n"
                f"and\nsum by (job) (increase({SATISFACTION}_count[1h])) >= {MIN_ANSWERS_PER_HOUR}",
                "warning",
                for_="30m",
                summary="{{ $labels.job }}: user satisfaction dropped",
                description=(
                    "The mean satisfaction score of {{ $labels.job }} over the last hour is {{ $value | humanize }} "
                    f"(1 to 5), more than {SATISFACTION_DROP:g} below its mean over the day before."
                ),
                dashboard="business-kpis",
            ),
        ],
    )
