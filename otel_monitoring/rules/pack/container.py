"""The container's cgroup (docs/system-metrics.md, container): CPU throttling, memory near the limit, OOM kills."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext

CONTAINER = ("job", "instance")


def group(ctx: PackContext) -> RuleGroup:
    return RuleGroup(
        name="otel-monitoring-container",
        rules=[
            ctx.alert(
                "ContainerCPUThrottling",
                "sum by (job, instance) (rate(container_cpu_throttled_periods_total[5m]))\n"
                "/\nsum by (job, instance) (rate(container_cpu_periods_total[5m]))\n> 0.25",
                "warning",
                for_="15m",
                summary="{{ $labels.instance }}: container CPU throttled",
                description=(
                    "{{ $value | humanizePercentage }} of the CPU periods of {{ $labels.instance }} "
                    "({{ $labels.job }}) were throttled by its CPU limit over 5 minutes: requests wait for CPU "
                    "time the container is not allowed to use."
                ),
                dashboard="system-resources",
                variables=CONTAINER,
            ),
            ctx.alert(
                "ContainerMemoryNearLimit",
                "container_memory_utilization > 0.9",
                "warning",
                for_="5m",
                summary="{{ $labels.instance }}: container memory near its limit",
                description=(
                    "{{ $labels.instance }} ({{ $labels.job }}) uses {{ $value | humanizePercentage }} of its memory "
                    "limit: past it, the kernel's OOM killer ends a process of the container."
                ),
                dashboard="system-resources",
                variables=CONTAINER,
            ),
            ctx.alert(
                "ContainerOOMKilled",
                "increase(container_memory_oom_events_total[10m]) > 0",
                "warning",
                summary="{{ $labels.instance }}: process killed by the OOM killer",
                description=(
                    "The OOM killer ended {{ $value | humanize }} processes of {{ $labels.instance }} "
                    "({{ $labels.job }}) in the last 10 minutes: the container reached its memory limit."
                ),
                dashboard="system-resources",
                variables=CONTAINER,
            ),
        ],
    )
