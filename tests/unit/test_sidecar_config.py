"""The collector sidecar's configuration: defaults, shipped files, failing files, env expansion, durations, CLI."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from otel_monitoring.cli import main
from otel_monitoring.sidecar import config as sidecar_config
from otel_monitoring.sidecar.config import (
    COMPONENT_TYPES,
    BatchConfig,
    CollectorConfig,
    CollectorConfigError,
    MemoryLimiterConfig,
    OTLPHTTPExporterConfig,
    PrometheusRemoteWriteExporterConfig,
    expand_env,
    load_collector_config,
    parse_duration,
    render_default_config,
    split_host_port,
)
from processors.pipeline import factory_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = REPO_ROOT / "collector-config"
TESTDATA = Path(__file__).parent / "testdata" / "sidecar"
BAD_CASES: dict[str, str] = yaml.safe_load((TESTDATA / "bad_cases.yaml").read_text(encoding="utf-8"))
SHIPPED_SIDECAR_FILES = sorted(path for path in SHIPPED.glob("*.yaml") if path.name != "gateway-otelcol.yaml")
# What the shipped examples reference with ${env:VAR} and no default.
EXAMPLE_ENV = {"OTEL_MONITORING_SIDECAR_TOKEN": "t" * 32}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = """
receivers: {otlp:}
exporters: {prometheus:}
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheus]}
"""


# --- Defaults -------------------------------------------------------------------------------------------------


def test_default_config_runs_otlp_through_the_default_processors_to_prometheus() -> None:
    config = CollectorConfig()

    pipeline = config.service.pipelines["metrics"]
    assert pipeline.receivers == ["otlp"]
    assert pipeline.processors == ["memory_limiter", "sanitize", "cardinality", "batch"]
    assert pipeline.exporters == ["prometheus"]
    assert config.service.extensions == ["health_check"]
    assert config.warnings == []


def test_default_endpoints_are_loopback_for_otlp_and_every_interface_for_scrape_and_probes() -> None:
    config = CollectorConfig()

    http = config.receivers["otlp"].protocols.http
    assert http is not None
    assert split_host_port(http.endpoint) == ("127.0.0.1", 4318)
    grpc = config.receivers["otlp"].protocols.grpc
    assert grpc is not None
    assert split_host_port(grpc.endpoint) == ("127.0.0.1", 4317)
    assert config.listen_endpoints() == {
        "receivers.otlp.protocols.http.endpoint": "127.0.0.1:4318",
        "receivers.otlp.protocols.grpc.endpoint": "127.0.0.1:4317",
        "exporters.prometheus.endpoint": "0.0.0.0:8889",
        "extensions.health_check.endpoint": "0.0.0.0:13133",
    }


def test_loading_no_file_gives_the_default_config() -> None:
    assert load_collector_config(None) == CollectorConfig()


def test_shipped_default_yaml_is_the_embedded_default() -> None:
    assert (SHIPPED / "default.yaml").read_text(encoding="utf-8") == render_default_config()
    assert load_collector_config(SHIPPED / "default.yaml", environ={}) == CollectorConfig()


@pytest.mark.parametrize(
    ("section", "type_name"),
    [(section, type_name) for section, types in COMPONENT_TYPES.items() for type_name in types],
)
def test_every_component_type_has_a_default_config_that_validates_or_names_its_required_keys(
    section: str, type_name: str
) -> None:
    model = COMPONENT_TYPES[section][type_name]
    required = sorted(name for name, info in model.model_fields.items() if info.is_required())
    one_of = {"bearertokenauth": {"token": "t" * 20}}  # needs one of two keys, neither required alone
    if not required and type_name not in one_of:
        assert isinstance(model(), BaseModel)
        return
    with pytest.raises(ValidationError):
        model()
    minimal: dict[str, Any] = one_of.get(type_name, {})
    for name in required:
        minimal[name] = {"directory": "/tmp/queue"}.get(name, "http://backend:9000")
    assert isinstance(model.model_validate(minimal), BaseModel)


def test_processor_types_are_the_processors_package_plus_memory_limiter_and_batch() -> None:
    processors = COMPONENT_TYPES["processors"]

    assert set(processors) == {"aggregate", "batch", "business", "cardinality", "memory_limiter", "sanitize"}
    assert processors["sanitize"] is factory_for("sanitize").config_class
    assert processors["memory_limiter"] is MemoryLimiterConfig


def test_every_field_of_every_component_model_has_a_docstring() -> None:
    undocumented = [
        f"{model.__name__}.{name}"
        for model in vars(sidecar_config).values()
        if isinstance(model, type) and issubclass(model, BaseModel) and model.__module__ == sidecar_config.__name__
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert undocumented == []


# --- Files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED_SIDECAR_FILES, ids=lambda path: path.name)
def test_shipped_sidecar_configs_load_without_warnings(path: Path) -> None:
    config = load_collector_config(path, environ=EXAMPLE_ENV)

    assert config.service.pipelines
    assert config.warnings == []


@pytest.mark.parametrize("path", SHIPPED_SIDECAR_FILES, ids=lambda path: path.name)
def test_shipped_sidecar_configs_validate_and_build_a_collector_service(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_monitoring.settings import Settings
    from otel_monitoring.sidecar.service import CollectorService

    token = tmp_path / "token"
    token.write_text("gateway-token\n", encoding="utf-8")
    environ = {**EXAMPLE_ENV, "OTEL_GATEWAY_TOKEN_FILE": str(token), "OTEL_MONITORING_QUEUE_DIR": str(tmp_path / "q")}

    status = main(["collector", "validate", "--config", str(path)], environ=environ)
    config = load_collector_config(path, environ=environ)
    settings = Settings.model_validate({"processing": {"pseudonym_key": "k" * 32}})
    service = CollectorService(config, settings=settings)

    assert status == 0 and ": valid (" in capsys.readouterr().out
    assert sorted(service.exporters) == sorted(
        {e for pipeline in config.service.pipelines.values() for e in pipeline.exporters}
    )
    for exporter in service.exporters.values():
        exporter.shutdown(0.0)
    # Building reads the token but leaves the queue directory alone until the sidecar starts.
    assert not (tmp_path / "q").exists()


def test_gateway_otelcol_config_is_a_collector_config_with_a_metrics_pipeline() -> None:
    # The Collector's own file is not ours to validate; it must at least be the Collector's shape.
    document = yaml.safe_load((SHIPPED / "gateway-otelcol.yaml").read_text(encoding="utf-8"))

    pipeline = document["service"]["pipelines"]["metrics"]
    for section in ("receivers", "processors", "exporters"):
        assert set(pipeline[section]) <= set(document[section])
    assert set(document["service"]["extensions"]) <= set(document["extensions"])


def test_bad_cases_cover_every_bad_file() -> None:
    assert sorted(BAD_CASES) == sorted(path.name for path in (TESTDATA / "bad").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_config_fails_with_its_one_line_message(name: str) -> None:
    path = TESTDATA / "bad" / name

    with pytest.raises(CollectorConfigError) as caught:
        load_collector_config(path, environ={})

    assert str(caught.value) == BAD_CASES[name].replace("{file}", str(path))
    assert "\n" not in str(caught.value)


def test_sanitize_errors_match_the_in_process_pipeline(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "processors:\n  sanitize: {max_value_length: 3}\n")

    with pytest.raises(CollectorConfigError) as caught:
        load_collector_config(path, environ={})
    with pytest.raises(ValidationError) as in_process:
        factory_for("sanitize").config_class.model_validate({"max_value_length": 3})

    in_process_message = in_process.value.errors()[0]["msg"].removeprefix("Value error, ")
    assert str(caught.value) == f"processors.sanitize.max_value_length: {in_process_message} (got 3)"


def test_component_defined_but_unused_is_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("exporters: {prometheus:}", "exporters: {prometheus:, debug:}"))

    config = load_collector_config(path, environ={})

    assert config.warnings == ["exporters.debug: defined but not used in any pipeline"]


def test_extension_defined_but_not_enabled_is_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "extensions: {health_check:}\n")

    assert load_collector_config(path, environ={}).warnings == [
        "extensions.health_check: defined but not listed in service.extensions, so it does not run"
    ]


def test_listed_grpc_protocol_is_enabled_at_its_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("receivers: {otlp:}", "receivers: {otlp: {protocols: {grpc:}}}"))

    protocols = load_collector_config(path, environ={}).receivers["otlp"].protocols

    assert protocols.http is None  # as in the Collector: only listed protocols run
    assert protocols.grpc is not None
    assert split_host_port(protocols.grpc.endpoint) == ("127.0.0.1", 4317)


def test_section_left_out_of_a_file_is_empty_not_the_default(tmp_path: Path) -> None:
    config = load_collector_config(_write(tmp_path, MINIMAL), environ={})

    assert config.processors == {}
    assert config.extensions == {}


# --- Environment expansion ------------------------------------------------------------------------------------


def test_env_references_expand_in_string_values(tmp_path: Path) -> None:
    text = """
