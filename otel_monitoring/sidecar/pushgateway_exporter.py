"""The ``pushgateway`` exporter: the sidecar's summed metrics, pushed to a Prometheus Pushgateway every interval.

For pods Prometheus cannot scrape (batch jobs, networks it cannot reach). The exporter keeps a
:class:`~otel_monitoring.sidecar.prometheus_exporter.PrometheusExporter` store, so the pushed group is the sum over
the workers exactly as the ``prometheus`` exporter serves it, and PUTs the rendered exposition to
``<url>/metrics/job/<job>`` every ``interval``, and once more at shutdown. PUT replaces the whole group
(https://github.com/prometheus/pushgateway#put-method), so series that expired in the store disappear from the
Pushgateway too.

The Pushgateway sets the grouping key's ``job`` (and an empty ``instance``) on every pushed series, replacing the
series' own ``job`` (the service name): two services' series would then collide. So, before the push, ``job`` and
``instance`` labels become ``exported_job`` and ``exported_instance``, as Prometheus renames them on a scrape
without ``honor_labels``.

The push itself is the embedded mode's (:mod:`otel_monitoring.pushgateway`): prometheus_client's
``push_to_gateway`` (URL and grouping-key escaping, base64 for values with ``/``) with a handler that sends the
rendered text, credentials in the URL sent as basic auth and never logged. An unreachable gateway logs one
warning per failure streak and never raises.

>>> from otel_monitoring.sidecar.config import PushgatewayExporterConfig
>>> exporter = PushgatewayExporter(PushgatewayExporterConfig(url="http://pushgateway:9091", job="shop-pod"))
>>> exporter.start()  # doctest: +SKIP
>>> exporter.export(metrics_data)  # doctest: +SKIP
True
>>> exporter.shutdown(timeout=5.0)  # pushes once more  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.sdk.metrics.export import MetricsData
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import push_to_gateway

from otel_monitoring._pushgateway_http import Gateway, describe_error, wait_on_event
from otel_monitoring.pushgateway import PushFunction, Wait
from otel_monitoring.sidecar._points import count_points
from otel_monitoring.sidecar.config import PushgatewayExporterConfig
from otel_monitoring.sidecar.prometheus_exporter import PrometheusExporter

__all__ = ["PushgatewayExporter", "PushgatewayStats", "rename_target_labels"]

_logger = logging.getLogger(__name__)

_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# A label name at the start of a label set or after a comma. Inside a value a quote is always escaped (\"), so
# `,job="` cannot occur there.
_TARGET_LABEL: Final = re.compile(rb'([{,])(job|instance)="')


def rename_target_labels(exposition: bytes) -> bytes:
    """``job``/``instance`` labels renamed ``exported_job``/``exported_instance``, which the Pushgateway keeps.

    >>> rename_target_labels(b'requests_total{job="shop",route="/a,job=\\\\"x"} 3.0\\n')
    b'requests_total{exported_job="shop",route="/a,job=\\\\"x"} 3.0\\n'
    """
    return _TARGET_LABEL.sub(rb'\1exported_\2="', exposition)


@dataclass(frozen=True, slots=True)
class PushgatewayStats:
    """For the sidecar's own metrics. Points: ``exported`` taken from the pipeline; ``sent`` included in a push
    the gateway accepted; ``failed`` not pushed before shutdown. Pushes: ``pushes`` accepted,
    ``failed_pushes`` not. ``series``: series the store holds (and pushes)."""

    exported: int = 0
    sent: int = 0
    failed: int = 0
    pushes: int = 0
    failed_pushes: int = 0
    series: int = 0


class PushgatewayExporter:
    """Pushes the sum over workers of what :meth:`export` took to the Pushgateway in ``config``.

    ``start()`` pushes every ``config.interval`` from a daemon thread (nothing before the first export, so a
    restarted sidecar never wipes the group with an empty push); ``shutdown(timeout)`` stops it and pushes once
    more. ``push()`` pushes now and returns whether the gateway accepted. ``store`` is the
    :class:`~otel_monitoring.sidecar.prometheus_exporter.PrometheusExporter` that sums the workers (default: one
    with default settings); ``push_function`` and ``wait`` replace prometheus_client's push and the wait between
    pushes, so tests need no network and no sleeps.

    >>> exporter = PushgatewayExporter(PushgatewayExporterConfig(url="http://127.0.0.1:9091"))
    >>> exporter.push()  # nothing exported yet: nothing to push
    False
    >>> exporter.stats().pushes
    0
    """

    def __init__(
        self,
        config: PushgatewayExporterConfig,
        *,
        name: str = "pushgateway",
        store: PrometheusExporter | None = None,
        push_function: PushFunction = push_to_gateway,
        wait: Wait = wait_on_event,
    ) -> None:
        self.config = config
        self.name = name
        self.store = store if store is not None else PrometheusExporter()
        self._gateway = Gateway.parse(config.url)
        self._push_function = push_function
        self._wait = wait
        self._empty_registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()  # guards the counts and the thread's lifecycle
        self._push_lock = threading.Lock()  # one push at a time: the periodic thread and shutdown's final push
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._failing = False
        self._exported = self._pending = self._sent = self._failed = self._pushes = self._failed_pushes = 0

    def start(self) -> None:
        """Start pushing every ``config.interval``; idempotent."""
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-push", daemon=True)
            self._thread.start()

    def export(self, data: MetricsData, *, reserved: bool = False) -> bool:
        """Add a batch to the store; the next push carries it. Always taken (``reserved`` changes nothing)."""
        self.store.export(data)
        points = count_points(data)
        with self._lock:
            self._exported += points
            self._pending += points
        return True

    def busy(self) -> bool:
        """Never: the store takes every batch at once; pushes are decoupled from the pipeline."""
        return False

    def reserve(self) -> bool:
        """Always room: nothing is queued."""
        return True

    def release(self) -> None:
        """Nothing to give back."""

    def push(self) -> bool:
        """Push the store now; True when the gateway accepted it. Never raises."""
        with self._push_lock:
            with self._lock:
                if not self._exported:
                    return False
                included = self._pending  # taken before rendering: points exported from now on go in the next push
            body = rename_target_labels(self.store.render())
            try:
                self._put(body)
            except Exception as error:  # never into the pipeline: report and carry on
                self._report_failure(error)
                return False
            with self._lock:
                self._pending -= included
                self._sent += included
                self._pushes += 1
                recovered, self._failing = self._failing, False
            if recovered:
                _logger.info("%s: pushing to the Pushgateway at %s works again", self.name, self._gateway.shown)
            return True

    def stats(self) -> PushgatewayStats:
        """The counts so far (see :class:`PushgatewayStats`)."""
        with self._lock:
            exported, sent, failed = self._exported, self._sent, self._failed
            pushes, failed_pushes = self._pushes, self._failed_pushes
        return PushgatewayStats(exported, sent, failed, pushes, failed_pushes, self.store.series_count())

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the periodic pushes and push once more (within ``config.timeout``); idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread, self._thread = self._thread, None
            self._wake.set()
        if thread is not None:
            # A push in flight ends within the socket timeout; the thread is a daemon, so never wait longer.
            thread.join(min(timeout, self.config.timeout + 1))
        self.push()
        with self._lock:
            self._failed += self._pending
            self._pending = 0

    def _put(self, body: bytes) -> None:
        gateway = self._gateway

        def send_rendered(url: str, method: str, timeout: float | None, headers: Any, data: bytes) -> Any:
            # prometheus_client builds the URL and grouping key; the body is the sidecar's exposition, not the
            # (empty) registry's.
            return gateway.handler(url, method, timeout, [("Content-Type", _CONTENT_TYPE)], body)

        self._push_function(
            gateway.url,
            job=self.config.job,
            registry=self._empty_registry,
            grouping_key={},
            timeout=self.config.timeout,
            handler=send_rendered,
        )

    def _report_failure(self, error: Exception) -> None:
        reason = self._gateway.scrub(describe_error(error))
        with self._lock:
            self._failed_pushes += 1
            new_streak, self._failing = not self._failing, True
        if new_streak:
            _logger.warning(
                "%s: could not push to the Pushgateway at %s (job %r): %s; retrying every %gs, further failures "
                "are logged at debug level until a push succeeds",
                self.name,
                self._gateway.shown,
                self.config.job,
                reason,
                self.config.interval,
            )
        else:
            _logger.debug("%s: push to %s failed again: %s", self.name, self._gateway.shown, reason)

    def _run(self) -> None:
        while True:
            self._wait(self.config.interval, self._wake)
            with self._lock:
                if self._stopped:
                    return
            self.push()
