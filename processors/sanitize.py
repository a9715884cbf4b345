"""The ``sanitize`` processor: personal data and secrets never leave in label values.

For every data point of every metric, in this order:

1. keys matching ``deny`` are dropped;
2. if allow rules apply, keys they do not allow are dropped (see :attr:`SanitizeConfig.allow` and
   :attr:`SanitizeConfig.fail_closed`);
3. values of ``pseudonymize_keys`` become stable keyed pseudonyms, ``HMAC-SHA256(key, value)`` truncated
   and prefixed with ``u_``, whose last 4 hex characters are a keyed check over the rest (the value is hashed
   whole, so no detector needs to run on it; a value that merely looks like a pseudonym is hashed too);
4. every other value goes through the detectors (:mod:`processors.detectors`), which replace what they
   find with a fixed marker;
5. values longer than ``max_value_length`` are cut and end with ``<cut>``.

Resource attributes (rendered as ``target_info`` labels) and exemplars' filtered attributes go through
the same detectors. Steps 3 and 4 and the cap also apply to resource attributes (``tenant.id`` in
``OTEL_RESOURCE_ATTRIBUTES`` becomes a pseudonym); allow and deny do not, as they are rules about a metric's
labels. Text that cannot be encoded as UTF-8 (a lone surrogate from a JSON body) has those characters replaced
with U+FFFD, so that no exporter fails on it.

Rewrites that can make two series one (markers, dropped keys, cuts) send those points, and any point whose
new attributes equal theirs, through :class:`processors._merge.SeriesMerger`: colliding points (two emails
that both became ``<email>``) come out as one point, never twice, and cumulative outputs stay monotonic across
batches. An output series that went through the merger once always does. Points of the same metric that
collide with nothing are emitted directly, so one email among a thousand series does not send the other 999
through the merger. Pseudonyms never merge series (two ids share a pseudonym with negligible probability at
the default 16 hex characters; below 12 that is no longer true for tens of thousands of ids). Series from
different resources (two workers reporting to a sidecar) or scopes are never merged together. Exemplars of
merged points are dropped; exponential histograms, which cannot be merged across scales, keep the first of
colliding points.

What was done is counted in the pipeline's own registry (``context.registry``) with bounded labels only:

- ``otel_monitoring_sanitize_redactions_total{processor, detector}``: findings replaced by a marker;
- ``otel_monitoring_sanitize_dropped_attributes_total{processor, reason}``: attributes dropped, ``reason`` is
  ``deny`` or ``not_allowed``;
- ``otel_monitoring_sanitize_pseudonymized_total{processor}``: values replaced by pseudonyms;
- ``otel_monitoring_sanitize_truncated_total{processor}``: values cut to ``max_value_length``.

Counts are per data point processed: a series that holds an email adds one redaction every collection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, Protocol, cast

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from pydantic import Field, ValidationInfo, field_validator

from processors._merge import AttributeSet, SeriesMerger, attributes_key
from processors.component import ComponentConfig, Processor, ProcessorContext, ProcessorFactory
from processors.detectors import DETECTION_ORDER, DetectorName, Redactor

__all__ = [
    "FACTORY",
    "PSEUDONYM_PREFIX",
    "TRUNCATION_MARKER",
    "SanitizeConfig",
    "SanitizeProcessor",
]

_logger = logging.getLogger(__name__)

PSEUDONYM_PREFIX: Final = "u_"
"""Starts every pseudonym, so a hashed identifier is recognisable on a dashboard."""

TRUNCATION_MARKER: Final = "<cut>"
"""Ends a value cut to ``max_value_length``."""

_MIN_KEY_BYTES: Final = 16
_PSEUDONYM_LENGTH_RANGE: Final = (8, 64)
_MAX_VALUE_LENGTH_RANGE: Final = (16, 65_536)
# Detection runs on at most this many characters (times max_value_length, at least 1,024, at most
# _MAX_DETECTION_WINDOW): everything past max_value_length is cut anyway, and regexes must not spend unbounded
# time on a huge value. A value longer than the window is cut at the window even when max_value_length is larger.
_DETECTION_WINDOW_FACTOR: Final = 4
_MAX_DETECTION_WINDOW: Final = 4096
_PSEUDONYM_CHECK_LENGTH: Final = 4
_PSEUDONYM_CHECK_CONTEXT: Final = b"otel-monitoring pseudonym check\x00"
_SURROGATES = re.compile("[\ud800-\udfff]")
# camelCase and PascalCase word boundaries: "userId" -> "user_Id", "tenantID" -> "tenant_ID".
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TRAILING_WORD = re.compile(r"\S+\Z")
_HEX_DIGITS = frozenset("0123456789abcdef")
_UNSEEN: Final[Any] = object()
# A value below 10,000,000 has at most 7 digits: too few for any detector, so ints are checked only above it.
_SMALLEST_SUSPECT_INT: Final = 10_000_000


def _default_pseudonymize_keys() -> list[str]:
    return ["client_id", "customer_id", "user_id", "tenant_id", "account_id", "enduser_id"]


class SanitizeConfig(ComponentConfig):
    """Settings of the ``sanitize`` processor; ``SanitizeConfig()`` is the safe default.

    Errors name the field (pydantic's location), so the pipeline reports them under the full YAML key:
    ``processing.processors.sanitize.pseudonym_length: must be between 8 and 64 (got 4)``.

    >>> SanitizeConfig(deny=["http.request.header.*"], allow={"gen_ai.*": ["gen_ai.*", "customer_id"]}).ip_mode
    'mask'
    """

    detectors: list[DetectorName] = Field(default_factory=lambda: list(DETECTION_ORDER))
    """Detectors that run on label values (all by default): sql, url_query, jwt, token, secret, email, ipv6,
    ipv4, cnpj, cpf, card, phone. They always run in that order, whatever the order here."""

    ip_mode: Literal["mask", "truncate"] = "mask"
    """``mask`` replaces IP addresses with ``<ipv4>``/``<ipv6>``; ``truncate`` keeps their /24 (IPv4) or /48
    (IPv6) network, e.g. ``10.1.2.0/24``."""

    pseudonymize_keys: list[str] = Field(default_factory=_default_pseudonymize_keys)
    """Attribute keys (globs) whose values are replaced by stable keyed pseudonyms, on data points and on the
    resource. Keys are compared lower-cased with ``.`` and ``-`` read as ``_`` and camelCase split into words,
    so ``user_id`` also covers ``user.id``, ``User-Id``, ``userId`` and ``userID`` (and the default
    ``enduser_id`` covers the semantic conventions' ``enduser.id``)."""

    hash_key_name: str = "pseudonym_key"
    """Name of the entry in the host's secrets holding the HMAC key (at least 16 bytes). Without it a random
    per-process key is used and one warning says so: pseudonyms then change on every restart."""

    pseudonym_length: int = 16
    """Hex characters of a pseudonym (8 to 64), after the ``u_`` prefix: the HMAC of the value, then 4 hex
    characters of a keyed check that tells a real pseudonym from a look-alike. Below 16, two of tens of
    thousands of ids may share a pseudonym."""

    allow: dict[str, list[str]] = Field(default_factory=dict)
    """Metric-name glob -> attribute-key globs allowed on matching metrics. On a metric matched by one or
    more rules, only keys allowed by one of them are kept; other metrics keep every key (unless
    ``fail_closed``)."""

    fail_closed: bool = False
    """When true, a metric that matches no ``allow`` rule keeps no attributes at all (its series are merged
    into one). Needs at least one ``allow`` rule."""

    deny: list[str] = Field(default_factory=list)
    """Attribute-key globs dropped from every metric, whatever ``allow`` says."""

    max_value_length: int = 256
    """Longest value kept, in characters (16 to 65,536); longer values are cut and end with ``<cut>``.
    Detectors look at no more than 4,096 characters of a value, so a value longer than that is cut there."""

    expiry_seconds: float = 300.0
    """Seconds after which a merged series (two values that became the same marker) that is no longer reported
    is forgotten, so that memory stays bounded when values keep changing. Longer than the export interval."""

    cache_size: int = 50_000
    """Attribute sets (and, separately, distinct values) remembered with their result; a cache that grows
    past it is emptied. Size it above the number of series the processor sees."""

    # Messages leave out the field name and the bad value: pydantic's error location and input carry them,
    # and the pipeline renders "<yaml key>: <message> (got <value>)".

    @field_validator("pseudonym_length")
    @classmethod
    def _check_pseudonym_length(cls, value: int) -> int:
        return _in_range(value, _PSEUDONYM_LENGTH_RANGE)

    @field_validator("max_value_length")
    @classmethod
    def _check_max_value_length(cls, value: int) -> int:
        return _in_range(value, _MAX_VALUE_LENGTH_RANGE)

    @field_validator("expiry_seconds")
    @classmethod
    def _check_expiry_seconds(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("cache_size")
    @classmethod
    def _check_cache_size(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("hash_key_name")
    @classmethod
    def _check_hash_key_name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name an entry of the secrets, such as 'pseudonym_key'")
        return value

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for pattern, keys in value.items():
            if not pattern or not all(keys):
                raise ValueError(f"metric globs and attribute-key globs must not be empty (rule {pattern!r}: {keys!r})")
        return value

    @field_validator("deny", "pseudonymize_keys")
    @classmethod
    def _check_key_globs(cls, value: list[str]) -> list[str]:
        if not all(value):
            raise ValueError("attribute-key globs must not be empty")
        return value

    @field_validator("fail_closed")
    @classmethod
    def _check_fail_closed(cls, value: bool, info: ValidationInfo) -> bool:
        # The one rule across fields: fields are validated in order, so "allow" is already in info.data
        # (absent only when it failed itself).
        if value and "allow" in info.data and not info.data["allow"]:
            raise ValueError("needs at least one rule in allow (otherwise every metric loses all its attributes)")
        return value


def _in_range(value: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


# --- Keys and pseudonyms ------------------------------------------------------------------------------------


class _FallbackKey:
    """The random per-process pseudonym key, created once with one warning when no key is configured."""

    def __init__(self) -> None:
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self, component_id: str, secret_name: str, token_bytes: Callable[[int], bytes]) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = token_bytes(32)
                _logger.warning(
                    "%s: no pseudonym key (secret %r); using a random per-process key, so pseudonyms will not be "
                    "stable across restarts or between processes. Set one of at least %d bytes, e.g. with "
                    "OTEL_MONITORING_PSEUDONYM_KEY (settings: processing.pseudonym_key).",
                    component_id,
                    secret_name,
                    _MIN_KEY_BYTES,
                )
            return self._key


_FALLBACK_KEY = _FallbackKey()


def _normalize_key(key: str) -> str:
    return key.lower().replace(".", "_").replace("-", "_")


def _key_forms(key: str) -> tuple[str, ...]:
    """The forms of a key matched against ``pseudonymize_keys``: as written and with camelCase split."""
    plain = _normalize_key(key)
    split = _normalize_key(_CAMEL_BOUNDARY.sub("_", key))
    return (plain,) if split == plain else (plain, split)


# --- Per attribute set results ------------------------------------------------------------------------------

_KEEP, _DENY, _NOT_ALLOWED, _PSEUDONYMIZE = range(4)


class _Cell(Protocol):
    """One labelled series of a counter in the pipeline's own registry."""

    def inc(self, amount: float = 1.0) -> None: ...


_Counts = tuple[tuple[_Cell, float], ...]
_Identity = frozenset[tuple[str, Any]]


class _Entry:
    """The result for one attribute set, cached: the new attributes (None: unchanged; else an ``AttributeSet``,
    so that later components can cache by it too), whether the rewrite can make two series one (markers, drops
    and cuts can; pseudonyms cannot), and what it adds to the counters."""

    __slots__ = ("attributes", "counts", "identity", "lossy")

    def __init__(self, attributes: AttributeSet | None, lossy: bool, counts: _Counts) -> None:
        self.attributes = attributes
        self.lossy = lossy
        self.counts = counts
        self.identity: _Identity | None = None  # of the output attributes, computed when first needed

    def output_identity(self, original: Mapping[str, Any]) -> _Identity:
        if self.identity is None:
            self.identity = attributes_key(original if self.attributes is None else self.attributes)
        return self.identity


_UNCHANGED_COUNTS: _Counts = ()


class _Policy:
    """What applies to the metrics that share one set of allow rules: per-key actions and the result cache."""

    __slots__ = ("actions", "allowed", "cache")

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.allowed = allowed  # None: every key allowed
        self.actions: dict[str, int] = {}
        self.cache: dict[Any, _Entry] = {}


_CleanText = tuple[str, tuple[tuple[DetectorName, int], ...], bool]
# Where a metric's series live: resource attributes, then scope name and version. Series of two resources (two
# workers sending to the sidecar) or two scopes are never merged together.
_SourceKey = tuple[_Identity, str, str | None]
_MetricKey = tuple[_SourceKey, str, str, str]


class SanitizeProcessor(Processor):
    """Rewrites label values so that personal data and secrets never reach an exporter.

    >>> from opentelemetry.sdk.metrics.export import Gauge, Metric, MetricsData, NumberDataPoint, ResourceMetrics
    >>> from opentelemetry.sdk.metrics.export import ScopeMetrics
    >>> from opentelemetry.sdk.resources import Resource
    >>> from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    >>> point = NumberDataPoint({"route": "/users/ana@example.com"}, 0, 1, 3.0)
    >>> metric = Metric("queue_depth", "", "", Gauge([point]))
    >>> scope = ScopeMetrics(InstrumentationScope("app"), [metric], "")
    >>> data = MetricsData([ResourceMetrics(Resource({}), [scope], "")])
    >>> processor = SanitizeProcessor(SanitizeConfig(), ProcessorContext(secrets={"pseudonym_key": "k" * 32}))
    >>> processor.process(data).resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0].attributes
    {'route': '/users/<email>'}

    ``token_bytes`` makes the random fallback key (used when no key is configured) for tests.
    """

    def __init__(
        self,
        config: SanitizeConfig,
        context: ProcessorContext | None = None,
        *,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        context = context if context is not None else ProcessorContext()
        self.config = config  # as validated, for introspection
        component_id = context.component_id or "sanitize"
        self._clock = context.clock
        self._redactor = Redactor(config.detectors, ip_mode=config.ip_mode)
        self._max_length = config.max_value_length
        self._window = min(max(_DETECTION_WINDOW_FACTOR * config.max_value_length, 1024), _MAX_DETECTION_WINDOW)
        self._expiry_seconds = config.expiry_seconds
        self._expiry_ns = int(config.expiry_seconds * 1e9)
        self._last_sweep: int | None = None
        self._now = 0  # the clock when the batch being processed started
        self._cache_size = config.cache_size
        self._pseudonym_length = config.pseudonym_length
        self._key = _load_key(context, component_id, config.hash_key_name, token_bytes)
        self._pseudonym_patterns = tuple(_normalize_key(key) for key in config.pseudonymize_keys)
        self._deny = tuple(config.deny)
        self._allow_rules = tuple((pattern, tuple(keys)) for pattern, keys in config.allow.items())
        self._fail_closed = config.fail_closed
        self._policies: dict[tuple[str, ...] | None, _Policy] = {}
        self._policy_by_metric: dict[str, _Policy] = {}
        self._texts: dict[str, _CleanText | None] = {}  # None: the text stays as it is
        self._pseudonyms: dict[str, str] = {}
        # Resource objects are reused across collections: the cleaned resource and the source identity are
        # remembered by identity, holding the original so that its id cannot be reused by another object.
        self._resources: dict[int, tuple[Resource, Resource, _Identity]] = {}
        self._mergers: dict[_SourceKey, SeriesMerger] = {}
        # Output series that went through a merger once, per metric, with when they were last seen: they always
        # do from then on, so that a merged cumulative series never falls back to one input's smaller value.
        # Entries expire with the merger's own state (same clock, same expiry, same last-seen time).
        self._merged_outputs: dict[_MetricKey, dict[_Identity, int]] = {}
        # Each reader has its own pipeline, but ``process`` may still be called from several threads (a
        # periodic exporter and a scrape of the same reader): batches are processed one at a time.
        self._lock = threading.Lock()

        registry = context.registry
        redactions = registry.counter(
            "otel_monitoring_sanitize_redactions_total",
            "Findings in label values replaced by a marker, by detector.",
            ("processor", "detector"),
        )
        self._redaction_cells = {
            kind: redactions.labels(processor=component_id, detector=kind) for kind in DETECTION_ORDER
        }
        dropped = registry.counter(
            "otel_monitoring_sanitize_dropped_attributes_total",
            "Attributes dropped from data points, by reason (deny, not_allowed).",
            ("processor", "reason"),
        )
        self._denied_cell = dropped.labels(processor=component_id, reason="deny")
        self._not_allowed_cell = dropped.labels(processor=component_id, reason="not_allowed")
        self._pseudonymized_cell = registry.counter(
            "otel_monitoring_sanitize_pseudonymized_total",
            "Attribute values replaced by keyed pseudonyms.",
            ("processor",),
        ).labels(processor=component_id)
        self._truncated_cell = registry.counter(
            "otel_monitoring_sanitize_truncated_total",
            "Attribute values cut to max_value_length.",
            ("processor",),
        ).labels(processor=component_id)

    # --- Batches ----------------------------------------------------------------------------------------------

    def process(self, data: MetricsData) -> MetricsData:
        """The batch with every label value sanitized; unchanged parts are the same objects as in ``data``.

        Safe to call from several threads: batches are processed one at a time. Merge state follows one stream
        of batches, so give each reader its own processor: two readers' cumulative points of one series may
        carry different start times, which the merger would read as restarts.
        """
        with self._lock:
            self._now = now = self._clock()
            if self._last_sweep is None or now - self._last_sweep >= self._expiry_ns // 4:
                self._expire(now)
            changed = False
            resource_metrics: list[ResourceMetrics] = []
            for resource_metric in data.resource_metrics:
                new_resource_metric = self._process_resource_metrics(resource_metric)
                changed = changed or new_resource_metric is not resource_metric
                resource_metrics.append(new_resource_metric)
            return MetricsData(resource_metrics) if changed else data

    def shutdown(self) -> None:
        with self._lock:
            self._policies.clear()
            self._policy_by_metric.clear()
            self._texts.clear()
            self._pseudonyms.clear()
            self._resources.clear()
            self._mergers.clear()
            self._merged_outputs.clear()

    def _expire(self, now: int) -> None:
        """Forget merged outputs not seen for ``expiry_seconds``, and mergers left with nothing to remember."""
        self._last_sweep = now
        horizon = now - self._expiry_ns
        for metric_key, outputs in list(self._merged_outputs.items()):
            for identity in [identity for identity, seen in outputs.items() if seen < horizon]:
                del outputs[identity]
            if not outputs:
                del self._merged_outputs[metric_key]
        for source, merger in list(self._mergers.items()):
            merger.expire()
            if not merger.series_count():
                del self._mergers[source]

    def _process_resource_metrics(self, resource_metric: ResourceMetrics) -> ResourceMetrics:
        resource, resource_identity = self._clean_resource(resource_metric.resource)
        changed = resource is not resource_metric.resource
        scope_metrics: list[ScopeMetrics] = []
        for scope_metric in resource_metric.scope_metrics:
            source: _SourceKey = (resource_identity, scope_metric.scope.name, scope_metric.scope.version)
            metrics: list[Metric] = []
            scope_changed = False
            for metric in scope_metric.metrics:
                new_metric = self._process_metric(metric, source)
                if new_metric is not metric:
                    scope_changed = True
                if new_metric is not None:
                    metrics.append(new_metric)
            if scope_changed:
                changed = True
                scope_metrics.append(ScopeMetrics(scope_metric.scope, metrics, scope_metric.schema_url))
            else:
                scope_metrics.append(scope_metric)
        if not changed:
            return resource_metric
        return ResourceMetrics(resource, scope_metrics, resource_metric.schema_url)

    def _process_metric(self, metric: Metric, source: _SourceKey) -> Metric | None:
        # Hot path, written for speed: for a point seen before, one tuple, one dict lookup and no other
        # allocation; a metric whose points all stay as they are is returned as the same object.
        data = metric.data
        points: Sequence[Any] = data.data_points
        policy = self._policy_by_metric.get(metric.name)
        if policy is None:
            policy = self._policy_for(metric.name)
        cache = policy.cache
        entries: list[_Entry] = [None] * len(points)  # type: ignore[list-item]  # every slot is filled below
        changed = lossy = False
        exemplars: dict[int, list[Any]] | None = None
        cache_get = cache.get
        for index, point in enumerate(points):
            attributes = point.attributes
            # The sidecar's decoder shares one AttributeSet per series: its token finds the entry with one int
            # lookup, where the content key costs a tuple of the items and its hash on every point.
            entry = cache_get(attributes.token) if type(attributes) is AttributeSet else None
            if entry is None:
                entry = self._entry(policy, attributes)
            entries[index] = entry
            if entry.attributes is not None:
                changed = True
                lossy = lossy or entry.lossy
            if point.exemplars:
                cleaned = self._clean_exemplars(policy, point.exemplars)
                if cleaned is not None:
                    exemplars = exemplars if exemplars is not None else {}
                    exemplars[index] = cleaned
        metric_key: _MetricKey | None = None
        if self._merged_outputs:
            metric_key = (source, metric.name, metric.unit or "", type(data).__name__)
            merged = self._merged_outputs.get(metric_key)
        else:
            merged = None
        if not changed and exemplars is None and merged is None:
            return metric
        self._count(entries)
        if not lossy and merged is None:
            return _with_points(metric, _rewritten(points, entries, exemplars))
        if metric_key is None:
            metric_key = (source, metric.name, metric.unit or "", type(data).__name__)
        return self._merge(metric, metric_key, source, entries, exemplars)

    def _merge(
        self,
        metric: Metric,
        metric_key: _MetricKey,
        source: _SourceKey,
        entries: list[_Entry],
        exemplars: dict[int, list[Any]] | None,
    ) -> Metric | None:
        """Route the points that lost information, and whatever they collide with, through the merger."""
        data = metric.data
        points: Sequence[Any] = data.data_points
        identities = [
            entry.output_identity(point.attributes or {}) for point, entry in zip(points, entries, strict=True)
        ]
        merged = self._merged_outputs.get(metric_key)
        if merged is None:
            if len(self._merged_outputs) >= self._cache_size:
                self._merged_outputs.clear()
            merged = self._merged_outputs[metric_key] = {}
        now = self._now
        for identity, entry in zip(identities, entries, strict=True):
            if entry.lossy:
                merged[identity] = now
        through = [identity in merged for identity in identities]
        for identity, go in zip(identities, through, strict=True):
            if go:
                merged[identity] = now  # seen now, as the merger's output it goes to
        direct_points = _rewritten(
            [point for point, go in zip(points, through, strict=True) if not go],
            [entry for entry, go in zip(entries, through, strict=True) if not go],
            None if exemplars is None else {i: e for i, e in exemplars.items() if not through[i]},
        )
        if not isinstance(data, Sum | Gauge | Histogram):
            # Exponential histograms cannot be merged bucket by bucket across scales: the first point of a
            # colliding set is kept rather than one series being emitted twice.
            seen: set[_Identity] = set()
            kept: list[int] = []
            for index, (identity, go) in enumerate(zip(identities, through, strict=True)):
                if go and identity not in seen:
                    seen.add(identity)
                    kept.append(index)
            kept_points = _rewritten(
                [points[i] for i in kept],
                [entries[i] for i in kept],
                None if exemplars is None else {n: exemplars[i] for n, i in enumerate(kept) if i in exemplars},
            )
            return _with_points(metric, direct_points + kept_points)
        merger = self._mergers.get(source)
        if merger is None:
            merger = self._mergers[source] = SeriesMerger(clock=self._clock, expiry_seconds=self._expiry_seconds)
        regrouped = [
            (point, point.attributes if entry.attributes is None else entry.attributes)
            for point, entry, go in zip(points, entries, through, strict=True)
            if go
        ]
        result = merger.merge(metric, regrouped)
        merged_points = list(result.data.data_points) if result is not None else []
        if not direct_points and not merged_points:
            return None
        return _with_points(metric, direct_points + merged_points)

    def _count(self, entries: Sequence[_Entry]) -> None:
        # Summed per batch first: a counter increment takes a lock, a dict update does not.
        totals: dict[_Cell, float] = {}
        for entry in entries:
            for cell, amount in entry.counts:
                totals[cell] = totals.get(cell, 0) + amount
        for cell, amount in totals.items():
            cell.inc(amount)

    # --- Attribute sets ---------------------------------------------------------------------------------------

    def _policy_for(self, metric_name: str) -> _Policy:
        allowed: tuple[str, ...] | None = None
        matched = [keys for pattern, keys in self._allow_rules if fnmatchcase(metric_name, pattern)]
        if matched:
            allowed = tuple(sorted({key for keys in matched for key in keys}))
        elif self._fail_closed:
            allowed = ()
        policy = self._policies.get(allowed)
        if policy is None:
            policy = self._policies[allowed] = _Policy(allowed)
        if len(self._policy_by_metric) >= self._cache_size:
            self._policy_by_metric.clear()
        self._policy_by_metric[metric_name] = policy
        return policy

    def _action(self, policy: _Policy, key: str) -> int:
        action = policy.actions.get(key)
        if action is None:
            if any(fnmatchcase(key, pattern) for pattern in self._deny):
                action = _DENY
            elif policy.allowed is not None and not any(fnmatchcase(key, pattern) for pattern in policy.allowed):
                action = _NOT_ALLOWED
            elif self._is_pseudonymized_key(key):
                action = _PSEUDONYMIZE
            else:
                action = _KEEP
            if len(policy.actions) >= self._cache_size:
                policy.actions.clear()
            policy.actions[key] = action
        return action

    def _is_pseudonymized_key(self, key: str) -> bool:
        return any(fnmatchcase(form, pattern) for form in _key_forms(key) for pattern in self._pseudonym_patterns)

    def _entry(self, policy: _Policy, attributes: Mapping[str, Any] | None) -> _Entry:
        """The result for an attribute set, cached by its token (an AttributeSet) or else by its content."""
        cache = policy.cache
        key: Any
        if type(attributes) is AttributeSet:
            key = attributes.token  # one entry per set: the content key would only double the cache
        else:
            try:
                # With the value types: 1, 1.0 and True are equal in Python but not to the detectors (an int
                # document number seen after the equal float must still be redacted).
                key = (tuple(attributes.items()), tuple(map(type, attributes.values()))) if attributes else ()
                entry = cache.get(key)
            except TypeError:  # a list value makes the items unhashable: compute without the cache
                return self._rewrite(policy, attributes or {})
            if entry is not None:
                return entry
        entry = self._rewrite(policy, attributes or {})
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[key] = entry
        return entry

    def _rewrite(self, policy: _Policy, attributes: Mapping[str, Any]) -> _Entry:
        """The result for one attribute set (not cached here)."""
        # Runs once per new attribute set, so the common case (a known key, a string value seen before and
        # left unchanged) takes two dict lookups and no call.
        actions = policy.actions
        texts = self._texts
        new: dict[str, Any] = {}
        counts: dict[_Cell, float] = {}
        changed = lossy = False
        for key, value in attributes.items():
            action = actions.get(key)
            if action is None:
                action = self._action(policy, key)
            if action == _KEEP:
                if type(value) is str and texts.get(value, _UNSEEN) is None:
                    new[key] = value
                    continue
                new_value = self._clean_value(value, counts)
                if new_value is not value:
                    changed = lossy = True  # markers and cuts can make two values equal
            elif action == _PSEUDONYMIZE:
                new_value = self._pseudonymize(value)
                if new_value is not value:
                    changed = True
                    counts[self._pseudonymized_cell] = counts.get(self._pseudonymized_cell, 0) + 1
            else:
                cell = self._denied_cell if action == _DENY else self._not_allowed_cell
                counts[cell] = counts.get(cell, 0) + 1
                changed = lossy = True
                continue
            new[key] = new_value
        if not changed:
            return _Entry(None, False, _UNCHANGED_COUNTS)
        # Shared by every point of the set, and immutable, so that the exporters cache their work on it too.
        return _Entry(AttributeSet(new), lossy, tuple(counts.items()))

    def _clean_exemplars(self, policy: _Policy, exemplars: Sequence[Any]) -> list[Any] | None:
        """Exemplars with their filtered attributes (those a view removed, which may hold anything) cleaned."""
        cleaned: list[Any] | None = None
        for index, exemplar in enumerate(exemplars):
            if not exemplar.filtered_attributes:
                continue
            entry = self._rewrite(policy, exemplar.filtered_attributes)
            if entry.attributes is None:
                continue
            for cell, amount in entry.counts:
                cell.inc(amount)
            if cleaned is None:
                cleaned = list(exemplars)
            cleaned[index] = dataclasses.replace(exemplar, filtered_attributes=entry.attributes)
        return cleaned

    def _clean_resource(self, resource: Resource) -> tuple[Resource, _Identity]:
        """The resource with detector findings replaced, and the identity of its original attributes."""
        known = self._resources.get(id(resource))
        if known is not None and known[0] is resource:
            return known[1], known[2]
        counts: dict[_Cell, float] = {}
        attributes = dict(resource.attributes)
        changed = False
        for key, value in resource.attributes.items():
            if self._is_pseudonymized_key(key):
                new_value = self._pseudonymize(value)
                if new_value is not value:
                    counts[self._pseudonymized_cell] = counts.get(self._pseudonymized_cell, 0) + 1
            else:
                new_value = self._clean_value(value, counts)
            if new_value is not value:
                attributes[key] = new_value
                changed = True
        for cell, amount in counts.items():
            cell.inc(amount)
        result = Resource(attributes, resource.schema_url) if changed else resource
        identity = attributes_key(resource.attributes)
        if len(self._resources) >= 64:
            self._resources.clear()
        self._resources[id(resource)] = (resource, result, identity)
        return result, identity

    # --- Values -----------------------------------------------------------------------------------------------

    def _clean_value(self, value: Any, counts: dict[_Cell, float]) -> Any:
        """The value with detector findings replaced and its length capped; the same object when unchanged."""
        result: _CleanText | None
        if isinstance(value, str):
            result = self._clean_text(value)
        elif isinstance(value, bool | float) or value is None:
            return value
        elif isinstance(value, int):
            if -_SMALLEST_SUSPECT_INT < value < _SMALLEST_SUSPECT_INT:
                return value
            result = self._clean_text(str(value))
        elif isinstance(value, bytes):
            result = self._clean_text(value.decode("utf-8", "replace"))
        elif isinstance(value, Sequence):
            items = [self._clean_value(item, counts) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return tuple(items)
        else:
            return value
        if result is None:
            return value
        text, findings, cut = result
        for kind, found in findings:
            cell = self._redaction_cells[kind]
            counts[cell] = counts.get(cell, 0) + found
        if cut:
            counts[self._truncated_cell] = counts.get(self._truncated_cell, 0) + 1
        return text

    def _clean_text(self, text: str) -> _CleanText | None:
        """The cleaned text, its findings and whether it was cut; None when it stays as it is."""
        known = self._texts.get(text, _UNSEEN)
        if known is not _UNSEEN:
            return cast(_CleanText | None, known)
        work = text
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: exporters encode to UTF-8 and would fail on them
                work = _SURROGATES.sub("\ufffd", text)
        windowed = len(work) > self._window
        if windowed:
            # Past the window the value is cut anyway; a word split by the window is dropped whole, as a
            # detector could not recognise its remaining part.
            split = not work[self._window].isspace()
            work = work[: self._window]
            if split:
                work = _TRAILING_WORD.sub("", work)
        cleaned, findings = self._redactor.redact(work)
        cut = False
        if windowed and len(cleaned) <= self._max_length:
            cut = True  # cut at the window, which is shorter than max_value_length
            cleaned = cleaned[: self._max_length - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        elif len(cleaned) > self._max_length:
            cut = True
            prefix = cleaned[: self._max_length - len(TRUNCATION_MARKER)]
            # Cutting can turn a longer digit run into a valid card or CPF: look again at what is kept.
            prefix, more = self._redactor.redact(prefix)
            findings = findings + more
            cleaned = prefix[: self._max_length - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        result: _CleanText | None = None if cleaned == text else (cleaned, findings, cut)
        if len(self._texts) >= self._cache_size:
            self._texts.clear()
        self._texts[text] = result
        return result

    def _check(self, body: str) -> str:
        """The keyed check that ends a pseudonym: only this processor's key makes a pseudonym that passes."""
        digest = hmac.new(self._key, _PSEUDONYM_CHECK_CONTEXT + body.encode("ascii"), hashlib.sha256).hexdigest()
        return digest[:_PSEUDONYM_CHECK_LENGTH]

    def _is_pseudonym(self, text: str) -> bool:
        # A pseudonym made by this key (sanitize ran before, in-process or in a sidecar with the same key); a
        # caller-supplied look-alike fails the check, bar a 1 in 65,536 chance, and is hashed like any value.
        if not (
            len(text) == len(PSEUDONYM_PREFIX) + self._pseudonym_length
            and text.startswith(PSEUDONYM_PREFIX)
            and all(char in _HEX_DIGITS for char in text[len(PSEUDONYM_PREFIX) :])
        ):
            return False
        body = text[len(PSEUDONYM_PREFIX) : -_PSEUDONYM_CHECK_LENGTH]
        return hmac.compare_digest(self._check(body), text[-_PSEUDONYM_CHECK_LENGTH:])

    def _pseudonymize(self, value: Any) -> Any:
        # Concrete types are checked before the Sequence ABC, whose isinstance check is slow.
        if isinstance(value, str):
            text = value
        elif value is None or isinstance(value, bool):
            return value
        elif isinstance(value, int | float):
            text = str(value)
        elif isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
        elif isinstance(value, Sequence):
            return tuple(self._pseudonymize(item) for item in value)
        else:
            text = str(value)
        if not text or self._is_pseudonym(text):
            # Empty says nothing; a pseudonym already (sanitize ran before, in-process or in a sidecar) stays.
            return value
        pseudonym = self._pseudonyms.get(text)
        if pseudonym is None:
            # "surrogatepass": a lone surrogate (JSON allows one) must not make hashing, and so the export, fail.
            digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
            body = digest[: self._pseudonym_length - _PSEUDONYM_CHECK_LENGTH]
            pseudonym = PSEUDONYM_PREFIX + body + self._check(body)
            if len(self._pseudonyms) >= self._cache_size:
                self._pseudonyms.clear()
            self._pseudonyms[text] = pseudonym
        return pseudonym


def _with_points(metric: Metric, points: list[Any]) -> Metric:
    return Metric(
        metric.name, metric.description, metric.unit, dataclasses.replace(cast(Any, metric.data), data_points=points)
    )


def _rewritten(
    points: Sequence[Any], entries: Sequence[_Entry], exemplars: Mapping[int, list[Any]] | None
) -> list[Any]:
    """Points with their new attributes and exemplars; unchanged points are the same objects."""
    result: list[Any] = []
    for index, (point, entry) in enumerate(zip(points, entries, strict=True)):
        new_exemplars = exemplars.get(index) if exemplars else None
        if entry.attributes is None and new_exemplars is None:
            result.append(point)
            continue
        # Hot path: the SDK's points are frozen dataclasses with a __dict__; copying it is several times
        # faster than dataclasses.replace, which re-runs the generated __init__ through object.__setattr__.
        copy = object.__new__(type(point))
        fields = copy.__dict__
        fields.update(point.__dict__)
        if entry.attributes is not None:
            fields["attributes"] = entry.attributes
        if new_exemplars is not None:
            fields["exemplars"] = new_exemplars
        result.append(copy)
    return result


def _load_key(
    context: ProcessorContext, component_id: str, secret_name: str, token_bytes: Callable[[int], bytes]
) -> bytes:
    configured = context.secrets.get(secret_name)
    if configured is None or configured == "":
        return _FALLBACK_KEY.get(component_id, secret_name, token_bytes)
    key = configured.encode("utf-8")
    if len(key) < _MIN_KEY_BYTES:
        # The length only, never the key: a short key makes pseudonyms of low-entropy ids guessable.
        raise ValueError(
            f"the pseudonym key (secret {secret_name!r}) must be at least {_MIN_KEY_BYTES} bytes (got {len(key)})"
        )
    return key


def _create(config: SanitizeConfig, context: ProcessorContext) -> SanitizeProcessor:
    return SanitizeProcessor(config, context)


FACTORY: Final = ProcessorFactory("sanitize", SanitizeConfig, _create)
"""Registers the ``sanitize`` component type."""
