"""Metric families and the registry that owns them.

A family is one declared metric (name, description, unit, label names); each distinct set of label
values has one cell from ``_cells``. ``labels(...)`` returns the cell itself, so a bound child costs
exactly one cell call. Label values are looked up by the values as given and the cell is found again
by their string form, so ``labels(code=200)`` and ``labels(code="200")`` share one series.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Generic, TypeVar, cast

# The exporter's own translation rules, so what the registry checks is what Prometheus will receive.
from opentelemetry.exporter.prometheus._mapping import (
    map_unit,
    sanitize_attribute,
    sanitize_full_name,
)  # the exporter's own rules

from otel_monitoring._cells import CounterCell, GaugeCell, HistogramCell, UpDownCounterCell

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_CARDINALITY_LIMIT",
    "OVERFLOW_ATTRIBUTES",
    "CounterFamily",
    "GaugeFamily",
    "HistogramFamily",
    "MetricConflictError",
    "MetricsRegistry",
    "UpDownCounterFamily",
]

# Distinct label sets per metric before new ones go to the overflow series, as the OpenTelemetry SDK's default.
DEFAULT_CARDINALITY_LIMIT = 2000
# The OpenTelemetry SDK's overflow attribute; Prometheus shows it as otel_metric_overflow="true".
OVERFLOW_ATTRIBUTES = {"otel.metric.overflow": True}
OVERFLOW_LABEL_VALUES = ("\x00overflow",)  # a key no caller can pass: label values are str() of something

# prometheus_client's default buckets, in seconds, so that code moved from it keeps its histograms.
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_PROMETHEUS_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_PROMETHEUS_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# https://opentelemetry.io/docs/specs/otel/metrics/api/#instrument-name-syntax
_OTEL_INSTRUMENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,254}$")
_OTEL_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Names the exposition itself uses (the resource's info metric).
_RESERVED_SAMPLE_NAMES = frozenset({"target_info", "otel_scope_info"})

CellT = TypeVar("CellT", CounterCell, GaugeCell, HistogramCell, UpDownCounterCell)
Clock = Callable[[], int]


class MetricConflictError(ValueError):
    """A metric was declared again with a different shape, or its exposed names collide with another's."""


class Series(Generic[CellT]):
    """One labelled series: its label values as exported, its OpenTelemetry attributes and its cell."""

    __slots__ = ("attributes", "cell", "label_values")

    def __init__(self, label_values: tuple[Any, ...], attributes: dict[str, Any], cell: CellT) -> None:
        self.label_values = label_values
        self.attributes = attributes
        self.cell: CellT = cell


