"""The metrics catalog: every metric the product can emit, collected from the code that emits it.

Nothing here is a list of metric names. :func:`build_catalog` builds each component in-process, the way a
service builds it, and reads what it declared or recorded:

- components that record through the facade's registry (HTTP server middleware, HTTP client, database, cache,
  business API, network probe) and the processors' own metrics: their declarations in a fresh
  :class:`~otel_monitoring.metrics.MetricsRegistry` (name, type, unit, label keys, description);
- the observable collectors (system, process, container, Kubernetes): one collection through an
  ``InMemoryMetricReader``, with their sources injected (a sample host for psutil, a cgroup v2 tree in a
  temporary directory, pod requests and limits), so the label keys are the ones their callbacks really record
  and the catalog is the same on every machine;
- the business processor's derived metrics: business API calls recorded and passed through the real pipeline;
- the collector sidecar's own ``otelcol_*`` metrics: a :class:`~otel_monitoring.sidecar.service.CollectorService`
  built from the default sidecar config, whose own-metrics exposition is parsed.

Prometheus names come from :func:`otel_monitoring.sidecar.prometheus_exporter.prometheus_metric_name`, the
translation the sidecar's exporter applies (the embedded ``/metrics`` gives the same names; the tests check both).

>>> catalog = build_catalog()
>>> entry = catalog.get("http.server.request.duration")
>>> entry.prometheus_name, entry.unit, entry.prometheus_type
('http_server_request_duration_seconds', 's', 'histogram')

``otel-monitoring metrics catalog [--format markdown|json]`` prints it (otel_monitoring/docs_cli.py);
docs/metrics.md is that command's markdown output.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Metric, MetricsData, Sum

__all__ = [
    "Catalog",
    "CatalogEntry",
    "build_catalog",
    "render_json",
    "render_markdown",
]

# Prometheus's type for each OpenTelemetry instrument kind (an UpDownCounter is a gauge there).
_PROMETHEUS_TYPES: Final = {"counter": "counter", "updowncounter": "gauge", "gauge": "gauge", "histogram": "histogram"}
_REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CatalogEntry:
    """One metric: its name as instrumented, its OpenTelemetry kind, unit, label keys and description, the
    component that emits it (and its source file), and the name and type Prometheus sees."""

    name: str
    instrument: str  # counter | updowncounter | gauge | histogram
    unit: str
    labels: tuple[str, ...]
    description: str
    component: str
    source: str
    prometheus_name: str
    prometheus_type: str

    def exposed_sample_names(self) -> tuple[str, ...]:
        """The sample names the family exposes (``_bucket``, ``_count`` and ``_sum`` for a histogram)."""
        if self.prometheus_type == "histogram":
            return tuple(f"{self.prometheus_name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        return (self.prometheus_name,)


@dataclass(frozen=True)
class Catalog:
    """Entries in component order, then by name; ``get`` finds one by instrument or Prometheus name."""

    entries: tuple[CatalogEntry, ...]

    def get(self, name: str) -> CatalogEntry:
        for entry in self.entries:
            if name in (entry.name, entry.prometheus_name):
                return entry
        raise KeyError(name)

    def prometheus_names(self) -> frozenset[str]:
        return frozenset(entry.prometheus_name for entry in self.entries)

    def components(self) -> list[str]:
        return list(dict.fromkeys(entry.component for entry in self.entries))


def _prometheus_name(name: str, unit: str, instrument: str) -> str:
    from otel_monitoring.sidecar.prometheus_exporter import prometheus_metric_name

    return prometheus_metric_name(name, unit, _PROMETHEUS_TYPES[instrument])


def _source_of(obj: Any) -> str:
    path = Path(inspect.getsourcefile(obj) or "")
    try:
        return path.resolve().relative_to(_REPOSITORY_ROOT).as_posix()
    except ValueError:
        return path.name


def _entry(
    name: str, instrument: str, unit: str, labels: Iterable[str], description: str, component: str, source: str
) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        instrument=instrument,
        unit=unit,
        labels=tuple(labels),
        description=description,
        component=component,
        source=source,
        prometheus_name=_prometheus_name(name, unit, instrument),
        prometheus_type=_PROMETHEUS_TYPES[instrument],
    )


# --- sources of the observable collectors ------------------------------------------------------------------------


class _SampleProcess:
    def __init__(self) -> None:
        self._times = SimpleNamespace(user=3.0, system=1.0)

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def cpu_times(self) -> Any:
        return self._times

    def memory_info(self) -> Any:
        return SimpleNamespace(rss=50_000_000, vms=400_000_000)

    def num_threads(self) -> int:
        return 4

    def num_fds(self) -> int:
        return 16

    def create_time(self) -> float:
        return 1.0


class _SampleHost:
    """psutil's functions as the system collector calls them, answering for one small Linux host (one CPU, one
    disk, one filesystem, one network interface), so that every instrument records and the catalog does not
    depend on the machine that generates it."""

    def cpu_times(self, percpu: bool = False) -> Any:
        times = SimpleNamespace(
            user=10.0, nice=0.0, system=5.0, idle=80.0, iowait=1.0, irq=0.5, softirq=0.5, steal=0.0, guest=0.0,
            guest_nice=0.0,
        )  # fmt: skip
        return [times] if percpu else times

    def cpu_count(self) -> int:
        return 1

    def getloadavg(self) -> tuple[float, float, float]:
        return (0.5, 0.4, 0.3)

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=8_000, available=5_000, used=3_000, free=4_000, buffers=500, cached=500)

    def swap_memory(self) -> Any:
        return SimpleNamespace(total=1_000, used=100, free=900, sin=0, sout=0)

    def disk_partitions(self, all: bool = False) -> list[Any]:
        return [SimpleNamespace(device="/dev/sda1", mountpoint="/", fstype="ext4", opts="rw")]

    def disk_usage(self, path: str) -> Any:
        return SimpleNamespace(total=1_000, used=400, free=550)

    def disk_io_counters(self, perdisk: bool = False) -> dict[str, Any]:
        return {"sda": SimpleNamespace(**dict.fromkeys(("read_count", "write_count", "read_bytes", "write_bytes",
                "read_time", "write_time", "busy_time"), 1))}  # fmt: skip

    def net_io_counters(self, pernic: bool = False) -> dict[str, Any]:
        fields = ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "errin", "errout", "dropin", "dropout")
        return {"eth0": SimpleNamespace(**dict.fromkeys(fields, 1))}

    def net_connections(self, kind: str = "inet") -> list[Any]:
        return [SimpleNamespace(status="ESTABLISHED")]

    def Process(self, pid: int | None = None) -> _SampleProcess:
        return _SampleProcess()


# A container's cgroup v2 directory with a CPU quota and a memory limit, as the kernel writes it.
_CGROUP_V2_FILES: Final = {
    "cgroup.type": "domain",
    "cpu.stat": "usage_usec 1000000\nnr_periods 10\nnr_throttled 1\nthrottled_usec 2000",
    "cpu.max": "50000 100000",
    "memory.current": "1048576",
    "memory.max": "4194304",
    "memory.events": "oom_kill 0",
}


def _write_cgroup_tree(directory: Path) -> tuple[Path, Path]:
    root = directory / "cgroup"
    container = root / "ctr"
    container.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for name, text in _CGROUP_V2_FILES.items():
        (container / name).write_text(text + "\n")
    membership = directory / "proc_self_cgroup"
    membership.write_text("0::/ctr\n")
    return root, membership


# --- the components, each built as a service builds it -----------------------------------------------------------


def _registry_entries(registry: Any, names: Iterable[str], component: str, source: str) -> list[CatalogEntry]:
    entries = []
    for name in names:
        family = registry.get(name)
        entries.append(_entry(name, family.kind, family.unit, family.labelnames, family.description, component, source))
    return entries


def _declared_by(registry: Any, build: Callable[[], object]) -> list[str]:
    """Names ``build`` declared in ``registry``, in declaration order."""
    before = {family.name for family in registry.families()}
    build()
    return [family.name for family in registry.families() if family.name not in before]


def _facade_components(settings: Any) -> list[CatalogEntry]:
    from starlette.applications import Starlette

    from otel_monitoring import business
    from otel_monitoring.asgi import HTTPServerMetricsMiddleware
    from otel_monitoring.collectors.cache import CacheMetrics
    from otel_monitoring.collectors.database import DatabaseMetrics
    from otel_monitoring.collectors.http_client import HTTPClientRecorder
    from otel_monitoring.collectors.probe import NetworkProbe
    from otel_monitoring.metrics import MetricsRegistry

    http = settings.http
    builders: list[tuple[str, Any, Callable[[MetricsRegistry], object]]] = [
        (
            "HTTP server middleware",
            HTTPServerMetricsMiddleware,
            lambda r: HTTPServerMetricsMiddleware(
                Starlette(), registry=r, buckets=http.duration_buckets, excluded_paths=()
            ),
        ),
        ("HTTP client (httpx)", HTTPClientRecorder, lambda r: HTTPClientRecorder(r)),
        ("database (SQLAlchemy)", DatabaseMetrics, lambda r: DatabaseMetrics(r)),
        ("cache", CacheMetrics, lambda r: CacheMetrics("catalog", r)),
        ("business API", business, lambda r: business._families(r)),
        ("network probe", NetworkProbe, lambda r: NetworkProbe({}, interval=1.0, timeout=1.0, registry=r)),
    ]
    entries: list[CatalogEntry] = []
    for component, owner, build in builders:
        registry = MetricsRegistry()
        names = _declared_by(registry, lambda: build(registry))  # noqa: B023 - called at once
        entries.extend(_registry_entries(registry, names, component, _source_of(owner)))
    return entries


def _processor_entries(settings: Any) -> list[CatalogEntry]:
    """Every processor type built with its default config into one registry: their own metrics."""
    from otel_monitoring.metrics import MetricsRegistry
    from processors import ProcessorContext, build_pipeline
    from processors.pipeline import factories

    entries: list[CatalogEntry] = []
    for type_name, factory in sorted(factories().items()):
        registry = MetricsRegistry()
        context = ProcessorContext(registry=registry, secrets={"pseudonym_key": _SAMPLE_KEY})
        names = _declared_by(registry, lambda: build_pipeline({}, [type_name], context).shutdown())  # noqa: B023
        source = _source_of(inspect.getmodule(factory.create) or factory.create)
        entries.extend(_registry_entries(registry, names, f"processor {type_name} (own metrics)", source))
    return entries


_SAMPLE_KEY: Final = "catalog-sample-pseudonym-key-0123456789"  # stands in for OTEL_MONITORING_PSEUDONYM_KEY


def _collected(data: MetricsData | None) -> Iterator[tuple[str, Metric]]:
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                yield scope_metrics.scope.name, metric


def _instrument_of(metric: Metric) -> str:
    data = metric.data
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "updowncounter"
    if isinstance(data, Gauge):
        return "gauge"
    if isinstance(data, Histogram):
        return "histogram"
    raise TypeError(f"{metric.name}: unexpected data {type(data).__name__}")


def _metric_entry(metric: Metric, component: str, source: str) -> CatalogEntry:
    keys: dict[str, None] = {}
    for point in metric.data.data_points:
        keys.update(dict.fromkeys(sorted(point.attributes or {})))
    return _entry(
        metric.name, _instrument_of(metric), metric.unit or "", keys, metric.description or "", component, source
    )


def _observable_entries(settings: Any, directory: Path) -> list[CatalogEntry]:
    from otel_monitoring.collectors.container import ContainerMetricsCollector, KubernetesMetricsCollector
    from otel_monitoring.collectors.system import PROCESS_GROUPS, SystemMetricsCollector
    from otel_monitoring.settings import KubernetesConfig

    cgroup_root, membership = _write_cgroup_tree(directory)
    host_groups = [group for group in PROCESS_GROUPS if group != "process"]
    pod = KubernetesConfig(
        cpu_request_millicores=250, cpu_limit_millicores=500, memory_request=2**28, memory_limit=2**29
    )
    no_procfs = directory / "no-procfs"  # TCP states then come from the sample host, not this machine's /proc
    collectors: list[tuple[str, Any, Callable[[MeterProvider], object]]] = [
        ("system", SystemMetricsCollector, lambda p: SystemMetricsCollector(
            p, host_groups, psutil_module=_SampleHost(), procfs=no_procfs, use_netlink=False)),
        ("process", SystemMetricsCollector, lambda p: SystemMetricsCollector(
            p, ["process"], psutil_module=_SampleHost(), procfs=no_procfs, use_netlink=False)),
        ("container (cgroup)", ContainerMetricsCollector, lambda p: ContainerMetricsCollector(
            p, root=cgroup_root, proc_self_cgroup=membership)),
        ("Kubernetes (downward API)", KubernetesMetricsCollector, lambda p: KubernetesMetricsCollector(p, pod)),
    ]  # fmt: skip
    entries: list[CatalogEntry] = []
    for component, owner, build in collectors:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        try:
            build(provider)
            metrics = [metric for _, metric in _collected(reader.get_metrics_data())]
        finally:
            provider.shutdown()
        source = _source_of(owner)
        entries.extend(_metric_entry(metric, component, source) for metric in metrics)
    return entries


def _business_processor_entries(settings: Any) -> list[CatalogEntry]:
    """Business API calls through the real pipeline (sanitize, business, cardinality): what the processor derives."""
    from otel_monitoring import business
    from otel_monitoring.metrics import MetricsRegistry
    from otel_monitoring.telemetry import Telemetry
    from processors import business as business_processor

    registry = MetricsRegistry()
    reader = InMemoryMetricReader()
    telemetry = Telemetry(settings, registry, extra_readers=[reader], start_exporters=False)
    try:
        business.record_generation(
            client_id="customer-1", model="gpt-4o", provider="openai", input_tokens=100, output_tokens=20,
            content_type="article", duration=1.0, registry=registry,
        )  # fmt: skip
        # A model the price table does not know: its tokens are counted as unpriced, never costed at zero.
        business.record_generation(
            client_id="customer-1", model="catalog-unpriced-model", provider="catalog", input_tokens=1,
            output_tokens=1, content_type="article", registry=registry,
        )  # fmt: skip
        business.record_satisfaction(5, client_id="customer-1", channel="web", registry=registry)
        business.record_usage(client_id="customer-1", feature="upscale", units=1, registry=registry)
        source = _source_of(business_processor)
        return [
            _metric_entry(metric, "business processor (derived)", source)
            for scope, metric in _collected(reader.get_metrics_data())
            if scope == business_processor.BUSINESS_SCOPE
        ]
    finally:
        telemetry.shutdown()


def _sidecar_entries(settings: Any) -> list[CatalogEntry]:
    """The sidecar's own metrics as it exposes them, from a service built on the default sidecar config."""
    from prometheus_client.parser import text_string_to_metric_families

    from otel_monitoring.sidecar.config import load_collector_config
    from otel_monitoring.sidecar.service import CollectorService

    service = CollectorService(load_collector_config(None, environ={}), settings=settings)
    exposition = service.render_own_metrics()
    source = _source_of(CollectorService)
    entries = []
    for family in text_string_to_metric_families(exposition):
        keys: dict[str, None] = {}
        for sample in family.samples:
            keys.update(dict.fromkeys(sample.labels))
        # The parser strips a counter's _total; the name here is the one the sidecar writes.
        name = f"{family.name}_total" if family.type == "counter" else family.name
        entries.append(_entry(name, family.type, "", keys, family.documentation, "collector sidecar", source))
    return entries


