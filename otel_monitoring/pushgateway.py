"""Pushing the process's metrics to a Prometheus Pushgateway: periodically, on request, and at exit.

Batch jobs end before Prometheus scrapes them, so they push instead::

    from otel_monitoring import config, exporter, metrics

    config.configure_exporter(push_gateway="http://pushgateway:9091", job_name="nightly-report")
    metrics.counter("nightly_report_rows_total", "Rows written").inc(42)
    exporter.push()  # now; the pipeline also pushes every interval and once more at exit

``PROMETHEUS_PUSH_GATEWAY`` does the same without code. Every push sends the whole exposition of the
process (facade metrics and SDK instruments) with prometheus_client's ``push_to_gateway``: an HTTP PUT
that replaces everything the same grouping key pushed before, so metrics that disappeared from the
process disappear from the Pushgateway too. https://github.com/prometheus/pushgateway#put-method

Inside a host program a push never raises: a failure returns False and logs one warning per streak of
failures, naming the gateway without its credentials.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.exposition import push_to_gateway
from prometheus_client.registry import Collector

from otel_monitoring._pushgateway_http import Gateway, describe_error, wait_on_event
from otel_monitoring.config import SettingsListener, add_settings_listener, get_settings
from otel_monitoring.settings import PushgatewayConfig, Settings

if TYPE_CHECKING:
    from otel_monitoring.telemetry import Telemetry

__all__ = ["PushFunction", "PushgatewayPusher", "push_now", "start_pushgateway"]

_logger = logging.getLogger(__name__)


class PushFunction(Protocol):
    """The shape of prometheus_client's ``push_to_gateway``; tests pass a fake one."""

    def __call__(
        self,
        gateway: str,
        job: str,
        registry: Collector,
        grouping_key: dict[str, Any] | None = ...,
        timeout: float | None = ...,
        handler: Callable[..., Any] = ...,
    ) -> None: ...


Wait = Callable[[float, threading.Event], object]
"""``wait(seconds, wake)``: block up to ``seconds``, returning early once ``wake`` is set."""


def _grouping_key(telemetry: Telemetry) -> dict[str, str]:
    """The grouping key beside ``job``: none by default, as the Pushgateway's guidance for batch jobs asks.

    A PUT replaces the whole group, so each run of a job replaces the previous run's values and nothing
    stale piles up (a per-process key would leave one group per run behind forever). The price: two
    processes pushing the same job at once overwrite each other, so a job that runs as several processes
    sets a distinct ``service.instance.id`` in ``OTEL_RESOURCE_ATTRIBUTES`` for each, which becomes the
    ``instance`` label. Long-running services are better scraped, or export OTLP to the collector sidecar.
    """
    configured = telemetry.settings.service.resource_attributes.get("service.instance.id")
    if configured and telemetry.resource.attributes.get("service.instance.id") == configured:
        return {"instance": configured}
    return {}


