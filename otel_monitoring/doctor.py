"""``otel-monitoring doctor``: the seed's troubleshooting section as a command.

It asks each part of the stack, over HTTP with short timeouts and in parallel, whether it is healthy:

- **Prometheus**: ``/-/healthy``, ``/-/ready``, every scrape target up (``/api/v1/targets``), rules loaded and
  evaluating (``/api/v1/rules``), an Alertmanager connected (``/api/v1/alertmanagers``), samples recent
  (``time() - max(timestamp(up) and up == 1)``: the newest successful scrape), and what makes dashboards slow
  (head series, recording rules).
- **Alertmanager**: ``/-/healthy``, ``/api/v2/status``, receivers with a channel, failed notifications.
- **Grafana**: ``/api/health``; with ``GRAFANA_API_KEY``, that the seed's dashboards exist.
- **Pushgateway**: ``/-/healthy``.
- **The collector sidecar**: its ``health_check`` and its own ``otelcol_*`` metrics (refusals, failed sends,
  queue fill).

Each failure carries the likely cause and the fix, filed under the seed's three common problems first
(metrics not appearing, alerts not firing, dashboards slow). :func:`run_doctor` returns a
:class:`DoctorReport`; the command prints it as a table or JSON and exits 1 when anything failed.

>>> report = DoctorReport([Finding("prometheus", "health", "ok", "200 from http://localhost:9090/-/healthy")])
>>> report.ok, report.counts()["ok"]
(True, 1)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin

import httpx
import yaml

from otel_monitoring._dashboard_uids import DASHBOARD_UIDS
from otel_monitoring.settings import Settings, hide_url_password

__all__ = [
    "COMPONENTS",
    "PROBLEMS",
    "DoctorReport",
    "Finding",
    "run_doctor",
]

Status = Literal["ok", "warn", "fail", "skip"]

COMPONENTS = ("prometheus", "alertmanager", "grafana", "pushgateway", "sidecar")
"""What ``doctor`` checks, in the order it reports them (``--only`` takes a comma-separated subset)."""

METRICS_MISSING = "metrics not appearing"
ALERTS_NOT_FIRING = "alerts not firing or not delivered"
DASHBOARDS_SLOW = "dashboards slow"
COMPONENT_DOWN = "component not answering"

PROBLEMS = (METRICS_MISSING, ALERTS_NOT_FIRING, DASHBOARDS_SLOW, COMPONENT_DOWN)
"""The seed's three common problems, in its order, then everything else: the order failures are explained in."""

# Past this many head series, range queries over raw series get slow; the rule pack's recording rules exist so
# that dashboards do not have to read them.
_MANY_SERIES = 1_000_000


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome. ``cause`` and ``fix`` are set for ``warn`` and ``fail``; ``problem`` is one of
    :data:`PROBLEMS`."""

    component: str
    check: str
    status: Status
    detail: str
    cause: str = ""
    fix: str = ""
    problem: str = ""


@dataclass(slots=True)
class DoctorReport:
    """Every finding, in component order. ``ok`` is false when any check failed (warnings do not count)."""

    findings: list[Finding] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(finding.status == "fail" for finding in self.findings)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("ok", "warn", "fail", "skip"), 0)
        for finding in self.findings:
            counts[finding.status] += 1
        return counts

    def problems(self) -> list[Finding]:
        """Failures then warnings, the seed's common problems first."""
        rank = {problem: index for index, problem in enumerate(PROBLEMS)}
        flagged = [finding for finding in self.findings if finding.status in ("fail", "warn")]
        return sorted(flagged, key=lambda f: (f.status != "fail", rank.get(f.problem, len(PROBLEMS))))

    def to_json(self) -> str:
        """The report as one JSON document: ``ok``, ``summary`` (counts) and ``findings``."""
        document = {
            "ok": self.ok,
            "summary": self.counts(),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "findings": [asdict(f) for f in self.findings],
        }
        return json.dumps(document, indent=2)

    def render_text(self) -> str:
        """A table of every check, then each problem with its likely cause and fix, then a summary line."""
        rows = [("COMPONENT", "CHECK", "STATUS", "DETAIL")]
        rows += [(f.component, f.check, f.status.upper(), f.detail) for f in self.findings]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
                 for row in rows]  # fmt: skip
        problems = self.problems()
        if problems:
            lines += ["", "Problems, most likely first:"]
            for number, finding in enumerate(problems, 1):
                label = "FAIL" if finding.status == "fail" else "warning"
                lines.append(f"{number}. [{label}] {finding.problem}: {finding.component} {finding.check}")
                lines.append(f"   cause: {finding.cause}")
                lines.append(f"   fix:   {finding.fix}")
        counts = self.counts()
        verdict = "healthy" if self.ok else "something is wrong"
        lines += [
            "",
            f"{verdict}: {counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed, "
            f"{counts['skip']} skipped ({self.elapsed_seconds:.1f} s)",
        ]
        return "\n".join(lines) + "\n"