class _Family(Generic[CellT]):
    kind: ClassVar[str]

    def __init__(
        self,
        name: str,
        description: str,
        unit: str,
        labelnames: tuple[str, ...],
        clock: Clock,
        *,
        typed_values: bool = False,
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
    ) -> None:
        self.name = name
        self.cardinality_limit = cardinality_limit
        self._overflow: Series[CellT] | None = None
        self.description = description
        self.unit = unit
        self.labelnames = labelnames
        self._clock = clock
        # Semantic-convention instruments keep typed attribute values (status code as int) for OTLP;
        # facade metrics follow prometheus_client and turn every label value into a string.
        self._typed_values = typed_values
        self._lookup: dict[tuple[Any, ...], CellT] = {}
        self._series: dict[tuple[Any, ...], Series[CellT]] = {}
        self._lock = threading.Lock()
        self._unlabelled: CellT | None = None if labelnames else self._create_cell()
        if self._unlabelled is not None:
            self._series[()] = Series((), {}, self._unlabelled)

    def _create_cell(self) -> CellT:
        raise NotImplementedError

    def shape(self) -> dict[str, Any]:
        """What a second declaration must match to return this family."""
        return {"type": self.kind, "labelnames": self.labelnames, "unit": self.unit}

    def labels(self, *values: Any, **by_name: Any) -> CellT:
        """The series for these label values, created on first use; positional or by name.

        >>> requests = metrics.counter("http_requests_total", "Requests", labelnames=("method", "route"))
        >>> get_home = requests.labels(method="GET", route="/")  # bind once, then get_home.inc() per request
        """
        if by_name:
            if values:
                raise ValueError(f"{self.name}: give label values either by position or by name, not both")
            try:
                key = tuple([by_name[label] for label in self.labelnames])
            except KeyError:
                raise self._label_mismatch(by_name) from None
            if len(by_name) != len(self.labelnames):
                raise self._label_mismatch(by_name)
        else:
            key = values
        cell = self._lookup.get(key)
        if cell is None:
            cell = self._add_series(key)
        return cell

    def _cell_for(self, attributes: Mapping[str, Any] | None) -> CellT:
        if attributes is None:
            if self._unlabelled is None:
                raise ValueError(f"{self.name}: has labels {list(self.labelnames)}; use .labels() or attributes")
            return self._unlabelled
        return self.labels(**attributes)

    def _label_mismatch(self, given: Mapping[str, Any]) -> ValueError:
        return ValueError(f"{self.name}: label names must be {list(self.labelnames)} (got {sorted(given)})")

    def _add_series(self, key: tuple[Any, ...]) -> CellT:
        if len(key) != len(self.labelnames):
            raise ValueError(
                f"{self.name}: expected {len(self.labelnames)} label values {list(self.labelnames)}, got {len(key)}"
            )
        label_values = key if self._typed_values else tuple(str(value) for value in key)
        with self._lock:
            series = self._series.get(label_values)
            if series is None and len(self._series) >= self.cardinality_limit:
                # Past the limit, new label sets share one overflow series (the OpenTelemetry SDK's convention)
                # and are not remembered, so a burst of distinct values cannot grow memory.
                if self._overflow is None:
                    self._overflow = Series(OVERFLOW_LABEL_VALUES, dict(OVERFLOW_ATTRIBUTES), self._create_cell())
                return self._overflow.cell
            if series is None:
                # Empty values are left out, as Prometheus treats an empty label as an absent one.
                attributes = {
                    label: value for label, value in zip(self.labelnames, label_values, strict=True) if value != ""
                }
                series = Series[CellT](label_values, attributes, self._create_cell())
                self._series[label_values] = series
            # Only string keys are remembered as given: True == 1 == 1.0 as dict keys, but they are the
            # different labels "True", "1" and "1.0". Other values take this slower path on every call.
            if self._typed_values or all(type(value) is str for value in key):
                self._lookup[key] = series.cell
            return series.cell

    def remove(self, *values: Any) -> None:
        """Stop exporting one series (as in prometheus_client); recording to it again starts from zero."""
        label_values = values if self._typed_values else tuple(str(value) for value in values)
        with self._lock:
            series = self._series.pop(label_values, None)
            if series is not None:
                self._lookup = {key: cell for key, cell in self._lookup.items() if cell is not series.cell}

    def clear(self) -> None:
        """Stop exporting every labelled series."""
        with self._lock:
            if self.labelnames:
                self._series.clear()
                self._lookup = {}
                self._overflow = None

    def reset_locks(self) -> None:
        self._lock = threading.Lock()
        for series in self._series.values():
            series.cell.reset_lock()

    def series(self) -> list[Series[CellT]]:
        """A snapshot of the live series (the overflow series last), safe to iterate while other threads record."""
        with self._lock:
            live: list[Series[CellT]] = list(self._series.values())
            if self._overflow is not None:
                live.append(self._overflow)
            return live


class CounterFamily(_Family[CounterCell]):
    """A monotonic counter, as prometheus_client's ``Counter``.

    >>> requests_total = metrics.counter("http_requests_total", "Total HTTP requests")
    >>> requests_total.inc()
    """

    kind = "counter"

    def _create_cell(self) -> CounterCell:
        return CounterCell(self._clock())

    def inc(self, amount: float = 1.0, attributes: Mapping[str, Any] | None = None) -> None:
        """Add ``amount`` to the unlabelled series, or to the series named by ``attributes``."""
        self._cell_for(attributes).inc(amount)


