"""Settings model and loader: precedence, provenance, parsing of each variable, and error messages."""

from __future__ import annotations

import doctest
import logging
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from otel_monitoring import settings as settings_module
from otel_monitoring.settings import (
    MASK,
    MetricsEndpointConfig,
    OTLPConfig,
    Settings,
    SettingsError,
    apply_instrumentation_defaults,
    apply_overrides,
    load_settings,
    render_settings,
)

TESTDATA = Path(__file__).parent / "testdata" / "settings"
BAD_CASES: dict[str, str] = yaml.safe_load((TESTDATA / "bad_cases.yaml").read_text(encoding="utf-8"))
LOGGER = "otel_monitoring.settings"


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- The model ----------------------------------------------------------------------------------------------------


def test_settings_without_arguments_is_valid_with_documented_defaults() -> None:
    settings = Settings()

    assert settings.service.name == "unknown_service"
    assert settings.service.resource_attributes == {}
    assert settings.exporters.metrics is None
    assert (settings.exporters.prometheus_host, settings.exporters.prometheus_port) == ("localhost", 9464)
    assert settings.exporters.export_interval_ms == 60000
    otlp = settings.exporters.otlp
    assert (otlp.endpoint, otlp.metrics_endpoint, otlp.headers) == ("http://localhost:4318", None, {})
    assert (otlp.timeout_ms, otlp.protocol, otlp.temporality_preference, otlp.compression) == (
        10000,
        "http/protobuf",
        "cumulative",
        "none",
    )
    assert settings.pushgateway.url is None
    assert settings.pushgateway.job_name == "otel_monitoring"
    assert (settings.pushgateway.interval_seconds, settings.pushgateway.timeout_seconds) == (15.0, 5.0)
    assert settings.pushgateway.push_at_exit is True
    assert (settings.prometheus.retention_days, settings.prometheus.url) == (15, "http://localhost:9090")
    assert settings.alerting.alertmanager_url == "http://localhost:9093"
    assert (settings.alerting.slack_webhook, settings.alerting.email) == (None, [])
    assert (settings.alerting.app, settings.alerting.rule_files) == ([], [])
    assert (settings.grafana.url, settings.grafana.api_key) == ("http://localhost:3000", None)
    assert (settings.prometheus.basic_auth_username, settings.prometheus.basic_auth_password) == (None, None)
    assert settings.sidecar.health_url == "http://localhost:13133/"
    assert settings.sidecar.metrics_url == "http://localhost:8889/metrics"
    endpoint = settings.metrics_endpoint
    assert (endpoint.bearer_token, endpoint.basic_auth_username, endpoint.basic_auth_password) == (None, None, None)
    assert (endpoint.allowed_networks, endpoint.access_log, endpoint.scope_labels) == ([], False, False)
    assert settings.http.duration_buckets == [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    assert settings.http.excluded_paths == ["/metrics"]
    assert settings.collectors.system_metrics == list(settings_module.SYSTEM_METRIC_GROUPS)
    assert (settings.collectors.probe_targets, settings.collectors.slow_query_seconds) == ({}, 0.5)
    assert settings.kubernetes.model_dump() == dict.fromkeys(settings.kubernetes.model_dump())


def _models(model: type[pydantic.BaseModel]) -> list[type[pydantic.BaseModel]]:
    found = [model]
    for info in model.model_fields.values():
        if isinstance(info.annotation, type) and issubclass(info.annotation, pydantic.BaseModel):
            found += _models(info.annotation)
    return found


@pytest.mark.parametrize("model", _models(Settings), ids=lambda m: m.__name__)
def test_every_field_has_a_description_and_unknown_fields_are_forbidden(model: type[pydantic.BaseModel]) -> None:
    undocumented = [name for name, info in model.model_fields.items() if not info.description]
    assert undocumented == []
    with pytest.raises(pydantic.ValidationError, match="extra"):
        model.model_validate({"no_such_field": 1})


def test_environment_variable_table_covers_the_seed_otel_and_own_variables() -> None:
    names = {name for leaf in settings_module._LEAVES.values() for name in leaf.env.names}

    assert names == {
        # seed
        "PROMETHEUS_PUSH_GATEWAY",
        "PROMETHEUS_RETENTION_DAYS",
        "ALERTMANAGER_URL",
        "ALERT_SLACK_WEBHOOK",
        "GRAFANA_URL",
        "GRAFANA_API_KEY",
        # OpenTelemetry
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_METRICS_EXPORTER",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_EXPORTER_PROMETHEUS_HOST",
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        # ours
        "OTEL_MONITORING_PUSH_JOB_NAME",
        "OTEL_MONITORING_PUSH_INTERVAL",
        "OTEL_MONITORING_PUSH_TIMEOUT",
        "OTEL_MONITORING_PUSH_AT_EXIT",
        "OTEL_MONITORING_PROMETHEUS_URL",
        "OTEL_MONITORING_PROMETHEUS_USERNAME",
        "OTEL_MONITORING_PROMETHEUS_PASSWORD",
        "OTEL_MONITORING_SIDECAR_HEALTH_URL",
        "OTEL_MONITORING_SIDECAR_METRICS_URL",
        "OTEL_MONITORING_ALERT_EMAIL",
        "OTEL_MONITORING_SMTP_HOST",
        "OTEL_MONITORING_SMTP_PORT",
        "OTEL_MONITORING_SMTP_USERNAME",
        "OTEL_MONITORING_SMTP_PASSWORD",
        "OTEL_MONITORING_SMTP_FROM",
        "OTEL_MONITORING_SMTP_REQUIRE_TLS",
        "OTEL_MONITORING_ALERT_PAGERDUTY_ROUTING_KEY",
        "OTEL_MONITORING_ALERT_PAGERDUTY_URL",
        "OTEL_MONITORING_SMS_URL",
        "OTEL_MONITORING_SMS_ACCOUNT_SID",
        "OTEL_MONITORING_SMS_AUTH_TOKEN",
        "OTEL_MONITORING_SMS_FROM",
        "OTEL_MONITORING_SMS_TO",
        "OTEL_MONITORING_SMS_RATE_LIMIT",
        "OTEL_MONITORING_SMS_DEDUPE_SECONDS",
        "OTEL_MONITORING_ALERT_RELAY_LISTEN",
        "OTEL_MONITORING_ALERT_RELAY_URL",
        "OTEL_MONITORING_ALERT_RELAY_TOKEN",
        "OTEL_MONITORING_ALERT_HISTORY_DATABASE_URL",
        "OTEL_MONITORING_ALERT_HISTORY_RETENTION_DAYS",
        "OTEL_MONITORING_ALERT_DASHBOARD_URL",
        "OTEL_MONITORING_ALERT_HEARTBEAT_URL",
        "OTEL_MONITORING_RUNBOOK_URL",
        "OTEL_MONITORING_ALERTS_APP",
        "OTEL_MONITORING_ALERT_RULE_FILES",
        "OTEL_MONITORING_SLO_AVAILABILITY",
        "OTEL_MONITORING_SLO_LATENCY",
        "OTEL_MONITORING_SLO_LATENCY_THRESHOLD",
        "OTEL_MONITORING_METRICS_TOKEN",
        "OTEL_MONITORING_METRICS_USERNAME",
        "OTEL_MONITORING_METRICS_PASSWORD",
        "OTEL_MONITORING_METRICS_ALLOWED_NETWORKS",
        "OTEL_MONITORING_METRICS_ACCESS_LOG",
        "OTEL_MONITORING_SCOPE_LABELS",
        "OTEL_MONITORING_HTTP_DURATION_BUCKETS",
        "OTEL_MONITORING_HTTP_EXCLUDED_PATHS",
        "OTEL_MONITORING_PROCESSORS",
        "OTEL_MONITORING_PIPELINE",
        "OTEL_MONITORING_PSEUDONYM_KEY",
        "OTEL_MONITORING_SYSTEM_METRICS",
        "OTEL_MONITORING_PROBE_TARGETS",
        "OTEL_MONITORING_PROBE_INTERVAL",
        "OTEL_MONITORING_PROBE_TIMEOUT",
        "OTEL_MONITORING_DB_METRICS",
        "OTEL_MONITORING_DB_SLOW_QUERY_SECONDS",
        "OTEL_MONITORING_HTTP_CLIENT_METRICS",
        "OTEL_MONITORING_HTTP_CLIENT_DURATION_BUCKETS",
        "OTEL_MONITORING_REDIS_METRICS",
        # Kubernetes downward API (the pod spec's env, docs/system-metrics.md)
        "K8S_POD_NAME",
        "K8S_NAMESPACE_NAME",
        "K8S_NODE_NAME",
        "K8S_CONTAINER_NAME",
        "K8S_CPU_REQUEST_MILLICORES",
        "K8S_CPU_LIMIT_MILLICORES",
        "K8S_MEMORY_REQUEST",
        "K8S_MEMORY_LIMIT",
    }


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        settings.prometheus.retention_days = 1


def test_direct_construction_rejects_username_without_password_naming_both_keys() -> None:
    with pytest.raises(pydantic.ValidationError) as excinfo:
        Settings(metrics_endpoint=MetricsEndpointConfig(basic_auth_username="prometheus"))

    message = str(excinfo.value)
    assert "metrics_endpoint.basic_auth_username" in message
    assert "metrics_endpoint.basic_auth_password" in message


@pytest.mark.parametrize(
    ("otlp", "expected"),
    [
        (OTLPConfig(), "http://localhost:4318/v1/metrics"),
        (OTLPConfig(endpoint="http://collector:4318/base/"), "http://collector:4318/base/v1/metrics"),
        (OTLPConfig(metrics_endpoint="http://collector:4318/custom"), "http://collector:4318/custom"),
        (OTLPConfig(endpoint="http://collector:4317", protocol="grpc"), "http://collector:4317"),
    ],
)
def test_resolved_metrics_endpoint_follows_the_otlp_exporter_spec(otlp: OTLPConfig, expected: str) -> None:
    assert otlp.resolved_metrics_endpoint() == expected


def test_docstring_examples_run() -> None:
    result = doctest.testmod(settings_module)

    assert result.attempted > 0
    assert result.failed == 0


# --- Precedence and provenance ------------------------------------------------------------------------------------


def test_empty_environment_and_no_file_give_defaults_with_no_sources() -> None:
    settings = load_settings(environ={})

    assert settings == Settings()
    assert settings.sources == {}
    assert settings.source_of("pushgateway.url") == "default"


def test_yaml_file_sets_only_the_fields_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, "pushgateway:\n  url: http://pushgateway:9091\n")

    settings = load_settings(path, environ={})

    assert settings.pushgateway.url == "http://pushgateway:9091"
    assert settings.pushgateway.job_name == "otel_monitoring"
    assert settings.pushgateway.interval_seconds == 15.0
    assert settings.sources == {"pushgateway.url": f"config file {path}"}


