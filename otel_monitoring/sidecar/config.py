"""The collector sidecar's configuration: the OpenTelemetry Collector's file format, for the metrics signal.

The file has the Collector's shape and key names, so operators feel at home and can move to the Collector
itself when they outgrow one pod::

    receivers:  {otlp: {protocols: {http: {endpoint: 127.0.0.1:4318}}}}
    processors: {memory_limiter: {check_interval: 1s}, sanitize: null, batch: null}
    exporters:  {prometheus: {endpoint: 0.0.0.0:8889}}
    extensions: {health_check: null}
    service:
      extensions: [health_check]
      pipelines:
        metrics: {receivers: [otlp], processors: [memory_limiter, sanitize, batch], exporters: [prometheus]}

Component ids are ``type[/name]``. Every component has a typed, frozen model here (``COMPONENT_TYPES``); the
runtime builds its receivers, processors, exporters and extensions from these models and nothing else.
Every reference is checked when the file loads, and a problem is one line naming the YAML key:
``service.pipelines.metrics.processors[1]: unknown processor 'sanitise' (valid: aggregate, batch, ...)``.

String values may use ``${env:VAR}``, ``${VAR}`` and ``${env:VAR:-default}``; ``$$`` is a literal ``$``.
Durations are written as the Collector writes them (``5s``, ``1m30s``, ``200ms``) and held in seconds.
docs/sidecar-config.md has the full reference and the reasons behind the defaults.

>>> config = load_collector_config(None)
>>> config.service.pipelines["metrics"].processors
['memory_limiter', 'sanitize', 'cardinality', 'batch']
>>> config.exporters["prometheus"].metric_expiration
300.0
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from otel_monitoring.settings import process_environment
from processors.business import load_price_table
from processors.component import ComponentConfig
from processors.pipeline import COMPONENT_ID_PATTERN, factories

__all__ = [
    "COMPONENT_TYPES",
    "DEFAULT_CONFIG_YAML",
    "AuthConfig",
    "BatchConfig",
    "BearerTokenAuthExtensionConfig",
    "CollectorConfig",
    "CollectorConfigError",
    "DebugExporterConfig",
    "ExporterConfig",
    "ExtensionConfig",
    "FileStorageExtensionConfig",
    "HealthCheckExtensionConfig",
    "MemoryLimiterConfig",
    "OTLPExporterConfig",
    "OTLPGRPCServerConfig",
    "OTLPHTTPExporterConfig",
    "OTLPHTTPServerConfig",
    "OTLPProtocolsConfig",
    "OTLPReceiverConfig",
    "PipelineConfig",
    "PrometheusExporterConfig",
    "PrometheusRemoteWriteExporterConfig",
    "PushgatewayExporterConfig",
    "ReceiverConfig",
    "RemoteWriteQueueConfig",
    "ResourceToTelemetryConfig",
    "RetryConfig",
    "SendingQueueConfig",
    "ServiceConfig",
    "TLSClientConfig",
    "TLSServerConfig",
    "TargetInfoConfig",
    "TelemetryConfig",
    "TelemetryMetricsConfig",
    "component_type",
    "expand_env",
    "load_collector_config",
    "parse_duration",
    "render_default_config",
    "split_host_port",
]

MiB = 1024 * 1024


class CollectorConfigError(ValueError):
    """A sidecar config that cannot run. ``str(error)`` is one line: the YAML key, then what is wrong.

    >>> str(CollectorConfigError("exporters.prometheus.endpoint", "must be host:port (got 'x')"))
    "exporters.prometheus.endpoint: must be host:port (got 'x')"
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        # One line whatever a value contains: CLI errors and log lines must stay grep-able.
        super().__init__(" ".join(f"{key}: {problem}".split()) if key else " ".join(problem.split()))


