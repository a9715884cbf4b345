"""Typed settings for otel-monitoring, and the one place that reads the environment and YAML files.

Values are merged field by field with the precedence

    defaults < YAML file (``--config`` or ``OTEL_MONITORING_CONFIG``) < environment < code overrides

and every provided value remembers where it came from (:meth:`Settings.source_of`).

Inside a host application (``strict=False``) a bad value never raises: it is dropped with one warning that names
the variable or key and the value used instead. The CLI and the sidecar load with ``strict=True`` and get a
:class:`SettingsError` whose message is one line naming the offending key.

>>> settings = load_settings(environ={"PROMETHEUS_RETENTION_DAYS": "30"})
>>> settings.prometheus.retention_days
30
>>> settings.source_of("prometheus.retention_days")
'environment variable PROMETHEUS_RETENTION_DAYS'
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "HTTP_CLIENT_DURATION_BUCKETS",
    "MASK",
    "SYSTEM_METRIC_GROUPS",
    "AlertingConfig",
    "CollectorsConfig",
    "ExportersConfig",
    "GrafanaConfig",
    "HTTPServerConfig",
    "KubernetesConfig",
    "MetricsEndpointConfig",
    "OTLPConfig",
    "PrometheusConfig",
    "PushgatewayConfig",
    "ServiceConfig",
    "Settings",
    "SettingsError",
    "SidecarConfig",
    "apply_instrumentation_defaults",
    "apply_overrides",
    "load_settings",
    "parse_quantity",
    "process_environment",
    "render_settings",
    "secret_values",
]

_logger = logging.getLogger(__name__)

CONFIG_FILE_ENV = "OTEL_MONITORING_CONFIG"
"""Environment variable naming the YAML settings file when no file is passed explicitly."""

MASK = "********"
"""What secrets are replaced with in rendered output."""


class SettingsError(ValueError):
    """A bad setting. ``str(error)`` is one line: the key, what would be valid, and the bad value unless secret.

    ``key`` is an environment variable name, or a dotted YAML path followed by where it came from, e.g.
    ``pushgateway.interval_seconds (from /etc/otel-monitoring.yaml)``.

    >>> str(SettingsError("PROMETHEUS_RETENTION_DAYS", "must be an integer >= 1", "'abc'"))
    "PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'abc')"
    """

    def __init__(self, key: str, problem: str, got: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.got = got
        message = f"{key}: {problem}" if got is None else f"{key}: {problem} (got {got})"
        # One line whatever a path or value contains: CLI errors and log lines must stay grep-able.
        super().__init__(" ".join(message.split()))


# --- Field metadata ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Env:
    """Annotation metadata on every leaf field: its environment variables and what a valid value looks like.

    ``names`` are in priority order (a signal-specific OTLP variable before the generic one). For list fields
    ``valid`` describes one item; the message adds "a comma-separated list of" / "a list of" itself.
    """

    names: tuple[str, ...]
    valid: str
    secret: bool = False


def _env(*names: str, valid: str, secret: bool = False) -> _Env:
    return _Env(names, valid, secret)


@dataclass(frozen=True, slots=True)
class _Origin:
    kind: Literal["file", "env", "code"]
    where: str = ""

    @property
    def label(self) -> str:
        if self.kind == "env":
            return f"environment variable {self.where}"
        if self.kind == "file":
            return f"config file {self.where}"
        return "code"

    def key_for(self, path: str) -> str:
        if self.kind == "env":
            return self.where
        return f"{path} (from {self.where if self.kind == 'file' else 'code'})"


# --- Value types ------------------------------------------------------------------------------------------------
# Every layer (YAML, environment, code) goes through the same validators, so list and mapping fields also accept
# the environment's string forms in YAML. Env-specific parsing would otherwise drift from YAML parsing.

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _to_bool(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError("not a boolean")


def _reject_bool(value: object) -> object:
    # pydantic's lax mode turns True into 1; `retention_days: yes` in YAML is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _lower(value: object) -> object:
    # OTel configuration spec: enum values SHOULD be interpreted case-insensitively.
    return value.strip().lower() if isinstance(value, str) else value


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _parse_pairs(value: object) -> object:
    """Parse ``k=v,k2=v2`` as OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS are written.

    The format is W3C Baggage without properties: whitespace around keys and values is trimmed and values (not
    keys) are percent-decoded, with invalid UTF-8 replaced by U+FFFD. Any malformed pair rejects the whole value,
    as the OTel resource spec asks. https://opentelemetry.io/docs/specs/otel/resource/sdk/#specifying-resource-information-via-an-environment-variable
    """
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"malformed pair {item!r}")
        pairs[key.strip()] = unquote(raw.strip())
    return pairs


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("not an http(s) URL")
    return value


def _check_secret_url(value: SecretStr) -> SecretStr:
    _check_http_url(value.get_secret_value())
    return value


def _check_secret_not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("empty secret")
    return value


# local@domain with no spaces or separators; full RFC 5322 parsing would reject nothing real and accept typos.
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>.][^@\s,;<>]*")


def _check_emails(value: list[str]) -> list[str]:
    for address in value:
        if not _EMAIL.fullmatch(address):
            raise ValueError(f"{address!r} is not an email address")
    return value


def _normalize_networks(value: list[str]) -> list[str]:
    # strict=False accepts host bits ("10.1.2.3/8"), which is what people write; normalizing lets consumers call
    # ipaddress.ip_network() on the stored strings without thinking about it again.
    return [str(ipaddress.ip_network(item, strict=False)) for item in value]


def _check_increasing(value: list[float]) -> list[float]:
    if any(later <= earlier for earlier, later in itertools.pairwise(value)):
        raise ValueError("bucket boundaries must be strictly increasing")
    return value


def _check_paths(value: list[str]) -> list[str]:
    if any(not path.startswith("/") for path in value):
        raise ValueError("paths must start with '/'")
    return value


def _check_exporters(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unique = list(dict.fromkeys(value))
    if "none" in unique and len(unique) > 1:
        raise ValueError("'none' cannot be combined with other exporters")
    return unique


_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_Int = Annotated[int, BeforeValidator(_reject_bool)]
_Float = Annotated[FiniteFloat, BeforeValidator(_reject_bool)]
_Bool = Annotated[bool, BeforeValidator(_to_bool)]
_HttpURL = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_check_http_url)]
_Secret = Annotated[SecretStr, AfterValidator(_check_secret_not_empty)]
_SecretURL = Annotated[SecretStr, AfterValidator(_check_secret_url)]
_Pairs = Annotated[dict[str, str], BeforeValidator(_parse_pairs)]
_ExporterName = Annotated[Literal["prometheus", "otlp", "console", "none"], BeforeValidator(_lower)]
_Protocol = Annotated[Literal["http/protobuf", "http/json", "grpc"], BeforeValidator(_lower)]
_Temporality = Annotated[Literal["cumulative", "delta", "lowmemory"], BeforeValidator(_lower)]
_Compression = Annotated[Literal["none", "gzip"], BeforeValidator(_lower)]

_URL_VALID = "an http(s) URL"
_BOOL_VALID = "a boolean (true, false, 1, 0, yes, no)"
_TEXT_VALID = "a non-empty string"


# --- Models -----------------------------------------------------------------------------------------------------


class _Section(BaseModel):
    # Frozen: one Settings object is shared process-wide; changes go through otel_monitoring.config.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ServiceConfig(_Section):
    """Identity of the monitored service, as OpenTelemetry resource attributes."""

    name: Annotated[_Text, _env("OTEL_SERVICE_NAME", valid=_TEXT_VALID)] = "unknown_service"
    """The ``service.name`` resource attribute; the OTel SDK default is ``unknown_service``."""

    resource_attributes: Annotated[_Pairs, _env("OTEL_RESOURCE_ATTRIBUTES", valid="key=value pairs")] = Field(
        default_factory=dict
    )
    """Extra resource attributes; in the environment ``k=v,k2=v2`` with percent-encoded values."""


class OTLPConfig(_Section):
    """The OTLP metric exporter, configured as the OTel ``OTEL_EXPORTER_OTLP_*`` variables describe it.

    https://opentelemetry.io/docs/specs/otel/protocol/exporter/
    """

    endpoint: Annotated[_HttpURL, _env("OTEL_EXPORTER_OTLP_ENDPOINT", valid=_URL_VALID)] = "http://localhost:4318"
    """Base URL for all signals; for HTTP protocols ``/v1/metrics`` is appended to it."""

    metrics_endpoint: Annotated[_HttpURL | None, _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", valid=_URL_VALID)] = None
    """Full URL for metrics, used as is; wins over ``endpoint``."""

    headers: Annotated[
        _Pairs,
        _env("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", valid="key=value pairs", secret=True),
    ] = Field(default_factory=dict)
    """Headers sent with every export (often credentials, so values are masked when rendered)."""

    timeout_ms: Annotated[
        _Int,
        Field(gt=0),
        _env("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", valid="an integer > 0 (milliseconds)"),
    ] = 10000
    """How long one export may take, in milliseconds (the spec's unit; some SDKs historically used seconds)."""

    protocol: Annotated[
        _Protocol,
        _env(
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            valid="one of http/protobuf, http/json, grpc",
        ),
    ] = "http/protobuf"
    """Transport and encoding."""

    temporality_preference: Annotated[
        _Temporality,
        _env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", valid="one of cumulative, delta, lowmemory"),
    ] = "cumulative"
    """Aggregation temporality asked of the SDK for OTLP export."""

    compression: Annotated[
        _Compression,
        _env("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION", valid="one of none, gzip"),
    ] = "none"
    """Payload compression."""

    def resolved_metrics_endpoint(self) -> str:
        """The URL metrics are sent to.

        Per the OTLP exporter spec, ``metrics_endpoint`` is used as is; otherwise HTTP protocols append
        ``/v1/metrics`` to ``endpoint`` and gRPC uses ``endpoint`` unchanged.

        >>> OTLPConfig(endpoint="http://collector:4318/").resolved_metrics_endpoint()
        'http://collector:4318/v1/metrics'
        """
        if self.metrics_endpoint is not None:
            return self.metrics_endpoint
        if self.protocol == "grpc":
            return self.endpoint
        return self.endpoint.rstrip("/") + "/v1/metrics"


class ExportersConfig(_Section):
    """Which metric exporters run, and the settings shared by the standard OTel exporters."""

    metrics: Annotated[
        list[_ExporterName] | None,
        BeforeValidator(_split_commas),
        AfterValidator(_check_exporters),
        _env("OTEL_METRICS_EXPORTER", valid="prometheus, otlp, console, or none alone"),
    ] = None
    """Exporters to run; ``None`` means not set (the distro picks), ``["none"]`` means none."""

    prometheus_host: Annotated[_Text, _env("OTEL_EXPORTER_PROMETHEUS_HOST", valid=_TEXT_VALID)] = "localhost"
    """Address the standalone Prometheus exporter listens on."""

    prometheus_port: Annotated[
        _Int, Field(ge=1, le=65535), _env("OTEL_EXPORTER_PROMETHEUS_PORT", valid="an integer from 1 to 65535")
    ] = 9464
    """Port the standalone Prometheus exporter listens on."""

    export_interval_ms: Annotated[
        _Int, Field(gt=0), _env("OTEL_METRIC_EXPORT_INTERVAL", valid="an integer > 0 (milliseconds)")
    ] = 60000
    """Interval between two exports of the periodic reader, in milliseconds."""

    otlp: OTLPConfig = Field(default_factory=OTLPConfig)
    """The OTLP exporter."""


class PushgatewayConfig(_Section):
    """Pushing metrics to a Prometheus Pushgateway, for batch jobs and processes that cannot be scraped."""

    url: Annotated[_HttpURL | None, _env("PROMETHEUS_PUSH_GATEWAY", valid=_URL_VALID)] = None
    """Pushgateway base URL such as ``http://pushgateway:9091``; unset disables pushing."""

    job_name: Annotated[_Text, _env("OTEL_MONITORING_PUSH_JOB_NAME", valid=_TEXT_VALID)] = "otel_monitoring"
    """The ``job`` grouping key of pushed metrics."""

    interval_seconds: Annotated[
        _Float, Field(gt=0), _env("OTEL_MONITORING_PUSH_INTERVAL", valid="a number of seconds > 0")
    ] = 15.0
    """Seconds between two pushes."""

    timeout_seconds: Annotated[
        _Float, Field(gt=0), _env("OTEL_MONITORING_PUSH_TIMEOUT", valid="a number of seconds > 0")
    ] = 5.0
    """How long one push may take, in seconds."""

    push_at_exit: Annotated[_Bool, _env("OTEL_MONITORING_PUSH_AT_EXIT", valid=_BOOL_VALID)] = True
    """Push once more when the process exits, so the last values are not lost."""


class PrometheusConfig(_Section):
    """The Prometheus server the generated configuration and the CLI talk to."""

    retention_days: Annotated[_Int, Field(ge=1), _env("PROMETHEUS_RETENTION_DAYS", valid="an integer >= 1")] = 15
    """How many days Prometheus keeps samples (``--storage.tsdb.retention.time``)."""

    url: Annotated[_HttpURL, _env("OTEL_MONITORING_PROMETHEUS_URL", valid=_URL_VALID)] = "http://localhost:9090"
    """Prometheus base URL."""

    basic_auth_username: Annotated[_Text | None, _env("OTEL_MONITORING_PROMETHEUS_USERNAME", valid=_TEXT_VALID)] = None
    """User the CLI (``doctor``, ``backup``) sends when Prometheus's web config asks for basic auth; set together
    with ``basic_auth_password``."""

    basic_auth_password: Annotated[_Secret | None, _env("OTEL_MONITORING_PROMETHEUS_PASSWORD", valid=_TEXT_VALID)] = (
        None
    )
    """Password for Prometheus's basic auth."""


_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


def _check_phones(value: list[str]) -> list[str]:
    for number in value:
        if not _PHONE.fullmatch(number):
            raise _Detail(f"{number!r} is not in E.164 form")
    return value


def _check_email(value: str | None) -> str | None:
    if value is not None and not _EMAIL.fullmatch(value):
        raise ValueError("not an email address")
    return value


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _check_app_specs(value: list[str]) -> list[str]:
    # Only the shape is checked here: importing the module is the rules command's job, not the settings loader's.
    for spec in value:
        module, sep, attr = spec.partition(":")
        if not _is_dotted_name(module) or (sep and not _is_dotted_name(attr)):
            raise _Detail(f"{spec!r} is not module or module:attr")
    return value


def _check_listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("not host:port")
    return value


# scheme://... as SQLAlchemy reads it (sqlite:///relative.db, postgresql+psycopg://user@host/db); the driver is
# checked when the relay opens it, so this module needs no database library.
_DATABASE_URL = re.compile(r"[a-z][a-z0-9+]*://\S*")


def _check_database_url(value: str) -> str:
    if not _DATABASE_URL.fullmatch(value):
        raise ValueError("not a database URL")
    return value


def _check_percent(value: float) -> float:
    if not 0 < value < 100:
        raise ValueError("not strictly between 0 and 100")
    return value


_Objective = Annotated[_Float, AfterValidator(_check_percent)]
_OBJECTIVE_VALID = "a percentage strictly between 0 and 100, such as 99.9"
_SECONDS_VALID = "a number of seconds > 0"


class AlertingConfig(_Section):
    """Where alerts go: Alertmanager, its channels (Slack, email, PagerDuty, SMS through the alert relay), the
    alert history, and the objectives of the built-in SLOs. A channel whose settings are absent is left out of
    the rendered Alertmanager config (docs/alertmanager.md)."""

    alertmanager_url: Annotated[_HttpURL, _env("ALERTMANAGER_URL", valid=_URL_VALID)] = "http://localhost:9093"
    """Alertmanager base URL."""

    slack_webhook: Annotated[_SecretURL | None, _env("ALERT_SLACK_WEBHOOK", valid=_URL_VALID)] = None
    """Slack incoming-webhook URL (a secret: it alone allows posting to the channel)."""

    email: Annotated[
        list[str],
        BeforeValidator(_split_commas),
        AfterValidator(_check_emails),
        _env("OTEL_MONITORING_ALERT_EMAIL", valid="email addresses"),
    ] = Field(default_factory=list)
    """Addresses that receive alert emails; needs ``smtp_host`` and ``smtp_from``."""

    smtp_host: Annotated[_Text | None, _env("OTEL_MONITORING_SMTP_HOST", valid=_TEXT_VALID)] = None
    """SMTP server alert emails are sent through (Alertmanager's ``smtp_smarthost`` host)."""

    smtp_port: Annotated[
        _Int, Field(ge=1, le=65535), _env("OTEL_MONITORING_SMTP_PORT", valid="an integer from 1 to 65535")
    ] = 587
    """SMTP server port (587: submission with STARTTLS)."""

    smtp_username: Annotated[_Text | None, _env("OTEL_MONITORING_SMTP_USERNAME", valid=_TEXT_VALID)] = None
    """SMTP login, if the server asks for one; set together with ``smtp_password``."""

    smtp_password: Annotated[_Secret | None, _env("OTEL_MONITORING_SMTP_PASSWORD", valid=_TEXT_VALID)] = None
    """SMTP password."""

    smtp_from: Annotated[
        _Text | None, AfterValidator(_check_email), _env("OTEL_MONITORING_SMTP_FROM", valid="an email address")
    ] = None
    """Sender address of alert emails."""

    smtp_require_tls: Annotated[_Bool, _env("OTEL_MONITORING_SMTP_REQUIRE_TLS", valid=_BOOL_VALID)] = True
    """Refuse to send email unless the server offers STARTTLS (turn off only for a local relay)."""

    pagerduty_routing_key: Annotated[
        _Secret | None, _env("OTEL_MONITORING_ALERT_PAGERDUTY_ROUTING_KEY", valid=_TEXT_VALID)
    ] = None
    """Integration (routing) key of a PagerDuty Events API v2 integration; critical alerts page through it."""

    pagerduty_url: Annotated[_HttpURL, _env("OTEL_MONITORING_ALERT_PAGERDUTY_URL", valid=_URL_VALID)] = (
        "https://events.pagerduty.com/v2/enqueue"
    )
    """PagerDuty Events API v2 endpoint (``https://events.eu.pagerduty.com/v2/enqueue`` for the EU service region)."""

    sms_url: Annotated[_HttpURL, _env("OTEL_MONITORING_SMS_URL", valid=_URL_VALID)] = "https://api.twilio.com"
    """Base URL of the Twilio-compatible SMS API; the relay posts to
    ``{url}/2010-04-01/Accounts/{sid}/Messages.json``."""

    sms_account_sid: Annotated[_Text | None, _env("OTEL_MONITORING_SMS_ACCOUNT_SID", valid=_TEXT_VALID)] = None
    """Account SID of the SMS API (the basic-auth user)."""

    sms_auth_token: Annotated[_Secret | None, _env("OTEL_MONITORING_SMS_AUTH_TOKEN", valid=_TEXT_VALID)] = None
    """Auth token of the SMS API (the basic-auth password)."""

    sms_from: Annotated[_Text | None, _env("OTEL_MONITORING_SMS_FROM", valid=_TEXT_VALID)] = None
    """Sender of the SMS: a number of the account, or a messaging service id."""

    sms_to: Annotated[
        list[str],
        BeforeValidator(_split_commas),
        AfterValidator(_check_phones),
        _env("OTEL_MONITORING_SMS_TO", valid="E.164 phone numbers such as +15551234567"),
    ] = Field(default_factory=list)
    """Numbers that receive an SMS for every critical notification; SMS is on when these, the SID, the token and
    the sender are all set."""

    sms_rate_limit_per_minute: Annotated[
        _Int, Field(ge=1), _env("OTEL_MONITORING_SMS_RATE_LIMIT", valid="an integer >= 1 (messages per minute)")
    ] = 6
    """SMS notifications per minute (a token bucket with this burst); the excess is summarised in one message."""

    sms_dedupe_seconds: Annotated[
        _Float, Field(ge=0), _env("OTEL_MONITORING_SMS_DEDUPE_SECONDS", valid="a number of seconds >= 0")
    ] = 3600.0
    """An alert (fingerprint and status) already sent by SMS within this window is not sent again; 0 turns it off."""

    relay_listen_address: Annotated[
        _Text, AfterValidator(_check_listen_address), _env("OTEL_MONITORING_ALERT_RELAY_LISTEN", valid="host:port")
    ] = "0.0.0.0:9095"
    """Where ``otel-monitoring alert-relay`` listens."""

    relay_url: Annotated[_HttpURL | None, _env("OTEL_MONITORING_ALERT_RELAY_URL", valid=_URL_VALID)] = None
    """The relay's URL as Alertmanager reaches it (``http://alert-relay:9095``); when set, every notification is
    also sent to the relay (history, and SMS for critical alerts)."""

    relay_token: Annotated[_Secret | None, _env("OTEL_MONITORING_ALERT_RELAY_TOKEN", valid=_TEXT_VALID)] = None
    """If set, the relay requires ``Authorization: Bearer <token>`` and the rendered config sends it."""

    history_database_url: Annotated[
        _Text,
        AfterValidator(_check_database_url),
        _env("OTEL_MONITORING_ALERT_HISTORY_DATABASE_URL", valid="a SQLAlchemy database URL"),
    ] = "sqlite:///alert-history.sqlite3"
    """Where the relay archives notifications: SQLite by default (relative to the working directory), or e.g.
    ``postgresql+psycopg://user:password@db/alerts`` (passwords are masked when rendered)."""

    history_retention_days: Annotated[
        _Int, Field(ge=1), _env("OTEL_MONITORING_ALERT_HISTORY_RETENTION_DAYS", valid="an integer >= 1")
    ] = 90
    """Archived notifications older than this are deleted."""

    dashboard_url: Annotated[_HttpURL | None, _env("OTEL_MONITORING_ALERT_DASHBOARD_URL", valid=_URL_VALID)] = None
    """Link shown in notifications when an alert has no ``dashboard_url`` annotation; unset means ``grafana.url``."""

    runbook_base_url: Annotated[_HttpURL | None, _env("OTEL_MONITORING_RUNBOOK_URL", valid=_URL_VALID)] = None
    """Where docs/runbooks is served: built-in alerts link ``<runbook_base_url>/<AlertName>.md``. Unset: the
    repository-relative ``docs/runbooks/<AlertName>.md``, which does not open from a notification."""

    heartbeat_url: Annotated[_SecretURL | None, _env("OTEL_MONITORING_ALERT_HEARTBEAT_URL", valid=_URL_VALID)] = None
    """Dead man's switch: the always-firing Watchdog alert is posted here every few minutes; unset drops it."""

    app: Annotated[
        list[_Text],
        BeforeValidator(_split_commas),
        AfterValidator(_check_app_specs),
        _env("OTEL_MONITORING_ALERTS_APP", valid="module or module:attr names such as myservice.monitoring:registry"),
    ] = Field(default_factory=list)
    """Where ``otel-monitoring rules render`` and ``rules check`` find the application's alerts and SLOs when no
    ``--app`` is given: ``module:attr`` (an ``AlertRegistry``, a list, or a function returning them) or ``module``
    (what importing it registered with ``alerts.register``), imported from the working directory."""

    rule_files: Annotated[
        list[_Text],
        BeforeValidator(_split_commas),
        _env("OTEL_MONITORING_ALERT_RULE_FILES", valid="paths of YAML rule files"),
    ] = Field(default_factory=list)
    """YAML rule files (the seed's ``- alert:`` list, or Prometheus ``groups:``) that ``rules render`` and ``rules
    check`` include when no ``--rules`` is given; relative paths are read from the working directory."""

    slo_availability_objective: Annotated[
        _Objective, _env("OTEL_MONITORING_SLO_AVAILABILITY", valid=_OBJECTIVE_VALID)
    ] = 99.9
    """Objective of the built-in HTTP availability SLO, in percent of requests without a server error."""

    slo_latency_objective: Annotated[_Objective, _env("OTEL_MONITORING_SLO_LATENCY", valid=_OBJECTIVE_VALID)] = 99.0
    """Objective of the built-in HTTP latency SLO, in percent of requests faster than the threshold."""

    slo_latency_threshold_seconds: Annotated[
        _Float, Field(gt=0), _env("OTEL_MONITORING_SLO_LATENCY_THRESHOLD", valid=_SECONDS_VALID)
    ] = 0.5
    """Latency threshold of the built-in latency SLO, in seconds (best matched by an HTTP duration bucket)."""


class GrafanaConfig(_Section):
    """The Grafana server dashboards are provisioned to."""

    url: Annotated[_HttpURL, _env("GRAFANA_URL", valid=_URL_VALID)] = "http://localhost:3000"
    """Grafana base URL."""

    api_key: Annotated[_Secret | None, _env("GRAFANA_API_KEY", valid=_TEXT_VALID)] = None
    """Grafana API key or service-account token."""


class SidecarConfig(_Section):
    """Where the CLI (``otel-monitoring doctor``) reaches a running collector sidecar (docs/sidecar.md)."""

    health_url: Annotated[_HttpURL, _env("OTEL_MONITORING_SIDECAR_HEALTH_URL", valid=_URL_VALID)] = (
        "http://localhost:13133/"
    )
    """The sidecar's ``health_check`` extension: 200 while its pipelines run."""

    metrics_url: Annotated[_HttpURL, _env("OTEL_MONITORING_SIDECAR_METRICS_URL", valid=_URL_VALID)] = (
        "http://localhost:8889/metrics"
    )
    """The sidecar's ``prometheus`` exporter, which also serves its own ``otelcol_*`` metrics."""


class MetricsEndpointConfig(_Section):
    """Protection and shape of the ``/metrics`` endpoint served by the application."""

    bearer_token: Annotated[_Secret | None, _env("OTEL_MONITORING_METRICS_TOKEN", valid=_TEXT_VALID)] = None
    """If set, scrapes must send ``Authorization: Bearer <token>``."""

    basic_auth_username: Annotated[_Text | None, _env("OTEL_MONITORING_METRICS_USERNAME", valid=_TEXT_VALID)] = None
    """If set (with the password), scrapes may use HTTP basic auth."""

    basic_auth_password: Annotated[_Secret | None, _env("OTEL_MONITORING_METRICS_PASSWORD", valid=_TEXT_VALID)] = None
    """Password for HTTP basic auth; set together with the username."""

    allowed_networks: Annotated[
        list[str],
        BeforeValidator(_split_commas),
        AfterValidator(_normalize_networks),
        _env("OTEL_MONITORING_METRICS_ALLOWED_NETWORKS", valid="IP addresses or CIDR networks"),
    ] = Field(default_factory=list)
    """If not empty, only clients in these networks may scrape (stored normalized, e.g. ``10.0.0.0/8``)."""

    access_log: Annotated[_Bool, _env("OTEL_MONITORING_METRICS_ACCESS_LOG", valid=_BOOL_VALID)] = False
    """Log every scrape (client, status, duration)."""

    scope_labels: Annotated[_Bool, _env("OTEL_MONITORING_SCOPE_LABELS", valid=_BOOL_VALID)] = False
    """Whether ``otel_scope_*`` labels appear on exposed series."""


class HTTPServerConfig(_Section):
    """Instrumentation of incoming HTTP requests."""

    duration_buckets: Annotated[
        list[_Float],
        BeforeValidator(_split_commas),
        AfterValidator(_check_increasing),
        _env("OTEL_MONITORING_HTTP_DURATION_BUCKETS", valid="finite numbers in strictly increasing order"),
    ] = Field(default_factory=lambda: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0])
    """Bucket boundaries of ``http.server.request.duration`` in seconds (default: the OTel semconv advice)."""

    excluded_paths: Annotated[
        list[str],
        BeforeValidator(_split_commas),
        AfterValidator(_check_paths),
        _env("OTEL_MONITORING_HTTP_EXCLUDED_PATHS", valid="URL paths starting with '/'"),
    ] = Field(default_factory=lambda: ["/metrics"])
    """Request paths that are not measured."""


