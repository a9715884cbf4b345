"""Host and process resources as OpenTelemetry asynchronous instruments, read from psutil when a reader collects.

Nothing runs in the background: every value is read inside the instruments' callbacks, when a reader
(a Prometheus scrape, the periodic OTLP export) collects. Names and attributes follow the semantic
conventions (https://opentelemetry.io/docs/specs/semconv/system/system-metrics/,
https://opentelemetry.io/docs/specs/semconv/system/process-metrics/,
https://opentelemetry.io/docs/specs/semconv/runtime/cpython-metrics/); docs/system-metrics.md lists them all.

>>> from opentelemetry.sdk.metrics import MeterProvider
>>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
>>> reader = InMemoryMetricReader()
>>> collector = SystemMetricsCollector(MeterProvider(metric_readers=[reader]), groups=["memory"])
>>> sorted(m.name for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics)[:2]
['system.memory.limit', 'system.memory.linux.available']
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the environment; psutil is used as Any
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from otel_monitoring import __version__
from otel_monitoring._instruments import MetricsRegistry
from otel_monitoring.settings import Settings

__all__ = [
    "PROCESS_GROUPS",
    "CollectionCache",
    "ObservableCollector",
    "SystemMetricsCollector",
    "SystemMetricsHandle",
    "SystemMetricsInstrumentor",
    "install_system_metrics",
]

_logger = logging.getLogger(__name__)

METER_NAME = "otel_monitoring.system"
PROCESS_GROUPS = ("cpu", "memory", "disk", "filesystem", "network", "tcp", "process")
"""The ``collectors.system_metrics`` groups read here; ``container`` and ``kubernetes`` are in container.py."""

# psutil's Linux CPU times mapped to the semantic-convention cpu.mode values; irq and softirq are both
# "interrupt", and guest time is already counted in user time, so it is left out.
# https://opentelemetry.io/docs/specs/semconv/registry/attributes/cpu/#cpu-mode
_CPU_MODES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("user", ("user",)),
    ("nice", ("nice",)),
    ("system", ("system",)),
    ("idle", ("idle",)),
    ("iowait", ("iowait",)),
    ("interrupt", ("irq", "softirq", "interrupt", "dpc")),
    ("steal", ("steal",)),
)

# Filesystems that hold no user data (kernel interfaces, memory-backed, read-only images): their usage is
# either meaningless or already counted as memory.
_PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
        "efivarfs", "fuse.lxcfs", "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs", "proc", "pstore",
        "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tmpfs", "tracefs",
    }
)  # fmt: skip
# Remote and network filesystems: statvfs on a dead server blocks (an NFS hard mount forever), and it would
# block while the SDK holds its collect lock, stopping every export. Their space is the server's to report.
_REMOTE_FILESYSTEMS = frozenset(
    {
        "9p", "afs", "beegfs", "ceph", "cifs", "coda", "davfs", "fuse.ceph-fuse", "fuse.gcsfuse",
        "fuse.glusterfs", "fuse.juicefs", "fuse.rclone", "fuse.s3fs", "fuse.sshfs", "gfs2", "glusterfs", "gpfs",
        "lustre", "ncpfs", "nfs", "nfs4", "ocfs2", "orangefs", "smb3", "smbfs", "sshfs",
    }
)  # fmt: skip
# Block devices that are not disks.
_SKIPPED_DISK_PREFIXES = ("loop", "ram")

# Kernel TCP states (include/net/tcp_states.h; the "st" column of /proc/net/tcp, the state byte of sock_diag)
# -> network.connection.state. https://opentelemetry.io/docs/specs/semconv/registry/attributes/network/
_TCP_STATES_BY_NUMBER = {
    1: "established", 2: "syn_sent", 3: "syn_received", 4: "fin_wait_1", 5: "fin_wait_2", 6: "time_wait",
    7: "closed", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing",
    12: "syn_received",  # NEW_SYN_RECV: a request socket before accept, a half-open connection
}  # fmt: skip
# psutil's status names for the same states (non-Linux fallback).
_TCP_STATES_BY_PSUTIL = {
    "ESTABLISHED": "established", "SYN_SENT": "syn_sent", "SYN_RECV": "syn_received", "FIN_WAIT1": "fin_wait_1",
    "FIN_WAIT2": "fin_wait_2", "TIME_WAIT": "time_wait", "CLOSE": "closed", "CLOSE_WAIT": "close_wait",
    "LAST_ACK": "last_ack", "LISTEN": "listen", "CLOSING": "closing",
}  # fmt: skip
_TCP_STATES = tuple(dict.fromkeys(_TCP_STATES_BY_NUMBER.values()))

_MISSING = object()


# sock_diag over netlink, as ss(8) does: the kernel sends one small record per socket, where reading
# /proc/net/tcp walks the whole connection hash table (milliseconds on a host with much memory, even idle).
# https://man7.org/linux/man-pages/man7/sock_diag.7.html
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_INET_DIAG_REQ_V2 = struct.Struct("=BBBBI48x")  # family, protocol, extensions, pad, state mask, socket id (any)
# Errors meaning sock_diag will never work in this process (no such protocol, a sandbox forbids it); any other
# failure (a full receive buffer, an interrupted dump) is worth trying again at the next collection.
_NETLINK_UNAVAILABLE = frozenset({errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EACCES, errno.EPERM})


def _tcp_states_by_netlink() -> Iterator[int]:
    """The kernel state number of every TCP socket (IPv4 and IPv6) in this network namespace."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as channel:
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            request = _INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
            header = _NLMSG_HEADER.pack(
                _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, sequence, 0
            )
            channel.sendall(header + request)
            done = False
            while not done:
                data = channel.recv(65536)
                if not data:
                    break
                offset = 0
                while offset + _NLMSG_HEADER.size <= len(data):
                    length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
                    if kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + _NLMSG_HEADER.size)
                        raise OSError(-code, "sock_diag request failed")
                    yield data[offset + _NLMSG_HEADER.size + 1]  # inet_diag_msg: family, then state
                    offset += (length + 3) & ~3
                    if length == 0:
                        raise OSError("malformed netlink message")


