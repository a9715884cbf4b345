"""System dashboards, USE for every resource (utilization, saturation, errors): ``system-overview``,
``system-resources`` (CPU, memory, disk, process, container, Kubernetes) and ``system-network``.

Metric names are those of docs/system-metrics.md (the system collector's semantic-convention names).
"""

from __future__ import annotations

from otel_monitoring.dashboards._panels import (
    ALERTS_FIRING,
    DashboardSpec,
    Query,
    Variable,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from otel_monitoring.rules.pack import recording

__all__ = ["network", "overview", "resources"]

AREA = "system"
HOST = 'job=~"$job", instance=~"$instance"'
RATE = "[$__rate_interval]"

VARIABLES = (
    Variable("job", "Service", "system_cpu_time_seconds_total", "job", "the scrape job of the process reporting"),
    Variable("instance", "Instance", 'system_cpu_time_seconds_total{job=~"$job"}', "instance"),
)
LINKS = ("system-overview", "system-resources", "system-network", "app-overview")
CPU_BUSY = f"{recording.CPU_BUSY_RECORD}{{{HOST}}}"
MEMORY_USED = f"1 - system_memory_linux_available_bytes{{{HOST}}} / system_memory_limit_bytes{{{HOST}}}"
FILESYSTEM_USED = f'1 - system_filesystem_utilization{{{HOST}, system_filesystem_state="free"}}'
CPUS = f'count by (job, instance) (system_cpu_time_seconds_total{{{HOST}, cpu_mode="idle"}})'
WARN_80_CRIT_90 = ((None, "green"), (0.8, "orange"), (0.9, "red"))


def overview() -> DashboardSpec:
    status = [
        stat_panel("Targets up", Query('sum(up{job=~"$job"})'), description="Scrape targets answering."),
        stat_panel(
            "Targets down",
            Query('count(up{job=~"$job"} == 0) or vector(0)'),
            thresholds=((None, "green"), (1, "red")),
        ),
        stat_panel("CPU busy", Query(f"avg({CPU_BUSY})"), unit="percentunit", thresholds=WARN_80_CRIT_90),
        stat_panel("Memory used", Query(f"max({MEMORY_USED})"), unit="percentunit", thresholds=WARN_80_CRIT_90),
        stat_panel(
            "Fullest filesystem",
            Query(f"max({FILESYSTEM_USED})"),
            unit="percentunit",
            thresholds=((None, "green"), (0.6, "orange"), (0.85, "red")),
            description="Used share (root's reserve included) of the fullest filesystem.",
        ),
        stat_panel(
            "Alerts firing",
            Query(f"count({ALERTS_FIRING}) or vector(0)"),
            thresholds=((None, "green"), (1, "red")),
            description="Every alert firing in Prometheus but the Watchdog, which always fires.",
        ),
    ]
    utilization = [
        timeseries_panel(
            "CPU busy", Query(CPU_BUSY, "{{instance}}"), unit="percentunit", min_value=0, max_value=1, width=8
        ),
        timeseries_panel(
            "Memory used", Query(MEMORY_USED, "{{instance}}"), unit="percentunit", min_value=0, max_value=1, width=8
        ),
        timeseries_panel(
            "Load per CPU (saturation)",
            Query(f"system_cpu_load_average_1m{{{HOST}}} / on (job, instance) {CPUS}", "{{instance}}"),
            description="1-minute load average over the number of CPUs: above 1, work waits for a CPU.",
            width=8,
        ),
        timeseries_panel(
            "Filesystems used",
            Query(FILESYSTEM_USED, "{{instance}} {{system_filesystem_mountpoint}}"),
            unit="percentunit",
            min_value=0,
            max_value=1,
        ),
        timeseries_panel(
            "Network throughput",
            Query(
                f"sum by (instance, network_io_direction) "
                f'(rate(system_network_io_bytes_total{{{HOST}, network_interface_name!="lo"}}{RATE}))',
                "{{instance}} {{network_io_direction}}",
            ),
            unit="Bps",
        ),
    ]
    alerts = [table_panel("Alerts firing", Query(ALERTS_FIRING), width=24, height=6)]
    return DashboardSpec(
        uid="system-overview",
        title="System overview",
        description="Hosts at a glance: targets, CPU, memory, disks and network (USE), and the alerts firing.",
        area=AREA,
        variables=VARIABLES,
        sections=[("Status", status), ("Utilization and saturation", utilization), ("Alerts", alerts)],
        links=LINKS,
    )


def resources() -> DashboardSpec:
    cpu = [
        timeseries_panel(
            "CPU time by mode",
            Query(
                f'sum by (instance, cpu_mode) (rate(system_cpu_time_seconds_total{{{HOST}, cpu_mode!="idle"}}{RATE}))',
                "{{instance}} {{cpu_mode}}",
            ),
            description="CPU-seconds per second (cores in use) by mode; idle left out.",
            stacked=True,
        ),
        timeseries_panel(
            "Load average (saturation)",
            Query(f"system_cpu_load_average_1m{{{HOST}}}", "{{instance}} 1m"),
            Query(f"system_cpu_load_average_15m{{{HOST}}}", "{{instance}} 15m"),
            Query(CPUS, "{{instance}} CPUs"),
        ),
    ]
    memory = [
        timeseries_panel(
            "Memory by state",
            Query(
                f"sum by (instance, system_memory_state) (system_memory_usage_bytes{{{HOST}}})",
                "{{instance}} {{system_memory_state}}",
            ),
            unit="bytes",
            stacked=True,
        ),
        timeseries_panel(
            "Available memory and swap used",
            Query(f"system_memory_linux_available_bytes{{{HOST}}}", "{{instance}} available"),
            Query(f'system_paging_usage_bytes{{{HOST}, system_paging_state="used"}}', "{{instance}} swap used"),
            unit="bytes",
        ),
    ]
    disk = [
        timeseries_panel(
            "Filesystems used",
            Query(FILESYSTEM_USED, "{{instance}} {{system_filesystem_mountpoint}}"),
            unit="percentunit",
            min_value=0,
            max_value=1,
            width=6,
        ),
        timeseries_panel(
            "Disk busy (utilization)",
            Query(f"rate(system_disk_io_time_seconds_total{{{HOST}}}{RATE})", "{{instance}} {{system_device}}"),
            unit="percentunit",
            description="Share of time the device had I/O in flight.",
            width=6,
        ),
        timeseries_panel(
            "Disk throughput",
            Query(
                "sum by (instance, system_device, disk_io_direction) "
                f"(rate(system_disk_io_bytes_total{{{HOST}}}{RATE}))",
                "{{instance}} {{system_device}} {{disk_io_direction}}",
            ),
            unit="Bps",
            width=6,
        ),
        timeseries_panel(
            "Disk operations",
            Query(
                f"sum by (instance, system_device) (rate(system_disk_operations_total{{{HOST}}}{RATE}))",
                "{{instance}} {{system_device}}",
            ),
            unit="iops",
            width=6,
        ),
    ]
    process = [
        timeseries_panel(
            "Process CPU",
            Query(f"sum by (instance) (rate(process_cpu_time_seconds_total{{{HOST}}}{RATE}))", "{{instance}}"),
            description="CPU-seconds per second used by the service's process.",
            width=6,
        ),
        timeseries_panel(
            "Process memory (RSS)",
            Query(f"process_memory_usage_bytes{{{HOST}}}", "{{instance}}"),
            unit="bytes",
            width=6,
        ),
        timeseries_panel(
            "Threads and file descriptors",
            Query(f"process_thread_count{{{HOST}}}", "{{instance}} threads"),
            Query(f"process_unix_file_descriptor_count{{{HOST}}}", "{{instance}} fds"),
            width=6,
        ),
        timeseries_panel(
            "Garbage collections",
            Query(
                f"sum by (instance, cpython_gc_generation) (rate(cpython_gc_collections_total{{{HOST}}}{RATE}))",
                "{{instance}} gen {{cpython_gc_generation}}",
            ),
            unit="ops",
            width=6,
        ),
    ]
    container = [
        timeseries_panel(
            "Container memory and limit",
            Query(f"container_memory_usage_bytes{{{HOST}}}", "{{instance}} used"),
            Query(f"container_memory_limit_bytes{{{HOST}}}", "{{instance}} limit"),
            unit="bytes",
            width=8,
        ),
        timeseries_panel(
            "Container CPU against its limit",
            Query(
                f"rate(container_cpu_time_seconds_total{{{HOST}}}{RATE}) / container_cpu_limit{{{HOST}}}",
                "{{instance}}",
            ),
            unit="percentunit",
            width=8,
        ),
        timeseries_panel(
            "CPU periods throttled (saturation)",
            Query(
                f"rate(container_cpu_throttled_periods_total{{{HOST}}}{RATE}) "
                f"/ rate(container_cpu_periods_total{{{HOST}}}{RATE})",
                "{{instance}}",
            ),
            unit="percentunit",
            width=8,
        ),
    ]
    kubernetes = [
        timeseries_panel(
            "CPU against request and limit",
            Query(f"rate(container_cpu_time_seconds_total{{{HOST}}}{RATE})", "{{instance}} used"),
            Query(f"k8s_container_cpu_request_desired{{{HOST}}}", "{{instance}} request"),
            Query(f"k8s_container_cpu_limit_desired{{{HOST}}}", "{{instance}} limit"),
        ),
        timeseries_panel(
            "Memory against request and limit",
            Query(f"container_memory_usage_bytes{{{HOST}}}", "{{instance}} used"),
            Query(f"k8s_container_memory_request_desired_bytes{{{HOST}}}", "{{instance}} request"),
            Query(f"k8s_container_memory_limit_desired_bytes{{{HOST}}}", "{{instance}} limit"),
            unit="bytes",
        ),
    ]
    errors = [
        timeseries_panel(
            "OOM kills",
            Query(f"increase(container_memory_oom_events_total{{{HOST}}}[$__range])", "{{instance}}"),
            description="Processes of the container killed by the OOM killer over the time range.",
            width=8,
        ),
        timeseries_panel(
            "Network errors and drops",
            Query(f"sum by (instance) (rate(system_network_errors_total{{{HOST}}}{RATE}))", "{{instance}} errors"),
            Query(
                f"sum by (instance) (rate(system_network_packet_dropped_total{{{HOST}}}{RATE}))", "{{instance}} drops"
            ),
            unit="pps",
            width=8,
        ),
        timeseries_panel(
            "Uncollectable objects",
            Query(
                f"sum by (instance) (increase(cpython_gc_uncollectable_objects_total{{{HOST}}}[$__range]))",
                "{{instance}}",
            ),
            description="Reference cycles the garbage collector could not free: a leak when it grows.",
            width=8,
        ),
    ]
    return DashboardSpec(
        uid="system-resources",
        title="System resources",
        description="Utilization, saturation and errors of CPU, memory, disks, the service's process, its container "
        "(cgroup) and its Kubernetes requests and limits.",
        area=AREA,
        variables=VARIABLES,
        sections=[
            ("CPU", cpu),
            ("Memory", memory),
            ("Disk", disk),
            ("Process", process),
            ("Container", container),
            ("Kubernetes", kubernetes),
            ("Errors", errors),
        ],
        links=LINKS,
    )


def network() -> DashboardSpec:
    traffic = [
        timeseries_panel(
            "Throughput by interface",
            Query(
                f"sum by (instance, network_interface_name, network_io_direction) "
                f"(rate(system_network_io_bytes_total{{{HOST}}}{RATE}))",
                "{{instance}} {{network_interface_name}} {{network_io_direction}}",
            ),
            unit="Bps",
        ),
        timeseries_panel(
            "Packets by interface",
            Query(
                f"sum by (instance, system_device, network_io_direction) "
                f"(rate(system_network_packet_count_total{{{HOST}}}{RATE}))",
                "{{instance}} {{system_device}} {{network_io_direction}}",
            ),
            unit="pps",
        ),
    ]
    saturation = [
        timeseries_panel(
            "TCP connections by state",
            Query(
                f"sum by (instance, network_connection_state) (system_network_connection_count{{{HOST}}}) > 0",
                "{{instance}} {{network_connection_state}}",
            ),
            description="States with at least one connection. Many time_wait: short-lived outgoing connections; "
            "close_wait growing: the process does not close sockets its peer closed.",
            width=8,
        ),
        timeseries_panel(
            "Errors by interface",
            Query(
                f"sum by (instance, network_interface_name) (rate(system_network_errors_total{{{HOST}}}{RATE}))",
                "{{instance}} {{network_interface_name}}",
            ),
            unit="pps",
            width=8,
        ),
        timeseries_panel(
            "Drops by interface",
            Query(
                "sum by (instance, network_interface_name) "
                f"(rate(system_network_packet_dropped_total{{{HOST}}}{RATE}))",
                "{{instance}} {{network_interface_name}}",
            ),
            unit="pps",
            width=8,
        ),
    ]
    probes = [
        timeseries_panel(
            "Probe latency (p95)",
            Query(
                "histogram_quantile(0.95, sum by (probe_target, le) "
                f"(rate(network_probe_duration_seconds_bucket{{{HOST}}}{RATE})))",
                "{{probe_target}}",
            ),
            unit="s",
            description="Connect time (tcp://) or time to response headers (http://) of each configured target.",
        ),
        timeseries_panel(
            "Probe failures",
            Query(
                f"sum by (probe_target, error_type) (rate(network_probe_failures_total{{{HOST}}}{RATE}))",
                "{{probe_target}} {{error_type}}",
            ),
            unit="ops",
        ),
    ]
    calls = [
        timeseries_panel(
            "Outgoing calls by host",
            Query(f'{recording.CALL_RATE_RECORD}{{job=~"$job"}}', "{{job}} → {{server_address}}"),
            unit="reqps",
        ),
        timeseries_panel(
            "Outgoing call latency by host (p95)",
            Query(f'{recording.CALL_QUANTILE_RECORD}{{job=~"$job", quantile="0.95"}}', "{{job}} → {{server_address}}"),
            unit="s",
        ),
    ]
    return DashboardSpec(
        uid="system-network",
        title="System network",
        description="Traffic, errors and drops per interface, TCP connection states, reachability probes and the "
        "service's outgoing calls per host.",
        area=AREA,
        variables=VARIABLES,
        sections=[
            ("Traffic", traffic),
            ("Saturation and errors", saturation),
            ("Reachability probes", probes),
            ("Outgoing calls", calls),
        ],
        links=LINKS,
    )