def _parse_json_object(value: object) -> object:
    # The processors section is nested; in the environment it is written as one JSON object.
    if isinstance(value, str):
        parsed = json.loads(value)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
        return parsed
    return value


def _check_key_length(value: SecretStr | None) -> SecretStr | None:
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError("too short")
    return value


class ProcessingConfig(_Section):
    """Processing of every data point before any exporter sees it (``processors/``), as in the OpenTelemetry
    Collector: ``processors`` maps component ids (``type[/name]``) to their configs, ``pipeline`` lists ids in order.
    Each component's config is checked when the pipeline is built."""

    processors: Annotated[
        dict[str, Any],
        BeforeValidator(_parse_json_object),
        _env("OTEL_MONITORING_PROCESSORS", valid="a JSON object of component id to config"),
    ] = Field(default_factory=dict)
    """Component configs by id, e.g. ``{"aggregate/no_pod": {"rules": [...]}}``; unlisted types use defaults."""

    pipeline: Annotated[
        list[_Text] | None,
        BeforeValidator(_split_commas),
        _env("OTEL_MONITORING_PIPELINE", valid="component ids such as sanitize or aggregate/no_pod"),
    ] = None
    """Component ids in the order they run; unset means the default pipeline (docs/processors.md)."""

    pseudonym_key: Annotated[
        _Secret | None,
        AfterValidator(_check_key_length),
        _env("OTEL_MONITORING_PSEUDONYM_KEY", valid="a secret of at least 16 characters"),
    ] = None
    """Key of the HMAC that turns customer and user ids into stable pseudonyms; without it, a random key per process."""


