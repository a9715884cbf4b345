"""``otel-monitoring lint``: metric names that break the naming guidelines (docs/naming.md), and undocumented metrics.

The metrics come from a Prometheus exposition (a file, or a URL that is scraped once) or from an application's
declarations (``--app module:attr``). Each finding is one line naming the metric and the rule:

    http_request_duration_ms: base-unit: 'ms' is not a base unit; use seconds (http_request_duration_seconds)

Rules (ids as printed):

- ``snake-case``: lower-case ``[a-z0-9_]`` words; no colons (they are for recording rules). An ISO 4217
  currency code as a whole word (``USD``) is allowed: the OpenTelemetry translation writes the unit as given.
- ``base-unit``: seconds, not ms/minutes; bytes, not kb/MiB; ratios, not percent.
- ``unit-suffix``: a duration or latency names its unit (``_seconds``).
- ``total-suffix``: ``_total`` on counters, and only on counters.
- ``reserved-suffix``: ``_count``, ``_sum`` and ``_bucket`` belong to histograms and summaries.
- ``high-cardinality-label``: a label such as ``user_id``, ``email``, ``url`` or ``path`` whose values are not
  sanitized (pseudonyms ``u_...``, sanitize's markers such as ``<email>``, route templates, ``other``).
- ``undocumented``: neither in the metrics catalog (docs/metrics.md) nor described by HELP text.

Metrics of the catalog are the product's own: their names follow the OpenTelemetry semantic conventions and
are not checked against the naming rules (the catalog lists the few that would be flagged); their labels are.

>>> [finding.rule for finding in name_findings("request_latency_ms", "histogram")]
['base-unit']
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "Finding",
    "LintInputError",
    "MetricFamily",
    "families_from_app",
    "families_from_exposition",
    "families_from_registry",
    "fetch_exposition",
    "label_findings",
    "lint_families",
    "name_findings",
]

_SNAKE_WORD = re.compile(r"^[a-z0-9]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")  # ISO 4217, as the OpenTelemetry unit "USD" is exposed
# Units that are not base units, and the base unit to use instead (Prometheus naming: seconds, bytes, ratios).
_NON_BASE_UNITS: Final = {
    **dict.fromkeys(("ms", "msec", "millis", "milliseconds", "us", "usec", "microseconds", "ns", "nanoseconds",
                     "minutes", "mins", "hours", "days"), "seconds"),
    **dict.fromkeys(("kb", "kib", "kilobytes", "mb", "mib", "megabytes", "gb", "gib", "gigabytes", "tb"), "bytes"),
    **dict.fromkeys(("percent", "percentage", "pct"), "ratio"),
}  # fmt: skip
_DURATION_WORDS: Final = frozenset({"duration", "latency", "elapsed"})
_RESERVED_SUFFIXES: Final = ("_count", "_sum", "_bucket")
# Label keys whose values are one per person, request or address unless something collapses them.
_HIGH_CARDINALITY_KEYS: Final = frozenset(
    {
        "user_id", "userid", "user", "username", "email", "user_email", "customer_id", "client_id", "tenant_id",
        "account_id", "enduser_id", "session_id", "request_id", "trace_id", "span_id", "url", "url_full",
        "url_path", "url_query", "http_url", "http_target", "path", "http_path", "ip", "client_ip",
        "client_address", "remote_addr", "user_agent",
    }
)  # fmt: skip
_TEMPLATE = re.compile(r"[{<]")  # /users/{id}, /users/<email>: a template or a marker, not a raw value
_COLLAPSED_VALUES: Final = frozenset({"", "other", "_OTHER", "true", "false"})
_PROMETHEUS_TYPES: Final = frozenset({"counter", "gauge", "histogram", "summary", "gaugehistogram", "info", "stateset"})


class LintInputError(ValueError):
    """The input could not be read or parsed; the message is one line naming it."""


@dataclass(frozen=True)
class Finding:
    """One broken rule of one metric."""

    metric: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.metric}: {self.rule}: {self.message}"


@dataclass
class MetricFamily:
    """A metric as exposed: its family name as written, Prometheus type, HELP text and each label's values
    (empty when only declarations are known)."""

    name: str
    type: str
    help: str = ""
    labels: dict[str, set[str]] = field(default_factory=dict)
    values_known: bool = True


# --- rules -------------------------------------------------------------------------------------------------------


def name_findings(name: str, prometheus_type: str) -> list[Finding]:
    """What is wrong with the name ``name`` of a family of ``prometheus_type`` (``unknown`` skips type rules).

    >>> [str(f) for f in name_findings("queue_size_total", "gauge")]
    ['queue_size_total: total-suffix: _total is for counters; a gauge must not end in _total']
    """
    findings: list[Finding] = []
    words = name.split("_")
    odd = [
        word for word in re.split(r"[_:]", name) if word and not _SNAKE_WORD.match(word) and not _CURRENCY.match(word)
    ]
    if ":" in name or odd:
        found = "colons, which are for recording rules" if ":" in name else ", ".join(odd)
        findings.append(Finding(name, "snake-case", f"use lower-case snake_case words (found {found})"))
    for word in words:
        base = _NON_BASE_UNITS.get(word.lower())
        if base is not None:
            fixed = "_".join(base if w == word else w for w in words)
            findings.append(Finding(name, "base-unit", f"{word!r} is not a base unit; use {base} ({fixed})"))
    lowered = {word.lower() for word in words}
    if lowered & _DURATION_WORDS and "seconds" not in lowered and not lowered & _NON_BASE_UNITS.keys():
        findings.append(Finding(name, "unit-suffix", "a duration names its unit: end it in _seconds"))
    if prometheus_type == "counter" and not name.endswith("_total"):
        findings.append(Finding(name, "total-suffix", "a counter ends in _total"))
    elif prometheus_type in _PROMETHEUS_TYPES - {"counter"} and name.endswith("_total"):
        findings.append(
            Finding(name, "total-suffix", f"_total is for counters; a {prometheus_type} must not end in _total")
        )
    if prometheus_type not in ("histogram", "summary", "gaugehistogram", "unknown") and name.endswith(
        _RESERVED_SUFFIXES
    ):
        suffix = next(s for s in _RESERVED_SUFFIXES if name.endswith(s))
        findings.append(
            Finding(
                name,
                "reserved-suffix",
                f"{suffix} is what histograms and summaries expose; rename this {prometheus_type}",
            )
        )
    return findings


def _pseudonymized_keys() -> list[str]:
    from processors.sanitize import SanitizeConfig

    return [key.lower().replace(".", "_").replace("-", "_") for key in SanitizeConfig().pseudonymize_keys]


def _is_sanitized(value: str) -> bool:
    from processors.sanitize import PSEUDONYM_PREFIX

    if value in _COLLAPSED_VALUES or _TEMPLATE.search(value):
        return True
    tail = value.removeprefix(PSEUDONYM_PREFIX)
    return tail != value and bool(re.fullmatch(r"[0-9a-f]{8,64}", tail))


def label_findings(family: MetricFamily) -> list[Finding]:
    """High-cardinality label keys with unsanitized values; with declarations only (no values), those keys the
    default sanitize pipeline does not pseudonymize.

    >>> family = MetricFamily("logins_total", "counter", "Logins", {"email": {"ana@example.com"}})
    >>> [f.rule for f in label_findings(family)]
    ['high-cardinality-label']
    """
    findings = []
    pseudonymized = _pseudonymized_keys()
    for key, values in family.labels.items():
        normalized = key.lower()
        if normalized not in _HIGH_CARDINALITY_KEYS:
            continue
        if family.values_known:
            raw = [value for value in values if not _is_sanitized(value)]
            if raw:
                # The values themselves are never printed: they may be the personal data this rule is about.
                findings.append(
                    Finding(
                        family.name,
                        "high-cardinality-label",
                        f"label {key!r} has {len(raw)} unsanitized value(s); pseudonymize it (sanitize "
                        "pseudonymize_keys), template it, or drop it",
                    )
                )
        elif not any(fnmatch.fnmatchcase(normalized, pattern) for pattern in pseudonymized):
            findings.append(
                Finding(
                    family.name,
                    "high-cardinality-label",
                    f"label {key!r} takes one value per user, request or address and the default sanitize does not "
                    "pseudonymize it; template it or drop it",
                )
            )
    return findings


def lint_families(families: Iterable[MetricFamily], documented: Iterable[str] | None = None) -> list[Finding]:
    """Every finding for ``families``; ``documented`` are the catalog's Prometheus names (built when None)."""
    if documented is None:
        from otel_monitoring.catalog import build_catalog

        documented = build_catalog().prometheus_names()
    known = frozenset(documented)
    findings: list[Finding] = []
    for family in families:
        if family.name not in known:
            findings.extend(name_findings(family.name, family.type))
            if not family.help.strip():
                findings.append(Finding(family.name, "undocumented", "not in the metrics catalog and has no HELP text"))
        findings.extend(label_findings(family))
    return findings