class UpDownCounterFamily(_Family[UpDownCounterCell]):
    """A sum that goes up and down (OpenTelemetry's UpDownCounter), such as requests in flight."""

    kind = "updowncounter"

    def _create_cell(self) -> UpDownCounterCell:
        return UpDownCounterCell(self._clock())

    def add(self, amount: float, attributes: Mapping[str, Any] | None = None) -> None:
        self._cell_for(attributes).add(amount)


class GaugeFamily(_Family[GaugeCell]):
    """A value that is set or moved up and down, as prometheus_client's ``Gauge``.

    >>> active = metrics.gauge("http_requests_active", "Requests in progress")
    >>> active.inc(); active.dec()
    """

    kind = "gauge"

    def _create_cell(self) -> GaugeCell:
        return GaugeCell(self._clock())

    def inc(self, amount: float = 1.0, attributes: Mapping[str, Any] | None = None) -> None:
        self._cell_for(attributes).inc(amount)

    def dec(self, amount: float = 1.0, attributes: Mapping[str, Any] | None = None) -> None:
        self._cell_for(attributes).dec(amount)

    def set(self, value: float, attributes: Mapping[str, Any] | None = None) -> None:
        self._cell_for(attributes).set(value)

    def set_to_current_time(self, attributes: Mapping[str, Any] | None = None) -> None:
        self._cell_for(attributes).set_to_current_time()

    def track_inprogress(self, attributes: Mapping[str, Any] | None = None) -> Any:
        """Raise the gauge while a block or call runs: ``with gauge.track_inprogress():`` or as a decorator."""
        return self._cell_for(attributes).track_inprogress()


class HistogramFamily(_Family[HistogramCell]):
    """A histogram with explicit bucket bounds, as prometheus_client's ``Histogram``.

    >>> latency = metrics.histogram("http_request_duration_seconds", "Latency", buckets=[0.1, 0.5, 1, 2, 5])
    >>> with latency.time():
    ...     process_request()
    """

    kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str,
        unit: str,
        labelnames: tuple[str, ...],
        clock: Clock,
        *,
        buckets: tuple[float, ...],
        typed_values: bool = False,
        cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
    ) -> None:
        self.buckets = buckets
        super().__init__(
            name, description, unit, labelnames, clock, typed_values=typed_values, cardinality_limit=cardinality_limit
        )

    def _create_cell(self) -> HistogramCell:
        return HistogramCell(self._clock(), self.buckets)

    def shape(self) -> dict[str, Any]:
        return {**super().shape(), "buckets": self.buckets}

    def observe(self, value: float, attributes: Mapping[str, Any] | None = None) -> None:
        self._cell_for(attributes).observe(value)

    def time(self, attributes: Mapping[str, Any] | None = None) -> Any:
        """Observe elapsed seconds: ``with histogram.time():`` or ``@histogram.time()``."""
        return self._cell_for(attributes).time()


Family = CounterFamily | UpDownCounterFamily | GaugeFamily | HistogramFamily
FamilyT = TypeVar("FamilyT", CounterFamily, UpDownCounterFamily, GaugeFamily, HistogramFamily)