SYSTEM_METRIC_GROUPS = ("cpu", "memory", "disk", "filesystem", "network", "tcp", "process", "container", "kubernetes")
"""Groups of system metrics ``collectors.system_metrics`` chooses from (docs/system-metrics.md)."""


class _Detail(ValueError):
    """A validation failure whose message is worth showing after the generic 'must be ...' (which item is wrong)."""


def _detail_of(error: ValidationError) -> str:
    for item in error.errors():
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, _Detail):
            return f"; {cause}"
    return ""


def _check_groups(value: list[str]) -> list[str]:
    unique = list(dict.fromkeys(item.lower() for item in value))
    if unique == ["none"]:
        return []
    unknown = [item for item in unique if item not in SYSTEM_METRIC_GROUPS]
    if unknown:
        raise _Detail(f"unknown group {unknown[0]!r}")
    return unique


def _check_probe_targets(value: dict[str, str]) -> dict[str, str]:
    for name, url in value.items():
        parts = urlsplit(url)
        if parts.scheme not in ("tcp", "http", "https") or not parts.hostname:
            raise _Detail(f"target {name!r}: {url!r} is not a tcp://host:port or http(s) URL")
        if parts.scheme == "tcp" and parts.port is None:
            raise _Detail(f"target {name!r}: {url!r} has no port")
    return value