receivers: {otlp:}
exporters:
  prometheusremotewrite/mimir:
    endpoint: ${env:RW_URL}
    headers: {X-Scope-OrgID: "${TENANT}", X-Price: "$$5"}
    external_labels: {cluster: "${env:CLUSTER:-local}", region: "${env:REGION:-}"}
    remote_write_queue: {queue_size: "${env:QUEUE_SIZE}"}
service:
  pipelines:
    metrics: {receivers: [otlp], exporters: [prometheusremotewrite/mimir]}
"""
    environ = {"RW_URL": "http://mimir:8080/api/v1/push", "TENANT": "team-a", "QUEUE_SIZE": "2500"}

    exporter = load_collector_config(_write(tmp_path, text), environ=environ).exporters["prometheusremotewrite/mimir"]

    assert isinstance(exporter, PrometheusRemoteWriteExporterConfig)
    assert exporter.endpoint == "http://mimir:8080/api/v1/push"
    assert exporter.headers["X-Scope-OrgID"].get_secret_value() == "team-a"
    assert exporter.headers["X-Price"].get_secret_value() == "$5"
    assert exporter.external_labels == {"cluster": "local", "region": ""}
    assert exporter.remote_write_queue.queue_size == 2500


def test_env_expansion_leaves_keys_and_lone_dollars_alone() -> None:
    document = {"${KEY}": "costs $5 and ${env:A}${B}", "list": ["${A}", 3]}

    assert expand_env(document, {"A": "x", "B": "y"}) == {"${KEY}": "costs $5 and xy", "list": ["x", 3]}


def test_unset_variable_error_names_the_variable_and_the_key() -> None:
    with pytest.raises(CollectorConfigError) as caught:
        expand_env({"exporters": {"otlphttp": {"endpoint": "${env:GATEWAY}"}}}, {})

    assert caught.value.key == "exporters.otlphttp.endpoint"
    assert "GATEWAY is not set" in caught.value.problem


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    text = MINIMAL + "extensions:\n  bearertokenauth: {token: '${env:TOKEN}', filename: /x}\n"

    with pytest.raises(CollectorConfigError) as caught:
        load_collector_config(_write(tmp_path, text), environ={"TOKEN": "hunter2-secret-token"})

    assert caught.value.key == "extensions.bearertokenauth.token"
    assert "hunter2" not in str(caught.value)


# --- Values ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("1m30s", 90.0), ("200ms", 0.2), ("1h", 3600.0), ("1.5m", 90.0), ("750us", 0.00075), ("0", 0.0)],
)
def test_durations_are_parsed_as_the_collector_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "5 s", "-1s", "1d", "s", "", "1m30"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


def test_duration_fields_hold_seconds() -> None:
    batch = BatchConfig.model_validate({"timeout": "1m30s"})

    assert batch.timeout == 90.0
    with pytest.raises(ValidationError):
        BatchConfig.model_validate({"timeout": 5})  # the Collector would read 5 nanoseconds


def test_memory_limiter_limits_follow_the_collector_rules() -> None:
    gib = 2**30

    assert MemoryLimiterConfig().limits(total_bytes=gib) == (gib * 80 // 100, gib * 80 // 100 - gib * 80 // 500)
    by_percent = MemoryLimiterConfig(limit_percentage=75, spike_limit_percentage=25)
    assert by_percent.limits(total_bytes=gib) == (gib * 75 // 100, gib * 75 // 100 - gib * 25 // 100)
    # limit_mib wins over the percentage, and its spike defaults to 20% of it.
    assert MemoryLimiterConfig(limit_mib=500).limits(total_bytes=gib) == (500 * 2**20, 400 * 2**20)


def test_otlphttp_appends_the_metrics_path_unless_a_full_url_is_given() -> None:
    base = OTLPHTTPExporterConfig(endpoint="http://gateway:4318")
    full = OTLPHTTPExporterConfig(endpoint="http://gateway:4318", metrics_endpoint="http://other:9000/ingest")

    assert base.resolved_metrics_endpoint() == "http://gateway:4318/v1/metrics"
    assert full.resolved_metrics_endpoint() == "http://other:9000/ingest"


@pytest.mark.parametrize("endpoint", ["localhost", "host:99999", "a b:80", "::1:80", "http://host:80"])
def test_bad_listen_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_host_port(endpoint)


def test_module_examples_run() -> None:
    results = doctest.testmod(sidecar_config)

    assert results.attempted > 10
    assert results.failed == 0


# --- CLI ------------------------------------------------------------------------------------------------------


def test_collector_validate_prints_a_summary_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    path = SHIPPED / "default.yaml"

    status = main(["collector", "validate", "--config", str(path)], environ={})

    out, err = capsys.readouterr()
    assert status == 0
    assert err == ""
    assert (
        out == f"{path}: valid (metrics: otlp -> memory_limiter, sanitize, cardinality, batch -> prometheus; "
        "extensions: health_check)\n"
    )


def test_collector_validate_reports_one_line_naming_the_key_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    path = TESTDATA / "bad" / "unknown_processor_reference.yaml"

    status = main(["collector", "validate", "--config", str(path)], environ={})

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err == f"otel-monitoring: error: {BAD_CASES[path.name]}\n"


def test_collector_validate_prints_warnings_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, MINIMAL.replace("exporters: {prometheus:}", "exporters: {prometheus:, debug:}"))

    assert main(["collector", "validate", "--config", str(path)], environ={}) == 0

    err = capsys.readouterr().err
    assert err == "otel-monitoring: warning: exporters.debug: defined but not used in any pipeline\n"


def test_collector_validate_takes_env_from_the_given_environ(capsys: pytest.CaptureFixture[str]) -> None:
    path = SHIPPED / "many-workers.yaml"

    assert main(["collector", "validate", "--config", str(path)], environ={}) == 2
    assert "OTEL_MONITORING_SIDECAR_TOKEN is not set" in capsys.readouterr().err
    assert main(["collector", "validate", "--config", str(path)], environ=EXAMPLE_ENV) == 0


@pytest.mark.parametrize("argv", [["collector", "validate"], ["collector", "run"]])
def test_collector_validate_needs_a_file_and_unknown_actions_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ={}) == 2
    assert "usage: otel-monitoring collector" in capsys.readouterr().err