def test_environment_overrides_one_yaml_field_and_keeps_the_others(tmp_path: Path) -> None:
    path = write(tmp_path, "pushgateway:\n  url: http://from-yaml:9091\n  job_name: from-yaml\n")

    settings = load_settings(path, environ={"PROMETHEUS_PUSH_GATEWAY": "http://from-env:9091"})

    assert settings.pushgateway.url == "http://from-env:9091"
    assert settings.pushgateway.job_name == "from-yaml"
    assert settings.source_of("pushgateway.url") == "environment variable PROMETHEUS_PUSH_GATEWAY"
    assert settings.source_of("pushgateway.job_name") == f"config file {path}"


def test_code_overrides_win_over_environment_and_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "prometheus:\n  retention_days: 30\n")

    settings = load_settings(
        path,
        environ={"PROMETHEUS_RETENTION_DAYS": "20"},
        overrides={"prometheus": {"retention_days": 7}},
    )

    assert settings.prometheus.retention_days == 7
    assert settings.source_of("prometheus.retention_days") == "code"


def test_config_file_defaults_to_otel_monitoring_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "grafana:\n  url: http://grafana:3000\n")

    settings = load_settings(environ={"OTEL_MONITORING_CONFIG": str(path)})

    assert settings.grafana.url == "http://grafana:3000"


