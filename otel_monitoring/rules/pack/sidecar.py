"""Alerts on the collector sidecar's own metrics (``otelcol_*``, docs/sidecar.md)."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext


def group(ctx: PackContext) -> RuleGroup:
    return RuleGroup(
        name="otel-monitoring-sidecar",
        rules=[
            ctx.alert(
                "SidecarRefusingData",
                "sum by (job, instance, receiver) (rate(otelcol_receiver_refused_metric_points_total[5m])) > 0",
                "warning",
                for_="5m",
                summary="{{ $labels.job }}: the sidecar {{ $labels.instance }} refuses data",
                description=(
                    "Receiver {{ $labels.receiver }} of {{ $labels.instance }} refused {{ $value | humanize }} "
                    "points/s over the last 5 minutes (memory limit, a full queue, or shutting down). "
                    "Workers retry, but data is lost once their own retries run out."
                ),
                dashboard="app-overview",
                variables=("job", "instance"),
            ),
            ctx.alert(
                "SidecarExportFailing",
                "sum by (job, instance, exporter) (rate(otelcol_exporter_send_failed_metric_points_total[5m])) > 0",
                "warning",
                for_="5m",
                summary="{{ $labels.job }}: sidecar exporter {{ $labels.exporter }} is failing",
                description=(
                    "Exporter {{ $labels.exporter }} of {{ $labels.instance }} failed to deliver "
                    "{{ $value | humanize }} points/s over the last 5 minutes."
                ),
                dashboard="app-overview",
                variables=("job", "instance"),
            ),
            ctx.alert(
                "SidecarQueueFilling",
                "min_over_time(otelcol_exporter_queue_size[15m]) > 0",
                "warning",
                for_="15m",  # a queue that only just appeared has no 15 minutes of history yet
                summary="{{ $labels.job }}: sidecar exporter {{ $labels.exporter }} queue is not draining",
                description=(
                    "The queue of exporter {{ $labels.exporter }} on {{ $labels.instance }} has not been empty once in "
                    "15 minutes ({{ $value | humanize }} requests at least): the backend is slower than the input or "
                    "unreachable, and once the queue is full new data is refused."
                ),
                dashboard="app-overview",
                variables=("job", "instance"),
            ),
        ],
    )
