"""aggregate: remove attributes from chosen metrics and re-aggregate what then collides.

Dropping an attribute turns several series into one, and the merged series must still be valid:
cumulative counters are summed by their increases (so an input that starts, stops or resets never
makes the output go down or repeat, the failure of opentelemetry-collector-contrib issue 40808),
histograms are summed bucket by bucket, delta points are summed per batch and gauges are combined by
a chosen function. The stateful part is ``processors._merge.SeriesMerger``; one merger per processor
holds every matched metric's state across batches and forgets inputs after ``expiry_seconds``.

Example config (``processors:`` section)::

    aggregate/no_peer:
      rules:
        - metrics: ["http.server.*"]
          remove: [client.address, client.port]  # point attributes; resource attributes stay
        - metrics: [queue.depth]
          keep: [queue]
          gauge_function: sum

>>> from processors.component import ProcessorContext
>>> processor = FACTORY.create_from({"rules": [{"metrics": ["http.*"], "remove": ["user"]}]}, ProcessorContext())
>>> type(processor).__name__
'AggregateProcessor'
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Hashable, Mapping
from typing import Any, Self

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from pydantic import Field, model_validator

from processors._merge import GaugeFunction, SeriesMerger, origin_of
from processors.component import ComponentConfig, Processor, ProcessorContext, ProcessorFactory, map_metrics

__all__ = ["FACTORY", "AggregateConfig", "AggregateProcessor", "AggregateRule"]

# Metric names are few in practice, but a misbehaving sender could invent them without end; past this
# many the rule cache starts over rather than grow (a miss costs one regular-expression match per rule).
_RULE_CACHE_SIZE = 4096


class AggregateRule(ComponentConfig):
    """Which metrics lose which attributes, and how their gauges combine."""

    metrics: list[str]
    """Metric names or shell-style globs (``http.server.*``, ``db.client.?``), case-sensitive. When several
    rules match a metric, the first one listed applies."""

    remove: list[str] | None = None
    """Attribute keys to remove; every other key stays. Set this or ``keep``, not both."""

    keep: list[str] | None = None
    """The only attribute keys to keep; every other key is removed (``keep: []`` sums everything into one
    series). Set this or ``remove``, not both."""

    gauge_function: GaugeFunction = "last"
    """How gauge points that now share an attribute set combine: ``sum``, ``avg``, ``min``, ``max`` or
    ``last`` (the most recent point). Sums and histograms are always added up."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.metrics:
            raise ValueError("metrics: list at least one metric name or glob")
        if self.remove is None and self.keep is None:
            raise ValueError("set one of 'remove' (attribute keys to drop) or 'keep' (the only keys to keep)")
        if self.remove is not None and self.keep is not None:
            raise ValueError("set only one of 'remove' or 'keep', not both")
        return self


class AggregateConfig(ComponentConfig):
    """Rules for removing attributes; with no rules every metric passes through untouched."""

    rules: list[AggregateRule] = Field(default_factory=list)
    """Applied to each metric by name; a metric matching no rule passes through as it came."""

    expiry_seconds: float = Field(default=600.0, gt=0)
    """An input series not seen for this long is forgotten, which bounds memory. Keep it longer than the
    longest gap between two exports of a live series: a cumulative input that comes back after being
    forgotten has its whole value counted again."""


class _CompiledRule:
    """A rule ready for the hot path: key sets for O(1) membership, the gauge function."""

    __slots__ = ("gauge_function", "keep", "keys", "pattern")

    def __init__(self, rule: AggregateRule) -> None:
        self.pattern = re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in rule.metrics))
        self.keep = rule.keep is not None
        self.keys = frozenset(rule.keep if rule.keep is not None else rule.remove or ())
        self.gauge_function: GaugeFunction = rule.gauge_function

    def affects(self, attributes: Mapping[str, Any]) -> bool:
        """Whether this rule would change the attribute set."""
        if self.keep:
            return any(key not in self.keys for key in attributes)
        return any(key in attributes for key in self.keys)

    def regroup(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        keys = self.keys
        if self.keep:
            return {key: value for key, value in attributes.items() if key in keys}
        return {key: value for key, value in attributes.items() if key not in keys}


class AggregateProcessor(Processor):
    """Removes attributes per ``AggregateConfig`` rules and merges the series that then collide.

    Metrics that match no rule, and matched metrics none of whose points carry an attribute to remove
    (and that were never merged before), are passed on as the same objects.
    """

    def __init__(self, config: AggregateConfig, context: ProcessorContext) -> None:
        self._rules = [_CompiledRule(rule) for rule in config.rules]
        self._merger = SeriesMerger(clock=context.clock, expiry_seconds=config.expiry_seconds)
        self._rule_by_name: dict[str, _CompiledRule | None] = {}

    def series_count(self) -> int:
        """Input and output series the processor remembers (bounded by ``expiry_seconds``)."""
        return self._merger.series_count()

    def process(self, data: MetricsData) -> MetricsData:
        if not self._rules:
            return data
        return map_metrics(data, self._process_metric)

    def _process_metric(self, metric: Metric, resource: ResourceMetrics, scope: ScopeMetrics) -> Metric | None:
        rule = self._rule_for(metric.name)
        if rule is None:
            return metric
        return self._aggregate(metric, rule, origin_of(resource, scope))

    def _rule_for(self, name: str) -> _CompiledRule | None:
        try:
            return self._rule_by_name[name]
        except KeyError:
            pass
        if len(self._rule_by_name) >= _RULE_CACHE_SIZE:
            self._rule_by_name.clear()
        rule = next((rule for rule in self._rules if rule.pattern.fullmatch(name)), None)
        self._rule_by_name[name] = rule
        return rule

    def _aggregate(self, metric: Metric, rule: _CompiledRule, origin: Hashable) -> Metric | None:
        data = metric.data
        if not isinstance(data, Sum | Gauge | Histogram):
            return metric  # exponential histograms cannot be added bucket by bucket without rescaling
        points: list[NumberDataPoint | HistogramDataPoint] = list(data.data_points)
        if not points:
            return metric
        # Nothing to remove and no earlier merged state to continue: the metric is already what we would emit.
        # (tracks() first: it is one dict lookup, the scan is one per point.)
        if not self._merger.tracks(metric, origin) and not any(
            rule.affects(point.attributes or {}) for point in points
        ):
            return metric
        regroup = rule.regroup
        regrouped = [(point, regroup(point.attributes or {})) for point in points]
        return self._merger.merge(metric, regrouped, rule.gauge_function, origin=origin)


def create_aggregate_processor(config: AggregateConfig, context: ProcessorContext) -> AggregateProcessor:
    """Build an ``AggregateProcessor``; the factory's ``create``."""
    return AggregateProcessor(config, context)


FACTORY = ProcessorFactory("aggregate", AggregateConfig, create_aggregate_processor)
