"""Rule groups as Prometheus rule files (one file per group) or Kubernetes ``PrometheusRule`` objects.

>>> from otel_monitoring.rules.model import Alert, RuleGroup
>>> group = RuleGroup(name="app", rules=[Alert(name="Down", query="up == 0", severity="critical")])
>>> print(render_rule_groups([group]), end="")
groups:
- name: app
  rules:
  - alert: Down
    expr: up == 0
    labels:
      severity: critical
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml

from otel_monitoring.rules.model import RuleGroup

__all__ = [
    "FORMATS",
    "RuleFormat",
    "file_name",
    "render_prometheus_rule",
    "render_rule_groups",
    "write_rule_files",
]

RuleFormat = Literal["prometheus", "prometheusrule"]
FORMATS: tuple[str, ...] = ("prometheus", "prometheusrule")
PROMETHEUS_RULE_LABELS = {"app.kubernetes.io/name": "otel-monitoring", "app.kubernetes.io/component": "alert-rules"}


class _RuleDumper(yaml.SafeDumper):
    """Multi-line PromQL as literal blocks, and no folding, so a rendered rule reads like a hand-written one."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RuleDumper.add_representer(str, _represent_str)


def _dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_RuleDumper, sort_keys=False, allow_unicode=True, width=10_000)


def _check_unique(groups: Sequence[RuleGroup]) -> None:
    seen: set[str] = set()
    for group in groups:
        if group.name in seen:
            raise ValueError(f"rule group {group.name!r} is defined twice; group names must be unique")
        seen.add(group.name)


def render_rule_groups(groups: Iterable[RuleGroup]) -> str:
    """One Prometheus rule file (YAML) holding every group."""
    groups = list(groups)
    _check_unique(groups)
    return _dump({"groups": [group.to_dict() for group in groups]})


def _resource_name(group: str) -> str:
    """A Kubernetes object name (RFC 1123 subdomain) made from a group name."""
    name = re.sub(r"[^a-z0-9.-]+", "-", group.lower()).strip("-.")
    return name[:253] or "rules"


def render_prometheus_rule(
    groups: Iterable[RuleGroup],
    name: str,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """A ``monitoring.coreos.com/v1`` ``PrometheusRule`` for the Prometheus Operator holding the groups.

    ``labels`` are added to the object's labels, for the Prometheus resource's ``ruleSelector`` (for example
    ``{"release": "kube-prometheus-stack"}``).
    """
    groups = list(groups)
    _check_unique(groups)
    metadata: dict[str, Any] = {"name": _resource_name(name)}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {**PROMETHEUS_RULE_LABELS, **(labels or {})}
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": [group.to_dict() for group in groups]},
    }
    return _dump(document)


def file_name(group: RuleGroup, rule_format: RuleFormat = "prometheus") -> str:
    """``<group>.rules.yml`` for Prometheus, ``<group>.prometheusrule.yaml`` for Kubernetes."""
    stem = _resource_name(group.name)
    return f"{stem}.rules.yml" if rule_format == "prometheus" else f"{stem}.prometheusrule.yaml"


def write_rule_files(
    groups: Iterable[RuleGroup],
    directory: str | PathLike[str],
    *,
    rule_format: RuleFormat = "prometheus",
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write one file per group into ``directory`` (created if missing) and return their paths.

    Files of other groups already in the directory are left alone: point Prometheus's ``rule_files`` at
    ``directory/*.rules.yml`` and render into an empty directory to drop retired groups.
    """
    groups = list(groups)
    _check_unique(groups)
    names = [file_name(group, rule_format) for group in groups]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(
                f"rule groups {groups[names.index(name)].name!r} and {groups[index].name!r} "
                f"would both be written to {name}"
            )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, name in zip(groups, names, strict=True):
        if rule_format == "prometheus":
            text = render_rule_groups([group])
        else:
            object_name = group.name if group.name.startswith("otel-monitoring") else f"otel-monitoring-{group.name}"
            text = render_prometheus_rule([group], object_name, namespace=namespace, labels=labels)
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
