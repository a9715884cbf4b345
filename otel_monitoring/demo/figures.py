"""What the demo's live view shows, read the way a user would read it: PromQL against Prometheus when it runs,
else the sidecar's ``/metrics`` scrape (rates computed here from successive scrapes).

Both readers return :class:`Figures`. The PromQL is in :data:`QUERIES`, so it can be pasted into Prometheus's UI.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["QUERIES", "AlertState", "Figures", "PrometheusReader", "ScrapeReader", "histogram_quantile"]

_REQUESTS = "http_server_request_duration_seconds"
_COST = "otel_monitoring_business_cost_USD_total"
TOP_CUSTOMERS = 5

QUERIES: Mapping[str, str] = {
    "requests_per_second": 'sum(rate({requests}_count{{job="{job}"}}[{window}]))',
    "p95_seconds": 'histogram_quantile(0.95, sum by (le) (rate({requests}_bucket{{job="{job}"}}[{window}])))',
    # `or vector(0)`: no 5xx series at all means no errors, not no data.
    "error_ratio": '(sum(rate({requests}_count{{job="{job}", http_response_status_code=~"5.."}}[{window}]))'
    ' or vector(0)) / sum(rate({requests}_count{{job="{job}"}}[{window}]))',
    "costs": 'topk({top}, sum by (client_id) ({cost}{{job="{job}"}}))',
}
"""The view's PromQL, with ``{job}``, ``{window}``, ``{requests}``, ``{cost}`` and ``{top}`` to fill in."""


@dataclass(frozen=True)
class AlertState:
    """An alert as Prometheus holds it: ``firing``, or ``pending`` (true, waiting out its ``for``)."""

    name: str
    severity: str
    state: str