def _sample_settings() -> Any:
    from otel_monitoring.settings import load_settings

    # Defaults only (never this process's environment), with a pseudonym key so that sanitize does not warn.
    return load_settings(None, environ={"OTEL_MONITORING_PSEUDONYM_KEY": _SAMPLE_KEY})


def build_catalog() -> Catalog:
    """Build every component in-process and collect the metrics it can emit (takes about a second).

    >>> "otelcol_exporter_queue_size" in build_catalog().prometheus_names()
    True
    """
    settings = _sample_settings()
    with tempfile.TemporaryDirectory(prefix="otel-monitoring-catalog-") as directory:
        entries = [
            *_facade_components(settings),
            *_observable_entries(settings, Path(directory)),
            *_processor_entries(settings),
            *_business_processor_entries(settings),
            *_sidecar_entries(settings),
        ]
    order = {component: index for index, component in enumerate(dict.fromkeys(e.component for e in entries))}
    return Catalog(tuple(sorted(entries, key=lambda e: (order[e.component], e.name))))


# --- rendering -------------------------------------------------------------------------------------------------


def render_json(catalog: Catalog) -> str:
    """The catalog as a JSON list of entries (``labels`` a list), one object per metric."""
    return json.dumps([asdict(entry) for entry in catalog.entries], indent=2) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def render_markdown(catalog: Catalog, *, command: str = "otel-monitoring metrics catalog") -> str:
    """docs/metrics.md: one table per component, then the semantic-convention names the Prometheus naming
    rules of ``otel-monitoring lint`` would flag, and why they stay."""
    from otel_monitoring.lint import name_findings

    lines = [
        "# Metrics catalog",
        "",
        f"Generated by `{command} --format markdown > docs/metrics.md` from the code that emits each metric",
        "(otel_monitoring/catalog.py); do not edit by hand. A test fails when this file and the command's output",
        "differ. Naming rules: [naming.md](naming.md).",
        "",
        f"{len(catalog.entries)} metrics from {len(catalog.components())} components. *Name* is the instrument's",
        "name; *Prometheus* is what a scrape shows (histograms add `_bucket`, `_count` and `_sum`). Labels are",
        "attribute keys; Prometheus writes them with `.` as `_`. Resource attributes (`service.name`,",
        "`k8s.pod.name`, ...) are on `target_info`, not on each metric.",
        "",
    ]
    for component in catalog.components():
        entries = [entry for entry in catalog.entries if entry.component == component]
        sources = ", ".join(dict.fromkeys(entry.source for entry in entries))
        lines += [
            f"## {component}",
            "",
            f"Source: {sources}",
            "",
            "| Name | Type | Unit | Labels | Prometheus | Description |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {_code(e.name)} | {e.instrument} | {_code(_cell(e.unit))} | {', '.join(_code(k) for k in e.labels)} "
            f"| {_code(e.prometheus_name)} ({e.prometheus_type}) | {_cell(e.description)} |"
            for e in entries
        ]
        lines.append("")
    exceptions = [
        (entry, finding)
        for entry in catalog.entries
        for finding in name_findings(entry.prometheus_name, entry.prometheus_type)
    ]
    lines += [
        "## Names that break a Prometheus naming rule",
        "",
        "Semantic-convention names are kept as the conventions spell them (naming.md, rule 1), so a few of",
        "their standard translations break a rule that `otel-monitoring lint` applies to your own metrics.",
        "`lint` knows these names from this catalog and does not flag them.",
        "",
    ]
    if exceptions:
        lines += ["| Prometheus | Rule | Why it is flagged for other metrics |", "|---|---|---|"]
        lines += [f"| `{e.prometheus_name}` | {f.rule} | {_cell(f.message)} |" for e, f in exceptions]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def render(catalog: Catalog, output_format: str) -> str:
    """The catalog in ``markdown`` or ``json``."""
    if output_format == "json":
        return render_json(catalog)
    if output_format == "markdown":
        return render_markdown(catalog)
    raise ValueError(f"unknown catalog format {output_format!r} (valid: json, markdown)")
