"""Host resources (docs/system-metrics.md): disks filling up (predicted), CPU and memory saturation."""

from __future__ import annotations

from otel_monitoring.rules.model import RuleGroup
from otel_monitoring.rules.pack._context import PackContext

FREE = 'system_filesystem_state="free",system_filesystem_mode="rw"'
HOST = ("job", "instance")


def _disk_filling(
    ctx: PackContext, severity: str, free_below: float, trend: str, horizon_hours: int, for_: str
) -> object:
    return ctx.alert(
        "DiskFillingUp",
        f"(\n  system_filesystem_utilization{{{FREE}}} < {free_below:g}\nand\n"
        f"  predict_linear(system_filesystem_usage_bytes{{{FREE}}}[{trend}], {horizon_hours} * 3600) < 0\n)",
        severity,  # type: ignore[arg-type]
        for_=for_,
        summary="{{ $labels.instance }}: "
        + f"{{{{ $labels.system_filesystem_mountpoint }}}} full within {horizon_hours}h",
        description=(
            "{{ $labels.system_filesystem_mountpoint }} ({{ $labels.system_device }}) on {{ $labels.instance }} has "
            "{{ $value | humanizePercentage }} free, and at the rate of the last "
            f"{trend} it runs out within {horizon_hours} hours."
        ),
        dashboard="system-resources",
        variables=HOST,
    )


def group(ctx: PackContext) -> RuleGroup:
    return RuleGroup(
        name="otel-monitoring-host",
        rules=[
            _disk_filling(ctx, "warning", 0.4, "6h", 24, "1h"),  # type: ignore[list-item]
            _disk_filling(ctx, "critical", 0.15, "1h", 4, "15m"),  # type: ignore[list-item]
            ctx.alert(
                "HostCPUSaturation",
                'sum by (job, instance) (rate(system_cpu_time_seconds_total{cpu_mode="idle"}[5m]))\n'
                "/\nsum by (job, instance) (rate(system_cpu_time_seconds_total[5m]))\n< 0.1",
                "warning",
                for_="15m",
                summary="{{ $labels.instance }}: CPU saturated",
                description=(
                    "The CPUs of {{ $labels.instance }} have been idle only {{ $value | humanizePercentage }} of the "
                    "time over 5 minutes, for 15 minutes: requests queue for CPU and latency grows."
                ),
                dashboard="system-resources",
                variables=HOST,
            ),
            ctx.alert(
                "HostMemorySaturation",
                "system_memory_linux_available_bytes / system_memory_limit_bytes < 0.1",
                "warning",
                for_="10m",
                summary="{{ $labels.instance }}: memory almost exhausted",
                description=(
                    "Only {{ $value | humanizePercentage }} of the memory of {{ $labels.instance }} is available "
                    "(MemAvailable): the kernel is about to swap or kill a process."
                ),
                dashboard="system-resources",
                variables=HOST,
            ),
        ],
    )