HTTP_CLIENT_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120)
"""Default ``collectors.http_client_duration_buckets``, in seconds."""


class CollectorsConfig(_Section):
    """What is measured besides HTTP requests: system resources, database queries, caches, outgoing calls."""

    system_metrics: Annotated[
        list[str],
        BeforeValidator(_split_commas),
        AfterValidator(_check_groups),
        _env("OTEL_MONITORING_SYSTEM_METRICS", valid=f"'none' or groups among {', '.join(SYSTEM_METRIC_GROUPS)}"),
    ] = Field(default_factory=lambda: list(SYSTEM_METRIC_GROUPS))
    """System metric groups read at each collection; ``none`` (or an empty list) turns system metrics off."""

    probe_targets: Annotated[
        _Pairs,
        AfterValidator(_check_probe_targets),
        _env("OTEL_MONITORING_PROBE_TARGETS", valid="name=url pairs, with tcp://host:port or http(s) URLs"),
    ] = Field(default_factory=dict)
    """Network latency probes by target name, e.g. ``database=tcp://db:5432,openai=https://api.openai.com/v1/models``."""

    probe_interval_seconds: Annotated[
        _Float, Field(gt=0), _env("OTEL_MONITORING_PROBE_INTERVAL", valid="a number of seconds > 0")
    ] = 30.0
    """How often every probe target is measured."""

    probe_timeout_seconds: Annotated[
        _Float, Field(gt=0), _env("OTEL_MONITORING_PROBE_TIMEOUT", valid="a number of seconds > 0")
    ] = 2.0
    """How long a probe waits before it counts the target as failed."""

    database: Annotated[_Bool, _env("OTEL_MONITORING_DB_METRICS", valid=_BOOL_VALID)] = True
    """Query metrics of every SQLAlchemy engine under ``opentelemetry-instrument``."""

    slow_query_seconds: Annotated[
        _Float, Field(gt=0), _env("OTEL_MONITORING_DB_SLOW_QUERY_SECONDS", valid="a number of seconds > 0")
    ] = 0.5
    """Queries taking at least this long are counted as slow."""

    http_client: Annotated[_Bool, _env("OTEL_MONITORING_HTTP_CLIENT_METRICS", valid=_BOOL_VALID)] = True
    """Duration and errors of outgoing httpx requests under ``opentelemetry-instrument``."""

    http_client_duration_buckets: Annotated[
        list[_Float],
        BeforeValidator(_split_commas),
        AfterValidator(_check_increasing),
        _env("OTEL_MONITORING_HTTP_CLIENT_DURATION_BUCKETS", valid="finite numbers in strictly increasing order"),
    ] = Field(default_factory=lambda: list(HTTP_CLIENT_DURATION_BUCKETS))
    """Bucket boundaries of ``http.client.request.duration`` in seconds (default: the semconv advice, then 30,
    60 and 120 s, because calls to LLM providers often take longer than the advice's last 10 s)."""

    redis: Annotated[_Bool, _env("OTEL_MONITORING_REDIS_METRICS", valid=_BOOL_VALID)] = True
    """Cache metrics of redis-py clients under ``opentelemetry-instrument``."""


