"""Prometheus rules as code: the rule model, SLOs, YAML loading, the built-in rule pack, rendering and checking.

The public entry points for applications are in :mod:`otel_monitoring.alerts` (``Alert``, ``SLO``,
``register``); this package holds the machinery:

- :mod:`otel_monitoring.rules.model`: ``Alert``, ``RecordingRule``, ``RuleGroup``;
- :mod:`otel_monitoring.rules.slo`: ``SLO`` and its multi-window, multi-burn-rate alerts;
- :mod:`otel_monitoring.rules.loading`: rules from YAML;
- :mod:`otel_monitoring.rules.pack`: the built-in rule pack (``builtin_groups``);
- :mod:`otel_monitoring.rules.render`: rule files and Kubernetes ``PrometheusRule`` objects;
- :mod:`otel_monitoring.rules.check`: ``promtool check rules`` and ``promtool test rules``.
"""

__all__: list[str] = []