# --- HTTP -------------------------------------------------------------------------------------------------------


class _Unreachable(Exception):
    """The request got no usable answer: connection refused, timeout, or an error status.

    ``url`` and ``reason`` are for display: a password in the URL is masked."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        url, reason = hide_url_password(url), hide_url_password(reason)
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One component as ``doctor`` reaches it: base URL, credentials, and how to fix it when it does not answer."""

    component: str
    url: str
    url_setting: str  # the variable that moves it, for the fix text
    start_hint: str
    credentials_hint: str
    configured: bool  # set by the user (or selected with --only): unreachable is then a failure, not a skip
    required: bool  # Prometheus and Alertmanager: unreachable is always a failure
    auth: httpx.Auth | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class _HTTP:
    """GET with one timeout, turning every transport failure into :class:`_Unreachable` with a short reason."""

    def __init__(self, client: httpx.Client, endpoint: _Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint

    def url(self, path: str) -> str:
        """The URL to request, with any ``user:password@`` in it: never print it, print :meth:`shown`."""
        return urljoin(self.endpoint.url.rstrip("/") + "/", path.lstrip("/")) if path else self.endpoint.url

    def shown(self, path: str) -> str:
        """The URL as reports show it, its password masked."""
        return hide_url_password(self.url(path))

    def get(
        self, path: str, params: Mapping[str, str] | None = None, *, accept: Sequence[int] = (200,)
    ) -> httpx.Response:
        url = self.url(path)
        try:
            response = self.client.get(url, params=params, auth=self.endpoint.auth, headers=dict(self.endpoint.headers))
        except httpx.ConnectError as error:
            raise _Unreachable(url, _connect_reason(error)) from None
        except httpx.TimeoutException:
            raise _Unreachable(url, f"no answer within {self.client.timeout.read}s (timeout)") from None
        except httpx.HTTPError as error:
            raise _Unreachable(url, str(error) or type(error).__name__) from None
        if response.status_code not in accept:
            text = " ".join(response.text.split())[:160]
            raise _Unreachable(url, f"HTTP {response.status_code}: {text}", response.status_code)
        return response

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``data`` of a Prometheus API answer."""
        response = self.get(path, params)
        try:
            body = response.json()
        except ValueError:
            raise _Unreachable(self.url(path), "the answer is not JSON") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise _Unreachable(self.url(path), f"API error: {body.get('error') if isinstance(body, dict) else body}")
        return body.get("data")


def _connect_reason(error: httpx.ConnectError) -> str:
    text = str(error)
    if "refused" in text.lower():
        return "connection refused"
    if "name" in text.lower() and ("resolve" in text.lower() or "not known" in text.lower()):
        return f"host name not found ({text})"
    return text or "cannot connect"


def _unreachable_finding(endpoint: _Endpoint, check: str, error: _Unreachable) -> Finding:
    """The finding for a component that does not answer: a skip if it is optional and nobody set it up."""
    detail = f"{error.url}: {error.reason}"
    if error.status in (401, 403):
        return Finding(
            endpoint.component,
            check,
            "fail",
            detail,
            cause=f"{endpoint.component} refused the credentials (HTTP {error.status})",
            fix=endpoint.credentials_hint,
            problem=COMPONENT_DOWN,
        )
    if error.status is None and not endpoint.configured and not endpoint.required:
        return Finding(
            endpoint.component,
            check,
            "skip",
            f"{detail} (not configured: set {endpoint.url_setting} or pass --only {endpoint.component})",
        )
    if error.status is None:
        cause = f"{endpoint.component} is not running, or {endpoint.url_setting} points elsewhere"
        if "timeout" in error.reason:
            cause = f"{endpoint.component} does not answer in time (overloaded, or a firewall drops packets)"
        fix = f"is it running? start it with {endpoint.start_hint}; or set {endpoint.url_setting} to its address"
    else:
        cause = f"{endpoint.component} answers with an error: it may be starting, shutting down or misconfigured"
        fix = f"read the {endpoint.component} log; the URL in {endpoint.url_setting} must be its base URL"
    return Finding(endpoint.component, check, "fail", detail, cause=cause, fix=fix, problem=COMPONENT_DOWN)


def _ok(component: str, check: str, detail: str) -> Finding:
    return Finding(component, check, "ok", detail)


# --- Prometheus -------------------------------------------------------------------------------------------------


def _target_fix(error: str, scrape_url: str) -> tuple[str, str]:
    """Likely cause and fix of a down scrape target, from Prometheus's ``lastError``."""
    lowered = error.lower()
    if "connection refused" in lowered:
        return (
            f"nothing listens at {scrape_url}: the service or sidecar is stopped, or the target address is wrong",
            "is it running? start the service, or the sidecar with `otel-monitoring collector`; check the "
            "target's host:port in prometheus.yml (the sidecar serves :8889/metrics, an embedded app its own "
            "/metrics)",
        )
    if "deadline exceeded" in lowered or "timeout" in lowered:
        return (
            "the scrape took longer than scrape_timeout: the endpoint is overloaded or exposes too many series",
            "raise scrape_timeout, or cut series with the cardinality processor (docs/processors.md)",
        )
    if "401" in lowered or "403" in lowered or "unauthorized" in lowered or "forbidden" in lowered:
        return (
            "the metrics endpoint requires credentials Prometheus does not send",
            "give the scrape job `authorization: {credentials: <OTEL_MONITORING_METRICS_TOKEN>}` or basic_auth "
            "matching OTEL_MONITORING_METRICS_USERNAME/_PASSWORD",
        )
    if "404" in lowered:
        return (
            "wrong metrics_path: the endpoint does not serve metrics there",
            "set metrics_path to /metrics (app.add_route('/metrics', exporter.metrics_endpoint); the sidecar "
            "serves /metrics on :8889)",
        )
    if "no such host" in lowered or "server misbehaving" in lowered:
        return ("Prometheus cannot resolve the target's host name", "fix the target's host name or DNS")
    return (
        "collection or export problem (the seed's 'metrics not appearing')",
        f"check the endpoint from the Prometheus host: curl {scrape_url}",
    )


def _check_targets(http: _HTTP) -> list[Finding]:
    data = http.api("api/v1/targets", {"state": "active"})
    targets = data.get("activeTargets", []) if isinstance(data, dict) else []
    if not targets:
        return [
            Finding(
                "prometheus",
                "targets",
                "fail",
                "no active scrape targets",
                cause="Prometheus scrapes nothing, so no metric can appear",
                fix="add a scrape job for the service or the sidecar to prometheus.yml (`otel-monitoring deploy "
                "render` writes one) and reload Prometheus",
                problem=METRICS_MISSING,
            )
        ]
    findings = []
    up = 0
    for target in targets:
        labels = target.get("labels", {})
        name = f"target {labels.get('job', '?')} {labels.get('instance', target.get('scrapeUrl', '?'))}"
        health = target.get("health")
        scrape_url = target.get("scrapeUrl", "?")
        if health == "up":
            up += 1
        elif health == "down":
            error = target.get("lastError") or "down"
            cause, fix = _target_fix(error, scrape_url)
            findings.append(
                Finding("prometheus", name, "fail", f"down: {error}", cause=cause, fix=fix, problem=METRICS_MISSING)
            )
        else:
            findings.append(
                Finding(
                    "prometheus",
                    name,
                    "warn",
                    f"not scraped yet ({scrape_url})",
                    cause="the target was discovered moments ago, or Prometheus just started",
                    fix="run doctor again after one scrape interval",
                    problem=METRICS_MISSING,
                )
            )
    findings.insert(0, _ok("prometheus", "targets", f"{up} of {len(targets)} targets up"))
    return findings


@dataclass(slots=True)
class _RuleCounts:
    groups: int = 0
    alerting: int = 0
    recording: int = 0


def _check_rules(http: _HTTP) -> tuple[list[Finding], _RuleCounts]:
    groups = (http.api("api/v1/rules") or {}).get("groups", [])
    counts = _RuleCounts(groups=len(groups))
    findings = []
    for group in groups:
        for rule in group.get("rules", []):
            if rule.get("type") == "alerting":
                counts.alerting += 1
            else:
                counts.recording += 1
            if rule.get("health") == "err":
                findings.append(
                    Finding(
                        "prometheus",
                        f"rule {rule.get('name')}",
                        "fail",
                        f"group {group.get('name')} ({group.get('file')}): {rule.get('lastError')}",
                        cause="the rule fails at every evaluation, so its alert can never fire (or its recording "
                        "rule, and the dashboard panels reading it, stay empty)",
                        fix="fix the expression (try it in Prometheus's graph page; `otel-monitoring rules check` "
                        "runs promtool), then reload Prometheus (POST /-/reload or SIGHUP)",
                        problem=ALERTS_NOT_FIRING,
                    )
                )
    if not groups:
        findings.insert(
            0,
            Finding(
                "prometheus",
                "rules",
                "fail",
                "no rule groups loaded",
                cause="Prometheus has no alerting rules, so no alert can fire",
                fix="`otel-monitoring rules render --out DIR`, list DIR/*.rules.yml under rule_files in "
                "prometheus.yml, and reload Prometheus",
                problem=ALERTS_NOT_FIRING,
            ),
        )
    else:
        detail = f"{counts.groups} groups: {counts.alerting} alerting, {counts.recording} recording rules"
        findings.insert(0, _ok("prometheus", "rules", detail))
    return findings, counts


def _check_alertmanagers(http: _HTTP) -> Finding:
    data = http.api("api/v1/alertmanagers") or {}
    active = [item.get("url", "?") for item in data.get("activeAlertmanagers", [])]
    if active:
        return _ok("prometheus", "alertmanagers", f"sends alerts to {', '.join(active)}")
    dropped = len(data.get("droppedAlertmanagers", []))
    return Finding(
        "prometheus",
        "alertmanagers",
        "fail",
        "no Alertmanager connected" + (f" ({dropped} dropped by relabelling)" if dropped else ""),
        cause="Prometheus evaluates alerts but sends them nowhere (the seed's 'alerts not firing': Alertmanager "
        "configuration)",
        fix="add `alerting: {alertmanagers: [{static_configs: [{targets: ['<alertmanager host>:9093']}]}]}` to "
        "prometheus.yml and reload; Prometheus discovers it within about 5 s",
        problem=ALERTS_NOT_FIRING,
    )


# Age of the newest successful scrape. A failing scrape writes up=0, so `up` alone looks fresh when every target is
# down; `and up == 1` keeps only targets whose latest scrape succeeded. timestamp() must take the selector itself:
# applied to `up == 1` it returns the evaluation time (Prometheus 2.42), and a stalled scrape loop would look fresh.
_NEWEST_SCRAPE_AGE = "time() - max(timestamp(up) and up == 1)"


def _check_freshness(http: _HTTP, max_age: float) -> Finding:
    data = http.api("api/v1/query", {"query": _NEWEST_SCRAPE_AGE}) or {}
    result = data.get("result", [])
    if not result:
        return Finding(
            "prometheus",
            "samples",
            "fail",
            "no successful scrape in the last 5 minutes",
            cause="no target is up: nothing is collected",
            fix="see the targets above; a target must be up for samples to arrive",
            problem=METRICS_MISSING,
        )
    age = float(result[0]["value"][1])
    if math.isnan(age) or age > max_age:
        return Finding(
            "prometheus",
            "samples",
            "fail",
            f"newest sample is {age:.0f} s old (limit {max_age:.0f} s)",
            cause="scrapes stopped, or Prometheus's clock is off",
            fix="check that targets are up and that Prometheus's scrape loop runs (its log); compare clocks",
            problem=METRICS_MISSING,
        )
    return _ok("prometheus", "samples", f"newest sample {age:.1f} s old")


def _check_load(http: _HTTP, rules: _RuleCounts | None) -> list[Finding]:
    """The seed's 'dashboards slow': many series, long retention, and no recording rules to read instead."""
    findings = []
    head = (http.api("api/v1/status/tsdb") or {}).get("headStats", {})
    series = int(head.get("numSeries", 0))
    retention = (http.api("api/v1/status/flags") or {}).get("storage.tsdb.retention.time", "?")
    if retention == "0s":  # flag unset: Prometheus keeps its default
        retention = "15d (default)"
    detail = f"{series} head series, retention {retention}"
    if series > _MANY_SERIES:
        findings.append(
            Finding(
                "prometheus",
                "load",
                "warn",
                detail,
                cause="many series make range queries slow (the seed's 'too many metrics / long retention')",
                fix="cut label cardinality (cardinality and aggregate processors, docs/processors.md), shorten "
                "retention (PROMETHEUS_RETENTION_DAYS), and let panels read recording rules",
                problem=DASHBOARDS_SLOW,
            )
        )
    else:
        findings.append(_ok("prometheus", "load", detail))
    if rules is not None and rules.groups and rules.recording == 0:
        findings.append(
            Finding(
                "prometheus",
                "recording rules",
                "warn",
                "no recording rules loaded",
                cause="dashboards compute heavy queries from raw series at every refresh",
                fix="load the rule pack's recording rules (`otel-monitoring rules render --out DIR`)",
                problem=DASHBOARDS_SLOW,
            )
        )
    return findings


def _check_prometheus(http: _HTTP, max_age: float) -> list[Finding]:
    endpoint = http.endpoint
    try:
        http.get("-/healthy")
    except _Unreachable as error:
        return [_unreachable_finding(endpoint, "health", error)]
    findings = [_ok("prometheus", "health", f"{http.shown('-/healthy')} 200")]
    try:
        http.get("-/ready")
        findings.append(_ok("prometheus", "ready", "ready to serve queries"))
    except _Unreachable as error:
        findings.append(
            Finding(
                "prometheus",
                "ready",
                "fail",
                f"{error.url}: {error.reason}",
                cause="Prometheus is still replaying its write-ahead log after a start",
                fix="wait for it (its log says 'Server is ready to receive web requests')",
                problem=COMPONENT_DOWN,
            )
        )
        return findings
    rules: _RuleCounts | None = None
    steps: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("targets", lambda: _check_targets(http)),
        ("rules", lambda: _rules_step()),
        ("alertmanagers", lambda: [_check_alertmanagers(http)]),
        ("samples", lambda: [_check_freshness(http, max_age)]),
        ("load", lambda: _check_load(http, rules)),
    ]

    def _rules_step() -> list[Finding]:
        nonlocal rules
        found, rules = _check_rules(http)
        return found

    for check, step in steps:
        try:
            findings += step()
        except (_Unreachable, KeyError, TypeError, ValueError) as error:
            findings.append(
                Finding(
                    "prometheus",
                    check,
                    "fail",
                    str(error),
                    cause="the Prometheus API did not answer as expected",
                    fix="check the Prometheus log and version (doctor needs the HTTP API v1)",
                    problem=COMPONENT_DOWN,
                )
            )
    return findings


