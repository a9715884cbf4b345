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
                # Capacity 0 means no queue: left out rather than divided by.
                "otelcol_exporter_queue_size / (otelcol_exporter_queue_capacity > 0) > 0.8",
                "warning",
                for_="5m",
                summary="{{ $labels.job }}: sidecar exporter {{ $labels.exporter }} queue is filling up",
                description=(
                    "The sending queue of exporter {{ $labels.exporter }} on {{ $labels.instance }} is "
                    "{{ $value | humanizePercentage }} full: the backend is slower than the input or unreachable, "
                    "and once the queue is full new data is dropped (SidecarDroppingData)."
                ),
                dashboard="app-overview",
                variables=("job", "instance"),
            ),
            ctx.alert(
                "SidecarDroppingData",
                "sum by (job, instance, exporter) (rate(otelcol_exporter_enqueue_failed_metric_points_total[5m])) > 0",
                "critical",  # no retry follows: these points are gone
                summary="{{ $labels.job }}: sidecar exporter {{ $labels.exporter }} is dropping data",
                description=(
                    "The full sending queue of exporter {{ $labels.exporter }} on {{ $labels.instance }} refused "
                    "{{ $value | humanize }} points/s over the last 5 minutes: those points are lost."
                ),
                dashboard="app-overview",
                variables=("job", "instance"),
            ),
        ],
    )