class CollectionCache:
    """Values read once per collection and shared by every callback of that collection.

    The SDK calls each asynchronous instrument's callback once per reader collection, one reader at a
    time (the MeterProvider's measurement consumer holds a lock). A callback that is called a second time
    while its previous result is still cached means a new collection started: the cache is cleared then,
    so each source (``psutil.virtual_memory()``...) is read once per collection, by whichever callback
    needs it first, however many readers the provider has and in whatever order the SDK calls them.

    >>> cache = CollectionCache()
    >>> cache.begin("a"); cache.get("now", lambda: 1)
    1
    >>> cache.begin("a"); cache.get("now", lambda: 2)  # "a" again: a new collection
    2
    """

    def __init__(self) -> None:
        self._generation = 0
        self._seen: dict[str, int] = {}
        self._values: dict[str, Any] = {}
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        # A forked child may inherit the lock held by a parent thread, and the parent's readings.
        weak_reset = weakref.WeakMethod(self.reset_after_fork)
        os.register_at_fork(after_in_child=lambda: (method := weak_reset()) and method())

    def begin(self, callback: str) -> None:
        with self._lock:
            if self._seen.get(callback) == self._generation:
                self._generation += 1
                self._values.clear()
            self._seen[callback] = self._generation

    def get(self, key: str, read: Callable[[], Any]) -> Any:
        """The value of ``read()`` for this collection; ``None`` when it raised (logged once per key)."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            try:
                value = read()
            except Exception as error:
                # Telemetry never breaks the app: an unreadable source reports nothing this time.
                if key not in self._failed:
                    self._failed.add(key)
                    _logger.warning("could not read %s for system metrics (%s); it reports nothing", key, error)
                value = None
            self._values[key] = value
        return value

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._values.clear()


Produce = Callable[[], Iterable[Observation]]


class _ObservableSet:
    """Asynchronous instruments that share a cache and an on/off switch.

    Instruments cannot be removed from a MeterProvider; switched off, their callbacks report nothing.
    """

    def __init__(self, meter: Meter, cache: CollectionCache) -> None:
        self.meter = meter
        self.cache = cache
        self.enabled = True
        self.names: list[str] = []

    def _callback(self, name: str, produce: Produce) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if not self.enabled:
                return ()
            self.cache.begin(name)
            try:
                return list(produce())
            except Exception:
                _logger.warning("system metric %s failed; it reports nothing this time", name, exc_info=True)
                return ()

        return callback

    def counter(self, name: str, unit: str, description: str, produce: Produce) -> None:
        self.names.append(name)
        self.meter.create_observable_counter(name, [self._callback(name, produce)], unit, description)

    def updowncounter(self, name: str, unit: str, description: str, produce: Produce) -> None:
        self.names.append(name)
        self.meter.create_observable_up_down_counter(name, [self._callback(name, produce)], unit, description)

    def gauge(self, name: str, unit: str, description: str, produce: Produce) -> None:
        self.names.append(name)
        self.meter.create_observable_gauge(name, [self._callback(name, produce)], unit, description)


class ObservableCollector:
    """Base of the collectors: asynchronous instruments on one meter, each source read at most once per
    collection, and a switch (instruments cannot be removed from a MeterProvider; switched off, they report
    nothing)."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        self._cache = CollectionCache()
        self._set = _ObservableSet(meter_provider.get_meter(METER_NAME, __version__), self._cache)

    @property
    def instrument_names(self) -> list[str]:
        return list(self._set.names)

    @property
    def enabled(self) -> bool:
        return self._set.enabled

    def close(self) -> None:
        """Stop reporting."""
        self._set.enabled = False

    def reopen(self) -> None:
        self._set.enabled = True

    def _read(self, key: str, read: Callable[[], Any]) -> Any:
        return self._cache.get(key, read)


