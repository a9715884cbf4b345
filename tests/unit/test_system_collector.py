"""System and process metrics: semantic-convention names, one read per source per collection, groups, wiring."""

from __future__ import annotations

import errno
import gc
import json
import os
import socket
import subprocess
import sys
from collections import Counter, namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring.collectors.system import (
    PROCESS_GROUPS,
    CollectionCache,
    SystemMetricsCollector,
    SystemMetricsInstrumentor,
    install_system_metrics,
)
from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry, set_telemetry, shutdown_telemetry

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
VirtualMemory = namedtuple("VirtualMemory", "total available used free buffers cached")
Swap = namedtuple("Swap", "total used free sin sout")
Partition = namedtuple("Partition", "device mountpoint fstype opts")
Usage = namedtuple("Usage", "total used free")
DiskIO = namedtuple("DiskIO", "read_count write_count read_bytes write_bytes read_time write_time busy_time")
NetIO = namedtuple("NetIO", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")
ProcessTimes = namedtuple("ProcessTimes", "user system")
ProcessMemory = namedtuple("ProcessMemory", "rss vms")
Connection = namedtuple("Connection", "status")


class FakeProcess:
    def __init__(self, host: FakePsutil) -> None:
        self.host = host

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def cpu_times(self) -> ProcessTimes:
        self.host.calls["Process.cpu_times"] += 1
        return self.host.process_times

    def memory_info(self) -> ProcessMemory:
        return ProcessMemory(rss=50_000_000, vms=400_000_000)

    def num_threads(self) -> int:
        return 7

    def num_fds(self) -> int:
        return 12

    def create_time(self) -> float:
        return 1000.0


class FakePsutil:
    """psutil's functions with fixed figures, counting how often each is called."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.cpus = [
            CpuTimes(100.0, 1.0, 20.0, 800.0, 4.0, 2.0, 3.0, 0.5, 9.0, 0.0),
            CpuTimes(50.0, 0.0, 10.0, 900.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0),
        ]
        self.memory = VirtualMemory(total=16_000, available=9_000, used=7_000, free=6_000, buffers=1_000, cached=2_000)
        self.process_times = ProcessTimes(user=3.0, system=1.0)
        self.partitions = [
            Partition("/dev/sda1", "/", "ext4", "rw,relatime"),
            Partition("proc", "/proc", "proc", "rw"),
            Partition("tmpfs", "/dev/shm", "tmpfs", "rw"),
            Partition("/dev/sda1", "/etc/hosts", "ext4", "rw"),  # a bind mount of the same filesystem
            Partition("/dev/sdb1", "/data", "xfs", "ro,noatime"),
        ]
        self.usages = {"/": Usage(1_000, 600, 350), "/data": Usage(2_000, 500, 1_500)}

    def cpu_times(self, percpu: bool = False) -> Any:
        self.calls["cpu_times"] += 1
        return list(self.cpus) if percpu else self.cpus[0]

    def cpu_count(self) -> int:
        return 2

    def getloadavg(self) -> tuple[float, float, float]:
        self.calls["getloadavg"] += 1
        return (0.5, 0.25, 0.125)

    def virtual_memory(self) -> VirtualMemory:
        self.calls["virtual_memory"] += 1
        return self.memory

    def swap_memory(self) -> Swap:
        self.calls["swap_memory"] += 1
        return Swap(total=4_000, used=1_000, free=3_000, sin=0, sout=0)

    def disk_partitions(self, all: bool = False) -> list[Partition]:
        self.calls["disk_partitions"] += 1
        return self.partitions

    def disk_usage(self, path: str) -> Usage:
        self.calls["disk_usage"] += 1
        return self.usages[path]

    def disk_io_counters(self, perdisk: bool = False) -> dict[str, DiskIO]:
        self.calls["disk_io_counters"] += 1
        return {"sda": DiskIO(10, 20, 4096, 8192, 1500, 2500, 3000), "loop0": DiskIO(1, 1, 1, 1, 1, 1, 1)}

    def net_io_counters(self, pernic: bool = False) -> dict[str, NetIO]:
        self.calls["net_io_counters"] += 1
        return {"eth0": NetIO(1000, 2000, 10, 20, 1, 2, 3, 4)}

    def net_connections(self, kind: str = "inet") -> list[Connection]:
        self.calls["net_connections"] += 1
        return [Connection("ESTABLISHED"), Connection("ESTABLISHED"), Connection("LISTEN"), Connection("NONE")]

    def Process(self, pid: int | None = None) -> FakeProcess:
        self.calls["Process"] += 1
        return FakeProcess(self)


def points(data: MetricsData | None, name: str) -> list[tuple[dict[str, Any], float]]:
    assert data is not None
    return [
        (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def metric_names(data: MetricsData | None) -> set[str]:
    if data is None:
        return set()
    return {metric.name for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics}


def fake_collector(
    groups: tuple[str, ...] = PROCESS_GROUPS, readers: int = 1, **options: Any
) -> tuple[FakePsutil, list[InMemoryMetricReader], SystemMetricsCollector]:
    fake = FakePsutil()
    in_memory = [InMemoryMetricReader() for _ in range(readers)]
    options.setdefault("use_netlink", False)
    options.setdefault("procfs", "/nonexistent-procfs")
    collector = SystemMetricsCollector(MeterProvider(metric_readers=in_memory), groups, psutil_module=fake, **options)
    return fake, in_memory, collector


def test_reads_every_source_once_per_collection_whatever_the_number_of_readers() -> None:
    fake, (first, second), _ = fake_collector(readers=2)

    for _ in range(3):
        first.get_metrics_data()
        second.get_metrics_data()

    collections = 6
    for source in ("cpu_times", "getloadavg", "virtual_memory", "swap_memory", "disk_partitions",
                   "disk_io_counters", "net_io_counters", "net_connections", "Process.cpu_times"):  # fmt: skip
        assert fake.calls[source] == collections, source
    assert fake.calls["disk_usage"] == collections * len(fake.usages)
    assert fake.calls["Process"] == 1  # the process handle is kept while the pid stays the same


def test_a_callback_called_again_starts_a_new_collection() -> None:
    cache = CollectionCache()
    reads = iter(range(10))

    cache.begin("a")
    first = cache.get("source", lambda: next(reads))
    cache.begin("b")
    shared = cache.get("source", lambda: next(reads))
    cache.begin("a")
    second = cache.get("source", lambda: next(reads))

    assert (first, shared, second) == (0, 0, 1)


def test_a_group_that_is_off_registers_nothing() -> None:
    _, (reader,), collector = fake_collector(groups=("memory",))

    names = metric_names(reader.get_metrics_data())

    assert names == set(collector.instrument_names)
    assert {"system.memory.usage", "system.paging.usage"} <= names
    assert not {name for name in names if name.startswith(("system.cpu", "system.disk", "process.", "cpython."))}


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="gpu"):
        SystemMetricsCollector(MeterProvider(), ["gpu"], psutil_module=FakePsutil())


def test_cpu_time_per_mode_and_logical_cpu_folds_irq_and_softirq_into_interrupt() -> None:
    fake, (reader,), _ = fake_collector(groups=("cpu",))

    cpu_time = dict(
        ((a["cpu.logical_number"], a["cpu.mode"]), v) for a, v in points(reader.get_metrics_data(), "system.cpu.time")
    )

    first = fake.cpus[0]
    assert cpu_time[(0, "user")] == first.user
    assert cpu_time[(0, "interrupt")] == first.irq + first.softirq
    assert cpu_time[(0, "steal")] == first.steal
    assert len(cpu_time) == len(fake.cpus) * 7  # user nice system idle iowait interrupt steal; guest is in user


def test_cpu_utilization_is_the_share_of_each_mode_since_the_previous_collection() -> None:
    fake, (reader,), _ = fake_collector(groups=("cpu",))
    reader.get_metrics_data()
    before = fake.cpus[0]
    fake.cpus[0] = before._replace(user=before.user + 3.0, idle=before.idle + 1.0)

    utilization = {
        a["cpu.mode"]: v
        for a, v in points(reader.get_metrics_data(), "system.cpu.utilization")
        if a["cpu.logical_number"] == 0
    }

    assert utilization["user"] == pytest.approx(3.0 / 4.0)
    assert utilization["idle"] == pytest.approx(1.0 / 4.0)
    assert utilization["system"] == 0


def test_load_average_uses_the_hostmetrics_receiver_names() -> None:
    fake, (reader,), _ = fake_collector(groups=("cpu",))
    data = reader.get_metrics_data()

    loads = [points(data, f"system.cpu.load_average.{window}")[0][1] for window in ("1m", "5m", "15m")]

    assert loads == list(fake.getloadavg())


def test_cpu_without_per_cpu_reports_one_series_per_mode() -> None:
    _, (reader,), _ = fake_collector(groups=("cpu",), per_cpu=False)

    cpu_time = points(reader.get_metrics_data(), "system.cpu.time")

    assert all(set(attributes) == {"cpu.mode"} for attributes, _ in cpu_time)
    assert len(cpu_time) == 7


def test_memory_states_add_up_to_the_total_and_utilization_divides_by_it() -> None:
    fake, (reader,), _ = fake_collector(groups=("memory",))
    data = reader.get_metrics_data()

    usage = {a["system.memory.state"]: v for a, v in points(data, "system.memory.usage")}
    utilization = {a["system.memory.state"]: v for a, v in points(data, "system.memory.utilization")}

    memory = fake.memory
    assert sum(usage.values()) == memory.total
    assert usage["used"] == memory.total - memory.free - memory.buffers - memory.cached
    assert utilization["cached"] == pytest.approx(memory.cached / memory.total)
    assert points(data, "system.memory.limit") == [({}, memory.total)]


def test_swap_usage_and_utilization_by_state() -> None:
    fake, (reader,), _ = fake_collector(groups=("memory",))
    data = reader.get_metrics_data()

    swap = fake.swap_memory()
    assert {a["system.paging.state"]: v for a, v in points(data, "system.paging.usage")} == {
        "used": swap.used,
        "free": swap.free,
    }
    assert {a["system.paging.state"]: v for a, v in points(data, "system.paging.utilization")}["used"] == (
        pytest.approx(swap.used / swap.total)
    )


def test_filesystems_skip_pseudo_filesystems_and_bind_mounts_and_report_used_free_reserved() -> None:
    fake, (reader,), _ = fake_collector(groups=("filesystem",))
    data = reader.get_metrics_data()

    usage = {
        (a["system.filesystem.mountpoint"], a["system.filesystem.state"]): v
        for a, v in points(data, "system.filesystem.usage")
    }

    assert {mountpoint for mountpoint, _ in usage} == {"/", "/data"}
    root = fake.usages["/"]
    assert usage[("/", "used")] == root.used
    assert usage[("/", "reserved")] == root.total - root.used - root.free
    data_attributes = next(a for a, _ in points(data, "system.filesystem.limit") if a["system.device"] == "/dev/sdb1")
    assert data_attributes["system.filesystem.mode"] == "ro"
    assert data_attributes["system.filesystem.type"] == "xfs"
    utilization = {
        a["system.filesystem.mountpoint"]: v
        for a, v in points(data, "system.filesystem.utilization")
        if a["system.filesystem.state"] == "used"
    }
    assert utilization["/data"] == pytest.approx(fake.usages["/data"].used / fake.usages["/data"].total)


@pytest.mark.parametrize("fstype", ["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p", "ceph", "glusterfs"])
def test_filesystems_never_stat_remote_mounts_whose_server_may_hang(fstype: str) -> None:
    fake = FakePsutil()
    fake.partitions.append(Partition("server:/export", "/mnt/shared", fstype, "rw"))
    stat_calls: list[str] = []
    local_usage = fake.disk_usage

    def disk_usage(path: str) -> Usage:
        stat_calls.append(path)
        if path == "/mnt/shared":
            raise AssertionError("statvfs on a remote filesystem would block on a dead server")
        return local_usage(path)

    fake.disk_usage = disk_usage  # type: ignore[method-assign]
    reader = InMemoryMetricReader()
    SystemMetricsCollector(MeterProvider(metric_readers=[reader]), ["filesystem"], psutil_module=fake)

    mountpoints = {
        a["system.filesystem.mountpoint"] for a, _ in points(reader.get_metrics_data(), "system.filesystem.limit")
    }

    assert mountpoints == {"/", "/data"}
    assert "/mnt/shared" not in stat_calls and stat_calls


def test_disk_io_by_device_and_direction_in_bytes_operations_and_seconds() -> None:
    fake, (reader,), _ = fake_collector(groups=("disk",))
    data = reader.get_metrics_data()
    sda = fake.disk_io_counters()["sda"]

    def by_direction(name: str) -> dict[tuple[str, str], float]:
        return {(a["system.device"], a["disk.io.direction"]): v for a, v in points(data, name)}

    assert by_direction("system.disk.io") == {("sda", "read"): sda.read_bytes, ("sda", "write"): sda.write_bytes}
    assert by_direction("system.disk.operations")[("sda", "write")] == sda.write_count
    assert by_direction("system.disk.operation_time")[("sda", "read")] == pytest.approx(sda.read_time / 1000)
    assert points(data, "system.disk.io_time") == [({"system.device": "sda"}, pytest.approx(sda.busy_time / 1000))]


def test_network_counters_per_interface_and_direction() -> None:
    fake, (reader,), _ = fake_collector(groups=("network",))
    data = reader.get_metrics_data()
    eth0 = fake.net_io_counters()["eth0"]

    io = {a["network.io.direction"]: v for a, v in points(data, "system.network.io")}
    dropped = {a["network.io.direction"]: v for a, v in points(data, "system.network.packet.dropped")}
    packets = points(data, "system.network.packet.count")

    assert io == {"transmit": eth0.bytes_sent, "receive": eth0.bytes_recv}
    assert dropped == {"transmit": eth0.dropout, "receive": eth0.dropin}
    assert ({"system.device": "eth0", "network.io.direction": "receive"}, eth0.packets_recv) in packets
    errors = {a["network.io.direction"]: v for a, v in points(data, "system.network.errors")}
    assert errors == {"transmit": eth0.errout, "receive": eth0.errin}


def test_tcp_connections_by_state_from_proc_net_tcp(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = {"0A": 2, "01": 3, "06": 1}  # listen, established, time_wait
    lines = [f"   {i}: 0100007F:1F90 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000 0 1 1"
             for i, state in enumerate(s for s, n in rows.items() for _ in range(n))]  # fmt: skip
    (tmp_path / "net" / "tcp").write_text(header + "\n".join(lines) + "\n")
    (tmp_path / "net" / "tcp6").write_text(header)
    _, (reader,), _ = fake_collector(groups=("tcp",), procfs=tmp_path)

    counts = {
        a["network.connection.state"]: v
        for a, v in points(reader.get_metrics_data(), "system.network.connection.count")
    }

    assert (counts["listen"], counts["established"], counts["time_wait"]) == (rows["0A"], rows["01"], rows["06"])
    assert counts["close_wait"] == 0  # every state is reported, so a series never disappears


def test_tcp_connections_fall_back_to_psutil_without_procfs() -> None:
    _, (reader,), _ = fake_collector(groups=("tcp",))

    points_ = points(reader.get_metrics_data(), "system.network.connection.count")

    counts = {a["network.connection.state"]: v for a, v in points_}
    assert (counts["established"], counts["listen"]) == (2, 1)
    assert all(a["network.transport"] == "tcp" for a, _ in points_)


def proc_net_tcp(procfs: Path, states: list[str]) -> Path:
    (procfs / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    lines = [f"   {i}: 0100007F:1F90 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000 0 1 1"
             for i, state in enumerate(states)]  # fmt: skip
    (procfs / "net" / "tcp").write_text(header + "\n".join(lines) + "\n")
    (procfs / "net" / "tcp6").write_text(header)
    return procfs


class FlakyNetlink:
    """A sock_diag query that fails with ``failures`` in turn, then reports ``states``; counts its calls."""

    def __init__(self, failures: list[OSError], states: list[int]) -> None:
        self.failures = failures
        self.states = states
        self.calls = 0

    def __call__(self) -> Iterator[int]:
        self.calls += 1
        yield self.states[0]  # a failure can come after some records: they must not be counted twice
        if self.failures:
            raise self.failures.pop(0)
        yield from self.states[1:]


def established_and_listening(reader: InMemoryMetricReader) -> tuple[float, float]:
    counts = {
        a["network.connection.state"]: v
        for a, v in points(reader.get_metrics_data(), "system.network.connection.count")
    }
    return counts["established"], counts["listen"]


def test_a_transient_netlink_failure_reads_proc_once_and_netlink_again_next_time(tmp_path: Path) -> None:
    procfs = proc_net_tcp(tmp_path, ["01", "0A", "0A"])  # 1 established, 2 listening
    netlink = FlakyNetlink([OSError(errno.ENOBUFS, "No buffer space available")], [1, 1, 1, 10])
    _, (reader,), _ = fake_collector(groups=("tcp",), procfs=procfs, use_netlink=True, netlink_reader=netlink)

    assert established_and_listening(reader) == (1, 2)  # from /proc/net/tcp
    assert established_and_listening(reader) == (3, 1)  # from netlink again
    assert netlink.calls == 2


@pytest.mark.parametrize("code", [errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EACCES, errno.EPERM])
def test_netlink_that_is_not_supported_or_permitted_is_never_tried_again(tmp_path: Path, code: int) -> None:
    procfs = proc_net_tcp(tmp_path, ["01", "0A", "0A"])
    netlink = FlakyNetlink([OSError(code, os.strerror(code))], [1, 1, 1, 10])
    _, (reader,), _ = fake_collector(groups=("tcp",), procfs=procfs, use_netlink=True, netlink_reader=netlink)

    assert [established_and_listening(reader) for _ in range(3)] == [(1, 2)] * 3
    assert netlink.calls == 1


def test_tcp_connections_counted_over_netlink_see_real_sockets() -> None:
    if not hasattr(socket, "AF_NETLINK"):
        pytest.skip("sock_diag is Linux only")
    reader = InMemoryMetricReader()
    SystemMetricsCollector(MeterProvider(metric_readers=[reader]), ["tcp"])
    baseline = {
        a["network.connection.state"]: v
        for a, v in points(reader.get_metrics_data(), "system.network.connection.count")
    }

    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            counts = {
                a["network.connection.state"]: v
                for a, v in points(reader.get_metrics_data(), "system.network.connection.count")
            }
        finally:
            client.close()
            accepted.close()

    assert counts["listen"] >= baseline["listen"] + 1
    assert counts["established"] >= baseline["established"] + 2  # both ends of the loopback connection


def test_process_metrics_from_one_snapshot() -> None:
    fake, (reader,), _ = fake_collector(groups=("process",), clock=lambda: 1010.0)
    data = reader.get_metrics_data()

    cpu_time = {a["cpu.mode"]: v for a, v in points(data, "process.cpu.time")}
    assert cpu_time == {"user": fake.process_times.user, "system": fake.process_times.system}
    assert points(data, "process.memory.usage") == [({}, 50_000_000)]
    assert points(data, "process.memory.virtual") == [({}, 400_000_000)]
    assert points(data, "process.thread.count") == [({}, 7)]
    assert points(data, "process.unix.file_descriptor.count") == [({}, 12)]
    assert fake.calls["Process.cpu_times"] == 1


def test_process_cpu_utilization_over_elapsed_time_and_available_cpus() -> None:
    now = [1010.0]
    fake, (reader,), collector = fake_collector(groups=("process",), clock=lambda: now[0])
    cpus = collector._available_cpus
    reader.get_metrics_data()  # from process start (1000.0) to 1010.0
    fake.process_times = fake.process_times._replace(user=fake.process_times.user + 0.5)
    now[0] += 2.0

    utilization = {a["cpu.mode"]: v for a, v in points(reader.get_metrics_data(), "process.cpu.utilization")}

    assert utilization["user"] == pytest.approx(0.5 / (2.0 * cpus))
    assert utilization["system"] == 0


def test_gc_collections_per_generation_match_the_interpreter() -> None:
    _, (reader,), _ = fake_collector(groups=("process",))
    gc.collect()

    collections = {
        a["cpython.gc.generation"]: v for a, v in points(reader.get_metrics_data(), "cpython.gc.collections")
    }

    stats = gc.get_stats()
    assert set(collections) == set(range(len(stats)))
    assert collections[2] == stats[2]["collections"]  # no full collection ran in between


def test_closed_collector_reports_nothing_and_reopens() -> None:
    _, (reader,), collector = fake_collector(groups=("memory",))
    collector.close()
    silent = metric_names(reader.get_metrics_data())
    collector.reopen()

    assert silent == set()
    assert "system.memory.usage" in metric_names(reader.get_metrics_data())


def test_a_failing_source_reports_nothing_and_the_others_still_report(caplog: pytest.LogCaptureFixture) -> None:
    fake, (reader,), _ = fake_collector(groups=("memory",))

    def broken() -> None:
        raise PermissionError("no /proc/meminfo")

    fake.swap_memory = broken  # type: ignore[method-assign,assignment]
    data = reader.get_metrics_data()
    reader.get_metrics_data()

    assert points(data, "system.paging.usage") == []
    assert points(data, "system.memory.usage")
    assert sum("swap_memory" in record.getMessage() for record in caplog.records) == 1  # logged once


def test_prometheus_exposition_has_translated_names_with_real_values() -> None:
    telemetry = Telemetry(load_settings(environ={}), MetricsRegistry(), start_exporters=False)
    try:
        SystemMetricsCollector(telemetry.meter_provider)
        text = render_exposition(telemetry.prometheus_registry, None, None)[0].decode()
    finally:
        telemetry.shutdown()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    for name in ("system_cpu_time_seconds_total", "system_cpu_load_average_1m", "system_network_io_bytes_total",
                 "system_filesystem_usage_bytes", "system_network_connection_count",
                 "process_cpu_time_seconds_total", "process_thread_count", "cpython_gc_collections_total"):  # fmt: skip
        assert name in samples, f"{name} not in {sorted(samples)}"
    [(_, rss)] = samples["process_memory_usage_bytes"]
    assert rss > 0
    memory = {labels["system_memory_state"]: value for labels, value in samples["system_memory_usage_bytes"]}
    assert sum(memory.values()) == pytest.approx(psutil.virtual_memory().total, rel=0.01)
    utilization = sum(value for _, value in samples["system_memory_utilization"])
    assert utilization == pytest.approx(1.0, rel=0.01)


def test_install_starts_the_groups_the_settings_ask_for_and_stop_silences_them(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    settings = load_settings(
        environ={"OTEL_MONITORING_SYSTEM_METRICS": "memory,process,kubernetes", "K8S_MEMORY_LIMIT": "1Gi"}
    )
    handle = install_system_metrics(MeterProvider(metric_readers=[reader]), settings, registry=MetricsRegistry())
    names = metric_names(reader.get_metrics_data())
    handle.stop()
    after_stop = metric_names(reader.get_metrics_data())

    assert {"system.memory.usage", "process.memory.usage", "k8s.container.memory.limit.desired"} <= names
    assert not {name for name in names if name.startswith(("system.cpu", "system.disk", "container."))}
    assert handle.probe is None  # no probe targets configured
    assert after_stop == set()


def test_install_with_probe_targets_starts_and_stops_the_probe() -> None:
    settings = load_settings(
        environ={"OTEL_MONITORING_SYSTEM_METRICS": "none", "OTEL_MONITORING_PROBE_TARGETS": "db=tcp://127.0.0.1:9"}
    )
    handle = install_system_metrics(MeterProvider(), settings, registry=MetricsRegistry(), start_probes=False)

    assert handle.collectors == []
    assert handle.probe is not None
    assert [target.name for target in handle.probe.targets] == ["db"]
    handle.stop()
    assert not handle.probe.running


def test_instrumentor_installs_once_uninstruments_to_silence_and_instruments_again() -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(load_settings(environ={}), MetricsRegistry(), extra_readers=[reader], start_exporters=False)
    set_telemetry(telemetry)
    instrumentor = SystemMetricsInstrumentor()
    try:
        instrumentor.instrument()
        instrumentor.instrument()  # a second call is a no-op
        on = metric_names(reader.get_metrics_data())
        instrumentor.uninstrument()
        off = metric_names(reader.get_metrics_data())
        instrumentor.instrument()
        again = metric_names(reader.get_metrics_data())
    finally:
        instrumentor.uninstrument()
        shutdown_telemetry()

    assert "process.memory.usage" in on
    assert not {name for name in off if name.startswith(("system.", "process.", "cpython."))}
    assert "process.memory.usage" in again
    assert tuple(instrumentor.instrumentation_dependencies()) == ("psutil >= 5.9",)


_FORK_SCRIPT = """
import json, os, signal, sys, time
import psutil
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from otel_monitoring.collectors.system import SystemMetricsCollector

handles = []

class RecordingPsutil:
    def __getattr__(self, name):
        return getattr(psutil, name)

    def Process(self, pid=None):
        handles.append(pid)
        return psutil.Process(pid)

reader = InMemoryMetricReader()
SystemMetricsCollector(MeterProvider(metric_readers=[reader]), ["process"], psutil_module=RecordingPsutil())
reader.get_metrics_data()
pid = os.fork()
if pid == 0:
    reader.get_metrics_data()
    with open(sys.argv[1], "w") as out:
        json.dump({"handles": handles, "parent": os.getppid(), "child": os.getpid()}, out)
    os._exit(0)
deadline = time.monotonic() + 30
while os.waitpid(pid, os.WNOHANG) == (0, 0):
    if time.monotonic() > deadline:  # never leave a stuck child behind
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.exit("the forked child did not finish")
    time.sleep(0.01)
"""


def test_forked_child_reports_its_own_pid_not_the_parent(tmp_path: Path) -> None:
    # In a fresh interpreter: forking the test process, with other tests' threads, could copy a held lock.
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    result = tmp_path / "result.json"

    done = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, str(result)], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    outcome = json.loads(result.read_text())
    assert outcome["handles"] == [outcome["parent"], outcome["child"]]  # the child made a psutil.Process of its own


def test_embedded_mode_pipeline_measures_the_process_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_monitoring import config
    from otel_monitoring.exporter import render_exposition
    from otel_monitoring.telemetry import get_telemetry

    expositions = {}
    for groups in ("process", "none"):
        monkeypatch.setenv("OTEL_MONITORING_SYSTEM_METRICS", groups)
        config.reload_settings()
        try:
            body, _ = render_exposition(get_telemetry().prometheus_registry, None, None)
            expositions[groups] = body.decode()
        finally:
            shutdown_telemetry()
    monkeypatch.delenv("OTEL_MONITORING_SYSTEM_METRICS")
    config.reload_settings()

    assert "process_memory_usage_bytes" in expositions["process"]
    assert "system_cpu_time_seconds_total" not in expositions["process"]
    assert "process_memory_usage_bytes" not in expositions["none"]