def test_explicit_config_file_wins_over_otel_monitoring_config_variable(tmp_path: Path) -> None:
    explicit = write(tmp_path, "grafana:\n  url: http://explicit:3000\n", "explicit.yaml")
    from_env = write(tmp_path, "grafana:\n  url: http://from-env:3000\n", "env.yaml")

    settings = load_settings(explicit, environ={"OTEL_MONITORING_CONFIG": str(from_env)})

    assert settings.grafana.url == "http://explicit:3000"


def test_good_yaml_file_loads_strictly_with_every_section(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(TESTDATA / "good.yaml", environ={}, strict=True)

    assert settings.service.resource_attributes == {"deployment.environment": "production"}
    assert settings.exporters.metrics == ["prometheus", "otlp"]
    assert settings.exporters.otlp.temporality_preference == "delta"
    assert settings.exporters.otlp.headers == {"api-key": "yaml-header-secret"}
    assert settings.pushgateway.interval_seconds == 30.0
    assert settings.pushgateway.push_at_exit is False
    assert settings.alerting.email == ["alerts@aiagency.com"]
    assert settings.alerting.slack_webhook is not None
    assert settings.alerting.slack_webhook.get_secret_value().endswith("yaml-webhook-secret")
    assert settings.metrics_endpoint.allowed_networks == ["10.0.0.0/8", "127.0.0.1/32"]
    assert settings.http.duration_buckets == [0.01, 0.1, 1.0, 10.0]
    assert warnings_from(caplog) == []


def test_empty_yaml_file_and_empty_section_give_defaults(tmp_path: Path) -> None:
    empty = write(tmp_path, "# nothing yet\n", "empty.yaml")
    empty_section = write(tmp_path, "pushgateway:\n  # url: http://pushgateway:9091\n", "section.yaml")

    assert load_settings(empty, environ={}, strict=True) == Settings()
    assert load_settings(empty_section, environ={}, strict=True) == Settings()


def test_apply_overrides_keeps_sources_of_untouched_values_and_does_not_repeat_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = load_settings(environ={"GRAFANA_URL": "http://grafana:3000", "PROMETHEUS_RETENTION_DAYS": "abc"})
    assert len(warnings_from(caplog)) == 1

    changed = apply_overrides(base, {"pushgateway": {"job_name": "batch"}})

    assert changed.pushgateway.job_name == "batch"
    assert changed.source_of("pushgateway.job_name") == "code"
    assert changed.source_of("grafana.url") == "environment variable GRAFANA_URL"
    assert len(warnings_from(caplog)) == 1


def test_source_of_unknown_path_raises_key_error() -> None:
    with pytest.raises(KeyError, match=r"pushgateway\.urll"):
        Settings().source_of("pushgateway.urll")


# --- Parsing of environment variables -----------------------------------------------------------------------------


def test_resource_attributes_parse_pairs_trim_and_percent_decode_values_only() -> None:
    environ = {"OTEL_RESOURCE_ATTRIBUTES": " service.namespace = ai ,team=content%20gen%2Cv2, k%41=a+b "}

    settings = load_settings(environ=environ, strict=True)

    assert settings.service.resource_attributes == {"service.namespace": "ai", "team": "content gen,v2", "k%41": "a+b"}


def test_malformed_resource_attributes_drop_the_whole_value_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(environ={"OTEL_RESOURCE_ATTRIBUTES": "a=1,broken,b=2"})

    assert settings.service.resource_attributes == {}
    assert warnings_from(caplog) == [
        "OTEL_RESOURCE_ATTRIBUTES: must be comma-separated key=value pairs (got 'a=1,broken,b=2'); using the default {}"
    ]


def test_otlp_headers_parse_pairs_and_decode_values() -> None:
    settings = load_settings(environ={"OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%3D%3D,x-tenant=acme"})

    assert settings.exporters.otlp.headers == {"api-key": "abc==", "x-tenant": "acme"}


@pytest.mark.parametrize(
    ("specific", "generic", "field", "expected"),
    [
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "headers", {"k": "specific"}),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "timeout_ms", 2000),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "protocol", "http/json"),
        ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION", "compression", "gzip"),
    ],
)
def test_signal_specific_otlp_variable_wins_over_generic_one(
    specific: str, generic: str, field: str, expected: Any
) -> None:
    values = {
        "headers": ("k=specific", "k=generic"),
        "timeout_ms": ("2000", "3000"),
        "protocol": ("http/json", "grpc"),
        "compression": ("gzip", "none"),
    }[field]
    environ = {specific: values[0], generic: values[1]}

    settings = load_settings(environ=environ, strict=True)

    assert getattr(settings.exporters.otlp, field) == expected
    assert settings.source_of(f"exporters.otlp.{field}") == f"environment variable {specific}"