# --- inputs ------------------------------------------------------------------------------------------------------

_TYPE_LINE = re.compile(r"^#\s+TYPE\s+(\S+)\s+(\S+)", re.MULTILINE)


def families_from_exposition(text: str) -> list[MetricFamily]:
    """Families of a Prometheus text or OpenMetrics exposition, named as written. Raises :class:`LintInputError`.

    >>> [(f.name, f.type) for f in families_from_exposition("# TYPE jobs_total counter\\njobs_total 3\\n")]
    [('jobs_total', 'counter')]
    """
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    openmetrics = text.rstrip().endswith("# EOF")
    try:
        parsed = list((parse_openmetrics if openmetrics else parse_text)(text))
    except (ValueError, TypeError, IndexError) as error:
        raise LintInputError(f"not a Prometheus exposition: {error}") from None
    written = {name: kind for name, kind in _TYPE_LINE.findall(text)}
    parsed_names = {parsed_family.name for parsed_family in parsed}
    families = []
    for parsed_family in parsed:
        if parsed_family.name.endswith("_created") and parsed_family.name[: -len("_created")] in parsed_names:
            continue  # prometheus_client's creation timestamps, which the text parser sees as gauges of their own
        name = parsed_family.name
        kind = parsed_family.type
        if kind == "counter" and (openmetrics or f"{name}_total" in written):
            name = f"{name}_total"  # the parsers strip it; the name a query uses has it
        if not parsed_family.samples and kind == "unknown":
            continue
        labels: dict[str, set[str]] = {}
        for sample in parsed_family.samples:
            for key, value in sample.labels.items():
                if key not in ("le", "quantile"):
                    labels.setdefault(key, set()).add(value)
        families.append(MetricFamily(name, kind, parsed_family.documentation or "", labels))
    return families


