"""Container resources from this process's cgroup (v2, and v1), and the pod's Kubernetes requests and limits.

The cgroup is found from ``/proc/self/cgroup`` under the cgroup mount (``/sys/fs/cgroup``); both paths are
constructor arguments so tests read a fake tree. Files are read when a reader collects, each once per
collection. Outside a container (the root cgroup) or where a file is missing, nothing is reported and
nothing raises. Kernel interface: https://docs.kernel.org/admin-guide/cgroup-v2.html and
https://docs.kernel.org/admin-guide/cgroup-v1/ (cpuacct, cfs bandwidth, memory).

``container.cpu.time`` and ``container.memory.usage`` are semantic-convention names
(https://opentelemetry.io/docs/specs/semconv/system/container-metrics/); the throttling, limit, utilization
and OOM metrics have no convention yet and are ours, named in the same namespace (docs/system-metrics.md).

>>> from opentelemetry.sdk.metrics import MeterProvider
>>> collector = ContainerMetricsCollector(MeterProvider(), root="/nonexistent")
>>> collector.cgroup_version is None, collector.instrument_names
(True, [])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from opentelemetry.metrics import MeterProvider, Observation

from otel_monitoring.collectors.system import ObservableCollector
from otel_monitoring.settings import KubernetesConfig

__all__ = ["CgroupFiles", "ContainerMetricsCollector", "KubernetesMetricsCollector"]

_logger = logging.getLogger(__name__)

# cgroup v1 reports "no memory limit" as PAGE_COUNTER_MAX rounded to pages (9223372036854771712 on x86-64).
_V1_UNLIMITED_MEMORY = 2**62
_V1_CPU_DIRECTORIES = ("cpu,cpuacct", "cpuacct,cpu", "cpu")
_V1_CPUACCT_DIRECTORIES = ("cpu,cpuacct", "cpuacct,cpu", "cpuacct")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (``cpu.stat``, ``memory.events``): one ``key value`` per line."""
    text = _read_text(path)
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