class _FieldProblem(ValueError):
    """Raised by a model validator about one of its fields, so the message names that field's full key."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(problem)


# --- Value types ------------------------------------------------------------------------------------------------

# Go's time.ParseDuration grammar, which the Collector uses: a sequence of decimal numbers with units.
_DURATION = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_VALID = "a duration such as 5s, 1m30s or 200ms"


def parse_duration(value: str) -> float:
    """A duration as the Collector writes it (Go's ``time.ParseDuration``), in seconds; ``"0"`` is zero.

    >>> parse_duration("1m30s"), parse_duration("200ms"), parse_duration("1.5h")
    (90.0, 0.2, 5400.0)
    """
    text = value.strip()
    if text == "0":
        return 0.0
    if not _DURATION.fullmatch(text):
        raise ValueError(f"must be {_DURATION_VALID}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


def _to_duration(value: object) -> object:
    # A bare number is refused: the Collector would read `timeout: 5` as 5 nanoseconds, a silent mistake.
    if isinstance(value, str):
        return parse_duration(value)
    if value == 0 and not isinstance(value, bool):
        return 0.0
    raise ValueError(f"must be {_DURATION_VALID}")


def _reject_bool(value: object) -> object:
    # pydantic's lax mode turns True into 1; `queue_size: yes` is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


Duration = Annotated[float, BeforeValidator(_to_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(_to_duration), Field(gt=0)]
_Int = Annotated[int, BeforeValidator(_reject_bool)]
_Count = Annotated[int, BeforeValidator(_reject_bool), Field(ge=1)]
_Percent = Annotated[int, BeforeValidator(_reject_bool), Field(ge=0, le=100)]


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port), as Go's ``net.SplitHostPort``; an empty host
    (``:8889``) means every interface and comes back as ``0.0.0.0``.

    >>> split_host_port("127.0.0.1:4318"), split_host_port(":8889"), split_host_port("[::1]:13133")
    (('127.0.0.1', 4318), ('0.0.0.0', 8889), ('::1', 13133))
    """
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port from 0 to 65535 (got {endpoint!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError, whose message is clear enough
    elif ":" in host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"must be host:port, with an IPv6 host in brackets (got {endpoint!r})")
    return host or "0.0.0.0", int(port)


def _check_listen(value: str) -> str:
    split_host_port(value)
    return value.strip()


def _check_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value.strip()):
        raise ValueError(f"must be an http(s) URL (got {value!r})")
    return value.strip()


def _check_grpc_target(value: str) -> str:
    # The Collector's gRPC exporter takes host:port, or a URL whose scheme only chooses TLS.
    text = value.strip()
    if "://" in text:
        return _check_url(text)
    split_host_port(text)
    return text


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be a URL path starting with '/' (got {value!r})")
    return value


ListenEndpoint = Annotated[str, AfterValidator(_check_listen)]
HttpURL = Annotated[str, AfterValidator(_check_url)]
_GRPCTarget = Annotated[str, AfterValidator(_check_grpc_target)]
_URLPath = Annotated[str, AfterValidator(_check_path)]
_Text = Annotated[str, Field(min_length=1)]
_Headers = dict[str, SecretStr]


class _Model(BaseModel):
    # Frozen: the runtime shares one config between its components; extra="forbid": a typo is an error.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --- Shared blocks ----------------------------------------------------------------------------------------------


class TLSServerConfig(_Model):
    """TLS for a server endpoint (the Collector's ``configtls.ServerConfig``)."""

    cert_file: _Text
    """PEM certificate the server presents."""

    key_file: _Text
    """PEM private key of ``cert_file``."""

    client_ca_file: str | None = None
    """If set, clients must present a certificate signed by this CA (mutual TLS)."""


class TLSClientConfig(_Model):
    """TLS for an outgoing connection (the Collector's ``configtls.ClientConfig``)."""

    insecure: bool = False
    """gRPC only: connect without TLS. HTTP exporters choose TLS by the URL's scheme."""

    insecure_skip_verify: bool = False
    """Accept any server certificate. For tests only."""

    ca_file: str | None = None
    """CA bundle that verifies the server; unset means the system's."""

    cert_file: str | None = None
    """Client certificate, for mutual TLS (with ``key_file``)."""

    key_file: str | None = None
    """Private key of ``cert_file``."""

    @model_validator(mode="after")
    def _check_pair(self) -> TLSClientConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise _FieldProblem(
                "cert_file" if self.cert_file is None else "key_file", "set cert_file and key_file together"
            )
        return self


class AuthConfig(_Model):
    """Authentication by an extension, as in the Collector: ``auth: {authenticator: bearertokenauth}``."""

    authenticator: _Text
    """Id of a ``bearertokenauth`` extension, which must also be listed in ``service.extensions``."""


class RetryConfig(_Model):
    """Retries with exponential backoff (the Collector's ``retry_on_failure``); defaults are exporterhelper's."""

    enabled: bool = True
    """Retry failed exports that can succeed later (network errors, 429, 5xx)."""

    initial_interval: PositiveDuration = 5.0
    """Wait after the first failure."""

    max_interval: PositiveDuration = 30.0
    """Upper bound of one wait."""

    max_elapsed_time: Duration = 300.0
    """Give up on a batch after this long; 0 retries forever (the queue then bounds what is kept)."""

    multiplier: Annotated[float, Field(ge=1)] = 1.5
    """Each wait is the previous one times this."""

    randomization_factor: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Jitter: each wait is drawn within this fraction of its nominal value."""

    @model_validator(mode="after")
    def _check_order(self) -> RetryConfig:
        if self.max_interval < self.initial_interval:
            raise _FieldProblem("max_interval", "must not be shorter than initial_interval")
        return self


class SendingQueueConfig(_Model):
    """The bounded queue between the pipeline and an exporter (the Collector's ``sending_queue``)."""

    enabled: bool = True
    """Queue batches so a slow or absent backend never blocks the receiver."""

    num_consumers: _Count = 10
    """Batches sent concurrently."""

    queue_size: _Count = 1000
    """Batches kept; when full, new data is refused (and the receiver answers 503 so senders retry)."""

    storage: str | None = None
    """Id of a ``file_storage`` extension: the queue is kept on disk and survives a restart. Unset: in memory."""


class ResourceToTelemetryConfig(_Model):
    """Copying resource attributes onto every series."""

    enabled: bool = False
    """When true every resource attribute becomes a label; otherwise they go to ``target_info`` only."""


class TargetInfoConfig(_Model):
    """The ``target_info`` series that carries resource attributes."""

    enabled: bool = True
    """Write one ``target_info`` series per resource."""


# --- Receivers --------------------------------------------------------------------------------------------------


class OTLPHTTPServerConfig(_Model):
    """OTLP/HTTP: ``POST /v1/metrics`` in protobuf or JSON."""

    endpoint: ListenEndpoint = "127.0.0.1:4318"
    """Where to listen. Loopback by default: the workers are in the same pod (docs/sidecar-config.md)."""

    max_request_body_size: Annotated[_Int, Field(ge=1)] = 20 * MiB
    """Largest request body in bytes, after decompression (larger: 413). The Collector's default, 20 MiB."""

    metrics_url_path: _URLPath = "/v1/metrics"
    """Path that accepts metrics."""

    tls: TLSServerConfig | None = None
    """Serve HTTPS instead of HTTP."""

    auth: AuthConfig | None = None
    """Require a bearer token (a ``bearertokenauth`` extension)."""


class OTLPGRPCServerConfig(_Model):
    """OTLP/gRPC (``grpc_receiver.py``): the same decoder and pipelines as OTLP/HTTP."""

    endpoint: ListenEndpoint = "127.0.0.1:4317"
    """Where to listen."""

    max_recv_msg_size_mib: Annotated[_Int, Field(ge=1)] = 4
    """Largest message in MiB (gRPC's default, 4)."""

    tls: TLSServerConfig | None = None
    """Serve TLS."""

    auth: AuthConfig | None = None
    """Require a bearer token (a ``bearertokenauth`` extension)."""


class OTLPProtocolsConfig(_Model):
    """The protocols served. As in the Collector, only those listed are enabled (``grpc:`` alone enables gRPC at
    its defaults); at least one is needed. ``OTLPReceiverConfig()`` serves HTTP only."""

    http: OTLPHTTPServerConfig | None = None
    """OTLP/HTTP; enabled when listed."""

    grpc: OTLPGRPCServerConfig | None = None
    """OTLP/gRPC; enabled when listed."""

    @model_validator(mode="before")
    @classmethod
    def _listed_means_enabled(cls, data: Any) -> Any:
        # `grpc:` with nothing under it is YAML null; in the Collector that enables the protocol at its defaults.
        if isinstance(data, Mapping):
            return {key: ({} if value is None and key in ("http", "grpc") else value) for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _check_any(self) -> OTLPProtocolsConfig:
        if self.http is None and self.grpc is None:
            raise ValueError("list at least one protocol (http or grpc)")
        return self


class OTLPReceiverConfig(_Model):
    """The ``otlp`` receiver: OTLP from the workers' exporters."""

    protocols: OTLPProtocolsConfig = Field(default_factory=lambda: OTLPProtocolsConfig(http=OTLPHTTPServerConfig()))
    """Protocols served; default HTTP on 127.0.0.1:4318."""


# --- Processors (besides the processors package) ----------------------------------------------------------------


class MemoryLimiterConfig(ComponentConfig):
    """The ``memory_limiter`` processor: refuses data (the receiver answers 503) while memory is above the soft
    limit, ``limit - spike_limit``, before the process is in danger.

    Unlike the Collector's, ``MemoryLimiterConfig()`` is usable: 80% of the memory available (the cgroup limit,
    else physical memory), soft limit at 80% of that.

    >>> MemoryLimiterConfig(limit_mib=1000).limits(total_bytes=8 * 2**30)
    (1048576000, 838860800)
    """

    check_interval: PositiveDuration = 1.0
    """Time between two memory measurements (the Collector recommends 1s)."""

    limit_mib: Annotated[_Int, Field(ge=0)] = 0
    """Hard limit in MiB; when set it wins over ``limit_percentage``."""

    spike_limit_mib: Annotated[_Int, Field(ge=0)] = 0
    """Headroom below ``limit_mib`` in MiB; 0 means 20% of ``limit_mib``."""

    limit_percentage: _Percent = 80
    """Hard limit as a percentage of the memory available, used when ``limit_mib`` is 0."""

    spike_limit_percentage: _Percent = 0
    """Headroom below ``limit_percentage``, in percent of the memory available; 0 means 20% of the limit."""

    @model_validator(mode="after")
    def _check_limits(self) -> MemoryLimiterConfig:
        if self.limit_mib == 0 and self.limit_percentage == 0:
            raise _FieldProblem("limit_mib", "set limit_mib or limit_percentage above 0")
        if self.limit_mib > 0 and self.spike_limit_mib >= self.limit_mib:
            raise _FieldProblem("spike_limit_mib", f"must be less than limit_mib ({self.limit_mib})")
        if self.limit_mib == 0 and self.spike_limit_percentage >= self.limit_percentage:
            raise _FieldProblem(
                "spike_limit_percentage", f"must be less than limit_percentage ({self.limit_percentage})"
            )
        return self

    def limits(self, total_bytes: int) -> tuple[int, int]:
        """(hard, soft) limits in bytes, given the memory available to the process."""
        if self.limit_mib > 0:
            hard = self.limit_mib * MiB
            spike = self.spike_limit_mib * MiB if self.spike_limit_mib else hard // 5
        else:
            hard = total_bytes * self.limit_percentage // 100
            spike = total_bytes * self.spike_limit_percentage // 100 if self.spike_limit_percentage else hard // 5
        return hard, hard - spike


class BatchConfig(ComponentConfig):
    """The ``batch`` processor: groups data points into larger exports; the Collector's defaults."""

    timeout: PositiveDuration = 0.2
    """A batch is sent at the latest this long after its first point arrived."""

    send_batch_size: _Count = 8192
    """A batch is sent as soon as it holds this many data points."""

    send_batch_max_size: Annotated[_Int, Field(ge=0)] = 0
    """Larger batches are split to at most this many data points; 0 means no upper bound."""

    @model_validator(mode="after")
    def _check_sizes(self) -> BatchConfig:
        if 0 < self.send_batch_max_size < self.send_batch_size:
            raise _FieldProblem(
                "send_batch_max_size", f"must be 0 or at least send_batch_size ({self.send_batch_size})"
            )
        return self


# --- Exporters --------------------------------------------------------------------------------------------------


class PrometheusExporterConfig(_Model):
    """The ``prometheus`` exporter: one scrape endpoint holding the sum over every worker."""

    endpoint: ListenEndpoint = "0.0.0.0:8889"
    """Where ``/metrics`` is served. Every interface by default: Prometheus scrapes the pod's IP."""

    namespace: str = ""
    """Prefix added to every metric name (with ``_``)."""

    const_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every series."""

    send_timestamps: bool = False
    """Write each sample's timestamp (otherwise Prometheus uses the scrape time)."""

    metric_expiration: PositiveDuration = 300.0
    """A series that received no point for this long is no longer exposed."""

    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(default_factory=ResourceToTelemetryConfig)
    """Copy resource attributes onto every series (otherwise they are on ``target_info``)."""

    enable_open_metrics: bool = False
    """Serve OpenMetrics when the scraper asks for it (needed for exemplars)."""

    add_metric_suffixes: bool = True
    """Add unit and ``_total`` suffixes, as the Prometheus compatibility specification asks."""

    without_scope_info: bool = False
    """Leave out the ``otel_scope_*`` labels."""

    tls: TLSServerConfig | None = None
    """Serve HTTPS."""

    auth: AuthConfig | None = None
    """Require a bearer token to scrape (a ``bearertokenauth`` extension)."""


class RemoteWriteQueueConfig(_Model):
    """The remote-write exporter's queue (``remote_write_queue``); defaults are the Collector's."""

    enabled: bool = True
    """Queue writes so a slow backend never blocks the pipeline."""

    queue_size: _Count = 10000
    """Batches kept; when full, new data is refused."""

    num_consumers: _Count = 5
    """Writes sent concurrently (samples of one series still go in order)."""

    storage: str | None = None
    """Sidecar addition, not a Collector key: id of a ``file_storage`` extension that keeps the queue on disk."""


def _remote_write_retry() -> RetryConfig:
    # The Collector's prometheusremotewrite defaults: short waits, give up after a minute.
    return RetryConfig.model_validate({"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "1m"})


class PrometheusRemoteWriteExporterConfig(_Model):
    """The ``prometheusremotewrite`` exporter: protobuf with snappy to Prometheus, Mimir, Thanos, VictoriaMetrics."""

    endpoint: HttpURL
    """Remote-write URL, e.g. ``http://prometheus:9090/api/v1/write`` or ``http://mimir:8080/api/v1/push``."""

    headers: _Headers = Field(default_factory=dict)
    """Headers of every request (``X-Scope-OrgID`` for Mimir, ``Authorization``...); values are secrets."""

    timeout: PositiveDuration = 5.0
    """How long one write may take."""

    namespace: str = ""
    """Prefix added to every metric name (with ``_``)."""

    external_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every series written."""

    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(default_factory=ResourceToTelemetryConfig)
    """Copy resource attributes onto every series."""

    add_metric_suffixes: bool = True
    """Add unit and ``_total`` suffixes."""

    target_info: TargetInfoConfig = Field(default_factory=TargetInfoConfig)
    """Write ``target_info`` series."""

    remote_write_queue: RemoteWriteQueueConfig = Field(default_factory=RemoteWriteQueueConfig)
    """The bounded queue in front of the writes."""

    retry_on_failure: RetryConfig = Field(default_factory=_remote_write_retry)
    """Retries with backoff (defaults: 50ms, at most 200ms apart, for 1m)."""

    tls: TLSClientConfig | None = None
    """TLS settings for an ``https`` endpoint."""

    auth: AuthConfig | None = None
    """Send a bearer token (a ``bearertokenauth`` extension)."""


class OTLPHTTPExporterConfig(_Model):
    """The ``otlphttp`` exporter: OTLP/HTTP to a gateway tier (an OpenTelemetry Collector) or any OTLP backend."""

    endpoint: HttpURL
    """Base URL; ``/v1/metrics`` is appended (``http://gateway:4318`` -> ``http://gateway:4318/v1/metrics``)."""

    metrics_endpoint: HttpURL | None = None
    """Full metrics URL, used as is; wins over ``endpoint``."""

    headers: _Headers = Field(default_factory=dict)
    """Headers of every request; values are secrets."""

    compression: Literal["gzip", "none"] = "gzip"
    """Request compression (the Collector's default, gzip)."""

    encoding: Literal["proto", "json"] = "proto"
    """Body encoding."""

    timeout: PositiveDuration = 30.0
    """How long one request may take (the Collector's otlphttp default)."""

    tls: TLSClientConfig | None = None
    """TLS settings for an ``https`` endpoint."""

    auth: AuthConfig | None = None
    """Send a bearer token (a ``bearertokenauth`` extension)."""

    sending_queue: SendingQueueConfig = Field(default_factory=SendingQueueConfig)
    """The bounded queue in front of the exporter; ``storage`` makes it survive restarts."""

    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    """Retries with backoff."""

    def resolved_metrics_endpoint(self) -> str:
        """The URL requests go to.

        >>> OTLPHTTPExporterConfig(endpoint="http://gateway:4318/").resolved_metrics_endpoint()
        'http://gateway:4318/v1/metrics'
        """
        if self.metrics_endpoint is not None:
            return self.metrics_endpoint
        return self.endpoint.rstrip("/") + "/v1/metrics"


class OTLPExporterConfig(_Model):
    """The ``otlp`` exporter: OTLP/gRPC, as the Collector's ``otlp`` is (``otlp_grpc_exporter.py``)."""

    endpoint: _GRPCTarget
    """``host:port`` of the gRPC server, e.g. ``gateway:4317``."""

    headers: _Headers = Field(default_factory=dict)
    """gRPC metadata sent with every call; values are secrets."""

    compression: Literal["gzip", "none"] = "gzip"
    """Message compression."""

    timeout: PositiveDuration = 5.0
    """How long one call may take."""

    tls: TLSClientConfig | None = None
    """TLS settings; ``insecure: true`` for plaintext."""

    auth: AuthConfig | None = None
    """Send a bearer token (a ``bearertokenauth`` extension)."""

    sending_queue: SendingQueueConfig = Field(default_factory=SendingQueueConfig)
    """The bounded queue in front of the exporter."""

    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    """Retries with backoff."""


class PushgatewayExporterConfig(_Model):
    """The ``pushgateway`` exporter (the sidecar's own; not in the Collector): pushes every interval."""

    url: HttpURL
    """Pushgateway base URL, e.g. ``http://pushgateway:9091``."""

    job: _Text = "otel_monitoring"
    """The ``job`` grouping key."""

    interval: PositiveDuration = 15.0
    """Time between two pushes."""

    timeout: PositiveDuration = 5.0
    """How long one push may take."""


class DebugExporterConfig(_Model):
    """The ``debug`` exporter: writes what it receives to the log."""

    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    """``basic``: counts; ``normal``: one line per metric; ``detailed``: every data point."""

    sampling_initial: _Count = 2
    """Batches logged per second before sampling starts."""

    sampling_thereafter: _Count = 1
    """After that, one batch in this many is logged."""


# --- Extensions -------------------------------------------------------------------------------------------------


class HealthCheckExtensionConfig(_Model):
    """The ``health_check`` extension: ``GET <path>`` answers 200 only while the pipelines run."""

    endpoint: ListenEndpoint = "0.0.0.0:13133"
    """Where to listen. Every interface by default: Kubernetes probes reach the pod's IP, not its loopback."""

    path: _URLPath = "/"
    """Path of the health answer."""


class FileStorageExtensionConfig(_Model):
    """The ``file_storage`` extension: a directory that keeps sending queues across restarts."""

    directory: _Text
    """Directory of the queue files; it must exist and be writable unless ``create_directory`` is true."""

    create_directory: bool = False
    """Create ``directory`` (mode 0750) when it is missing."""

    timeout: PositiveDuration = 1.0
    """How long a file operation may wait for its lock."""


class BearerTokenAuthExtensionConfig(_Model):
    """The ``bearertokenauth`` extension: on a server, requires ``Authorization: <scheme> <token>``; on an
    exporter, sends it. Give exactly one of ``token`` or ``filename``."""

    scheme: _Text = "Bearer"
    """Scheme written before the token."""

    token: SecretStr | None = None
    """The token; usually ``${env:VAR}``."""

    filename: str | None = None
    """File holding the token (a mounted Kubernetes secret); read at start."""

    @model_validator(mode="after")
    def _check_one(self) -> BearerTokenAuthExtensionConfig:
        # The Collector silently prefers filename when both are set; one source is clearer.
        if (self.token is None) == (self.filename is None):
            raise _FieldProblem("token", "set exactly one of token or filename")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise _FieldProblem("token", "must not be empty")
        return self


# --- Registry ---------------------------------------------------------------------------------------------------

ReceiverConfig: TypeAlias = OTLPReceiverConfig
ExporterConfig: TypeAlias = (
    PrometheusExporterConfig
    | PrometheusRemoteWriteExporterConfig
    | OTLPHTTPExporterConfig
    | OTLPExporterConfig
    | PushgatewayExporterConfig
    | DebugExporterConfig
)
ExtensionConfig: TypeAlias = HealthCheckExtensionConfig | FileStorageExtensionConfig | BearerTokenAuthExtensionConfig


def _processor_types() -> dict[str, type[BaseModel]]:
    known: dict[str, type[BaseModel]] = {"memory_limiter": MemoryLimiterConfig, "batch": BatchConfig}
    # The processors package's own config classes: the same validators, so the same messages, as in-process.
    known.update({name: factory.config_class for name, factory in factories().items()})
    return dict(sorted(known.items()))


COMPONENT_TYPES: Mapping[str, Mapping[str, type[BaseModel]]] = {
    "receivers": {"otlp": OTLPReceiverConfig},
    "processors": _processor_types(),
    "exporters": {
        "debug": DebugExporterConfig,
        "otlp": OTLPExporterConfig,
        "otlphttp": OTLPHTTPExporterConfig,
        "prometheus": PrometheusExporterConfig,
        "prometheusremotewrite": PrometheusRemoteWriteExporterConfig,
        "pushgateway": PushgatewayExporterConfig,
    },
    "extensions": {
        "bearertokenauth": BearerTokenAuthExtensionConfig,
        "file_storage": FileStorageExtensionConfig,
        "health_check": HealthCheckExtensionConfig,
    },
}
"""Section -> component type -> config model. The runtime registers one factory per entry."""

_KIND = {"receivers": "receiver", "processors": "processor", "exporters": "exporter", "extensions": "extension"}


def component_type(component_id: str) -> str:
    """The type part of a ``type[/name]`` id.

    >>> component_type("prometheusremotewrite/mimir")
    'prometheusremotewrite'
    """
    return component_id.partition("/")[0]


def _parse_id(component_id: object, key: str, section: str) -> str:
    # The grammar of processors.pipeline.parse_component_id, for every component kind.
    match = COMPONENT_ID_PATTERN.match(component_id) if isinstance(component_id, str) else None
    if match is None:
        raise CollectorConfigError(key, f"{component_id!r} is not a component id of the form type[/name]")
    type_name = match.group("type")
    if type_name not in COMPONENT_TYPES[section]:
        valid = ", ".join(COMPONENT_TYPES[section])
        raise CollectorConfigError(key, f"unknown {_KIND[section]} type {type_name!r} (valid: {valid})")
    return type_name


# --- Error messages ---------------------------------------------------------------------------------------------


def _peel(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that holds the last element of ``loc``, for listing its valid keys."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = _peel(info.annotation)
        elif typing.get_origin(current) in (dict, list):
            current = _peel(typing.get_args(current)[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_SECRET_KEYS = frozenset({"headers", "token"})


def _first_problem(prefix: str, model: type[BaseModel], error: ValidationError) -> CollectorConfigError:
    """One line for the first problem pydantic found, under the full YAML key."""
    first = error.errors()[0]
    loc = tuple(first["loc"])
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, CollectorConfigError):
        return cause
    parts = [prefix] if prefix else []
    parts += [f"[{part}]" if isinstance(part, int) else str(part) for part in loc]
    if isinstance(cause, _FieldProblem):
        parts.append(cause.field)
    key = ".".join(parts).replace(".[", "[")
    kind = first["type"]
    if kind == "missing":
        return CollectorConfigError(key, "required")
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        valid = f" (valid: {', '.join(sorted(holder.model_fields))})" if holder is not None else ""
        return CollectorConfigError(key, f"unknown key{valid}")
    message = str(cause) if cause is not None else first["msg"]
    message = message.removeprefix("Value error, ").replace("Input should be", "must be")
    got = first.get("input")
    if any(part in _SECRET_KEYS for part in loc):
        shown = " (value not shown: secret)"
    elif isinstance(got, Mapping | list) or got is None or "(got " in message:
        shown = ""
    else:
        shown = f" (got {got!r})"
    return CollectorConfigError(key, f"{message}{shown}")


# --- Service ----------------------------------------------------------------------------------------------------


class PipelineConfig(_Model):
    """One metrics pipeline: its receivers, processors in order, and exporters, by component id."""

    receivers: list[str] = Field(default_factory=list)
    """Receiver ids; at least one."""

    processors: list[str] = Field(default_factory=list)
    """Processor ids, in the order they run (put ``memory_limiter`` first and ``batch`` last)."""

    exporters: list[str] = Field(default_factory=list)
    """Exporter ids; at least one. Each gets its own copy of the processed data."""


class TelemetryMetricsConfig(_Model):
    """The sidecar's own metrics (points received, refused, exported, failed, queued per component)."""

    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    """``none`` turns them off; the others are the Collector's levels (the sidecar treats them alike for now)."""


class TelemetryConfig(_Model):
    """The sidecar's own telemetry."""

    metrics: TelemetryMetricsConfig = Field(default_factory=TelemetryMetricsConfig)
    """Its own metrics, served beside the data on every ``prometheus`` exporter's endpoint."""


_OTHER_SIGNALS = ("traces", "logs", "profiles")


class ServiceConfig(_Model):
    """What runs: the enabled extensions and the pipelines."""

    extensions: list[str] = Field(default_factory=list)
    """Extension ids to start; an extension that is defined but not listed does not run."""

    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    """Pipelines by id: ``metrics`` or ``metrics/<name>``; the metrics signal is the only one."""

    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    """The sidecar's own telemetry."""

    @field_validator("pipelines", mode="before")
    @classmethod
    def _check_pipeline_ids(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        for pipeline_id in value:
            match = COMPONENT_ID_PATTERN.match(pipeline_id) if isinstance(pipeline_id, str) else None
            key = f"service.pipelines.{pipeline_id}"
            if match is None:
                raise CollectorConfigError(key, f"{pipeline_id!r} is not a pipeline id of the form metrics[/name]")
            signal = match.group("type")
            if signal in _OTHER_SIGNALS:
                raise CollectorConfigError(
                    key, f"only the metrics signal is supported; the sidecar does not carry {signal}"
                )
            if signal != "metrics":
                raise CollectorConfigError(key, f"unknown signal {signal!r} (valid: metrics)")
        return value


# --- The config -------------------------------------------------------------------------------------------------


def _component_section(section: str, value: Any) -> dict[str, Any]:
    """Turn one raw section (``exporters``...) into typed models, each by the type in its id."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CollectorConfigError(section, f"must be a mapping of component ids to configs (got {value!r})")
    result: dict[str, Any] = {}
    for component_id, raw in value.items():
        key = f"{section}.{component_id}"
        type_name = _parse_id(component_id, key, section)
        model = COMPONENT_TYPES[section][type_name]
        if isinstance(raw, model):
            result[component_id] = raw
            continue
        if raw is not None and not isinstance(raw, Mapping):
            raise CollectorConfigError(key, f"must be a mapping (got {raw!r})")
        try:
            config = model.model_validate(dict(raw or {}))
        except ValidationError as error:
            raise _first_problem(key, model, error) from None
        if type_name == "business":
            _check_price_table(key, config)
        result[component_id] = config
    return result


def _check_price_table(key: str, config: Any) -> None:
    # The in-process pipeline reads the price table when it is built; a bad file must fail here just the same.
    try:
        load_price_table(config.prices_file, config.prices, config.provider_prices)
    except ValueError as error:
        raise CollectorConfigError(key, str(error)) from None


DEFAULT_CONFIG_YAML = """\
# The collector sidecar's default configuration: what `otel-monitoring collector` runs without --config.
# Workers in the pod send OTLP to 127.0.0.1:4318 (HTTP) or :4317 (gRPC); Prometheus scrapes <pod IP>:8889; the
# kubelet probes <pod IP>:13133. Reference: docs/sidecar-config.md.
# Check a file with `otel-monitoring collector validate --config F`.

receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:4318       # loopback: only processes in this pod can send
      grpc:
        endpoint: 127.0.0.1:4317

processors:
  memory_limiter:                      # first: refuse data (HTTP 503, senders retry) before memory runs out
    check_interval: 1s
    limit_percentage: 80               # of the container's memory limit; soft limit at 80% of this
  sanitize:                            # personal data out, customer ids pseudonymized (docs/processors.md)
  cardinality:                         # at most 2000 series per metric; the rest merged into one overflow series
  batch:                               # last: fewer, larger exports
    timeout: 200ms
    send_batch_size: 8192

exporters:
  prometheus:
    endpoint: 0.0.0.0:8889             # the one scrape target of the pod: the sum over every worker
    metric_expiration: 5m              # a series with no new point for 5 minutes is dropped

extensions:
  health_check:
    endpoint: 0.0.0.0:13133            # GET / answers 200 while the pipelines run

service:
  extensions: [health_check]
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, sanitize, cardinality, batch]
      exporters: [prometheus]
"""
"""The embedded default configuration; ``collector-config/default.yaml`` is a copy of it."""


@functools.cache
def _default_config() -> CollectorConfig:
    return CollectorConfig.model_validate(yaml.safe_load(DEFAULT_CONFIG_YAML))


class CollectorConfig(_Model):
    """A whole sidecar config. ``CollectorConfig()`` is the embedded default (:data:`DEFAULT_CONFIG_YAML`).

    Component sections map ids (``type[/name]``) to typed models from :data:`COMPONENT_TYPES`. Every reference
    is checked on construction; problems that do not stop the sidecar (a component no pipeline uses) are in
    :attr:`warnings`. Build it with :func:`load_collector_config` to get one-line errors.

    >>> CollectorConfig().service.extensions
    ['health_check']
    """

    receivers: dict[str, ReceiverConfig] = Field(default_factory=lambda: dict(_default_config().receivers))
    """Receivers by id."""

    processors: dict[str, SerializeAsAny[ComponentConfig]] = Field(
        default_factory=lambda: dict(_default_config().processors)
    )
    """Processors by id: the ``processors`` package's types, ``memory_limiter`` and ``batch``."""

    exporters: dict[str, ExporterConfig] = Field(default_factory=lambda: dict(_default_config().exporters))
    """Exporters by id."""

    extensions: dict[str, ExtensionConfig] = Field(default_factory=lambda: dict(_default_config().extensions))
    """Extensions by id; they run only when listed in ``service.extensions``."""

    service: ServiceConfig = Field(default_factory=lambda: _default_config().service)
    """What runs."""

    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("receivers", "processors", "exporters", "extensions", mode="before")
    @classmethod
    def _type_components(cls, value: Any, info: Any) -> Any:
        return _component_section(info.field_name, value)

    @model_validator(mode="after")
    def _check_references(self) -> CollectorConfig:
        # The one home of cross-section rules, in the order a reader of the file would check them.
        if not self.service.pipelines:
            raise CollectorConfigError("service.pipelines", "define at least one metrics pipeline")
        sections: dict[str, Mapping[str, Any]] = {
            "receivers": self.receivers,
            "processors": self.processors,
            "exporters": self.exporters,
        }
        used: dict[str, set[str]] = {section: set() for section in sections}
        for pipeline_id, pipeline in self.service.pipelines.items():
            for section, defined in sections.items():
                ids: list[str] = getattr(pipeline, section)
                key = f"service.pipelines.{pipeline_id}.{section}"
                if not ids and section != "processors":
                    raise CollectorConfigError(key, f"list at least one {_KIND[section]}")
                for index, component_id in enumerate(ids):
                    _check_reference(f"{key}[{index}]", component_id, section, defined)
                    if component_id in ids[:index]:
                        raise CollectorConfigError(f"{key}[{index}]", f"{component_id!r} is listed twice")
                used[section].update(ids)
        for index, extension_id in enumerate(self.service.extensions):
            key = f"service.extensions[{index}]"
            _check_reference(key, extension_id, "extensions", self.extensions)
            if extension_id in self.service.extensions[:index]:
                raise CollectorConfigError(key, f"{extension_id!r} is listed twice")
        self._check_extension_uses()
        self._check_ports()
        warnings = [
            f"{section}.{component_id}: defined but not used in any pipeline"
            for section, defined in sections.items()
            for component_id in defined
            if component_id not in used[section]
        ]
        warnings += [
            f"extensions.{extension_id}: defined but not listed in service.extensions, so it does not run"
            for extension_id in self.extensions
            if extension_id not in self.service.extensions
        ]
        self._warnings = warnings
        return self

    def _check_extension_uses(self) -> None:
        for key, extension_id, wanted in self._extension_uses():
            _check_reference(key, extension_id, "extensions", self.extensions)
            if component_type(extension_id) != wanted:
                raise CollectorConfigError(key, f"must name a {wanted} extension (got {extension_id!r})")
            if extension_id not in self.service.extensions:
                raise CollectorConfigError(key, f"extension {extension_id!r} must also be listed in service.extensions")

    def _extension_uses(self) -> Iterator[tuple[str, str, str]]:
        """(key, extension id, required type) for every reference from a component to an extension."""
        for section, components in (("receivers", self.receivers), ("exporters", self.exporters)):
            for component_id, config in components.items():
                for path, block in _blocks(config, f"{section}.{component_id}"):
                    auth = getattr(block, "auth", None)
                    if isinstance(auth, AuthConfig):
                        yield f"{path}.auth.authenticator", auth.authenticator, "bearertokenauth"
                    for queue_key in ("sending_queue", "remote_write_queue"):
                        queue = getattr(block, queue_key, None)
                        storage = getattr(queue, "storage", None)
                        if storage is not None:
                            yield f"{path}.{queue_key}.storage", storage, "file_storage"

    def _check_ports(self) -> None:
        seen: dict[int, tuple[str, str]] = {}
        for key, endpoint in self.listen_endpoints().items():
            host, port = split_host_port(endpoint)
            if port == 0:
                continue
            if port in seen:
                other_key, other_host = seen[port]
                # 0.0.0.0 overlaps every address; two specific addresses may share a port.
                if host == other_host or "0.0.0.0" in (host, other_host) or "::" in (host, other_host):
                    raise CollectorConfigError(key, f"port {port} is also used by {other_key}")
            seen[port] = (key, host)

    def listen_endpoints(self) -> dict[str, str]:
        """Every ``host:port`` the sidecar listens on, by YAML key (only extensions that run)."""
        endpoints: dict[str, str] = {}
        for receiver_id, receiver in self.receivers.items():
            for name in ("http", "grpc"):
                server = getattr(receiver.protocols, name)
                if server is not None:
                    endpoints[f"receivers.{receiver_id}.protocols.{name}.endpoint"] = server.endpoint
        for exporter_id, exporter in self.exporters.items():
            if isinstance(exporter, PrometheusExporterConfig):
                endpoints[f"exporters.{exporter_id}.endpoint"] = exporter.endpoint
        for extension_id, extension in self.extensions.items():
            if isinstance(extension, HealthCheckExtensionConfig) and extension_id in self.service.extensions:
                endpoints[f"extensions.{extension_id}.endpoint"] = extension.endpoint
        return endpoints

    @property
    def warnings(self) -> list[str]:
        """Problems that do not stop the sidecar, one line each (the Collector logs the same at start)."""
        return list(self._warnings)

    def summary(self) -> str:
        """One line: each pipeline as ``receivers -> processors -> exporters``, and the extensions.

        >>> CollectorConfig().summary()
        'metrics: otlp -> memory_limiter, sanitize, cardinality, batch -> prometheus; extensions: health_check'
        """
        parts = [
            f"{pipeline_id}: {', '.join(p.receivers)} -> {', '.join(p.processors) or '(no processors)'} -> "
            f"{', '.join(p.exporters)}"
            for pipeline_id, p in self.service.pipelines.items()
        ]
        parts.append(f"extensions: {', '.join(self.service.extensions) or 'none'}")
        return "; ".join(parts)


def _blocks(config: BaseModel, path: str) -> Iterator[tuple[str, BaseModel]]:
    """The model and every nested model (the receiver's protocols), with their YAML keys."""
    yield path, config
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            yield from _blocks(value, f"{path}.{name}")


def _check_reference(key: str, component_id: str, section: str, defined: Mapping[str, Any]) -> None:
    kind = _KIND[section]
    match = COMPONENT_ID_PATTERN.match(component_id) if isinstance(component_id, str) else None
    if match is None or match.group("type") not in COMPONENT_TYPES[section]:
        valid = ", ".join(COMPONENT_TYPES[section])
        raise CollectorConfigError(key, f"unknown {kind} {component_id!r} (valid: {valid})")
    if component_id not in defined:
        listed = ", ".join(defined) or "none"
        raise CollectorConfigError(key, f"{kind} {component_id!r} is not defined under {section} (defined: {listed})")


# --- Environment expansion --------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand_string(text: str, key: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        inner = match.group(1)
        provider, sep, rest = inner.partition(":")
        if sep and provider != "env" and _ENV_NAME.fullmatch(provider) and not rest.startswith("-"):
            raise CollectorConfigError(key, f"unsupported config provider {provider!r} in ${{{inner}}} (valid: env)")
        reference = rest if sep and provider == "env" else inner
        name, has_default, default = reference.partition(":-")
        if not _ENV_NAME.fullmatch(name):
            raise CollectorConfigError(key, f"${{{inner}}} does not name an environment variable")
        value = environ.get(name)
        if value is None:
            if has_default:
                return default
            raise CollectorConfigError(
                key, f"environment variable {name} is not set (write ${{env:{name}:-}} to allow it to be empty)"
            )
        return value

    return _REFERENCE.sub(replace, text)


def expand_env(document: Any, environ: Mapping[str, str], key: str = "") -> Any:
    """Expand ``${env:VAR}``, ``${VAR}`` and ``${env:VAR:-default}`` in every string value; ``$$`` is ``$``.

    Keys are left alone. An unset variable without a default is an error naming it and the key (the Collector
    would expand it to an empty string). Expanded values stay strings; typed fields convert them (``"5"`` to 5).

    >>> expand_env({"headers": {"Authorization": "Bearer ${env:TOKEN}"}}, {"TOKEN": "s3cret"})
    {'headers': {'Authorization': 'Bearer s3cret'}}
    """
    if isinstance(document, str):
        return _expand_string(document, key, environ)
    if isinstance(document, Mapping):
        return {k: expand_env(v, environ, f"{key}.{k}" if key else str(k)) for k, v in document.items()}
    if isinstance(document, list):
        return [expand_env(item, environ, f"{key}[{index}]") for index, item in enumerate(document)]
    return document


# --- Loading ----------------------------------------------------------------------------------------------------


def _read_document(path: str | os.PathLike[str]) -> Any:
    name = os.fspath(path)
    where = f"config file {name}"
    try:
        with open(name, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as exc:
        raise CollectorConfigError(where, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CollectorConfigError(where, "is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        detail = getattr(exc, "problem", None) or "syntax error"
        raise CollectorConfigError(where, f"is not valid YAML{position}: {detail}") from None


def load_collector_config(
    path: str | os.PathLike[str] | None, *, environ: Mapping[str, str] | None = None
) -> CollectorConfig:
    """Load a sidecar config file, or the embedded default when ``path`` is None.

    A file is the whole config, as for the Collector: it must have ``service.pipelines``, and a section it
    leaves out is empty. ``environ`` (default the process's environment) supplies ``${env:VAR}`` values. Any
    problem raises :class:`CollectorConfigError` with one line naming the key; warnings are in ``config.warnings``.

    >>> load_collector_config(None) == CollectorConfig()
    True
    """
    if path is None:
        return _default_config()
    document = _read_document(path)
    where = f"config file {os.fspath(path)}"
    if document is None:
        raise CollectorConfigError(where, "is empty (it must define at least service.pipelines)")
    if not isinstance(document, Mapping):
        raise CollectorConfigError(where, f"must be a mapping of sections (got a {type(document).__name__})")
    if "service" not in document:
        raise CollectorConfigError("service", "required (a config file must define service.pipelines)")
    # The environment is read only for ${env:...} references, the Collector's way of passing secrets.
    env: Mapping[str, str] = process_environment() if environ is None else environ
    expanded = expand_env(dict(document), env)
    for section in _KIND:
        expanded.setdefault(section, {})
    return _validate(expanded)


def _validate(document: Mapping[str, Any]) -> CollectorConfig:
    try:
        return CollectorConfig.model_validate(document)
    except ValidationError as error:
        raise _first_problem("", CollectorConfig, error) from None


def render_default_config() -> str:
    """The embedded default config as YAML, with its comments (``collector-config/default.yaml`` holds a copy).

    >>> render_default_config().splitlines()[0].startswith("# The collector sidecar's default")
    True
    """
    return DEFAULT_CONFIG_YAML