def families_from_registry(registry: Any) -> list[MetricFamily]:
    """Families a :class:`~otel_monitoring.metrics.MetricsRegistry` declares: names as they will be exposed, label
    keys without values (the exposition sanitizes values; here only the keys are known).
    """
    from otel_monitoring.sidecar.prometheus_exporter import prometheus_metric_name

    types = {"counter": "counter", "updowncounter": "gauge", "gauge": "gauge", "histogram": "histogram"}
    return [
        MetricFamily(
            prometheus_metric_name(family.name, family.unit, types[family.kind]),
            types[family.kind],
            family.description,
            {label.replace(".", "_"): set() for label in family.labelnames},
            values_known=False,
        )
        for family in registry.families()
    ]


def fetch_exposition(url: str, *, timeout: float = 10.0) -> str:
    """One scrape of ``url``; raises :class:`LintInputError` naming the URL when it fails."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, headers={"Accept": "text/plain;version=0.0.4"})
    except httpx.HTTPError as error:
        raise LintInputError(f"--metrics-url {url}: {error}") from None
    if response.status_code != 200:
        raise LintInputError(f"--metrics-url {url}: HTTP {response.status_code}")
    return response.text


def _scrape_asgi_app(app: Any, path: str = "/metrics") -> str:
    import asyncio

    import httpx

    async def scrape() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lint") as client:
            return await client.get(path)

    response = asyncio.run(scrape())
    if response.status_code != 200:
        raise LintInputError(f"the app answered {path} with HTTP {response.status_code} (does it serve /metrics?)")
    return response.text


def families_from_app(spec: str, *, search_path: str | None = None) -> list[MetricFamily]:
    """Families of ``module:attr`` or ``module``. ``attr`` may be a MetricsRegistry (its declarations), an ASGI
    app that serves ``/metrics`` (scraped in-process), or a function taking no arguments that returns either.
    Without ``attr``, what importing the module declared in the process-wide registry.
    """
    import importlib
    import inspect
    import sys

    from otel_monitoring.metrics import MetricsRegistry, default_registry

    module_name, _, attr = spec.partition(":")
    if not module_name or (":" in spec and not attr):
        raise LintInputError(f"--app {spec}: must be module:attr or module, such as myservice.main:app")
    if search_path is not None and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise LintInputError(f"--app {spec}: no module named {module_name!r}") from None
        raise
    if not attr:
        return families_from_registry(default_registry())
    value: object = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise LintInputError(f"--app {spec}: module {module_name!r} has no attribute {attr!r}")
        value = getattr(value, part)
    if inspect.isfunction(value) and not _takes_arguments(value):
        value = value()
    if isinstance(value, MetricsRegistry):
        return families_from_registry(value)
    if callable(value):
        return families_from_exposition(_scrape_asgi_app(value))
    raise LintInputError(f"--app {spec}: {type(value).__name__} is not a MetricsRegistry or an ASGI app")


def _takes_arguments(function: Any) -> bool:
    import inspect

    parameters: Mapping[str, inspect.Parameter] = inspect.signature(function).parameters
    return any(p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in parameters.values())  # fmt: skip


def format_findings(findings: Sequence[Finding]) -> str:
    return "".join(f"{finding}\n" for finding in findings)
