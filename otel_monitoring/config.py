"""The process-wide settings and the seed's calls that change them from code.

Code is the highest-precedence layer (defaults < YAML < environment < code), so a value set here wins over the
environment and survives :func:`reload_settings`::

    from otel_monitoring import config

    config.set_metrics_retention(days=15)
    config.configure_exporter(push_gateway="http://pushgateway:9091", job_name="aiagency-core")
    config.configure_alerts(slack_webhook="https://hooks.slack.com/...", email="alerts@aiagency.com")
    config.get_settings().pushgateway.job_name  # 'aiagency-core'

A bad argument raises :class:`ValueError` (a :class:`~otel_monitoring.settings.SettingsError`) naming the
parameter: it is the developer's own code, so failing loudly is right. Bad values in the file or the environment
only log a warning (see :func:`otel_monitoring.settings.load_settings`).

Other components follow changes with :func:`add_settings_listener`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from otel_monitoring.settings import Settings, SettingsError, apply_overrides, load_settings

__all__ = [
    "SettingsListener",
    "SettingsStore",
    "add_settings_listener",
    "configure_alerts",
    "configure_exporter",
    "get_settings",
    "reload_settings",
    "set_metrics_retention",
]

_logger = logging.getLogger(__name__)

SettingsListener = Callable[[Settings], None]
"""Called with the new :class:`Settings` after every change."""


def _nested(path: str, value: Any) -> dict[str, Any]:
    *sections, name = path.split(".")
    tree: dict[str, Any] = {name: value}
    for section in reversed(sections):
        tree = {section: tree}
    return tree


def _merge_into(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value


class SettingsStore:
    """Holds one :class:`Settings`, its code-overrides layer and its listeners; safe to use from any thread.

    The module-level functions use one process-wide store. Tests and embedders can build their own with an
    explicit environment:

    >>> store = SettingsStore(environ={"PROMETHEUS_RETENTION_DAYS": "30"})
    >>> store.set_metrics_retention(days=7)
    >>> store.get().prometheus.retention_days
    7
    """

    def __init__(
        self, config_file: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self._config_file = config_file
        self._environ = environ  # None: os.environ as it is at each load
        self._overrides: dict[str, Any] = {}
        self._settings: Settings | None = None
        self._listeners: list[SettingsListener] = []
        self._lock = threading.RLock()
        # Serializes notifications so listeners never run concurrently; re-entrant so a listener may change
        # settings itself.
        self._notify_lock = threading.RLock()

    def get(self) -> Settings:
        """The current settings, loaded (non-strict) on first use."""
        settings = self._settings
        if settings is not None:  # lock-free fast path: a reference read is atomic
            return settings
        with self._lock:
            return self._current()

    def reload(self, config_file: str | os.PathLike[str] | None = None) -> Settings:
        """Re-read the file and the environment, keep the code overrides, and notify listeners.

        ``config_file`` replaces the file given before; ``None`` keeps it (or ``$OTEL_MONITORING_CONFIG``).
        """
        with self._lock:
            if config_file is not None:
                self._config_file = config_file
            self._settings = self._load()
        self._notify()
        return self.get()

    def set_metrics_retention(self, days: int) -> None:
        """Set how many days Prometheus keeps samples (``prometheus.retention_days``)."""
        self._change("set_metrics_retention", [("days", "prometheus.retention_days", days)])

    def configure_exporter(
        self, push_gateway: str | None = None, job_name: str | None = None, interval_seconds: float | None = None
    ) -> None:
        """Set the Pushgateway URL, job name and push interval; ``None`` leaves a value unchanged."""
        self._change(
            "configure_exporter",
            [
                ("push_gateway", "pushgateway.url", push_gateway),
                ("job_name", "pushgateway.job_name", job_name),
                ("interval_seconds", "pushgateway.interval_seconds", interval_seconds),
            ],
        )

    def configure_alerts(
        self,
        slack_webhook: str | None = None,
        email: str | list[str] | None = None,
        *,
        pagerduty_routing_key: str | None = None,
        sms_to: str | list[str] | None = None,
    ) -> None:
        """Set the Slack webhook, the alert email addresses, the PagerDuty routing key and the SMS numbers
        (addresses and numbers: one, a comma-separated string or a list)."""
        self._change(
            "configure_alerts",
            [
                ("slack_webhook", "alerting.slack_webhook", slack_webhook),
                ("email", "alerting.email", list(email) if isinstance(email, list) else email),
                ("pagerduty_routing_key", "alerting.pagerduty_routing_key", pagerduty_routing_key),
                ("sms_to", "alerting.sms_to", list(sms_to) if isinstance(sms_to, list) else sms_to),
            ],
        )

    def add_listener(self, callback: SettingsListener) -> Callable[[], None]:
        """Call ``callback(settings)`` after every change; returns a function that removes it again.

        A listener that raises is logged and the others still run. Listeners may be called more than once with
        the same settings when changes race, so they should only act on differences.
        """
        with self._lock:
            self._listeners.append(callback)

        def remove() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return remove

    def _load(self) -> Settings:
        return load_settings(self._config_file, environ=self._environ, overrides=self._overrides or None)

    def _current(self) -> Settings:
        # Callers hold self._lock.
        if self._settings is None:
            self._settings = self._load()
        return self._settings

    def _change(self, function: str, params: list[tuple[str, str, Any]]) -> None:
        with self._lock:
            base = self._current()
            layer: dict[str, Any] = {}
            for param, path, value in params:
                if value is None:
                    continue
                one = _nested(path, value)
                try:
                    # Check each argument alone so the error names the parameter, before anything is recorded.
                    apply_overrides(base, one, strict=True)
                except SettingsError as error:
                    raise SettingsError(f"{function}({param})", error.problem, error.got) from None
                _merge_into(layer, one)
            if not layer:
                return
            _merge_into(self._overrides, layer)
            self._settings = apply_overrides(base, layer)
        self._notify()

    def _notify(self) -> None:
        with self._notify_lock:
            with self._lock:
                # The latest settings, not the ones this change produced: if changes raced, the last
                # notification still carries the final state.
                settings = self._current()
                listeners = list(self._listeners)
            for callback in listeners:
                try:
                    callback(settings)
                except Exception:
                    _logger.exception("settings listener %r failed", callback)


_store = SettingsStore()


def get_settings() -> Settings:
    """The process-wide settings, loaded from the file and environment on first use (bad values only warn).

    >>> get_settings().pushgateway.job_name  # doctest: +SKIP
    'otel_monitoring'
    """
    return _store.get()


def reload_settings(config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Re-read the YAML file and the environment, keeping values set from code; listeners are notified."""
    return _store.reload(config_file)