def test_generic_otlp_variable_applies_when_specific_one_is_unset() -> None:
    settings = load_settings(environ={"OTEL_EXPORTER_OTLP_TIMEOUT": "3000"}, strict=True)

    assert settings.exporters.otlp.timeout_ms == 3000


def test_bad_signal_specific_variable_falls_back_past_the_generic_one(caplog: pytest.LogCaptureFixture) -> None:
    # The set specific variable shadows the generic one entirely, so its fallback is the YAML value or default.
    environ = {"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "soon", "OTEL_EXPORTER_OTLP_TIMEOUT": "3000"}

    settings = load_settings(environ=environ)

    assert settings.exporters.otlp.timeout_ms == 10000
    assert warnings_from(caplog) == [
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: must be an integer > 0 (milliseconds) (got 'soon'); "
        "using the default 10000"
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("false", False), ("0", False), (" no ", False)],
)
def test_booleans_from_environment_accept_true_false_1_0_yes_no_in_any_case(raw: str, expected: bool) -> None:
    settings = load_settings(environ={"OTEL_MONITORING_METRICS_ACCESS_LOG": raw}, strict=True)

    assert settings.metrics_endpoint.access_log is expected


@pytest.mark.parametrize("raw", ["on", "off", "y", "2", "enabled"])
def test_booleans_from_environment_reject_other_words(raw: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={"OTEL_MONITORING_SCOPE_LABELS": raw}, strict=True)

    assert str(excinfo.value) == (
        f"OTEL_MONITORING_SCOPE_LABELS: must be a boolean (true, false, 1, 0, yes, no) (got {raw!r})"
    )


def test_empty_or_blank_environment_value_is_treated_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "prometheus:\n  retention_days: 30\n")

    settings = load_settings(path, environ={"PROMETHEUS_RETENTION_DAYS": "  ", "OTEL_SERVICE_NAME": ""}, strict=True)

    assert settings.prometheus.retention_days == 30
    assert settings.service.name == "unknown_service"


def test_metrics_exporter_list_is_lowercased_and_deduplicated() -> None:
    settings = load_settings(environ={"OTEL_METRICS_EXPORTER": "Prometheus, OTLP,prometheus"}, strict=True)

    assert settings.exporters.metrics == ["prometheus", "otlp"]


def test_metrics_exporter_none_alone_means_no_exporter() -> None:
    settings = load_settings(environ={"OTEL_METRICS_EXPORTER": "none"}, strict=True)

    assert settings.exporters.metrics == ["none"]


def test_metrics_exporter_rejects_unknown_name() -> None:
    with pytest.raises(SettingsError, match=r"^OTEL_METRICS_EXPORTER: must be a comma-separated list of .*'zipkin'"):
        load_settings(environ={"OTEL_METRICS_EXPORTER": "zipkin"}, strict=True)