class MetricsRegistry:
    """Owns declared metrics; declaring the same metric twice returns the first declaration.

    Every component takes a registry and defaults to the process-wide one, so tests use a fresh
    ``MetricsRegistry()`` each. ``clock`` gives start timestamps in Unix nanoseconds. Each metric keeps at
    most ``cardinality_limit`` label sets; past it, new sets are recorded into one overflow series labelled
    ``otel_metric_overflow="true"``.
    """

    def __init__(self, clock: Clock = time.time_ns, cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT) -> None:
        if cardinality_limit < 1:
            raise ValueError(f"cardinality_limit must be at least 1 (got {cardinality_limit})")
        self._clock = clock
        self._limit_for: Callable[[str], int] = lambda name: cardinality_limit
        self._families: dict[str, Family] = {}
        self._exposed: dict[str, str] = {}  # Prometheus sample name -> the metric that exposes it
        self._lock = threading.Lock()

    def counter(
        self, name: str, description: str = "", labelnames: Iterable[str] = (), unit: str = ""
    ) -> CounterFamily:
        """Declare a counter. The name is exposed as written; ``_total`` is added only when missing."""
        return self._declare(CounterFamily, name, description, labelnames, unit, {}, semconv=False)

    def gauge(self, name: str, description: str = "", labelnames: Iterable[str] = (), unit: str = "") -> GaugeFamily:
        """Declare a gauge."""
        return self._declare(GaugeFamily, name, description, labelnames, unit, {}, semconv=False)

    def histogram(
        self,
        name: str,
        description: str = "",
        labelnames: Iterable[str] = (),
        unit: str = "",
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> HistogramFamily:
        """Declare a histogram with the given upper bounds (``+Inf`` is implied)."""
        extra = {"buckets": _validate_buckets(name, buckets)}
        return self._declare(HistogramFamily, name, description, labelnames, unit, extra, semconv=False)

    def semconv_histogram(
        self, name: str, description: str, attribute_keys: Iterable[str], unit: str, buckets: Iterable[float]
    ) -> HistogramFamily:
        """Declare an OpenTelemetry-named histogram (``http.server.request.duration``) with typed attributes."""
        extra = {"buckets": _validate_buckets(name, buckets), "typed_values": True}
        return self._declare(HistogramFamily, name, description, attribute_keys, unit, extra, semconv=True)

    def semconv_counter(self, name: str, description: str, attribute_keys: Iterable[str], unit: str) -> CounterFamily:
        """Declare an OpenTelemetry-named counter (``cache.operations``) with typed attributes."""
        extra = {"typed_values": True}
        return self._declare(CounterFamily, name, description, attribute_keys, unit, extra, semconv=True)

    def semconv_updowncounter(
        self, name: str, description: str, attribute_keys: Iterable[str], unit: str
    ) -> UpDownCounterFamily:
        """Declare an OpenTelemetry-named UpDownCounter with typed attributes."""
        extra = {"typed_values": True}
        return self._declare(UpDownCounterFamily, name, description, attribute_keys, unit, extra, semconv=True)

    def set_cardinality_limits(self, limit_for: Callable[[str], int]) -> None:
        """Apply per-metric limits (the cardinality processor's), to declared metrics and later ones."""
        with self._lock:
            self._limit_for = limit_for
            for family in self._families.values():
                family.cardinality_limit = limit_for(family.name)

    def reset_locks_after_fork(self) -> None:
        """Replace every lock in a forked child, where a thread of the parent may have held one."""
        self._lock = threading.Lock()
        for family in self._families.values():
            family.reset_locks()

    def families(self) -> list[Family]:
        with self._lock:
            return list(self._families.values())

    def get(self, name: str) -> Family | None:
        return self._families.get(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            family = self._families.pop(name, None)
            if family is not None:
                self._exposed = {sample: owner for sample, owner in self._exposed.items() if owner != name}

    def _declare(
        self,
        family_type: type[FamilyT],
        name: str,
        description: str,
        labelnames: Iterable[str],
        unit: str,
        extra: dict[str, Any],
        *,
        semconv: bool,
    ) -> FamilyT:
        labels = tuple(labelnames)
        _validate_declaration(family_type.kind, name, labels, unit, semconv=semconv)
        with self._lock:
            existing = self._families.get(name)
            if existing is not None:
                return _same_declaration(existing, family_type, name, labels, unit, extra)
            exposed = _exposed_names(family_type.kind, name, unit)
            for sample in exposed:
                if sample in _RESERVED_SAMPLE_NAMES:
                    raise MetricConflictError(f"metric {name!r} would expose {sample!r}, which the exposition reserves")
                owner = self._exposed.get(sample)
                if owner is not None:
                    raise MetricConflictError(
                        f"metric {name!r} would expose {sample!r}, which metric {owner!r} already exposes"
                    )
            family = family_type(
                name, description, unit, labels, self._clock, cardinality_limit=self._limit_for(name), **extra
            )
            self._families[name] = family
            self._exposed.update(dict.fromkeys(exposed, name))
            return family


def _same_declaration(
    existing: Family, family_type: type[FamilyT], name: str, labels: tuple[str, ...], unit: str, extra: dict[str, Any]
) -> FamilyT:
    wanted = {"type": family_type.kind, "labelnames": labels, "unit": unit}
    if "buckets" in extra and family_type is HistogramFamily:
        wanted["buckets"] = extra["buckets"]
    have = existing.shape()
    differences = [f"{key} {have.get(key)!r} != {wanted[key]!r}" for key in wanted if have.get(key) != wanted[key]]
    if differences:
        raise MetricConflictError(f"metric {name!r} is already declared differently: " + "; ".join(differences))
    return cast(FamilyT, existing)  # equal "type" means equal class


def _validate_declaration(kind: str, name: str, labels: tuple[str, ...], unit: str, *, semconv: bool) -> None:
    if semconv:
        if not _OTEL_INSTRUMENT_NAME.match(name):
            raise ValueError(f"invalid OpenTelemetry instrument name {name!r}")
        for key in labels:
            if not _OTEL_ATTRIBUTE_KEY.match(key):
                raise ValueError(f"{name}: invalid attribute key {key!r}")
        return
    if not isinstance(name, str) or not _PROMETHEUS_METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: Prometheus needs [a-zA-Z_:][a-zA-Z0-9_:]*")
    if sanitize_full_name(name) != name:
        raise ValueError(f"metric name {name!r} would be exposed as {sanitize_full_name(name)!r}; use that name")
    for label in labels:
        if not isinstance(label, str) or not _PROMETHEUS_LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(
                f"{name}: invalid label name {label!r}: Prometheus needs [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
            )
        if sanitize_attribute(label) != label:
            raise ValueError(f"{name}: label name {label!r} would be exposed as {sanitize_attribute(label)!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{name}: label names repeat: {list(labels)}")
    if kind == "histogram" and "le" in labels:
        raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
    suffix = map_unit(unit) if unit else ""
    base = name.removesuffix("_total") if kind == "counter" else name
    if suffix and not base.endswith("_" + suffix):
        expected = f"{base}_{suffix}" + ("_total" if kind == "counter" else "")
        raise ValueError(f"{name}: unit {unit!r} is exposed as the suffix _{suffix}; name the metric {expected!r}")


def _validate_buckets(name: str, buckets: Iterable[float]) -> tuple[float, ...]:
    bounds = [float(bound) for bound in buckets]
    if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
        bounds.pop()  # +Inf is always the last bucket
    if not bounds:
        raise ValueError(f"{name}: a histogram needs at least one finite bucket bound")
    if any(math.isnan(bound) or math.isinf(bound) for bound in bounds):
        raise ValueError(f"{name}: bucket bounds must be finite numbers (got {bounds})")
    if any(later <= earlier for earlier, later in itertools.pairwise(bounds)):
        raise ValueError(f"{name}: bucket bounds must be strictly increasing (got {bounds})")
    return tuple(bounds)


def _exposed_names(kind: str, name: str, unit: str) -> set[str]:
    """The sample names Prometheus will see, to refuse two metrics that would expose the same one."""
    base = sanitize_full_name(name)
    suffix = map_unit(unit) if unit else ""
    if kind == "counter":
        base = base.removesuffix("_total")
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if kind == "counter":
        return {base, base + "_total"}
    if kind == "histogram":
        return {base, base + "_bucket", base + "_count", base + "_sum"}
    return {base}
