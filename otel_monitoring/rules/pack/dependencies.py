"""What a service depends on: outgoing calls (the seed's IntegrationError), database queries and caches."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext

CALLS = "http_client_request_duration_seconds_count"
# Every failed call (no response, or a status >= 400) but 404, which an upstream API answers by design.
FAILED_CALLS = 'error_type!~"|404"'
QUERY = "job, db_system_name, db_query_summary"
CACHE = "job, cache_name"
HITS = 'cache_operations_total{cache_operation_result="hit"}'
READS = 'cache_operations_total{cache_operation_result=~"hit|miss"}'


def _hit_ratio(window: str, offset: str = "") -> str:
    shift = f" offset {offset}" if offset else ""
    return f"sum by ({CACHE}) (rate({HITS}[{window}]{shift}))\n  /\n  sum by ({CACHE}) (rate({READS}[{window}]{shift}))"


def group(ctx: PackContext) -> RuleGroup:
    return RuleGroup(
        name="otel-monitoring-dependencies",
        rules=[
            ctx.alert(
                "IntegrationError",
                f"sum by (job, server_address) (rate({CALLS}{{{FAILED_CALLS}}}[5m]))\n"
                f"/\nsum by (job, server_address) (rate({CALLS}[5m]))\n> 0.05",
                "critical",
                for_="1m",
                summary="{{ $labels.job }}: calls to {{ $labels.server_address }} are failing",
                description=(
                    "{{ $value | humanizePercentage }} of the outgoing calls of {{ $labels.job }} to "
                    "{{ $labels.server_address }} failed over the last 5 minutes (threshold 5%)."
                ),
                dashboard="app-errors",
            ),
            ctx.alert(
                "SlowQueries",
                f"sum by ({QUERY}) (rate(db_client_operation_slow_total[5m]))\n"
                f"/\nsum by ({QUERY}) (rate(db_client_operation_duration_seconds_count[5m]))\n> 0.1",
                "warning",
                for_="10m",
                summary="{{ $labels.job }}: slow {{ $labels.db_system_name }} queries: {{ $labels.db_query_summary }}",
                description=(
                    "{{ $value | humanizePercentage }} of the {{ $labels.db_query_summary }} queries of "
                    "{{ $labels.job }} took longer than the slow-query threshold "
                    "(collectors.slow_query_seconds) over 5 minutes."
                ),
                dashboard="app-performance",
            ),
            ctx.alert(
                "CacheHitRatioDrop",
                f"(\n  {_hit_ratio('15m')}\n)\n< 0.8 * (\n  {_hit_ratio('6h', '15m')}\n)\n"
                f"and\nsum by ({CACHE}) (rate({READS}[15m])) > 0.1",
                "warning",
                for_="15m",
                summary="{{ $labels.job }}: cache {{ $labels.cache_name }} hit ratio dropped",
                description=(
                    "The hit ratio of cache {{ $labels.cache_name }} in {{ $labels.job }} is "
                    "{{ $value | humanizePercentage }} over 15 minutes, less than 80% of its level over the 6 hours "
                    "before: more reads reach the database or the upstream behind it."
                ),
                dashboard="app-performance",
            ),
        ],
    )
