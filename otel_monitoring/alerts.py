"""Alerts as code, as in the seed: ``alerts.register(alerts.Alert(...))``, rendered as Prometheus rules.

>>> from otel_monitoring import alerts
>>> registry = alerts.AlertRegistry()
>>> alerts.register(alerts.Alert(
...     name="high_error_rate",
...     query="rate(http_errors_total[5m]) > 0.1",
...     severity="critical",
...     annotations={"summary": "High error rate", "description": "Errors > 10% over 5 minutes"},
... ), registry=registry).name
'high_error_rate'
>>> alerts.register(alerts.SLO(name="api-availability", objective=99.9,
...     total="http_server_request_duration_seconds_count",
...     good='http_server_request_duration_seconds_count{http_response_status_code!~"5.."}'), registry=registry).name
'api-availability'
>>> [group.name for group in registry.rule_groups()]
['application', 'slo-api-availability']

Severities: ``critical`` needs action now, ``warning`` soon, ``info`` is informative; ``none`` never notifies
(the built-in Watchdog). Rules also load from YAML (:func:`load_rule_file`), and ``otel-monitoring rules render
--app module:attr`` finds an application's alerts with :func:`resolve_app`. The built-in rule pack is
:func:`otel_monitoring.rules.pack.builtin_groups`.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TypeVar

import yaml

from otel_monitoring.rules.loading import RuleFileError, load_rule_file, parse_rules
from otel_monitoring.rules.model import Alert, RecordingRule, RuleGroup, Severity
from otel_monitoring.rules.slo import SLO

__all__ = [
    "SLO",
    "Alert",
    "AlertRegistry",
    "AppRulesError",
    "RecordingRule",
    "RuleFileError",
    "RuleGroup",
    "Severity",
    "load_rule_file",
    "parse_rules",
    "register",
    "registered",
    "render_rule_file",
    "resolve_app",
    "resolve_apps",
    "rule_groups",
]

APP_GROUP = "application"
"""The group an application's registered alerts are rendered in."""


class AlertRegistry:
    """Alerts and SLOs registered by the application; registering the same name twice with a different rule
    is refused."""

    def __init__(self) -> None:
        self._alerts: dict[str, Alert] = {}
        self._slos: dict[str, SLO] = {}
        self._lock = threading.Lock()

    def register(self, rule: Alert | SLO) -> Alert | SLO:
        with self._lock:
            table: dict[str, Alert] | dict[str, SLO] = self._alerts if isinstance(rule, Alert) else self._slos
            existing = table.get(rule.name)
            if existing is not None and existing != rule:
                kind = "alert" if isinstance(rule, Alert) else "SLO"
                raise ValueError(f"{kind} {rule.name!r} is already registered with a different rule")
            table[rule.name] = rule  # type: ignore[assignment]
        return rule

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts.values())

    def slos(self) -> list[SLO]:
        with self._lock:
            return list(self._slos.values())

    def rule_groups(self, group: str = APP_GROUP) -> list[RuleGroup]:
        """The registered alerts in one group named ``group``, then one group per SLO."""
        alerts = self.alerts()
        groups = [RuleGroup(name=group, rules=list(alerts))] if alerts else []
        return groups + [slo.rule_group() for slo in self.slos()]


_DEFAULT = AlertRegistry()
_R = TypeVar("_R", Alert, SLO)


def register(rule: _R, *, registry: AlertRegistry | None = None) -> _R:
    """Register an alert (or an SLO) so that rule rendering includes it."""
    (registry or _DEFAULT).register(rule)
    return rule


def registered(*, registry: AlertRegistry | None = None) -> list[Alert]:
    """The alerts registered so far (in the process-wide registry unless ``registry`` is given)."""
    return (registry or _DEFAULT).alerts()


def rule_groups(*, registry: AlertRegistry | None = None) -> list[RuleGroup]:
    """Everything registered, as rule groups: the alerts in one group, one group per SLO."""
    return (registry or _DEFAULT).rule_groups()