class CgroupFiles:
    """Where this process's cgroup files are, and what they say, for cgroup v2 or v1.

    ``version`` is 2, 1 or None (no cgroup mount, or this process is in the root cgroup: not in a container).

    >>> CgroupFiles("/nonexistent").version is None
    True
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/sys/fs/cgroup",
        proc_self_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
    ) -> None:
        self.root = Path(root)
        self.version: int | None = None
        self._v2: Path | None = None
        self._v1: dict[str, Path] = {}
        paths = self._membership(Path(proc_self_cgroup))
        if (self.root / "cgroup.controllers").exists():
            directory = self._below(self.root, paths.get("", "/"))
            # The root cgroup has no cgroup.type: its cpu.stat would be the whole host's.
            if (directory / "cgroup.type").exists():
                self.version, self._v2 = 2, directory
        else:
            for controller, candidates in (
                ("cpu", _V1_CPU_DIRECTORIES),
                ("cpuacct", _V1_CPUACCT_DIRECTORIES),
                ("memory", ("memory",)),
            ):
                path = paths.get(controller, "/")
                mount = next((self.root / name for name in candidates if (self.root / name).is_dir()), None)
                # At "/" this process is in the hierarchy's root: the host's figures, not a container's.
                if mount is not None and path != "/":
                    self._v1[controller] = self._below(mount, path)
            if self._v1:
                self.version = 1

    @staticmethod
    def _membership(proc_self_cgroup: Path) -> dict[str, str]:
        """Controller -> cgroup path, from ``hierarchy-id:controllers:path`` lines; cgroup v2 is under ''."""
        paths: dict[str, str] = {}
        for line in (_read_text(proc_self_cgroup) or "").splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, path = parts
            if parts[0] == "0" and not controllers:
                paths[""] = path
            for controller in controllers.split(","):
                if controller:
                    paths[controller] = path
        return paths

    @staticmethod
    def _below(mount: Path, path: str) -> Path:
        # Inside a container the mount usually is the container's own cgroup already (a cgroup namespace,
        # or a bind mount of it), and the host path from /proc/self/cgroup does not exist below it.
        directory = mount / path.lstrip("/")
        return directory if path not in ("", "/") and directory.is_dir() else mount

    # -- readings --------------------------------------------------------------------------------------

    def cpu_usage_seconds(self) -> float | None:
        if self._v2 is not None:
            usage = _read_keyed(self._v2 / "cpu.stat").get("usage_usec")
            return None if usage is None else usage / 1e6
        if "cpuacct" in self._v1:
            nanoseconds = _read_int(self._v1["cpuacct"] / "cpuacct.usage")
            return None if nanoseconds is None else nanoseconds / 1e9
        return None

    def cpu_throttling(self) -> tuple[int, int, float] | None:
        """(periods, throttled periods, throttled seconds) of the CFS bandwidth controller."""
        if self._v2 is not None:
            stat = _read_keyed(self._v2 / "cpu.stat")
            throttled = stat.get("throttled_usec")
            scale = 1e6
        elif "cpu" in self._v1:
            stat = _read_keyed(self._v1["cpu"] / "cpu.stat")
            throttled = stat.get("throttled_time")
            scale = 1e9
        else:
            return None
        periods, throttled_periods = stat.get("nr_periods"), stat.get("nr_throttled")
        if periods is None or throttled_periods is None or throttled is None:
            return None
        return periods, throttled_periods, throttled / scale

    def cpu_limit(self) -> float | None:
        """The CPU quota in cores; None when unlimited."""
        if self._v2 is not None:
            text = _read_text(self._v2 / "cpu.max")
            if text is None:
                return None
            quota, _, period = text.partition(" ")
            if quota == "max" or not period:
                return None
            try:
                return int(quota) / int(period)
            except (ValueError, ZeroDivisionError):
                return None
        if "cpu" in self._v1:
            quota_us = _read_int(self._v1["cpu"] / "cpu.cfs_quota_us")
            period_us = _read_int(self._v1["cpu"] / "cpu.cfs_period_us")
            if quota_us is None or period_us is None or quota_us < 0 or period_us <= 0:
                return None
            return quota_us / period_us
        return None

    def memory_usage(self) -> int | None:
        if self._v2 is not None:
            return _read_int(self._v2 / "memory.current")
        if "memory" in self._v1:
            return _read_int(self._v1["memory"] / "memory.usage_in_bytes")
        return None

    def memory_limit(self) -> int | None:
        """The memory limit in bytes; None when unlimited."""
        if self._v2 is not None:
            return _read_int(self._v2 / "memory.max")  # "max" is not an int: unlimited
        if "memory" in self._v1:
            limit = _read_int(self._v1["memory"] / "memory.limit_in_bytes")
            return None if limit is None or limit >= _V1_UNLIMITED_MEMORY else limit
        return None

    def oom_kills(self) -> int | None:
        """Processes of this cgroup killed by the OOM killer."""
        if self._v2 is not None:
            return _read_keyed(self._v2 / "memory.events").get("oom_kill")
        if "memory" in self._v1:
            return _read_keyed(self._v1["memory"] / "memory.oom_control").get("oom_kill")  # kernel 4.13+
        return None


class ContainerMetricsCollector(ObservableCollector):
    """Container CPU, throttling, memory and OOM metrics from the cgroup, registered only inside a cgroup.

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> ContainerMetricsCollector(MeterProvider(), root="/nonexistent").instrument_names
    []
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        *,
        root: str | os.PathLike[str] = "/sys/fs/cgroup",
        proc_self_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
    ) -> None:
        self.cgroup = CgroupFiles(root, proc_self_cgroup)
        super().__init__(meter_provider)
        if self.cgroup.version is not None:
            self._register()

    @property
    def cgroup_version(self) -> int | None:
        return self.cgroup.version

    def _register(self) -> None:
        s = self._set
        s.counter("container.cpu.time", "s", "CPU time consumed by the container on all CPUs.", self._cpu_time)
        s.counter(
            "container.cpu.throttled.time", "s", "Time the container's tasks were throttled.", self._throttling(2)
        )
        s.counter(
            "container.cpu.throttled.periods",
            "{period}",
            "CFS enforcement periods in which the container was throttled.",
            self._throttling(1),
        )
        s.counter("container.cpu.periods", "{period}", "CFS enforcement periods elapsed.", self._throttling(0))
        s.updowncounter("container.cpu.limit", "{cpu}", "The container's CPU quota in cores.", self._cpu_limit)
        s.updowncounter("container.memory.usage", "By", "Memory usage of the container.", self._memory_usage)
        s.updowncounter("container.memory.limit", "By", "The container's memory limit.", self._memory_limit)
        s.gauge(
            "container.memory.utilization", "1", "Memory usage over the container's limit.", self._memory_utilization
        )
        s.counter(
            "container.memory.oom.events",
            "{event}",
            "Processes of the container killed by the OOM killer.",
            self._oom_kills,
        )

    def _cpu_time(self) -> Iterator[Observation]:
        seconds = self._read("cpu_usage", self.cgroup.cpu_usage_seconds)
        if seconds is not None:
            yield Observation(seconds)

    def _throttling(self, index: int) -> Callable[[], Iterator[Observation]]:
        def produce() -> Iterator[Observation]:
            throttling = self._read("cpu_throttling", self.cgroup.cpu_throttling)
            if throttling is not None:
                yield Observation(throttling[index])

        return produce

    def _cpu_limit(self) -> Iterator[Observation]:
        cores = self._read("cpu_limit", self.cgroup.cpu_limit)
        if cores is not None:
            yield Observation(cores)

    def _memory_usage(self) -> Iterator[Observation]:
        usage = self._read("memory_usage", self.cgroup.memory_usage)
        if usage is not None:
            yield Observation(usage)

    def _memory_limit(self) -> Iterator[Observation]:
        limit = self._read("memory_limit", self.cgroup.memory_limit)
        if limit is not None:
            yield Observation(limit)

    def _memory_utilization(self) -> Iterator[Observation]:
        usage = self._read("memory_usage", self.cgroup.memory_usage)
        limit = self._read("memory_limit", self.cgroup.memory_limit)
        if usage is not None and limit:
            yield Observation(usage / limit)

    def _oom_kills(self) -> Iterator[Observation]:
        kills = self._read("oom_kills", self.cgroup.oom_kills)
        if kills is not None:
            yield Observation(kills)