def _mode_seconds(times: Any, fields: tuple[str, ...]) -> float:
    return float(sum(getattr(times, name, 0.0) for name in fields))


@dataclass
class _CpuState:
    """Per logical CPU: the mode times at the previous collection, and the utilization last computed."""

    previous: list[tuple[float, ...]] = field(default_factory=list)
    utilization: list[tuple[float, ...]] = field(default_factory=list)


class SystemMetricsCollector(ObservableCollector):
    """Registers the host and process instruments of the chosen groups on ``meter_provider``.

    ``groups`` are among :data:`PROCESS_GROUPS` (default: all); a group that is not listed registers nothing.
    ``psutil_module``, ``clock`` (wall-clock seconds) and ``procfs`` are injectable for tests; TCP states come
    from sock_diag (netlink) unless ``use_netlink`` is false, then from ``procfs``/net/tcp, then from psutil;
    ``netlink_reader`` (the kernel state number of every TCP socket) replaces the sock_diag query in tests.
    ``per_cpu`` adds ``cpu.logical_number`` to the CPU metrics (the semantic conventions make it opt-in;
    it multiplies the CPU series by the number of CPUs).

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> collector = SystemMetricsCollector(MeterProvider(), groups=["process"])
    >>> "process.memory.usage" in collector.instrument_names
    True
    >>> collector.close()  # the instruments stay registered but report nothing
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        groups: Iterable[str] = PROCESS_GROUPS,
        *,
        psutil_module: Any = None,
        clock: Callable[[], float] = time.time,
        procfs: str | os.PathLike[str] = "/proc",
        per_cpu: bool = True,
        use_netlink: bool = True,
        netlink_reader: Callable[[], Iterable[int]] | None = None,
    ) -> None:
        self._psutil = psutil if psutil_module is None else psutil_module
        self._clock = clock
        self._procfs = Path(procfs)
        self._per_cpu = per_cpu
        if netlink_reader is None and hasattr(socket, "AF_NETLINK"):
            netlink_reader = _tcp_states_by_netlink
        self._netlink_reader = netlink_reader
        self._use_netlink = use_netlink and netlink_reader is not None
        super().__init__(meter_provider)
        self._cpu = _CpuState()
        self._cpu_attributes: dict[tuple[int, str], dict[str, Any]] = {}
        self._process: Any = None
        self._process_pid = -1
        self._process_previous: tuple[float, float, float] | None = None  # (wall clock, user, system)
        self._process_utilization: tuple[float, float] = (0.0, 0.0)
        self._available_cpus = self._count_available_cpus()
        chosen = set(groups)
        unknown = chosen - set(PROCESS_GROUPS) - {"container", "kubernetes"}
        if unknown:
            raise ValueError(f"unknown system metric groups {sorted(unknown)} (valid: {', '.join(PROCESS_GROUPS)})")
        for group in PROCESS_GROUPS:
            if group in chosen:
                getattr(self, f"_register_{group}")()

    # -- sources: each read at most once per collection ------------------------------------------------

    def _count_available_cpus(self) -> int:
        affinity = getattr(os, "sched_getaffinity", None)
        if affinity is not None:
            try:
                return max(1, len(affinity(0)))
            except OSError:
                pass
        return max(1, int(self._psutil.cpu_count() or 1))

    # -- cpu --------------------------------------------------------------------------------------------

    def _register_cpu(self) -> None:
        s = self._set
        s.counter("system.cpu.time", "s", "Seconds each logical CPU spent on each mode.", self._cpu_time)
        s.gauge(
            "system.cpu.utilization",
            "1",
            "Fraction of time each logical CPU spent on each mode since the previous collection.",
            self._cpu_utilization,
        )
        for window, index in (("1m", 0), ("5m", 1), ("15m", 2)):
            s.gauge(
                f"system.cpu.load_average.{window}",
                "{thread}",
                f"Average CPU load over {window[:-1]} minute(s), as the Collector's hostmetrics receiver names it.",
                self._load_average(index),
            )

    def _cpu_times(self) -> list[tuple[float, ...]] | None:
        def read() -> list[tuple[float, ...]]:
            per_cpu = self._psutil.cpu_times(percpu=True) if self._per_cpu else [self._psutil.cpu_times()]
            times = [tuple(_mode_seconds(times, fields) for _, fields in _CPU_MODES) for times in per_cpu]
            self._update_cpu(times)
            return times

        times: list[tuple[float, ...]] | None = self._read("cpu_times", read)
        return times

    def _update_cpu(self, times: list[tuple[float, ...]]) -> None:
        # Utilization from the change since the previous collection, over the total time all modes advanced
        # (on one CPU that is the elapsed time). The first collection uses the times since boot. When nothing
        # advanced (two collections within one clock tick), the previous figures stand.
        state = self._cpu
        previous = state.previous if len(state.previous) == len(times) else [(0.0,) * len(_CPU_MODES)] * len(times)
        if len(state.utilization) != len(times):
            state.utilization = [(0.0,) * len(_CPU_MODES)] * len(times)
        for cpu, (now, before) in enumerate(zip(times, previous, strict=True)):
            deltas = [max(0.0, a - b) for a, b in zip(now, before, strict=True)]
            total = sum(deltas)
            if total > 0:
                state.utilization[cpu] = tuple(delta / total for delta in deltas)
                previous[cpu] = now
        state.previous = list(previous)

    def _cpu_attrs(self, cpu: int, mode: str) -> dict[str, Any]:
        attributes = self._cpu_attributes.get((cpu, mode))
        if attributes is None:
            attributes = {"cpu.mode": mode, "cpu.logical_number": cpu} if self._per_cpu else {"cpu.mode": mode}
            self._cpu_attributes[(cpu, mode)] = attributes
        return attributes

    def _cpu_time(self) -> Iterator[Observation]:
        times = self._cpu_times()
        if times is None:
            return
        for cpu, values in enumerate(times):
            for (mode, _), value in zip(_CPU_MODES, values, strict=True):
                yield Observation(value, self._cpu_attrs(cpu, mode))

    def _cpu_utilization(self) -> Iterator[Observation]:
        if self._cpu_times() is None:
            return
        for cpu, values in enumerate(self._cpu.utilization):
            for (mode, _), value in zip(_CPU_MODES, values, strict=True):
                yield Observation(value, self._cpu_attrs(cpu, mode))

    def _load_average(self, index: int) -> Produce:
        def produce() -> Iterator[Observation]:
            load = self._read("load_average", self._psutil.getloadavg)
            if load is not None:
                yield Observation(float(load[index]))

        return produce

    # -- memory and swap --------------------------------------------------------------------------------

    def _register_memory(self) -> None:
        s = self._set
        s.updowncounter("system.memory.usage", "By", "Memory in use by state.", self._memory_usage(utilization=False))
        s.gauge("system.memory.utilization", "1", "Fraction of memory by state.", self._memory_usage(utilization=True))
        s.updowncounter("system.memory.limit", "By", "Total memory available in the system.", self._memory_limit)
        if sys.platform.startswith("linux"):
            s.updowncounter(
                "system.memory.linux.available",
                "By",
                "Memory available for starting new applications without swapping (MemAvailable).",
                self._memory_available,
            )
        s.updowncounter("system.paging.usage", "By", "Swap usage by state.", self._paging(utilization=False))
        s.gauge("system.paging.utilization", "1", "Fraction of swap by state.", self._paging(utilization=True))

    def _memory_states(self) -> tuple[float, list[tuple[str, float]]] | None:
        memory = self._read("virtual_memory", self._psutil.virtual_memory)
        if memory is None:
            return None
        total = float(memory.total)
        buffers = float(getattr(memory, "buffers", 0))
        cached = float(getattr(memory, "cached", 0))
        free = float(memory.free)
        if hasattr(memory, "buffers") and hasattr(memory, "cached"):
            # The states add up to the total, as the conventions ask; psutil's own "used" (total - available)
            # overlaps with the cache on Linux.
            used = max(0.0, total - free - buffers - cached)
            return total, [("used", used), ("free", free), ("buffers", buffers), ("cached", cached)]
        return total, [("used", float(memory.used)), ("free", free)]

    def _memory_usage(self, *, utilization: bool) -> Produce:
        def produce() -> Iterator[Observation]:
            states = self._memory_states()
            if states is None:
                return
            total, values = states
            for state, value in values:
                if not utilization:
                    yield Observation(int(value), {"system.memory.state": state})
                elif total > 0:
                    yield Observation(value / total, {"system.memory.state": state})

        return produce

    def _memory_limit(self) -> Iterator[Observation]:
        memory = self._read("virtual_memory", self._psutil.virtual_memory)
        if memory is not None:
            yield Observation(int(memory.total))

    def _memory_available(self) -> Iterator[Observation]:
        memory = self._read("virtual_memory", self._psutil.virtual_memory)
        if memory is not None:
            yield Observation(int(memory.available))

    def _paging(self, *, utilization: bool) -> Produce:
        def produce() -> Iterator[Observation]:
            swap = self._read("swap_memory", self._psutil.swap_memory)
            if swap is None:
                return
            total = float(swap.total)
            for state, value in (("used", swap.used), ("free", swap.free)):
                if not utilization:
                    yield Observation(int(value), {"system.paging.state": state})
                elif total > 0:  # without swap a ratio means nothing
                    yield Observation(value / total, {"system.paging.state": state})

        return produce

    # -- filesystems ------------------------------------------------------------------------------------

    def _register_filesystem(self) -> None:
        s = self._set
        s.updowncounter(
            "system.filesystem.usage", "By", "Filesystem space by state.", self._filesystem(utilization=False)
        )
        s.gauge("system.filesystem.utilization", "1", "Fraction of filesystem space by state.", self._filesystem(True))
        s.updowncounter("system.filesystem.limit", "By", "Filesystem capacity.", self._filesystem_limit)

    def _filesystems(self) -> list[tuple[dict[str, Any], int, list[tuple[str, int]]]]:
        def read() -> list[tuple[dict[str, Any], int, list[tuple[str, int]]]]:
            result = []
            seen: set[str] = set()
            for partition in self._psutil.disk_partitions(all=True):
                fstype = partition.fstype
                if fstype in _PSEUDO_FILESYSTEMS or fstype in _REMOTE_FILESYSTEMS or partition.device in seen:
                    continue
                # One series per device: bind mounts (a container's /etc/hosts) show the same filesystem again.
                seen.add(partition.device)
                try:
                    usage = self._psutil.disk_usage(partition.mountpoint)
                except OSError:  # unreadable or gone since the mount table was read
                    continue
                options = set(str(getattr(partition, "opts", "")).split(","))
                attributes = {
                    "system.device": partition.device,
                    "system.filesystem.mountpoint": partition.mountpoint,
                    "system.filesystem.type": partition.fstype,
                    "system.filesystem.mode": "ro" if "ro" in options else "rw",
                }
                reserved = max(0, int(usage.total) - int(usage.used) - int(usage.free))
                states = [("used", int(usage.used)), ("free", int(usage.free)), ("reserved", reserved)]
                result.append((attributes, int(usage.total), states))
            return result

        return self._read("filesystems", read) or []

    def _filesystem(self, utilization: bool) -> Produce:
        def produce() -> Iterator[Observation]:
            for attributes, total, states in self._filesystems():
                for state, value in states:
                    point = {**attributes, "system.filesystem.state": state}
                    if not utilization:
                        yield Observation(value, point)
                    elif total > 0:
                        yield Observation(value / total, point)

        return produce

    def _filesystem_limit(self) -> Iterator[Observation]:
        for attributes, total, _ in self._filesystems():
            yield Observation(total, attributes)

    # -- disks ------------------------------------------------------------------------------------------

    def _register_disk(self) -> None:
        s = self._set
        s.counter("system.disk.io", "By", "Disk bytes transferred.", self._disk(("read_bytes", "write_bytes"), 1))
        s.counter(
            "system.disk.operations", "{operation}", "Disk operations.", self._disk(("read_count", "write_count"), 1)
        )
        s.counter(
            "system.disk.operation_time",
            "s",
            "Sum of the time each operation took to complete.",
            self._disk(("read_time", "write_time"), 0.001),
        )
        s.counter("system.disk.io_time", "s", "Time the disk spent active.", self._disk_io_time)

    def _disks(self) -> Mapping[str, Any]:
        def read() -> Mapping[str, Any]:
            disks = self._psutil.disk_io_counters(perdisk=True) or {}
            return {name: io for name, io in disks.items() if not name.startswith(_SKIPPED_DISK_PREFIXES)}

        return self._read("disk_io", read) or {}

    def _disk(self, fields: tuple[str, str], scale: float) -> Produce:
        read_field, write_field = fields

        def produce() -> Iterator[Observation]:
            for device, io in self._disks().items():
                for direction, name in (("read", read_field), ("write", write_field)):
                    value = getattr(io, name)
                    yield Observation(value * scale if scale != 1 else value, _disk_attrs(device, direction))

        return produce

    def _disk_io_time(self) -> Iterator[Observation]:
        for device, io in self._disks().items():
            busy = getattr(io, "busy_time", None)  # Linux and FreeBSD only
            if busy is not None:
                yield Observation(busy / 1000, {"system.device": device})

    # -- network ----------------------------------------------------------------------------------------

    def _register_network(self) -> None:
        s = self._set
        s.counter(
            "system.network.io", "By", "Bytes transmitted and received.", self._network("bytes_sent", "bytes_recv")
        )
        # The conventions key packet counts by system.device, where the other network metrics use
        # network.interface.name (semantic-conventions 1.44 model/system/metrics.yaml).
        s.counter(
            "system.network.packet.count",
            "{packet}",
            "Packets transferred.",
            self._network("packets_sent", "packets_recv", key="system.device"),
        )
        s.counter("system.network.errors", "{error}", "Network errors detected.", self._network("errout", "errin"))
        s.counter(
            "system.network.packet.dropped",
            "{packet}",
            "Packets dropped or discarded even though there was no error.",
            self._network("dropout", "dropin"),
        )

    def _network(self, transmit: str, receive: str, key: str = "network.interface.name") -> Produce:
        def produce() -> Iterator[Observation]:
            interfaces = self._read("net_io", lambda: self._psutil.net_io_counters(pernic=True)) or {}
            for name, io in interfaces.items():
                yield Observation(getattr(io, transmit), {key: name, "network.io.direction": "transmit"})
                yield Observation(getattr(io, receive), {key: name, "network.io.direction": "receive"})

        return produce

    # -- TCP connections --------------------------------------------------------------------------------

    def _register_tcp(self) -> None:
        self._set.updowncounter(
            "system.network.connection.count", "{connection}", "TCP connections by state.", self._tcp_connections
        )

    def _count_tcp_states(self) -> dict[str, int]:
        counts = dict.fromkeys(_TCP_STATES, 0)
        if self._use_netlink and self._netlink_reader is not None:
            try:
                for state in self._netlink_reader():
                    name = _TCP_STATES_BY_NUMBER.get(state)
                    if name is not None:
                        counts[name] += 1
                return counts
            except OSError as error:
                if error.errno in _NETLINK_UNAVAILABLE:
                    # /proc/net/tcp costs milliseconds per read, but sock_diag will not come back in this process.
                    self._use_netlink = False
                    _logger.info("sock_diag is unavailable (%s): counting TCP states from /proc from now on", error)
                else:
                    _logger.debug("sock_diag failed (%s): counting TCP states from /proc this time", error)
                counts = dict.fromkeys(_TCP_STATES, 0)
        tables = [self._procfs / "net" / "tcp", self._procfs / "net" / "tcp6"]
        if not any(table.exists() for table in tables):
            for connection in self._psutil.net_connections(kind="tcp"):
                name = _TCP_STATES_BY_PSUTIL.get(connection.status)
                if name is not None:
                    counts[name] += 1
            return counts
        for table in tables:
            try:
                with open(table, encoding="ascii") as lines:
                    next(lines, None)  # header
                    for line in lines:
                        name = _TCP_STATES_BY_NUMBER.get(int(line.split(None, 4)[3], 16))
                        if name is not None:
                            counts[name] += 1
            except FileNotFoundError:  # no IPv6
                continue
        return counts

    def _tcp_connections(self) -> Iterator[Observation]:
        counts = self._read("tcp_states", self._count_tcp_states)
        if counts is None:
            return
        for state, count in counts.items():
            yield Observation(count, {"network.transport": "tcp", "network.connection.state": state})

    # -- this process -----------------------------------------------------------------------------------

    def _register_process(self) -> None:
        s = self._set
        s.counter("process.cpu.time", "s", "CPU seconds of this process by mode.", self._process_cpu_time)
        s.gauge(
            "process.cpu.utilization",
            "1",
            "Change in process CPU time since the previous collection over the elapsed time and available CPUs.",
            self._process_cpu_utilization,
        )
        s.updowncounter("process.memory.usage", "By", "Physical memory in use (RSS).", self._process_value("rss"))
        s.updowncounter("process.memory.virtual", "By", "Committed virtual memory.", self._process_value("vms"))
        s.updowncounter("process.thread.count", "{thread}", "Threads of this process.", self._process_value("threads"))
        if os.name == "posix":
            s.updowncounter(
                "process.unix.file_descriptor.count",
                "{file_descriptor}",
                "File descriptors in use by this process.",
                self._process_value("fds"),
            )
        s.counter(
            "cpython.gc.collections",
            "{collection}",
            "Times each generation was collected since interpreter start.",
            self._gc("collections"),
        )
        s.counter(
            "cpython.gc.collected_objects",
            "{object}",
            "Objects collected in each generation since interpreter start.",
            self._gc("collected"),
        )
        s.counter(
            "cpython.gc.uncollectable_objects",
            "{object}",
            "Objects found uncollectable in each generation since interpreter start.",
            self._gc("uncollectable"),
        )

    def _own_process(self) -> Any:
        pid = os.getpid()
        if self._process is None or self._process_pid != pid:
            # psutil.Process() remembers the pid it was created in: a forked worker must not report its parent.
            self._process = self._psutil.Process(pid)
            self._process_pid = pid
            self._process_previous = None
        return self._process

    def _process_snapshot(self) -> dict[str, Any] | None:
        def read() -> dict[str, Any]:
            process = self._own_process()
            with process.oneshot():  # one read of /proc/self/stat and statm for all the figures
                cpu = process.cpu_times()
                memory = process.memory_info()
                snapshot = {
                    "user": float(cpu.user),
                    "system": float(cpu.system),
                    "rss": int(memory.rss),
                    "vms": int(memory.vms),
                    "threads": int(process.num_threads()),
                    "created": float(process.create_time()),
                }
                if os.name == "posix":
                    snapshot["fds"] = int(process.num_fds())
            snapshot["now"] = self._clock()
            self._update_process_utilization(snapshot)
            return snapshot

        result: dict[str, Any] | None = self._read("process", read)
        return result

    def _update_process_utilization(self, snapshot: dict[str, Any]) -> None:
        now, user, system = snapshot["now"], snapshot["user"], snapshot["system"]
        # The first collection measures from the process's start; later ones from the previous collection.
        before = self._process_previous or (snapshot["created"], 0.0, 0.0)
        elapsed = (now - before[0]) * self._available_cpus
        if elapsed > 0:
            self._process_utilization = (max(0.0, user - before[1]) / elapsed, max(0.0, system - before[2]) / elapsed)
            self._process_previous = (now, user, system)

    def _process_cpu_time(self) -> Iterator[Observation]:
        snapshot = self._process_snapshot()
        if snapshot is not None:
            yield Observation(snapshot["user"], {"cpu.mode": "user"})
            yield Observation(snapshot["system"], {"cpu.mode": "system"})

    def _process_cpu_utilization(self) -> Iterator[Observation]:
        if self._process_snapshot() is not None:
            user, system = self._process_utilization
            yield Observation(user, {"cpu.mode": "user"})
            yield Observation(system, {"cpu.mode": "system"})

    def _process_value(self, key: str) -> Produce:
        def produce() -> Iterator[Observation]:
            snapshot = self._process_snapshot()
            if snapshot is not None and key in snapshot:
                yield Observation(snapshot[key])

        return produce

    def _gc(self, key: str) -> Produce:
        def produce() -> Iterator[Observation]:
            stats = self._read("gc_stats", gc.get_stats) or []
            for generation, figures in enumerate(stats):
                yield Observation(figures[key], {"cpython.gc.generation": generation})

        return produce


_DISK_ATTRIBUTES: dict[tuple[str, str], dict[str, str]] = {}


def _disk_attrs(device: str, direction: str) -> dict[str, str]:
    attributes = _DISK_ATTRIBUTES.get((device, direction))
    if attributes is None:
        attributes = _DISK_ATTRIBUTES[(device, direction)] = {"system.device": device, "disk.io.direction": direction}
    return attributes


class SystemMetricsHandle:
    """What :func:`install_system_metrics` started: ``stop()`` silences the instruments and stops the probes."""

    def __init__(self, meter_provider: MeterProvider, collectors: Sequence[Any], probe: Any | None) -> None:
        self.meter_provider = meter_provider
        self.collectors = list(collectors)
        self.probe = probe

    def stop(self) -> None:
        for collector in self.collectors:
            collector.close()
        if self.probe is not None:
            self.probe.stop()

    def restart(self) -> None:
        for collector in self.collectors:
            collector.reopen()
        if self.probe is not None:
            self.probe.start()


def install_system_metrics(
    meter_provider: MeterProvider,
    settings: Settings,
    *,
    registry: MetricsRegistry | None = None,
    psutil_module: Any = None,
    cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
    proc_self_cgroup: str | os.PathLike[str] = "/proc/self/cgroup",
    start_probes: bool = True,
) -> SystemMetricsHandle:
    """Start what ``settings.collectors`` asks for: the system metric groups, container (cgroup) and Kubernetes
    metrics on ``meter_provider``, and the network probes (recorded into ``registry``, default the process-wide one).

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from otel_monitoring.settings import load_settings
    >>> settings = load_settings(environ={"OTEL_MONITORING_SYSTEM_METRICS": "memory,process"})
    >>> handle = install_system_metrics(MeterProvider(), settings)
    >>> handle.stop()
    """
    from otel_monitoring.collectors.container import ContainerMetricsCollector, KubernetesMetricsCollector
    from otel_monitoring.collectors.probe import NetworkProbe

    collectors_config = settings.collectors
    groups = set(collectors_config.system_metrics)
    collectors: list[Any] = []
    host_groups = [group for group in PROCESS_GROUPS if group in groups]
    if host_groups:
        collectors.append(SystemMetricsCollector(meter_provider, host_groups, psutil_module=psutil_module))
    if "container" in groups:
        collectors.append(
            ContainerMetricsCollector(meter_provider, root=cgroup_root, proc_self_cgroup=proc_self_cgroup)
        )
    if "kubernetes" in groups:
        collectors.append(KubernetesMetricsCollector(meter_provider, settings.kubernetes))
    probe = None
    if collectors_config.probe_targets:
        probe = NetworkProbe(
            collectors_config.probe_targets,
            interval=collectors_config.probe_interval_seconds,
            timeout=collectors_config.probe_timeout_seconds,
            registry=registry,
        )
        if start_probes:
            probe.start()
    return SystemMetricsHandle(meter_provider, collectors, probe)


class SystemMetricsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``opentelemetry_instrumentor`` entry point ``otel_monitoring_system``: system, container and Kubernetes
    metrics and network probes on the process's pipeline, as ``collectors.system_metrics`` and
    ``collectors.probe_targets`` say (:meth:`Telemetry.start_system_metrics`).

    Uninstrumenting stops the probes; the observable instruments stay registered (a MeterProvider cannot drop
    them) but report nothing until instrumented again.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("psutil >= 5.9",)

    def _instrument(self, **kwargs: Any) -> None:
        try:
            from otel_monitoring.telemetry import get_telemetry

            get_telemetry().start_system_metrics()
        except Exception:
            # Telemetry never breaks the host app (start_system_metrics never raises; building the pipeline might).
            _logger.warning("could not start system metrics; the app runs without them", exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        from otel_monitoring import telemetry

        current = telemetry.current_telemetry()
        if current is not None:  # nothing was started without a pipeline; do not build one just to stop it
            current.stop_system_metrics()