@dataclass(frozen=True)
class Figures:
    """One reading of the service's figures; ``None`` where there is no data yet."""

    source: str
    """Where they were read: ``Prometheus`` or ``sidecar /metrics``."""
    requests_per_second: float | None = None
    p95_seconds: float | None = None
    error_ratio: float | None = None
    costs: tuple[tuple[str, float], ...] = ()
    """(customer pseudonym, USD since the start), highest first, at most five."""
    alerts: tuple[AlertState, ...] = ()
    """Alerts Prometheus holds (pending or firing), the Watchdog and other ``severity="none"`` ones left out."""
    alertmanager_active: int | None = None
    """Alerts Alertmanager holds as active (not silenced or inhibited); ``None`` without Alertmanager."""

    @property
    def live(self) -> bool:
        """True once requests are being counted."""
        return bool(self.requests_per_second)

    def firing(self) -> tuple[AlertState, ...]:
        return tuple(alert for alert in self.alerts if alert.state == "firing")


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative bucket counts ``{upper bound: count}``, ``+Inf`` included:
    linear interpolation inside the bucket holding the rank; ``None`` when there are no observations.

    >>> round(histogram_quantile(0.5, {0.1: 0, 0.2: 10, math.inf: 10}), 6)
    0.15
    >>> histogram_quantile(0.95, {0.1: 0, math.inf: 0}) is None
    True
    """
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # as PromQL does: the highest finite bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _number(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


class PrometheusReader:
    """The view's figures by PromQL (instant queries over ``window``) and the alerts Prometheus and Alertmanager
    hold. :meth:`read` returns ``None`` until Prometheus has two scrapes of the service."""

    def __init__(
        self,
        prometheus_url: str,
        job: str,
        *,
        alertmanager_url: str | None = None,
        window: str = "10s",
        client: httpx.Client | None = None,
    ) -> None:
        self.prometheus_url = prometheus_url
        self.alertmanager_url = alertmanager_url
        self._values = {"job": job, "window": window, "requests": _REQUESTS, "cost": _COST, "top": str(TOP_CUSTOMERS)}
        self._client = client or httpx.Client(timeout=2.0)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        response = self._client.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def _scalar(self, name: str) -> float | None:
        result = self.query(QUERIES[name].format(**self._values))
        return _number(result[0]["value"][1]) if result else None

    def alerts(self) -> tuple[AlertState, ...]:
        response = self._client.get(f"{self.prometheus_url}/api/v1/alerts")
        response.raise_for_status()
        found = [
            AlertState(alert["labels"].get("alertname", "?"), alert["labels"].get("severity", ""), alert["state"])
            for alert in response.json()["data"]["alerts"]
            if alert["labels"].get("severity", "none") != "none"
        ]
        return tuple(sorted(set(found), key=lambda alert: (alert.state != "firing", alert.name)))

    def alertmanager_active(self) -> int | None:
        if self.alertmanager_url is None:
            return None
        response = self._client.get(
            f"{self.alertmanager_url}/api/v2/alerts",
            params={"active": "true", "silenced": "false", "inhibited": "false"},
        )
        response.raise_for_status()
        return sum(1 for alert in response.json() if alert["labels"].get("severity", "none") != "none")

    def read(self) -> Figures | None:
        try:
            rate = self._scalar("requests_per_second")
            if rate is None:
                return None
            costs = self.query(QUERIES["costs"].format(**self._values))
            return Figures(
                source="Prometheus",
                requests_per_second=rate,
                p95_seconds=self._scalar("p95_seconds"),
                error_ratio=self._scalar("error_ratio"),
                costs=tuple(
                    sorted(
                        ((item["metric"].get("client_id", "?"), float(item["value"][1])) for item in costs),
                        key=lambda pair: -pair[1],
                    )
                ),
                alerts=self.alerts(),
                alertmanager_active=self.alertmanager_active(),
            )
        except (httpx.HTTPError, KeyError, ValueError):
            return None  # Prometheus is starting or stopping: the caller falls back to the scrape

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class _Totals:
    at: float
    requests: float
    errors: float
    buckets: dict[float, float]
    costs: dict[str, float]


@dataclass
class ScrapeReader:
    """The view's figures from the sidecar's scrape alone: counters at two moments ``window`` seconds apart give
    the rates, bucket increases the p95. Feed it with :meth:`observe` (tests) or let :meth:`read` fetch ``url``.
    """

    url: str
    job: str
    window: float = 10.0
    clock: Callable[[], float] = time.monotonic
    fetch: Callable[[str], str] | None = None
    _history: deque[_Totals] = field(default_factory=deque)

    def observe(self, exposition: str, at: float) -> None:
        """Take one scrape taken at ``at`` (seconds, any monotonic origin)."""
        requests = errors = 0.0
        buckets: dict[float, float] = {}
        costs: dict[str, float] = {}
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                if sample.labels.get("job") != self.job:
                    continue
                if sample.name == f"{_REQUESTS}_count":
                    requests += sample.value
                    if sample.labels.get("http_response_status_code", "").startswith("5"):
                        errors += sample.value
                elif sample.name == f"{_REQUESTS}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name == _COST:
                    customer = sample.labels.get("client_id", "?")
                    costs[customer] = costs.get(customer, 0.0) + sample.value
        self._history.append(_Totals(at, requests, errors, buckets, costs))
        # Keep one scrape at or before the window's start, so the rates always cover the whole window.
        while len(self._history) > 2 and self._history[1].at <= at - self.window:
            self._history.popleft()

    def figures(self) -> Figures:
        """The figures over the scrapes observed (rates need two)."""
        if not self._history:
            return Figures(source="sidecar /metrics")
        last = self._history[-1]
        costs = tuple(sorted(last.costs.items(), key=lambda pair: -pair[1])[:TOP_CUSTOMERS])
        first = self._history[0]
        seconds = last.at - first.at
        if len(self._history) < 2 or seconds <= 0:
            return Figures(source="sidecar /metrics", costs=costs)
        requests = max(last.requests - first.requests, 0.0)
        errors = max(last.errors - first.errors, 0.0)
        increases = {bound: max(count - first.buckets.get(bound, 0.0), 0.0) for bound, count in last.buckets.items()}
        return Figures(
            source="sidecar /metrics",
            requests_per_second=requests / seconds,
            p95_seconds=histogram_quantile(0.95, increases),
            error_ratio=errors / requests if requests else None,
            costs=costs,
        )

    def read(self) -> Figures:
        """Scrape ``url`` now and return :meth:`figures`; a failed scrape keeps the last figures."""
        try:
            if self.fetch is not None:
                text = self.fetch(self.url)
            else:
                response = httpx.get(self.url, timeout=2.0)
                response.raise_for_status()
                text = response.text
            self.observe(text, self.clock())
        except (httpx.HTTPError, ValueError):
            pass
        return self.figures()