_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_QUANTITY_FACTORS = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def parse_quantity(value: object) -> object:
    """A Kubernetes resource quantity (``256Mi``, ``1Gi``, or the downward API's plain number) as a float.

    https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/ . A value that is not a
    string (an int or float from YAML or code) is returned as it is, for the field's own validation.

    >>> parse_quantity("256Mi"), parse_quantity("536870912"), parse_quantity("500m")
    (268435456.0, 536870912.0, 0.5)
    """
    if isinstance(value, bool):
        raise ValueError("not a Kubernetes quantity")  # YAML's true/false would otherwise pass as 1.0/0.0
    if not isinstance(value, str):
        return value
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise ValueError("not a Kubernetes quantity")
    return float(match["number"]) * _QUANTITY_FACTORS[match["suffix"]]


_Bytes = Annotated[FiniteFloat, BeforeValidator(parse_quantity), Field(ge=0)]
_BYTES_VALID = "a number of bytes, or a Kubernetes quantity such as 256Mi or 1Gi"
_Millicores = Annotated[_Int, Field(ge=0)]
_MILLICORES_VALID = "a whole number of millicores >= 0 (downward API with divisor: 1m)"


class KubernetesConfig(_Section):
    """The pod this process runs in, from environment variables the pod spec fills from the downward API.

    Set them in the container's ``env`` (``docs/system-metrics.md`` has the snippet): the names with
    ``fieldRef`` (``metadata.name``, ``metadata.namespace``, ``spec.nodeName``), the container's name as a
    literal, and requests and limits with ``resourceFieldRef``. The downward API rounds a resource up to a
    whole multiple of its ``divisor`` (default 1: a 250m CPU request would arrive as ``1``), so CPU is read in
    millicores (``divisor: 1m``) and memory in bytes (the default divisor).

    The names become the resource attributes ``k8s.pod.name``, ``k8s.namespace.name``, ``k8s.node.name`` and
    ``k8s.container.name``; requests and limits become ``k8s.container.*`` metrics when given.

    >>> KubernetesConfig(cpu_request_millicores=250).cpu_request_cores
    0.25
    """

    pod_name: Annotated[_Text | None, _env("K8S_POD_NAME", valid=_TEXT_VALID)] = None
    """The pod's name (``metadata.name``)."""

    namespace: Annotated[_Text | None, _env("K8S_NAMESPACE_NAME", valid=_TEXT_VALID)] = None
    """The pod's namespace (``metadata.namespace``)."""

    node_name: Annotated[_Text | None, _env("K8S_NODE_NAME", valid=_TEXT_VALID)] = None
    """The node the pod runs on (``spec.nodeName``)."""

    container_name: Annotated[_Text | None, _env("K8S_CONTAINER_NAME", valid=_TEXT_VALID)] = None
    """This container's name in the pod spec."""

    cpu_request_millicores: Annotated[
        _Millicores | None, _env("K8S_CPU_REQUEST_MILLICORES", valid=_MILLICORES_VALID)
    ] = None
    """The container's CPU request in millicores (``requests.cpu`` with ``divisor: 1m``; 250 is a quarter core)."""

    cpu_limit_millicores: Annotated[_Millicores | None, _env("K8S_CPU_LIMIT_MILLICORES", valid=_MILLICORES_VALID)] = (
        None
    )
    """The container's CPU limit in millicores (``limits.cpu`` with ``divisor: 1m``). Without a limit in the
    spec, the downward API gives the node's allocatable CPU instead."""

    memory_request: Annotated[_Bytes | None, _env("K8S_MEMORY_REQUEST", valid=_BYTES_VALID)] = None
    """The container's memory request in bytes (``requests.memory``, default divisor)."""

    memory_limit: Annotated[_Bytes | None, _env("K8S_MEMORY_LIMIT", valid=_BYTES_VALID)] = None
    """The container's memory limit in bytes (``limits.memory``, default divisor). Without a limit in the
    spec, the downward API gives the node's allocatable memory instead."""

    @property
    def cpu_request_cores(self) -> float | None:
        """``cpu_request_millicores`` in cores, the unit of ``k8s.container.cpu.request.desired``."""
        return None if self.cpu_request_millicores is None else self.cpu_request_millicores / 1000

    @property
    def cpu_limit_cores(self) -> float | None:
        """``cpu_limit_millicores`` in cores, the unit of ``k8s.container.cpu.limit.desired``."""
        return None if self.cpu_limit_millicores is None else self.cpu_limit_millicores / 1000


