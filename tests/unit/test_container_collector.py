"""Container metrics from fake cgroup v2 and v1 trees; Kubernetes requests, limits and resource attributes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from otel_monitoring.collectors.container import CgroupFiles, ContainerMetricsCollector, KubernetesMetricsCollector
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import create_resource

TESTDATA = Path(__file__).parent / "testdata" / "cgroup"
V2_CONTAINER = "sys/fs/cgroup/kubepods/pod-a/ctr-1"
V1_CPU = "sys/fs/cgroup/cpu,cpuacct/docker/ctr-1"
V1_MEMORY = "sys/fs/cgroup/memory/docker/ctr-1"


def keyed(path: Path) -> dict[str, int]:
    return {key: int(value) for key, value in (line.split() for line in path.read_text().splitlines())}


def number(path: Path) -> int:
    return int(path.read_text())


def collect(tree: Path) -> dict[str, float]:
    reader = InMemoryMetricReader()
    ContainerMetricsCollector(
        MeterProvider(metric_readers=[reader]), root=tree / "sys/fs/cgroup", proc_self_cgroup=tree / "proc_self_cgroup"
    )
    return single_values(reader.get_metrics_data())


def single_values(data: MetricsData | None) -> dict[str, float]:
    if data is None:
        return {}
    values: dict[str, float] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                [point] = metric.data.data_points  # type: ignore[union-attr]
                assert not point.attributes
                values[metric.name] = point.value  # type: ignore[union-attr]
    return values


@pytest.fixture
def v2_tree(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TESTDATA / "v2", tmp_path / "v2"))


@pytest.fixture
def v1_tree(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TESTDATA / "v1", tmp_path / "v1"))


def test_reads_cpu_throttling_memory_and_oom_kills_from_a_cgroup_v2_tree() -> None:
    container = TESTDATA / "v2" / V2_CONTAINER
    stat = keyed(container / "cpu.stat")
    quota, period = (int(part) for part in (container / "cpu.max").read_text().split())
    usage, limit = number(container / "memory.current"), number(container / "memory.max")

    values = collect(TESTDATA / "v2")

    assert values == {
        "container.cpu.time": pytest.approx(stat["usage_usec"] / 1e6),
        "container.cpu.throttled.time": pytest.approx(stat["throttled_usec"] / 1e6),
        "container.cpu.throttled.periods": stat["nr_throttled"],
        "container.cpu.periods": stat["nr_periods"],
        "container.cpu.limit": pytest.approx(quota / period),
        "container.memory.usage": usage,
        "container.memory.limit": limit,
        "container.memory.utilization": pytest.approx(usage / limit),
        "container.memory.oom.events": keyed(container / "memory.events")["oom_kill"],
    }


def test_reads_cpu_throttling_memory_and_oom_kills_from_a_cgroup_v1_tree() -> None:
    cpu, memory = TESTDATA / "v1" / V1_CPU, TESTDATA / "v1" / V1_MEMORY
    stat = keyed(cpu / "cpu.stat")
    usage, limit = number(memory / "memory.usage_in_bytes"), number(memory / "memory.limit_in_bytes")

    values = collect(TESTDATA / "v1")

    assert values == {
        "container.cpu.time": pytest.approx(number(cpu / "cpuacct.usage") / 1e9),
        "container.cpu.throttled.time": pytest.approx(stat["throttled_time"] / 1e9),
        "container.cpu.throttled.periods": stat["nr_throttled"],
        "container.cpu.periods": stat["nr_periods"],
        "container.cpu.limit": pytest.approx(number(cpu / "cpu.cfs_quota_us") / number(cpu / "cpu.cfs_period_us")),
        "container.memory.usage": usage,
        "container.memory.limit": limit,
        "container.memory.utilization": pytest.approx(usage / limit),
        "container.memory.oom.events": keyed(memory / "memory.oom_control")["oom_kill"],
    }


def test_detects_the_cgroup_version_of_each_tree() -> None:
    v2 = CgroupFiles(TESTDATA / "v2/sys/fs/cgroup", TESTDATA / "v2/proc_self_cgroup")
    v1 = CgroupFiles(TESTDATA / "v1/sys/fs/cgroup", TESTDATA / "v1/proc_self_cgroup")

    assert (v2.version, v1.version) == (2, 1)


def test_unlimited_v2_cgroup_reports_no_limit_and_no_utilization(v2_tree: Path) -> None:
    container = v2_tree / V2_CONTAINER
    (container / "cpu.max").write_text("max 100000\n")
    (container / "memory.max").write_text("max\n")

    values = collect(v2_tree)

    assert "container.cpu.limit" not in values
    assert "container.memory.limit" not in values
    assert "container.memory.utilization" not in values
    assert values["container.memory.usage"] == number(container / "memory.current")


def test_unlimited_v1_cgroup_reports_no_limit(v1_tree: Path) -> None:
    (v1_tree / V1_CPU / "cpu.cfs_quota_us").write_text("-1\n")
    (v1_tree / V1_MEMORY / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"

    values = collect(v1_tree)

    assert not {"container.cpu.limit", "container.memory.limit", "container.memory.utilization"} & set(values)
    assert values["container.cpu.periods"] == keyed(v1_tree / V1_CPU / "cpu.stat")["nr_periods"]


def test_a_missing_file_leaves_out_only_its_metrics(v2_tree: Path) -> None:
    (v2_tree / V2_CONTAINER / "memory.events").unlink()
    (v2_tree / V2_CONTAINER / "cpu.stat").write_text("usage_usec 42\n")  # no CFS bandwidth statistics

    values = collect(v2_tree)

    assert "container.memory.oom.events" not in values
    assert "container.cpu.periods" not in values
    assert values["container.cpu.time"] == pytest.approx(42 / 1e6)


def test_cgroup_namespace_mount_is_the_containers_own_cgroup(v2_tree: Path) -> None:
    # With a cgroup namespace /proc/self/cgroup says "0::/" and the mount is the container's cgroup itself.
    namespaced = v2_tree / "namespaced"
    shutil.copytree(v2_tree / V2_CONTAINER, namespaced)
    (namespaced / "cgroup.controllers").write_text("cpu memory\n")
    (v2_tree / "proc_self_cgroup").write_text("0::/\n")

    files = CgroupFiles(namespaced, v2_tree / "proc_self_cgroup")

    assert files.version == 2
    assert files.memory_usage() == number(namespaced / "memory.current")


def test_host_path_missing_below_the_mount_falls_back_to_the_mount(v1_tree: Path) -> None:
    # Docker without a cgroup namespace: /proc/self/cgroup names the host path, the mount is the container's cgroup.
    (v1_tree / "proc_self_cgroup").write_text("4:memory:/docker/other\n3:cpu,cpuacct:/docker/other\n")
    shutil.copytree(v1_tree / V1_MEMORY, v1_tree / "sys/fs/cgroup/memory", dirs_exist_ok=True)

    files = CgroupFiles(v1_tree / "sys/fs/cgroup", v1_tree / "proc_self_cgroup")

    assert files.memory_usage() == number(v1_tree / V1_MEMORY / "memory.usage_in_bytes")


def test_root_cgroup_is_not_a_container_and_registers_nothing(v2_tree: Path, v1_tree: Path) -> None:
    (v2_tree / "proc_self_cgroup").write_text("0::/\n")  # the v2 root has no cgroup.type
    (v1_tree / "proc_self_cgroup").write_text("4:memory:/\n3:cpu,cpuacct:/\n")
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]

    collectors = [
        ContainerMetricsCollector(
            MeterProvider(metric_readers=[reader]),
            root=tree / "sys/fs/cgroup",
            proc_self_cgroup=tree / "proc_self_cgroup",
        )
        for tree, reader in zip((v2_tree, v1_tree), readers, strict=True)
    ]

    assert [collector.cgroup_version for collector in collectors] == [None, None]
    assert [collector.instrument_names for collector in collectors] == [[], []]
    assert [single_values(reader.get_metrics_data()) for reader in readers] == [{}, {}]


def test_no_cgroup_mount_registers_nothing_and_never_raises(tmp_path: Path) -> None:
    collector = ContainerMetricsCollector(
        MeterProvider(), root=tmp_path / "missing", proc_self_cgroup=tmp_path / "missing-proc"
    )

    assert collector.cgroup_version is None
    assert collector.instrument_names == []


def test_files_vanishing_after_start_report_nothing_without_raising(v2_tree: Path) -> None:
    reader = InMemoryMetricReader()
    ContainerMetricsCollector(
        MeterProvider(metric_readers=[reader]),
        root=v2_tree / "sys/fs/cgroup",
        proc_self_cgroup=v2_tree / "proc_self_cgroup",
    )
    shutil.rmtree(v2_tree / V2_CONTAINER)

    assert single_values(reader.get_metrics_data()) == {}


def test_closed_container_collector_reports_nothing() -> None:
    reader = InMemoryMetricReader()
    collector = ContainerMetricsCollector(
        MeterProvider(metric_readers=[reader]),
        root=TESTDATA / "v2/sys/fs/cgroup",
        proc_self_cgroup=TESTDATA / "v2/proc_self_cgroup",
    )
    collector.close()

    assert single_values(reader.get_metrics_data()) == {}


def test_kubernetes_requests_and_limits_from_the_downward_api_are_reported_in_cores_and_bytes() -> None:
    # What resourceFieldRef emits for requests.cpu 250m and limits.cpu 2 (divisor 1m) and limits.memory
    # 512Mi (default divisor 1): whole numbers of the divisor, never "250m" or "512Mi".
    request_millicores, limit_millicores, memory_limit_bytes = 250, 2000, 512 * 2**20
    environ = {
        "K8S_CPU_REQUEST_MILLICORES": str(request_millicores),
        "K8S_CPU_LIMIT_MILLICORES": str(limit_millicores),
        "K8S_MEMORY_LIMIT": str(memory_limit_bytes),
    }
    settings = load_settings(environ=environ, strict=True)
    reader = InMemoryMetricReader()

    KubernetesMetricsCollector(MeterProvider(metric_readers=[reader]), settings.kubernetes)
    values = single_values(reader.get_metrics_data())

    assert values == {
        "k8s.container.cpu.request.desired": pytest.approx(request_millicores / 1000),
        "k8s.container.cpu.limit.desired": pytest.approx(limit_millicores / 1000),
        "k8s.container.memory.limit.desired": memory_limit_bytes,
    }


def test_kubernetes_without_requests_or_limits_registers_nothing() -> None:
    collector = KubernetesMetricsCollector(MeterProvider(), load_settings(environ={}).kubernetes)

    assert collector.instrument_names == []


def test_resource_carries_the_pod_from_the_downward_api_environment() -> None:
    environ: dict[str, Any] = {
        "K8S_POD_NAME": "api-7d9f-x2k",
        "K8S_NAMESPACE_NAME": "content",
        "K8S_NODE_NAME": "node-3",
        "K8S_CONTAINER_NAME": "api",
    }

    attributes = create_resource(load_settings(environ=environ)).attributes

    assert attributes["k8s.pod.name"] == environ["K8S_POD_NAME"]
    assert attributes["k8s.namespace.name"] == environ["K8S_NAMESPACE_NAME"]
    assert attributes["k8s.node.name"] == environ["K8S_NODE_NAME"]
    assert attributes["k8s.container.name"] == environ["K8S_CONTAINER_NAME"]
    assert "k8s.pod.name" not in create_resource(load_settings(environ={})).attributes