# --- Alertmanager ---------------------------------------------------------------------------------------------

_CHANNEL_KEYS = ("email_configs", "slack_configs", "pagerduty_configs", "webhook_configs", "opsgenie_configs",
                 "victorops_configs", "pushover_configs", "wechat_configs", "sns_configs", "telegram_configs",
                 "discord_configs", "webex_configs", "msteams_configs")  # fmt: skip


# Receivers that deliver nowhere on purpose: the usual name for a drop, and the rendered config's heartbeat
# receiver, which drops the always-firing Watchdog when no heartbeat URL is set (docs/alertmanager.md).
_DROP_RECEIVERS = frozenset({"null", "blackhole", "heartbeat"})


def _unroutable_receivers(config_text: str) -> list[str]:
    """Receivers some route uses that have no channel: their alerts are delivered nowhere."""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        return []
    empty = {
        receiver.get("name", "?")
        for receiver in config.get("receivers") or []
        if not any(receiver.get(key) for key in _CHANNEL_KEYS) and receiver.get("name") not in _DROP_RECEIVERS
    }
    used: set[str] = set()

    def walk(route: Mapping[str, Any]) -> None:
        if route.get("receiver"):
            used.add(route["receiver"])
        for child in route.get("routes") or []:
            walk(child)

    walk(config.get("route") or {})
    return sorted(empty & used)