def set_metrics_retention(days: int) -> None:
    """Keep metrics for ``days`` days in Prometheus.

    >>> set_metrics_retention(days=15)  # doctest: +SKIP
    """
    _store.set_metrics_retention(days)


def configure_exporter(
    push_gateway: str | None = None, job_name: str | None = None, interval_seconds: float | None = None
) -> None:
    """Push metrics to a Prometheus Pushgateway.

    >>> configure_exporter(push_gateway="http://pushgateway:9091", job_name="aiagency-core")  # doctest: +SKIP
    """
    _store.configure_exporter(push_gateway, job_name, interval_seconds)
    from otel_monitoring.telemetry import start_if_exporting  # late: telemetry imports this module

    start_if_exporting()


def configure_alerts(
    slack_webhook: str | None = None,
    email: str | list[str] | None = None,
    *,
    pagerduty_routing_key: str | None = None,
    sms_to: str | list[str] | None = None,
) -> None:
    """Send alerts to a Slack webhook, email addresses, PagerDuty and/or SMS numbers (``None`` leaves a value
    unchanged). SMTP and the SMS account come from settings (docs/alertmanager.md).

    >>> configure_alerts(slack_webhook="https://hooks.slack.com/...", email="alerts@aiagency.com")  # doctest: +SKIP
    """
    _store.configure_alerts(slack_webhook, email, pagerduty_routing_key=pagerduty_routing_key, sms_to=sms_to)


def add_settings_listener(callback: SettingsListener) -> Callable[[], None]:
    """Call ``callback(settings)`` after every change to the process-wide settings; returns a remover."""
    return _store.add_listener(callback)