def test_temporality_preference_is_case_insensitive() -> None:
    environ = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "LowMemory"}

    settings = load_settings(environ=environ, strict=True)

    assert settings.exporters.otlp.temporality_preference == "lowmemory"


def test_numbers_from_environment_are_parsed_and_checked() -> None:
    environ = {
        "OTEL_EXPORTER_PROMETHEUS_PORT": "9000",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_MONITORING_PUSH_INTERVAL": "0.5",
        "OTEL_MONITORING_HTTP_DURATION_BUCKETS": "0.1, 1, 10",
    }

    settings = load_settings(environ=environ, strict=True)

    assert settings.exporters.prometheus_port == 9000
    assert settings.exporters.export_interval_ms == 5000
    assert settings.pushgateway.interval_seconds == 0.5
    assert settings.http.duration_buckets == [0.1, 1.0, 10.0]


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("PROMETHEUS_RETENTION_DAYS", "abc", "must be an integer >= 1 (got 'abc')"),
        ("PROMETHEUS_RETENTION_DAYS", "0", "must be an integer >= 1 (got '0')"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "0", "must be an integer from 1 to 65535 (got '0')"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "must be an integer > 0 (milliseconds) (got '-5')"),
        ("OTEL_MONITORING_PUSH_INTERVAL", "inf", "must be a number of seconds > 0 (got 'inf')"),
        ("OTEL_MONITORING_PUSH_TIMEOUT", "0", "must be a number of seconds > 0 (got '0')"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "must be an http(s) URL (got 'collector:4318')"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http", "must be one of http/protobuf, http/json, grpc (got 'http')"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "must be one of none, gzip (got 'zstd')"),
        (
            "OTEL_MONITORING_ALERT_EMAIL",
            "ops@example.com,ops at example.com",
            "must be a comma-separated list of email addresses (got 'ops@example.com,ops at example.com')",
        ),
        (
            "OTEL_MONITORING_METRICS_ALLOWED_NETWORKS",
            "10.0.0.0/8,intranet",
            "must be a comma-separated list of IP addresses or CIDR networks (got '10.0.0.0/8,intranet')",
        ),
        (
            "OTEL_MONITORING_HTTP_DURATION_BUCKETS",
            "1,0.5",
            "must be a comma-separated list of finite numbers in strictly increasing order (got '1,0.5')",
        ),
        (
            "OTEL_MONITORING_HTTP_EXCLUDED_PATHS",
            "/metrics,health",
            "must be a comma-separated list of URL paths starting with '/' (got '/metrics,health')",
        ),
        (
            "OTEL_METRICS_EXPORTER",
            "otlp,none",
            "must be a comma-separated list of prometheus, otlp, console, or none alone (got 'otlp,none')",
        ),
    ],
)
def test_strict_load_raises_one_line_naming_variable_valid_values_and_bad_value(
    name: str, raw: str, message: str
) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={name: raw}, strict=True)

    assert str(excinfo.value) == f"{name}: {message}"
    assert excinfo.value.key == name
    assert isinstance(excinfo.value, ValueError)


def test_allowed_networks_are_normalized_to_networks() -> None:
    environ = {"OTEL_MONITORING_METRICS_ALLOWED_NETWORKS": "10.1.2.3/8, 192.168.0.7, ::1"}

    settings = load_settings(environ=environ, strict=True)

    assert settings.metrics_endpoint.allowed_networks == ["10.0.0.0/8", "192.168.0.7/32", "::1/128"]


def test_email_accepts_a_single_address_or_a_comma_list() -> None:
    one = load_settings(environ={"OTEL_MONITORING_ALERT_EMAIL": "alerts@aiagency.com"}, strict=True)
    two = load_settings(environ={"OTEL_MONITORING_ALERT_EMAIL": "a@x.io, b@localhost"}, strict=True)

    assert one.alerting.email == ["alerts@aiagency.com"]
    assert two.alerting.email == ["a@x.io", "b@localhost"]


def test_alerting_app_and_rule_files_take_comma_lists_and_refuse_a_spec_that_is_not_module_or_module_attr() -> None:
    environ = {
        "OTEL_MONITORING_ALERTS_APP": "myservice.monitoring:registry, worker.alerts",
        "OTEL_MONITORING_ALERT_RULE_FILES": "rules/seed.yaml,/etc/otel-monitoring/extra.yml",
    }

    alerting = load_settings(environ=environ, strict=True).alerting

    assert alerting.app == ["myservice.monitoring:registry", "worker.alerts"]
    assert alerting.rule_files == ["rules/seed.yaml", "/etc/otel-monitoring/extra.yml"]
    for bad in ("my-service:registry", "myservice:", "myservice:rules.", "1st.module"):
        with pytest.raises(SettingsError, match=rf"^OTEL_MONITORING_ALERTS_APP: .*; '{re.escape(bad)}' is not module"):
            load_settings(environ={"OTEL_MONITORING_ALERTS_APP": f"ok.module, {bad}"}, strict=True)


# --- Non-strict loading: one warning, then fall back ----------------------------------------------------------------


