"""Recording cells: the per-series state that application code writes to on every request.

This module is the hot path, written for speed on purpose. The OpenTelemetry SDK cleans and hashes
the attributes on every ``add`` (about 8.5 µs here), so the facade records into cells of its own
and hands their values to the SDK's readers only at collection time (see ``_bridge.py`` and
docs/recording-core.md). Each cell holds one lock whose bound ``acquire``/``release`` are kept as
slots: a lock keeps increments exact under threads, and calling the bound methods directly is about
a third cheaper than ``with lock:``. No allocation happens per call.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["CounterCell", "GaugeCell", "HistogramCell", "UpDownCounterCell"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _Cell:
    __slots__ = ("_acquire", "_release", "start_time_ns")

    def __init__(self, start_time_ns: int) -> None:
        self.start_time_ns = start_time_ns
        self.reset_lock()

    def reset_lock(self) -> None:
        """A new lock; after ``fork`` the child may have inherited one that a vanished thread held."""
        lock = threading.Lock()
        self._acquire = lock.acquire
        self._release = lock.release


class CounterCell(_Cell):
    """A monotonic sum: ``inc`` only goes up."""

    __slots__ = ("_value",)

    def __init__(self, start_time_ns: int) -> None:
        super().__init__(start_time_ns)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (default 1), which must not be negative."""
        if amount < 0:
            raise ValueError(f"counters only go up: inc({amount!r}) is negative")
        self._acquire()
        try:
            self._value += amount
        finally:
            self._release()

    def get(self) -> float:
        return self._value


class UpDownCounterCell(_Cell):
    """A non-monotonic sum, such as requests in flight."""

    __slots__ = ("_value",)

    def __init__(self, start_time_ns: int) -> None:
        super().__init__(start_time_ns)
        self._value = 0.0

    def add(self, amount: float) -> None:
        self._acquire()
        try:
            self._value += amount
        finally:
            self._release()

    def get(self) -> float:
        return self._value


class GaugeCell(_Cell):
    """A value that is set, or moved up and down, as in prometheus_client's ``Gauge``."""

    __slots__ = ("_value",)

    def __init__(self, start_time_ns: int) -> None:
        super().__init__(start_time_ns)
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self._acquire()
        try:
            self._value += amount
        finally:
            self._release()

    def dec(self, amount: float = 1.0) -> None:
        self._acquire()
        try:
            self._value -= amount
        finally:
            self._release()

    def set(self, value: float) -> None:
        number = float(value)  # rejects non-numbers here, not at export time
        self._acquire()  # so a set() never lands between the read and the write of a concurrent inc()
        try:
            self._value = number
        finally:
            self._release()

    def set_to_current_time(self) -> None:
        self.set(time.time())

    def track_inprogress(self) -> _InProgress:
        """Count the calls in progress: a context manager and a decorator.

        >>> with metrics.gauge("jobs_running", "Jobs running now").track_inprogress():
        ...     run_job()
        """
        return _InProgress(self)

    def get(self) -> float:
        return self._value


class HistogramCell(_Cell):
    """Bucket counts, sum, min and max of observed values, with explicit upper bounds (``le``)."""

    __slots__ = ("_bounds", "_counts", "_interval_max", "_interval_min", "_max", "_min", "_sum")

    def __init__(self, start_time_ns: int, bounds: Sequence[float]) -> None:
        super().__init__(start_time_ns)
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._min = self._interval_min = float("inf")
        self._max = self._interval_max = float("-inf")

    def observe(self, value: float) -> None:
        """Record one value; buckets are cumulative upper bounds, so ``value == bound`` counts in that bucket."""
        index = bisect_left(self._bounds, value)
        self._acquire()
        try:
            self._counts[index] += 1
            self._sum += value
            # Lifetime extremes for cumulative readers, extremes since the last delta collection for delta ones.
            if value < self._interval_min:
                self._interval_min = value
                if value < self._min:
                    self._min = value
            if value > self._interval_max:
                self._interval_max = value
                if value > self._max:
                    self._max = value
        finally:
            self._release()

    def take_interval_extremes(self) -> tuple[float, float]:
        """Min and max observed since the previous call (for a delta reader), and start a new interval."""
        self._acquire()
        try:
            extremes = self._interval_min, self._interval_max
            self._interval_min, self._interval_max = float("inf"), float("-inf")
            return extremes
        finally:
            self._release()

    def time(self) -> _Timer:
        """Observe the duration in seconds of a block or of every call: a context manager and a decorator.

        >>> with metrics.histogram("job_duration_seconds", "Job duration").time():
        ...     run_job()
        """
        return _Timer(self.observe)

    def snapshot(self) -> tuple[list[int], float, float, float]:
        """Per-bucket (not cumulative) counts, sum, min and max, read consistently."""
        self._acquire()
        try:
            return list(self._counts), self._sum, self._min, self._max
        finally:
            self._release()

    @property
    def bounds(self) -> tuple[float, ...]:
        return self._bounds


class _Timer:
    """Context manager and decorator that observes elapsed seconds, measured with ``perf_counter``."""

    __slots__ = ("_observe", "_start")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe
        self._start = 0.0

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._observe(time.perf_counter() - self._start)

    def __call__(self, func: _F) -> _F:
        observe = self._observe

        if inspect.iscoroutinefunction(func):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    observe(time.perf_counter() - start)

            return _wraps(func, timed_async)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                observe(time.perf_counter() - start)

        return _wraps(func, timed)


class _InProgress:
    """Context manager and decorator that raises a gauge while a block or call runs."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: GaugeCell) -> None:
        self._gauge = gauge

    def __enter__(self) -> _InProgress:
        self._gauge.inc()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._gauge.dec()

    def __call__(self, func: _F) -> _F:
        gauge = self._gauge

        if inspect.iscoroutinefunction(func):

            async def tracked_async(*args: Any, **kwargs: Any) -> Any:
                gauge.inc()
                try:
                    return await func(*args, **kwargs)
                finally:
                    gauge.dec()

            return _wraps(func, tracked_async)

        def tracked(*args: Any, **kwargs: Any) -> Any:
            gauge.inc()
            try:
                return func(*args, **kwargs)
            finally:
                gauge.dec()

        return _wraps(func, tracked)


def _wraps(wrapped: _F, wrapper: Callable[..., Any]) -> _F:
    return functools.wraps(wrapped)(wrapper)  # type: ignore[return-value]
