"""The ``memory_limiter`` processor: refuse new data while the sidecar's memory is above its soft limit.

It is a gate, not a transformation: the service asks :meth:`MemoryLimiter.check` before a request enters the
pipelines, and a refusal is :class:`~otel_monitoring.sidecar.receiver.ReceiverBusy`, which the receiver answers
with 503 and ``Retry-After`` so that the workers' exporters retry later. Memory is the process's resident set
size, measured at most once per ``check_interval``.

>>> from otel_monitoring.sidecar.config import MemoryLimiterConfig
>>> limiter = MemoryLimiter(MemoryLimiterConfig(limit_mib=100), memory_usage=lambda: 10 * 2**20)
>>> limiter.check()  # 10 MiB is below the soft limit (80 MiB): nothing happens
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import psutil  # type: ignore[import-untyped]  # no stubs in the environment; psutil is used as Any

from otel_monitoring.collectors.container import CgroupFiles
from otel_monitoring.sidecar.config import MemoryLimiterConfig
from otel_monitoring.sidecar.receiver import ReceiverBusy

__all__ = ["MemoryLimiter", "available_memory", "process_rss"]

_logger = logging.getLogger(__name__)


def process_rss() -> int:
    """This process's resident set size in bytes."""
    return int(psutil.Process().memory_info().rss)


def available_memory() -> int:
    """The memory this process may use: the cgroup (container) limit, else the machine's physical memory."""
    limit = CgroupFiles().memory_limit()
    physical = int(psutil.virtual_memory().total)
    return min(limit, physical) if limit else physical


class MemoryLimiter:
    """Refuses data while memory is above the soft limit (``limit - spike_limit``).

    Above the hard limit it also runs a full garbage collection, as the Collector's limiter forces one, so that
    memory freed by the refused requests is returned before the next check. ``memory_usage``, ``total_memory``
    and ``clock`` are injectable for tests.

    >>> usage = [900 * 2**20]
    >>> limiter = MemoryLimiter(MemoryLimiterConfig(limit_mib=1000), memory_usage=lambda: usage[0])
    >>> try:
    ...     limiter.check()
    ... except ReceiverBusy as busy:
    ...     print(busy.retry_after_seconds)
    1.0
    """

    def __init__(
        self,
        config: MemoryLimiterConfig,
        *,
        memory_usage: Callable[[], int] = process_rss,
        total_memory: Callable[[], int] = available_memory,
        clock: Callable[[], float] = time.monotonic,
        component_id: str = "memory_limiter",
    ) -> None:
        self.config = config
        self.component_id = component_id
        self.hard_limit, self.soft_limit = config.limits(total_memory() if config.limit_mib == 0 else 0)
        self._memory_usage = memory_usage
        self._clock = clock
        self._checked_at = -float("inf")
        self._refusing = False
        self.refused_requests = 0
        self.last_usage = 0

    def check(self) -> None:
        """Raise :class:`ReceiverBusy` while memory is above the soft limit; measure at most every interval."""
        now = self._clock()
        if now - self._checked_at >= self.config.check_interval:
            self._checked_at = now
            self._measure()
        if self._refusing:
            self.refused_requests += 1
            raise ReceiverBusy(
                self.config.check_interval,
                message=f"{self.component_id}: memory {self.last_usage} bytes is above the soft limit "
                f"{self.soft_limit} bytes; retry later",
            )

    def _measure(self) -> None:
        usage = self._memory_usage()
        if usage >= self.hard_limit:
            gc.collect()
            usage = self._memory_usage()
        self.last_usage = usage
        refusing = usage >= self.soft_limit
        if refusing != self._refusing:
            # Logged on each change only: a refusal per request would flood the log exactly when memory is short.
            if refusing:
                _logger.warning(
                    "%s: memory %d bytes is above the soft limit %d bytes (hard limit %d); refusing data",
                    self.component_id,
                    usage,
                    self.soft_limit,
                    self.hard_limit,
                )
            else:
                _logger.info(
                    "%s: memory %d bytes is below the soft limit again; accepting data", self.component_id, usage
                )
            self._refusing = refusing