def test_bad_environment_value_warns_once_naming_variable_and_default(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={"PROMETHEUS_RETENTION_DAYS": "abc"})

    assert settings.prometheus.retention_days == 15
    assert warnings_from(caplog) == [
        "PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'abc'); using the default 15"
    ]


def test_bad_environment_value_falls_back_to_the_yaml_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "prometheus:\n  retention_days: 30\n")

    settings = load_settings(path, environ={"PROMETHEUS_RETENTION_DAYS": "-3"})

    assert settings.prometheus.retention_days == 30
    assert settings.source_of("prometheus.retention_days") == f"config file {path}"
    assert warnings_from(caplog) == [
        f"PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got '-3'); using 30 from config file {path}"
    ]


def test_each_bad_value_warns_once_and_good_values_still_apply(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "PROMETHEUS_RETENTION_DAYS": "abc",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "http",
        "GRAFANA_URL": "http://grafana:3000",
    }

    settings = load_settings(environ=environ)

    assert settings.grafana.url == "http://grafana:3000"
    messages = warnings_from(caplog)
    assert len(messages) == 2
    assert messages[0].startswith("OTEL_EXPORTER_PROMETHEUS_PORT: ")
    assert messages[1].startswith("PROMETHEUS_RETENTION_DAYS: ")


def test_bad_code_override_warns_and_keeps_the_environment_value(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        environ={"OTEL_MONITORING_PUSH_JOB_NAME": "from-env"}, overrides={"pushgateway": {"job_name": ""}}
    )

    assert settings.pushgateway.job_name == "from-env"
    assert warnings_from(caplog) == [
        "pushgateway.job_name (from code): must be a non-empty string (got ''); "
        "using 'from-env' from environment variable OTEL_MONITORING_PUSH_JOB_NAME"
    ]


def test_unknown_override_key_is_an_error_when_strict() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={}, overrides={"prometheus": {"retention": 3}}, strict=True)

    assert str(excinfo.value) == (
        "prometheus.retention (from code): unknown key "
        "(valid: basic_auth_password, basic_auth_username, retention_days, url)"
    )


def test_username_without_password_disables_basic_auth_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={"OTEL_MONITORING_METRICS_USERNAME": "prometheus"})

    assert settings.metrics_endpoint.basic_auth_username is None
    assert settings.source_of("metrics_endpoint.basic_auth_username") == "default"
    assert warnings_from(caplog) == [
        "OTEL_MONITORING_METRICS_USERNAME: must be set together with metrics_endpoint.basic_auth_password "
        "(OTEL_MONITORING_METRICS_PASSWORD); basic auth is disabled"
    ]


def test_prometheus_password_without_username_is_an_error_naming_both_when_strict() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ={"OTEL_MONITORING_PROMETHEUS_PASSWORD": "s3cret"}, strict=True)

    assert str(excinfo.value) == (
        "OTEL_MONITORING_PROMETHEUS_PASSWORD: must be set together with prometheus.basic_auth_username "
        "(OTEL_MONITORING_PROMETHEUS_USERNAME)"
    )
    assert "s3cret" not in str(excinfo.value)


def test_prometheus_credentials_and_sidecar_urls_come_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "OTEL_MONITORING_PROMETHEUS_USERNAME": "doctor",
            "OTEL_MONITORING_PROMETHEUS_PASSWORD": "s3cret",
            "OTEL_MONITORING_SIDECAR_HEALTH_URL": "http://sidecar:13133/health",
            "OTEL_MONITORING_SIDECAR_METRICS_URL": "http://sidecar:8889/metrics",
        },
        strict=True,
    )

    password = settings.prometheus.basic_auth_password
    assert (settings.prometheus.basic_auth_username, password and password.get_secret_value()) == ("doctor", "s3cret")
    assert (settings.sidecar.health_url, settings.sidecar.metrics_url) == (
        "http://sidecar:13133/health",
        "http://sidecar:8889/metrics",
    )
    assert "s3cret" not in render_settings(settings)