# Semantic-convention names for the container spec's resources (k8s.container.{cpu,memory}.{request,limit}
# were renamed to .desired in semantic conventions 1.41; the downward API gives the spec's values). CPU is
# read in millicores (the downward API rounds up to whole multiples of its divisor) and reported in cores.
# https://opentelemetry.io/docs/specs/semconv/system/k8s-metrics/
_KUBERNETES_METRICS = (
    ("cpu_request_cores", "k8s.container.cpu.request.desired", "{cpu}", "CPU requested by the container spec."),
    ("cpu_limit_cores", "k8s.container.cpu.limit.desired", "{cpu}", "CPU limit of the container spec."),
    ("memory_request", "k8s.container.memory.request.desired", "By", "Memory requested by the container spec."),
    ("memory_limit", "k8s.container.memory.limit.desired", "By", "Memory limit of the container spec."),
)


class KubernetesMetricsCollector(ObservableCollector):
    """The container's requests and limits from the downward API (``settings.kubernetes``), those that are set.

    CPU comes in millicores (``K8S_CPU_*_MILLICORES``) and is reported in cores; memory in bytes.
    The pod's identity (``k8s.pod.name``...) is on the resource (``telemetry.create_resource``), not here.

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> KubernetesMetricsCollector(MeterProvider(), KubernetesConfig(cpu_limit_millicores=500)).instrument_names
    ['k8s.container.cpu.limit.desired']
    """

    def __init__(self, meter_provider: MeterProvider, config: KubernetesConfig) -> None:
        super().__init__(meter_provider)
        for field, name, unit, description in _KUBERNETES_METRICS:
            value = getattr(config, field)
            if value is not None:
                self._set.updowncounter(name, unit, description, self._constant(value))

    @staticmethod
    def _constant(value: float) -> Callable[[], Iterator[Observation]]:
        def produce() -> Iterator[Observation]:
            yield Observation(value)

        return produce