def render_rule_file(alerts: Iterable[Alert], group: str = "otel-monitoring") -> str:
    """A Prometheus rule file (YAML) with one group holding the alerts."""
    document = {"groups": [RuleGroup(name=group, rules=list(alerts)).to_dict()]}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


class AppRulesError(ValueError):
    """``--app module:attr`` names nothing usable; the message says what and what would be valid."""


def _as_groups(value: object, spec: str) -> list[RuleGroup]:
    if isinstance(value, AlertRegistry):
        return value.rule_groups()
    if isinstance(value, RuleGroup):
        return [value]
    if isinstance(value, Alert | SLO | RecordingRule):
        value = [value]
    if isinstance(value, list | tuple):
        loose: list[Alert | RecordingRule] = []
        groups: list[RuleGroup] = []
        for index, item in enumerate(value):
            if isinstance(item, Alert | RecordingRule):
                loose.append(item)
            elif isinstance(item, SLO):
                groups.append(item.rule_group())
            elif isinstance(item, RuleGroup):
                groups.append(item)
            else:
                raise AppRulesError(
                    f"--app {spec}: item {index} is {type(item).__name__}, "
                    "not an Alert, SLO, RecordingRule or RuleGroup"
                )
        return ([RuleGroup(name=APP_GROUP, rules=loose)] if loose else []) + groups
    raise AppRulesError(
        f"--app {spec}: is {type(value).__name__}, not an AlertRegistry, a list of alerts, "
        "or a callable returning either"
    )


def resolve_app(spec: str, *, search_path: str | None = None) -> list[RuleGroup]:
    """The rules an application defines, as rule groups, from ``module:attr`` or ``module``.

    The module is imported (``search_path``, such as the current directory, is put first on ``sys.path``, as
    uvicorn does). ``attr`` may be an :class:`AlertRegistry`, a list of :class:`Alert`, :class:`SLO`,
    :class:`RecordingRule` or :class:`RuleGroup`, one of those, or a callable taking no arguments that returns
    them. Without ``attr`` the module's import registered its alerts with :func:`register`, and the
    process-wide registry is read.

    >>> [g.name for g in resolve_app("otel_monitoring.rules.pack:builtin_groups")][:2]
    ['otel-monitoring-http', 'otel-monitoring-targets']
    """
    return resolve_apps([spec], search_path=search_path)


def resolve_apps(specs: Iterable[str], *, search_path: str | None = None) -> list[RuleGroup]:
    """The rules of several ``--app`` specs, as :func:`resolve_app` reads each one.

    Every plain ``module`` spec reads the same process-wide registry, so all the modules are imported first and
    the registry is read once, its groups placed where the first plain module stands: ``--app svc.a --app
    svc.b`` gives one ``application`` group holding what both registered.

    >>> resolve_apps([])
    []
    """
    groups: list[RuleGroup] = []
    registry_at: int | None = None
    for spec in specs:
        module, attr = _import_app(spec, search_path)
        if not attr:
            registry_at = len(groups) if registry_at is None else registry_at
            continue
        value: object = module
        for part in attr.split("."):
            if not hasattr(value, part):
                raise AppRulesError(f"--app {spec}: module {module.__name__!r} has no attribute {attr!r}")
            value = getattr(value, part)
        if callable(value) and not isinstance(value, AlertRegistry | type):
            value = _call(value, spec)
        groups.extend(_as_groups(value, spec))
    if registry_at is not None:
        groups[registry_at:registry_at] = _DEFAULT.rule_groups()
    return groups


def _import_app(spec: str, search_path: str | None) -> tuple[ModuleType, str]:
    module_name, _, attr = spec.partition(":")
    if not module_name or (":" in spec and not attr):
        raise AppRulesError(f"--app {spec}: must be module:attr or module, such as myservice.alerting:registry")
    if search_path is not None and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        return importlib.import_module(module_name), attr
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise AppRulesError(
                f"--app {spec}: no module named {module_name!r} (is its directory on the path?)"
            ) from None
        raise


def _call(function: Callable[[], object], spec: str) -> object:
    try:
        return function()
    except TypeError as error:
        raise AppRulesError(f"--app {spec}: calling it failed ({error}); it must take no arguments") from None