def test_username_and_password_from_different_layers_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "metrics_endpoint:\n  basic_auth_username: prometheus\n")

    settings = load_settings(path, environ={"OTEL_MONITORING_METRICS_PASSWORD": "s3cret"}, strict=True)

    assert settings.metrics_endpoint.basic_auth_username == "prometheus"
    assert settings.metrics_endpoint.basic_auth_password is not None
    assert settings.metrics_endpoint.basic_auth_password.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ALERT_SLACK_WEBHOOK", "hooks.slack.com/services/TOPSECRET"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "TOPSECRET"),
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=TOPSECRET,broken"),
    ],
)
def test_secret_values_never_appear_in_errors_or_warnings(
    name: str, raw: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The YAML layer holds secrets too, so the fallback part of the warning is checked as well.
    path = write(
        tmp_path,
        "alerting:\n  slack_webhook: https://hooks.slack.com/services/YAMLSECRET\n"
        "exporters:\n  otlp:\n    headers: {api-key: YAMLSECRET}\n",
    )

    with pytest.raises(SettingsError) as excinfo:
        load_settings(path, environ={name: raw}, strict=True)
    load_settings(path, environ={name: raw})

    assert str(excinfo.value).startswith(f"{name}: ")
    assert str(excinfo.value).endswith("(value not shown: secret)")
    messages = warnings_from(caplog)
    assert len(messages) == 1
    assert messages[0].endswith(f"; using the value from config file {path}")
    assert "SECRET" not in str(excinfo.value) + messages[0]


# --- YAML files -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_yaml_file_raises_expected_one_line_message_when_strict(name: str) -> None:
    path = TESTDATA / "bad" / name

    with pytest.raises(SettingsError) as excinfo:
        load_settings(path, environ={}, strict=True)

    expected = BAD_CASES[name].replace("{file}", str(path))
    assert str(excinfo.value) == expected
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_yaml_file_warns_once_and_falls_back_to_defaults_when_not_strict(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = TESTDATA / "bad" / name

    settings = load_settings(path, environ={})

    expected = BAD_CASES[name].replace("{file}", str(path))
    messages = warnings_from(caplog)
    assert len(messages) == 1
    assert messages[0].startswith(expected + "; ")
    assert settings == Settings()


def test_every_bad_yaml_file_has_an_expected_message() -> None:
    assert sorted(p.name for p in (TESTDATA / "bad").glob("*.yaml")) == sorted(BAD_CASES)


def test_missing_config_file_is_an_error_naming_the_file_when_strict(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(SettingsError) as excinfo:
        load_settings(missing, environ={}, strict=True)

    assert str(excinfo.value) == f"config file {missing}: cannot be read (No such file or directory)"


def test_missing_config_file_from_variable_warns_once_and_still_reads_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nope.yaml"

    settings = load_settings(environ={"OTEL_MONITORING_CONFIG": str(missing), "GRAFANA_URL": "http://g:3000"})

    assert settings.grafana.url == "http://g:3000"
    assert warnings_from(caplog) == [
        f"config file {missing} (from OTEL_MONITORING_CONFIG): cannot be read (No such file or directory); "
        "ignoring the file"
    ]


def test_non_utf8_config_file_is_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("service:\n  name: caf\xe9\n".encode("latin-1"))

    assert load_settings(path, environ={}) == Settings()
    assert warnings_from(caplog) == [f"config file {path}: is not UTF-8 text; ignoring the file"]


# --- Rendering ------------------------------------------------------------------------------------------------------


def test_render_settings_masks_every_secret() -> None:
    environ = {
        "ALERT_SLACK_WEBHOOK": "https://hooks.slack.com/services/SECRET-1",
        "GRAFANA_API_KEY": "SECRET-2",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=SECRET-3",
        "OTEL_MONITORING_METRICS_TOKEN": "SECRET-4",
        "OTEL_MONITORING_METRICS_USERNAME": "prometheus",
        "OTEL_MONITORING_METRICS_PASSWORD": "SECRET-5",
    }

    text = render_settings(load_settings(environ=environ, strict=True))

    assert "SECRET" not in text
    document = yaml.safe_load(text)
    assert document["alerting"]["slack_webhook"] == MASK
    assert document["grafana"]["api_key"] == MASK
    assert document["exporters"]["otlp"]["headers"] == {"api-key": MASK}
    assert document["metrics_endpoint"]["bearer_token"] == MASK
    assert document["metrics_endpoint"]["basic_auth_password"] == MASK
    assert document["metrics_endpoint"]["basic_auth_username"] == "prometheus"
    assert "'********'" in text


def test_render_settings_output_without_secrets_loads_back_as_the_same_settings(tmp_path: Path) -> None:
    # Masked secrets are not valid values, so the good file is stripped of its secrets first.
    no_secrets = {
        "alerting": {"slack_webhook": None},
        "exporters": {"otlp": {"headers": {}}},
        "metrics_endpoint": {"basic_auth_username": None, "basic_auth_password": None},
    }
    settings = apply_overrides(load_settings(TESTDATA / "good.yaml", environ={}, strict=True), no_secrets)
    assert settings.service.name == "aiagency-core"

    path = write(tmp_path, render_settings(settings))

    assert load_settings(path, environ={}, strict=True).model_dump() == settings.model_dump()


def test_render_settings_with_sources_lists_only_provided_values(tmp_path: Path) -> None:
    path = write(tmp_path, "grafana:\n  url: http://grafana:3000\n")
    settings = load_settings(path, environ={"PROMETHEUS_RETENTION_DAYS": "30"})

    text = render_settings(settings, sources=True)

    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header == [
        "# Values that are not defaults come from:",
        f"#   grafana.url: config file {path}",
        "#   prometheus.retention_days: environment variable PROMETHEUS_RETENTION_DAYS",
    ]
    assert render_settings(Settings(), sources=True).startswith("# Every value is a default.\n")


# --- Environment defaults for instrumentations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "http"),
        ("", "http"),
        ("database", "database,http"),
        ("http", "http"),
        ("http/dup, database", "http/dup, database"),
    ],
)
def test_instrumentation_defaults_opt_http_into_stable_semconv_keeping_user_choices(
    before: str | None, after: str
) -> None:
    environ = {} if before is None else {"OTEL_SEMCONV_STABILITY_OPT_IN": before}

    changed = apply_instrumentation_defaults(environ)

    assert environ == {"OTEL_SEMCONV_STABILITY_OPT_IN": after}
    assert changed == ({} if after == before else {"OTEL_SEMCONV_STABILITY_OPT_IN": after})


def test_passwords_inside_urls_are_masked_in_rendering_and_errors() -> None:
    settings = load_settings(environ={"PROMETHEUS_PUSH_GATEWAY": "http://batch:PUSHPASS@pgw:9091"}, strict=True)
    assert settings.pushgateway.url == "http://batch:PUSHPASS@pgw:9091"  # the value itself is kept for use
    assert "PUSHPASS" not in render_settings(settings)
    with pytest.raises(SettingsError) as raised:
        load_settings(environ={"PROMETHEUS_PUSH_GATEWAY": "ftp://u:S3CRETPW@pgw:9091"}, strict=True)
    assert "S3CRETPW" not in str(raised.value) and "ftp://u:" in str(raised.value)


# What resourceFieldRef really emits: the resource divided by the divisor, rounded up to a whole number.
# requests.cpu 250m with divisor 1m -> "250"; limits.cpu 2 with divisor 1m -> "2000"; memory 256Mi with the
# default divisor 1 -> "268435456".
def test_reads_cpu_in_millicores_and_memory_in_bytes_as_the_downward_api_emits_them() -> None:
    environ = {
        "K8S_CPU_REQUEST_MILLICORES": "250",
        "K8S_CPU_LIMIT_MILLICORES": "2000",
        "K8S_MEMORY_REQUEST": str(256 * 2**20),
        "K8S_MEMORY_LIMIT": str(2**30),
    }

    kubernetes = load_settings(environ=environ, strict=True).kubernetes

    assert (kubernetes.cpu_request_millicores, kubernetes.cpu_limit_millicores) == (250, 2000)
    assert (kubernetes.cpu_request_cores, kubernetes.cpu_limit_cores) == (0.25, 2.0)
    assert (kubernetes.memory_request, kubernetes.memory_limit) == (256 * 2**20, 2**30)


def test_unset_cpu_gives_no_cores() -> None:
    kubernetes = load_settings(environ={"K8S_CPU_LIMIT_MILLICORES": "500"}).kubernetes

    assert (kubernetes.cpu_request_cores, kubernetes.cpu_limit_cores) == (None, 0.5)


@pytest.mark.parametrize("given", ["250m", "0.5", "-1", "true"])
def test_cpu_millicores_must_be_a_whole_number_naming_the_divisor(given: str) -> None:
    expected = rf"K8S_CPU_REQUEST_MILLICORES: must be a whole number of millicores >= 0 .*divisor: 1m.*'{given}'"
    with pytest.raises(SettingsError, match=expected):
        load_settings(environ={"K8S_CPU_REQUEST_MILLICORES": given}, strict=True)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("268435456", 268435456.0), ("256Mi", 256 * 2**20), ("1Gi", 2**30), ("1G", 1e9), ("4k", 4000.0)],
)
def test_reads_memory_as_bytes_or_a_kubernetes_quantity(given: str, expected: float) -> None:
    settings = load_settings(environ={"K8S_MEMORY_LIMIT": given}, strict=True)

    assert settings.kubernetes.memory_limit == expected