# (username, password) settings paths that are only meaningful together.
_BASIC_AUTH_PAIRS = (
    ("metrics_endpoint.basic_auth_username", "metrics_endpoint.basic_auth_password"),
    ("prometheus.basic_auth_username", "prometheus.basic_auth_password"),
)


class Settings(_Section):
    """All otel-monitoring settings. ``Settings()`` is the defaults; use :func:`load_settings` to read them.

    Equality also compares where values came from; compare ``model_dump()`` to compare values alone.

    >>> Settings().pushgateway.job_name
    'otel_monitoring'
    """

    service: ServiceConfig = Field(default_factory=ServiceConfig)
    """Service identity."""

    exporters: ExportersConfig = Field(default_factory=ExportersConfig)
    """Metric exporters."""

    pushgateway: PushgatewayConfig = Field(default_factory=PushgatewayConfig)
    """Prometheus Pushgateway."""

    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    """Prometheus server."""

    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    """Alert routing."""

    grafana: GrafanaConfig = Field(default_factory=GrafanaConfig)
    """Grafana server."""

    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)
    """The collector sidecar, as the CLI reaches it."""

    metrics_endpoint: MetricsEndpointConfig = Field(default_factory=MetricsEndpointConfig)
    """The application's ``/metrics`` endpoint."""

    http: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    """HTTP server instrumentation."""

    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    """Sanitizing, aggregation, cardinality limits and business metrics before export."""

    collectors: CollectorsConfig = Field(default_factory=CollectorsConfig)
    """System, database, cache and outgoing-call metrics."""

    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    """The Kubernetes pod, from the downward API."""

    _origins: dict[str, _Origin] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_cross_field(self) -> Settings:
        # The one home of cross-field rules; load_settings checks the same rule first to name the source.
        for username_path, password_path in _BASIC_AUTH_PAIRS:
            section = getattr(self, username_path.partition(".")[0])
            username = getattr(section, username_path.partition(".")[2])
            password = getattr(section, password_path.partition(".")[2])
            if (username is None) != (password is None):
                raise ValueError(f"{username_path} and {password_path} must be set together")
        return self

    def source_of(self, path: str) -> str:
        """Where the value at dotted ``path`` came from: ``'default'``, ``'config file <path>'``,
        ``'environment variable <NAME>'`` or ``'code'``."""
        if path not in _LEAVES:
            raise KeyError(f"unknown setting {path!r}")
        origin = self._origins.get(path)
        return "default" if origin is None else origin.label

    @property
    def sources(self) -> dict[str, str]:
        """Dotted path -> source, for every value that was provided rather than defaulted."""
        return {path: origin.label for path, origin in self._origins.items()}