class PushgatewayPusher:
    """Pushes one ``Telemetry``'s exposition to the Pushgateway in ``config``.

    ``start()`` pushes every ``interval_seconds`` from a daemon thread (none while no URL is set),
    follows settings changes and pushes once more at exit when ``push_at_exit``; ``stop()`` ends all
    that. ``push()`` pushes now. The push function and the wait between pushes are arguments so tests
    need neither a network nor sleeps.

    >>> pusher = PushgatewayPusher(get_telemetry(), PushgatewayConfig(url="http://127.0.0.1:9091"))  # doctest: +SKIP
    >>> pusher.push()  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        telemetry: Telemetry,
        config: PushgatewayConfig,
        *,
        push_function: PushFunction = push_to_gateway,
        wait: Wait = wait_on_event,
        subscribe: Callable[[SettingsListener], Callable[[], None]] = add_settings_listener,
    ) -> None:
        self._telemetry = telemetry
        self._push_function = push_function
        self._wait = wait
        self._subscribe = subscribe
        self._config = config
        self._gateway = Gateway.parse(config.url) if config.url else None
        self._lock = threading.Lock()  # guards the fields below and the thread's lifecycle
        self._push_lock = threading.Lock()  # one push at a time: the periodic thread and exporter.push() race
        self._wake = threading.Event()  # set by stop() and by config changes to cut a wait short
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._failing_at: str | None = None  # the gateway of the current failure streak, None while pushes work
        self._remove_listener: Callable[[], None] | None = None
        self._exit_hook: Callable[[], None] | None = None

    @property
    def config(self) -> PushgatewayConfig:
        """The settings pushes use now."""
        return self._config

    @property
    def running(self) -> bool:
        """Whether the periodic push thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Push periodically while a URL is set, follow settings changes, and push at exit; idempotent."""
        # Weak references: the settings store and atexit live as long as the process, and must not keep a
        # discarded pipeline (and its meter provider) alive, nor push for it.
        ref = weakref.ref(self)

        def on_settings(settings: Settings) -> None:
            pusher = ref()
            if pusher is not None:
                pusher.update_config(settings.pushgateway)

        def at_exit() -> None:
            pusher = ref()
            if pusher is not None:
                pusher.stop(final_push=pusher.config.push_at_exit)

        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
            # Registered after the MeterProvider's own atexit shutdown, so it runs first (atexit is LIFO) and
            # the final push still sees every reader alive.
            atexit.register(at_exit)
            self._exit_hook = at_exit
            self._remove_listener = self._subscribe(on_settings)
            self._start_thread_if_needed()

    def update_config(self, config: PushgatewayConfig) -> None:
        """Use new settings: a new URL starts (or, unset, ends) the thread; a new interval applies at once."""
        with self._lock:
            if config == self._config:
                return
            self._config = config
            self._gateway = Gateway.parse(config.url) if config.url else None
            self._wake.set()
            self._start_thread_if_needed()

    def stop(self, final_push: bool) -> None:
        """End periodic pushing and the at-exit push; with ``final_push``, push the latest values once more."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread, self._thread = self._thread, None
            remove, self._remove_listener = self._remove_listener, None
            hook, self._exit_hook = self._exit_hook, None
            self._wake.set()
        if remove is not None:
            remove()
        if hook is not None:
            atexit.unregister(hook)
        if thread is not None and thread is not threading.current_thread():
            # A push in flight ends within its timeout; the thread is a daemon, so never wait longer.
            thread.join(self._config.timeout_seconds + 1)
        if final_push and self._gateway is not None:
            self.push()

    def reset_after_fork(self) -> None:
        """In a forked child: fresh locks, and a periodic thread of its own (the parent's did not survive fork)."""
        self._lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._worker = None
        with self._lock:
            if self._started and not self._stopped:
                self._start_thread_if_needed()

    def push(self) -> bool:
        """Push the current exposition now; True when the Pushgateway accepted it. Never raises."""
        with self._lock:
            config, gateway = self._config, self._gateway
        if gateway is None:
            _logger.debug("no Pushgateway configured; nothing pushed")
            return False
        with self._push_lock:
            try:
                self._push_within_timeout(config, gateway)
            except Exception as error:  # never into the host program: report and carry on
                self._report_failure(config, gateway, error)
                return False
            self._report_success(gateway)
            return True

    def _push_within_timeout(self, config: PushgatewayConfig, gateway: Gateway) -> None:
        # urllib's timeout bounds each socket operation but not name resolution, which can hang for tens of
        # seconds on a broken resolver: the push runs on a worker thread and this one waits at most the timeout,
        # so neither exporter.push() nor the exit of a batch job can hang.
        previous = self._worker
        if previous is not None and previous.is_alive():
            raise TimeoutError(f"the previous push has not finished after {config.timeout_seconds:g}s")
        outcome: list[Exception | None] = []

        def attempt() -> None:
            try:
                self._push_function(
                    gateway.url,
                    job=config.job_name,
                    registry=self._telemetry.prometheus_registry,
                    grouping_key=_grouping_key(self._telemetry),
                    timeout=config.timeout_seconds,
                    handler=gateway.handler,
                )
            except Exception as error:
                outcome.append(error)
            else:
                outcome.append(None)

        worker = threading.Thread(target=attempt, name="otel-monitoring-pushgateway-push", daemon=True)
        try:
            worker.start()
        except RuntimeError:
            # No new threads once the interpreter is finalizing; the socket timeout still bounds this push.
            attempt()
        else:
            self._worker = worker
            worker.join(config.timeout_seconds)
        if not outcome:
            raise TimeoutError(f"no answer within {config.timeout_seconds:g}s")
        if outcome[0] is not None:
            raise outcome[0]

    def _report_failure(self, config: PushgatewayConfig, gateway: Gateway, error: Exception) -> None:
        reason = gateway.scrub(describe_error(error))
        with self._lock:
            new_streak, self._failing_at = self._failing_at != gateway.shown, gateway.shown
        if new_streak:
            _logger.warning(
                "could not push metrics to the Pushgateway at %s (job %r): %s; the program carries on, and further "
                "failures are logged at debug level until a push succeeds",
                gateway.shown,
                config.job_name,
                reason,
            )
        else:
            _logger.debug("push to the Pushgateway at %s failed again: %s", gateway.shown, reason)

    def _report_success(self, gateway: Gateway) -> None:
        with self._lock:
            recovered, self._failing_at = self._failing_at is not None, None
        if recovered:
            _logger.info("pushing metrics to the Pushgateway at %s works again", gateway.shown)

    def _start_thread_if_needed(self) -> None:
        # Callers hold self._lock.
        if not self._started or self._stopped or self._gateway is None:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._wake.clear()  # a wake-up meant for an earlier thread must not cut the new one's first wait short
        self._thread = threading.Thread(target=self._run, name="otel-monitoring-pushgateway", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopped or self._gateway is None:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
                interval, wake = self._config.interval_seconds, self._wake
            self._wait(interval, wake)
            with self._lock:
                interrupted = wake.is_set()
                wake.clear()
            if interrupted:
                continue  # stopped, or new settings: look again before pushing
            self.push()


def start_pushgateway(telemetry: Telemetry) -> PushgatewayPusher:
    """The pusher a ``Telemetry`` runs: configured from its settings, started, following later changes."""
    pusher = PushgatewayPusher(telemetry, telemetry.settings.pushgateway)
    pusher.start()
    return pusher


def push_now(telemetry: Telemetry) -> bool:
    """Push once with the current settings (``exporter.push()``); False, with a warning, when that failed.

    >>> push_now(get_telemetry())  # doctest: +SKIP
    True
    """
    current = get_settings().pushgateway
    if current.url is None:
        _logger.warning(
            "no Pushgateway is configured, so nothing was pushed; set PROMETHEUS_PUSH_GATEWAY or call "
            "config.configure_exporter(push_gateway=...)"
        )
        return False
    pusher = telemetry.pushgateway_pusher
    if pusher is None:
        # A pipeline built without exporters still pushes when asked to, just not periodically.
        return PushgatewayPusher(telemetry, current).push()
    # The pipeline's own pusher, so a failing gateway warns once across exporter.push() and the exit push.
    pusher.update_config(current)
    return pusher.push()