def test_memory_from_code_or_yaml_may_be_a_plain_int_but_not_a_boolean() -> None:
    settings = load_settings(overrides={"kubernetes": {"memory_request": 536870912}}, strict=True)
    assert settings.kubernetes.memory_request == 536870912

    with pytest.raises(SettingsError, match=r"kubernetes.memory_request \(from code\): must be a number of bytes"):
        load_settings(overrides={"kubernetes": {"memory_request": True}}, strict=True)


def test_system_metric_groups_none_turns_them_off_and_unknown_groups_are_refused() -> None:
    assert load_settings(environ={"OTEL_MONITORING_SYSTEM_METRICS": "none"}).collectors.system_metrics == []
    expected = r"OTEL_MONITORING_SYSTEM_METRICS: .*kubernetes; unknown group 'gpu' \(got 'cpu,gpu'\)"
    with pytest.raises(SettingsError, match=expected):
        load_settings(environ={"OTEL_MONITORING_SYSTEM_METRICS": "cpu,gpu"}, strict=True)


def test_probe_target_without_a_port_is_refused_with_its_name() -> None:
    expected = r"collectors.probe_targets \(from code\): .*'database': 'tcp://db' has no port"
    with pytest.raises(SettingsError, match=expected):
        load_settings(overrides={"collectors": {"probe_targets": {"database": "tcp://db"}}}, strict=True)