# --- Leaf catalog -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    path: str
    model: type[BaseModel]
    name: str
    env: _Env
    shape: Literal["scalar", "list", "mapping"]
    secret: bool
    default: Any

    def problem(self, from_env: bool) -> str:
        if self.shape == "list":
            return f"must be {'a comma-separated list' if from_env else 'a list'} of {self.env.valid}"
        if self.shape == "mapping":
            return "must be comma-separated key=value pairs" if from_env else "must be a mapping of strings to strings"
        return f"must be {self.env.valid}"


def _shape_of(annotation: Any) -> Literal["scalar", "list", "mapping"]:
    # Peel Annotated[...] and `X | None` to find whether a field holds a list, a mapping or a scalar.
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        elif origin is list:
            return "list"
        elif origin is dict:
            return "mapping"
        else:
            return "scalar"


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_holds_secret(arg) for arg in typing.get_args(annotation))


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _walk(model: type[BaseModel], prefix: str) -> Iterator[_Leaf]:
    for name, info in model.model_fields.items():
        path = prefix + name
        sub = _section_model(info.annotation)
        if sub is not None:
            yield from _walk(sub, path + ".")
            continue
        env = next((m for m in info.metadata if isinstance(m, _Env)), None)
        if env is None:  # a programming error in this module, caught by any import
            raise TypeError(f"settings field {path} declares no environment variable")
        default = info.get_default(call_default_factory=True)
        secret = env.secret or _holds_secret(info.annotation)
        yield _Leaf(path, model, name, env, _shape_of(info.annotation), secret, default)


_LEAVES: dict[str, _Leaf] = {leaf.path: leaf for leaf in _walk(Settings, "")}


# --- Loading ----------------------------------------------------------------------------------------------------


_CODE = _Origin("code")
_INVALID = object()


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    value: Any
    origin: _Origin


# user:password@ in a URL (a Pushgateway behind basic auth, say) is a secret even in a plain URL setting.
_URL_PASSWORD = re.compile(r"(//[^/@:\s]*:)([^@/\s]*)@")


def hide_url_password(text: str) -> str:
    """``http://user:secret@host`` -> ``http://user:********@host``, for anything printed or logged."""
    return _URL_PASSWORD.sub(r"\g<1>" + MASK + "@", text)