def _failed_notifications(metrics_text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    failed: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "alertmanager_notifications_failed_total" and sample.value > 0:
                integration = sample.labels.get("integration", "?")
                failed[integration] = failed.get(integration, 0.0) + sample.value
    return failed


def _check_alertmanager(http: _HTTP) -> list[Finding]:
    try:
        http.get("-/healthy")
    except _Unreachable as error:
        return [_unreachable_finding(http.endpoint, "health", error)]
    findings = [_ok("alertmanager", "health", f"{http.shown('-/healthy')} 200")]
    try:
        status = http.get("api/v2/status").json()
    except (_Unreachable, ValueError) as error:
        reason = error.reason if isinstance(error, _Unreachable) else "the answer is not JSON"
        findings.append(_unreachable_finding(http.endpoint, "status", _Unreachable(http.url("api/v2/status"), reason)))
        return findings
    version = (status.get("versionInfo") or {}).get("version", "?")
    cluster = (status.get("cluster") or {}).get("status", "?")
    findings.append(_ok("alertmanager", "status", f"version {version}, cluster {cluster}"))
    unroutable = _unroutable_receivers((status.get("config") or {}).get("original", ""))
    if unroutable:
        findings.append(
            Finding(
                "alertmanager",
                "receivers",
                "warn",
                f"receivers without a channel: {', '.join(unroutable)}",
                cause="alerts routed there are delivered nowhere (no Slack, email, PagerDuty or SMS configured)",
                fix="set ALERT_SLACK_WEBHOOK, OTEL_MONITORING_ALERT_EMAIL (+ SMTP), "
                "OTEL_MONITORING_ALERT_PAGERDUTY_ROUTING_KEY or the SMS settings, then `otel-monitoring "
                "alertmanager render` and reload Alertmanager",
                problem=ALERTS_NOT_FIRING,
            )
        )
    try:
        failed = _failed_notifications(http.get("metrics").text)
    except (_Unreachable, ValueError):
        failed = {}
    if failed:
        listed = ", ".join(f"{name} {count:.0f}" for name, count in sorted(failed.items()))
        findings.append(
            Finding(
                "alertmanager",
                "notifications",
                "warn",
                f"failed notifications since start: {listed}",
                cause="Alertmanager could not deliver to these channels (bad webhook URL or key, network)",
                fix="check the channel settings (ALERT_SLACK_WEBHOOK...) and the Alertmanager log "
                "('Notify for alerts failed')",
                problem=ALERTS_NOT_FIRING,
            )
        )
    return findings


# --- Grafana, Pushgateway -------------------------------------------------------------------------------------


def _check_grafana(http: _HTTP, with_key: bool) -> list[Finding]:
    try:
        health = http.get("api/health").json()
    except (_Unreachable, ValueError) as error:
        if not isinstance(error, _Unreachable):
            error = _Unreachable(http.url("api/health"), "the answer is not JSON")
        return [_unreachable_finding(http.endpoint, "health", error)]
    database = health.get("database", "?")
    version = health.get("version", "?")
    if database != "ok":
        return [
            Finding(
                "grafana",
                "health",
                "fail",
                f"database {database}",
                cause="Grafana cannot reach its database",
                fix="check Grafana's database settings and its log",
                problem=DASHBOARDS_SLOW,
            )
        ]
    findings = [_ok("grafana", "health", f"version {version}, database ok")]
    if not with_key:
        findings.append(Finding("grafana", "dashboards", "skip", "GRAFANA_API_KEY not set: dashboards not listed"))
        return findings
    try:
        found = http.get("api/search", {"type": "dash-db", "limit": "5000"}).json()
    except _Unreachable as error:
        findings.append(_unreachable_finding(http.endpoint, "dashboards", error))
        return findings
    uids = {item.get("uid") for item in found if isinstance(item, dict)}
    missing = [uid for uid in DASHBOARD_UIDS if uid not in uids]
    if missing:
        findings.append(
            Finding(
                "grafana",
                "dashboards",
                "warn",
                f"{len(uids)} dashboards; missing: {', '.join(missing)}",
                cause="the dashboards as code were not provisioned",
                fix="`otel-monitoring dashboards push` (or provision `dashboards render --out DIR`)",
                problem=DASHBOARDS_SLOW,
            )
        )
    else:
        findings.append(_ok("grafana", "dashboards", f"{len(uids)} dashboards, every seed dashboard present"))
    return findings


def _check_pushgateway(http: _HTTP) -> list[Finding]:
    try:
        http.get("-/healthy")
    except _Unreachable as error:
        return [_unreachable_finding(http.endpoint, "health", error)]
    return [_ok("pushgateway", "health", f"{http.shown('-/healthy')} 200")]


# --- The sidecar ------------------------------------------------------------------------------------------------


def _sidecar_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("otelcol_"):
                samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def _total(samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


_EXPORTER_METRICS = (
    "otelcol_exporter_send_failed_metric_points_total",
    "otelcol_exporter_enqueue_failed_metric_points_total",
    "otelcol_exporter_queue_size",
    "otelcol_exporter_queue_capacity",
)


def _check_sidecar_metrics(text: str) -> list[Finding]:
    samples = _sidecar_samples(text)
    if not samples:
        return [
            Finding(
                "sidecar",
                "metrics",
                "fail",
                "no otelcol_* metrics on the metrics URL",
                cause="the URL is not the sidecar's prometheus exporter",
                fix="set OTEL_MONITORING_SIDECAR_METRICS_URL to the sidecar's exporters.prometheus endpoint "
                "(default http://<host>:8889/metrics)",
                problem=METRICS_MISSING,
            )
        ]
    accepted = _total(samples, "otelcol_receiver_accepted_metric_points_total")
    refused = _total(samples, "otelcol_receiver_refused_metric_points_total")
    findings = []
    detail = f"accepted {accepted:.0f} points, refused {refused:.0f}"
    if accepted == 0:
        findings.append(
            Finding(
                "sidecar",
                "receiver",
                "warn",
                detail,
                cause="no worker has sent data to the sidecar yet",
                fix="point the services at it: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://<sidecar>:4318/v1/metrics "
                "and OTEL_METRICS_EXPORTER=otlp",
                problem=METRICS_MISSING,
            )
        )
    elif refused > 0:
        findings.append(
            Finding(
                "sidecar",
                "receiver",
                "warn",
                detail,
                cause="the sidecar refused data (memory limiter over its soft limit, or a full sending queue); "
                "workers retry, but data may arrive late",
                fix="give the sidecar more memory (memory_limiter limits) or fix the slow exporter below",
                problem=METRICS_MISSING,
            )
        )
    else:
        findings.append(_ok("sidecar", "receiver", detail))
    by_exporter: dict[str, dict[str, float]] = {}
    for name in _EXPORTER_METRICS:
        for labels, value in samples.get(name, []):
            exporter = labels.get("exporter", "?")
            by_exporter.setdefault(exporter, {})[name] = by_exporter.get(exporter, {}).get(name, 0.0) + value
    for exporter, values in sorted(by_exporter.items()):
        size = values.get("otelcol_exporter_queue_size", 0.0)
        capacity = values.get("otelcol_exporter_queue_capacity", 0.0)
        failed = values.get("otelcol_exporter_send_failed_metric_points_total", 0.0)
        dropped = values.get("otelcol_exporter_enqueue_failed_metric_points_total", 0.0)
        detail = f"queue {size:.0f}/{capacity:.0f}, failed {failed:.0f}, refused by queue {dropped:.0f} points"
        if capacity and size >= 0.8 * capacity:
            findings.append(
                Finding(
                    "sidecar",
                    f"exporter {exporter}",
                    "fail",
                    detail,
                    cause="the sending queue is nearly full: the backend is down or slower than the data rate",
                    fix="check the exporter's endpoint (remote-write receiver, gateway) is up and reachable; "
                    "raise num_consumers or queue_size",
                    problem=METRICS_MISSING,
                )
            )
        elif failed or dropped:
            findings.append(
                Finding(
                    "sidecar",
                    f"exporter {exporter}",
                    "warn",
                    detail,
                    cause="the exporter lost data since the sidecar started (backend refused it or was down)",
                    fix="check the exporter's endpoint and credentials; the sidecar log names each failure",
                    problem=METRICS_MISSING,
                )
            )
        else:
            findings.append(_ok("sidecar", f"exporter {exporter}", detail))
    return findings


def _check_sidecar(health: _HTTP, metrics: _HTTP) -> list[Finding]:
    try:
        health.get("", accept=(200,))
    except _Unreachable as error:
        if error.status == 503:
            return [
                Finding(
                    "sidecar",
                    "health",
                    "fail",
                    f"{error.url}: HTTP 503",
                    cause="the sidecar is starting or shutting down (its pipelines do not run)",
                    fix="wait a moment; if it stays 503, read the sidecar's log",
                    problem=METRICS_MISSING,
                )
            ]
        return [_unreachable_finding(health.endpoint, "health", error)]
    findings = [_ok("sidecar", "health", f"{health.shown('')} 200")]
    try:
        text = metrics.get("").text
    except _Unreachable as error:
        findings.append(_unreachable_finding(metrics.endpoint, "metrics", error))
        return findings
    try:
        findings += _check_sidecar_metrics(text)
    except ValueError as error:
        findings.append(
            Finding(
                "sidecar",
                "metrics",
                "fail",
                f"not a Prometheus exposition: {error}",
                cause="the metrics URL is not the sidecar's prometheus exporter",
                fix="set OTEL_MONITORING_SIDECAR_METRICS_URL to the sidecar's exporters.prometheus endpoint",
                problem=METRICS_MISSING,
            )
        )
    return findings


# --- Running ----------------------------------------------------------------------------------------------------


def _endpoints(settings: Settings, selected: Iterable[str]) -> dict[str, _Endpoint | None]:
    chosen = set(selected)

    def configured(component: str, *paths: str) -> bool:
        return component in chosen or any(settings.source_of(path) != "default" for path in paths)

    prometheus = settings.prometheus
    auth: httpx.Auth | None = None
    if prometheus.basic_auth_username is not None and prometheus.basic_auth_password is not None:
        auth = httpx.BasicAuth(prometheus.basic_auth_username, prometheus.basic_auth_password.get_secret_value())
    grafana_headers = {}
    if settings.grafana.api_key is not None:
        grafana_headers["Authorization"] = f"Bearer {settings.grafana.api_key.get_secret_value()}"
    sidecar_hint = "`otel-monitoring collector` (see docs/sidecar.md)"
    endpoints: dict[str, _Endpoint | None] = {
        "prometheus": _Endpoint(
            "prometheus",
            prometheus.url,
            "OTEL_MONITORING_PROMETHEUS_URL",
            "`prometheus --config.file=prometheus.yml` (or `docker compose up -d prometheus` in deploy/)",
            "set OTEL_MONITORING_PROMETHEUS_USERNAME and OTEL_MONITORING_PROMETHEUS_PASSWORD to a user of "
            "Prometheus's web config (basic auth)",
            configured("prometheus", "prometheus.url"),
            required=True,
            auth=auth,
        ),
        "alertmanager": _Endpoint(
            "alertmanager",
            settings.alerting.alertmanager_url,
            "ALERTMANAGER_URL",
            "`prometheus-alertmanager --config.file=alertmanager.yml` (render it with `otel-monitoring "
            "alertmanager render`)",
            "Alertmanager answered 401/403: put a proxy's credentials in ALERTMANAGER_URL (http://user:pass@host)",
            configured("alertmanager", "alerting.alertmanager_url"),
            required=True,
        ),
        "grafana": _Endpoint(
            "grafana",
            settings.grafana.url,
            "GRAFANA_URL",
            "`docker compose up -d grafana` in deploy/",
            "set GRAFANA_API_KEY to a service-account token of org AIAgency (Viewer is enough for doctor)",
            configured("grafana", "grafana.url", "grafana.api_key"),
            required=False,
            headers=grafana_headers,
        ),
        "pushgateway": None,
        "sidecar": _Endpoint(
            "sidecar",
            settings.sidecar.health_url,
            "OTEL_MONITORING_SIDECAR_HEALTH_URL",
            sidecar_hint,
            "the sidecar's health check needs no credentials: is the URL right?",
            configured("sidecar", "sidecar.health_url", "sidecar.metrics_url"),
            required=False,
        ),
    }
    if settings.pushgateway.url is not None:
        endpoints["pushgateway"] = _Endpoint(
            "pushgateway",
            settings.pushgateway.url,
            "PROMETHEUS_PUSH_GATEWAY",
            "`prometheus-pushgateway` (or `docker compose up -d pushgateway` in deploy/)",
            "Pushgateway answered 401/403: put its credentials in PROMETHEUS_PUSH_GATEWAY (http://user:pass@host)",
            configured=True,
            required=False,
        )
    return endpoints


def run_doctor(
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    timeout: float = 2.0,
    max_sample_age: float = 120.0,
    transport: httpx.BaseTransport | None = None,
) -> DoctorReport:
    """Check every component in :data:`COMPONENTS` (or those in ``only``) in parallel and return the findings.

    Components named in ``only`` or whose URL setting was given are *configured*: not answering is then a
    failure. Grafana and the sidecar at their default URLs are skipped when nothing answers there; the
    Pushgateway is skipped when ``pushgateway.url`` is unset (unless ``only`` names it, which fails).

    >>> report = run_doctor(Settings(), only=["pushgateway"])
    >>> [(f.component, f.status) for f in report.findings]
    [('pushgateway', 'fail')]
    """
    selected = list(only) if only else list(COMPONENTS)
    unknown = [name for name in selected if name not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown component {unknown[0]!r} (valid: {', '.join(COMPONENTS)})")
    endpoints = _endpoints(settings, only or ())
    started = time.monotonic()
    with httpx.Client(timeout=timeout, transport=transport, follow_redirects=True) as client:

        def check(component: str) -> list[Finding]:
            endpoint = endpoints[component]
            if endpoint is None:  # only the Pushgateway has no default address
                if only and "pushgateway" in only:
                    return [
                        Finding(
                            "pushgateway",
                            "health",
                            "fail",
                            "pushgateway.url is not set",
                            cause="no Pushgateway address is configured",
                            fix="set PROMETHEUS_PUSH_GATEWAY (http://pushgateway:9091)",
                            problem=COMPONENT_DOWN,
                        )
                    ]
                return [Finding("pushgateway", "health", "skip", "not configured (PROMETHEUS_PUSH_GATEWAY unset)")]
            http = _HTTP(client, endpoint)
            if component == "prometheus":
                return _check_prometheus(http, max_sample_age)
            if component == "alertmanager":
                return _check_alertmanager(http)
            if component == "grafana":
                return _check_grafana(http, settings.grafana.api_key is not None)
            if component == "pushgateway":
                return _check_pushgateway(http)
            metrics = _Endpoint(
                "sidecar",
                settings.sidecar.metrics_url,
                "OTEL_MONITORING_SIDECAR_METRICS_URL",
                endpoint.start_hint,
                endpoint.credentials_hint,
                endpoint.configured,
                required=False,
            )
            return _check_sidecar(http, _HTTP(client, metrics))

        with ThreadPoolExecutor(max_workers=len(selected), thread_name_prefix="doctor") as pool:
            results = list(pool.map(check, selected))
    return DoctorReport([finding for findings in results for finding in findings], time.monotonic() - started)