def _show(value: Any) -> str:
    text = hide_url_password(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


class _Resolver:
    """Applies layers of entries, in increasing precedence, over a base of already-valid values."""

    def __init__(self, values: Mapping[str, Any], origins: Mapping[str, _Origin], strict: bool) -> None:
        self.values = dict(values)
        self.origins = dict(origins)
        self.strict = strict

    def report(self, error: SettingsError, consequence: str) -> None:
        if self.strict:
            raise error
        _logger.warning("%s; %s", error, consequence)

    def apply(self, entries: list[_Entry]) -> None:
        for entry in entries:
            leaf = _LEAVES[entry.path]
            detail = ""
            try:
                validated = getattr(leaf.model.model_validate({leaf.name: entry.value}), leaf.name)
            except ValidationError as error:
                validated = _INVALID
                detail = _detail_of(error)
            if validated is _INVALID:
                problem = leaf.problem(from_env=entry.origin.kind == "env") + detail
                got = None if leaf.secret else _show(entry.value)
                if leaf.secret:
                    problem += " (value not shown: secret)"
                self.report(SettingsError(entry.origin.key_for(leaf.path), problem, got), self._fallback(leaf))
                continue
            self.values[leaf.path] = validated
            self.origins[leaf.path] = entry.origin

    def _fallback(self, leaf: _Leaf) -> str:
        value = self.values[leaf.path]
        origin = self.origins.get(leaf.path)
        if origin is None:
            shown = "" if leaf.secret else (" (unset)" if value is None else f" {_show(value)}")
            return f"using the default{shown}"
        return f"using {'the value' if leaf.secret else _show(value)} from {origin.label}"

    def finish(self) -> Settings:
        for username_path, password_path in _BASIC_AUTH_PAIRS:
            self._check_pair(username_path, password_path)
        tree: dict[str, Any] = {}
        for path, value in self.values.items():
            *sections, name = path.split(".")
            node = tree
            for section in sections:
                node = node.setdefault(section, {})
            node[name] = value
        settings = Settings.model_validate(tree)
        settings._origins = self.origins
        return settings

    def _check_pair(self, username_path: str, password_path: str) -> None:
        username, password = self.values[username_path], self.values[password_path]
        if (username is None) == (password is None):
            return
        present, missing = (username_path, password_path) if username is not None else (password_path, username_path)
        origin = self.origins.get(present, _CODE)
        missing_env = _LEAVES[missing].env.names[0]
        error = SettingsError(origin.key_for(present), f"must be set together with {missing} ({missing_env})")
        # Without both halves basic auth cannot work; drop the half that is set rather than crash the app.
        self.report(error, "basic auth is disabled")
        for path in (username_path, password_path):
            self.values[path] = None
            self.origins.pop(path, None)

    def tree_entries(self, tree: Any, model: type[BaseModel], prefix: str, origin: _Origin) -> list[_Entry]:
        """Flatten a nested mapping (YAML document or code overrides) into leaf entries, reporting bad keys."""
        entries: list[_Entry] = []
        if tree is None:  # an empty YAML section, e.g. everything under it commented out
            return entries
        if not isinstance(tree, Mapping):
            self.report(SettingsError(origin.key_for(prefix.rstrip(".")), "must be a mapping", _show(tree)), "ignored")
            return entries
        for key, value in tree.items():
            info = model.model_fields.get(key) if isinstance(key, str) else None
            if info is None:
                valid = ", ".join(sorted(model.model_fields))
                self.report(SettingsError(origin.key_for(f"{prefix}{key}"), f"unknown key (valid: {valid})"), "ignored")
                continue
            sub = _section_model(info.annotation)
            if sub is not None:
                entries += self.tree_entries(value, sub, f"{prefix}{key}.", origin)
            else:
                entries.append(_Entry(f"{prefix}{key}", value, origin))
        return entries

    def file_entries(self, path: str | os.PathLike[str], from_env: bool) -> list[_Entry]:
        name = os.fspath(path)
        key = f"config file {name}" + (f" (from {CONFIG_FILE_ENV})" if from_env else "")
        try:
            with open(name, encoding="utf-8") as stream:
                document = yaml.safe_load(stream)
        except OSError as exc:
            self.report(SettingsError(key, f"cannot be read ({exc.strerror or exc})"), "ignoring the file")
            return []
        except UnicodeDecodeError:
            self.report(SettingsError(key, "is not UTF-8 text"), "ignoring the file")
            return []
        except yaml.YAMLError as exc:
            where = ""
            mark = getattr(exc, "problem_mark", None)
            if mark is not None:
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
            detail = getattr(exc, "problem", None) or "syntax error"
            self.report(SettingsError(key, f"is not valid YAML{where}: {detail}"), "ignoring the file")
            return []
        if document is not None and not isinstance(document, Mapping):
            self.report(
                SettingsError(key, "must be a mapping of sections", f"a {type(document).__name__}"), "ignoring the file"
            )
            return []
        return self.tree_entries(document, Settings, "", _Origin("file", name))


def _env_entries(environ: Mapping[str, str]) -> list[_Entry]:
    entries: list[_Entry] = []
    for leaf in _LEAVES.values():
        for name in leaf.env.names:
            raw = environ.get(name)
            # OTel configuration spec: an empty value is treated as unset. The first set name wins outright, so
            # a bad signal-specific variable falls back past the generic one to the YAML value or the default.
            if raw is not None and raw.strip():
                entries.append(_Entry(leaf.path, raw.strip(), _Origin("env", name)))
                break
    return entries


_DEFAULTS: dict[str, Any] = {path: leaf.default for path, leaf in _LEAVES.items()}


def process_environment() -> Mapping[str, str]:
    """The process's environment variables, for the modules that expand ``${env:VAR}`` in their own files (the
    sidecar's config) or build a child process's environment from it (the demo); every other reading of the
    environment happens here."""
    return os.environ


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Settings:
    """Load settings: defaults < YAML file < environment < ``overrides``, merged field by field.

    ``config_file`` defaults to ``$OTEL_MONITORING_CONFIG``; ``environ`` defaults to ``os.environ`` as it is now;
    ``overrides`` is a nested mapping such as ``{"pushgateway": {"url": "http://pushgateway:9091"}}``.

    With ``strict=False`` (inside a host application) each bad value, bad key or unreadable file is logged once as
    a warning and skipped. With ``strict=True`` (CLI, sidecar) the first problem raises :class:`SettingsError`.

    >>> load_settings(environ={"OTEL_MONITORING_PUSH_AT_EXIT": "no"}).pushgateway.push_at_exit
    False
    """
    env = os.environ if environ is None else environ
    resolver = _Resolver(_DEFAULTS, {}, strict)
    if config_file is not None:
        resolver.apply(resolver.file_entries(config_file, from_env=False))
    elif env.get(CONFIG_FILE_ENV, "").strip():
        resolver.apply(resolver.file_entries(env[CONFIG_FILE_ENV].strip(), from_env=True))
    resolver.apply(_env_entries(env))
    if overrides is not None:
        resolver.apply(resolver.tree_entries(overrides, Settings, "", _CODE))
    return resolver.finish()


def _values_of(settings: Settings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in _LEAVES:
        node: Any = settings
        for part in path.split("."):
            node = getattr(node, part)
        values[path] = node
    return values


def apply_overrides(settings: Settings, overrides: Mapping[str, Any], *, strict: bool = False) -> Settings:
    """Return ``settings`` with a code-overrides layer on top, keeping the sources of untouched values.

    Unlike calling :func:`load_settings` again, this does not re-read the file or the environment (and so does not
    repeat their warnings).

    >>> apply_overrides(Settings(), {"prometheus": {"retention_days": 7}}).prometheus.retention_days
    7
    """
    resolver = _Resolver(_values_of(settings), settings._origins, strict)
    resolver.apply(resolver.tree_entries(overrides, Settings, "", _CODE))
    return resolver.finish()


# --- Rendering --------------------------------------------------------------------------------------------------


def _plain(leaf: _Leaf, value: Any) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if leaf.secret and isinstance(value, dict):
        return dict.fromkeys(value, MASK)
    if isinstance(value, list | dict):
        return value.copy()
    if isinstance(value, str):
        return hide_url_password(value)
    return value


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, in the clear: secret fields, secret header values, and passwords written
    into URLs. For scrubbing them out of text that is about to leave the process (``otel-monitoring backup``).

    >>> secret_values(load_settings(environ={"GRAFANA_API_KEY": "glsa_x", "ALERTMANAGER_URL": "http://u:pw@am"}))
    ['pw', 'glsa_x']
    """
    found: list[str] = []
    for path, value in _values_of(settings).items():
        leaf = _LEAVES[path]
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif leaf.secret and isinstance(value, dict):
            found += [str(item) for item in value.values()]
        elif isinstance(value, str):
            found += [match.group(2) for match in _URL_PASSWORD.finditer(value)]
    return [value for value in dict.fromkeys(found) if value]


class _RenderDumper(yaml.SafeDumper):
    """Sections in block style, lists on one line: the bucket boundaries stay readable."""


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_RenderDumper.add_representer(list, _represent_list)


def render_settings(settings: Settings, *, sources: bool = False) -> str:
    """YAML text of the effective settings with every secret replaced by ``'********'``.

    Apart from masked secrets, the output is itself a valid settings file. With ``sources=True`` a leading
    comment says where each value that is not a default came from.

    >>> print(render_settings(Settings()).splitlines()[0])
    service:
    """
    tree: dict[str, Any] = {}
    for path, value in _values_of(settings).items():
        *sections, name = path.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = _plain(_LEAVES[path], value)
    text = yaml.dump(tree, Dumper=_RenderDumper, sort_keys=False, allow_unicode=True, width=120)
    if not sources:
        return text
    provided = settings.sources
    if not provided:
        return "# Every value is a default.\n" + text
    lines = ["# Values that are not defaults come from:"]
    lines += [f"#   {path}: {label}" for path, label in provided.items()]
    return "\n".join(lines) + "\n" + text


# --- Environment defaults for OpenTelemetry instrumentations --------------------------------------------------------

_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def apply_instrumentation_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the environment the OpenTelemetry instrumentations must see before they load; returns what changed.

    The distro calls this because contrib instrumentations read their switches from the environment, once per
    process. It opts HTTP into the stable semantic conventions (``OTEL_SEMCONV_STABILITY_OPT_IN=http``): durations
    in seconds as ``http.server.request.duration``, where the old conventions record milliseconds and round
    sub-millisecond requests to 0. A user's own ``http`` or ``http/dup`` choice is kept; other categories they
    opted into (``database``...) are kept and ``http`` is added.

    >>> env = {"OTEL_SEMCONV_STABILITY_OPT_IN": "database"}
    >>> apply_instrumentation_defaults(env)
    {'OTEL_SEMCONV_STABILITY_OPT_IN': 'database,http'}
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    changed: dict[str, str] = {}
    categories = [item.strip() for item in env.get(_SEMCONV_OPT_IN, "").split(",") if item.strip()]
    if not any(item in ("http", "http/dup") for item in categories):
        changed[_SEMCONV_OPT_IN] = ",".join([*categories, "http"])
    env.update(changed)
    return changed
