"""``otel-monitoring lint``: each naming rule on crafted names, labels against what sanitize really writes,
expositions and declarations as input, and the exit codes."""

from __future__ import annotations

import argparse
import doctest
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Metric as SDKMetric
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from otel_monitoring import catalog as catalog_module
from otel_monitoring import lint
from otel_monitoring.catalog import build_catalog
from otel_monitoring.docs_cli import add_commands
from otel_monitoring.lint import (
    MetricFamily,
    families_from_exposition,
    families_from_registry,
    label_findings,
    lint_families,
    name_findings,
)
from otel_monitoring.metrics import MetricsRegistry
from processors import ProcessorContext
from processors.sanitize import FACTORY as SANITIZE


@pytest.fixture(scope="module")
def documented() -> frozenset[str]:
    return build_catalog().prometheus_names()


def rules(name: str, kind: str) -> set[str]:
    return {finding.rule for finding in name_findings(name, kind)}


@pytest.mark.parametrize(
    ("name", "kind", "rule"),
    [
        ("httpRequestsTotal_total", "counter", "snake-case"),
        ("job:errors:rate5m", "gauge", "snake-case"),
        ("request_latency_ms", "histogram", "base-unit"),
        ("upload_size_kb", "gauge", "base-unit"),
        ("cpu_usage_percent", "gauge", "base-unit"),
        ("request_duration", "histogram", "unit-suffix"),
        ("queue_depth_total", "gauge", "total-suffix"),
        ("jobs_processed", "counter", "total-suffix"),
        ("workers_count", "gauge", "reserved-suffix"),
        ("batch_bucket", "gauge", "reserved-suffix"),
    ],
)
def test_each_naming_rule_flags_its_crafted_name(name: str, kind: str, rule: str) -> None:
    assert rule in rules(name, kind)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("http_requests_total", "counter"),
        ("http_request_duration_seconds", "histogram"),
        ("process_resident_memory_bytes", "gauge"),
        ("cache_hit_ratio", "gauge"),
        ("gen_ai_client_cost_USD_total", "counter"),  # a currency code as the unit, as OpenTelemetry writes it
    ],
)
def test_conforming_names_have_no_findings(name: str, kind: str) -> None:
    assert name_findings(name, kind) == []


def test_base_unit_finding_names_the_fixed_name() -> None:
    [finding] = name_findings("request_latency_ms", "histogram")
    assert "request_latency_seconds" in finding.message


def test_an_untyped_family_is_only_checked_for_what_needs_no_type() -> None:
    assert rules("legacy_jobs_count", "unknown") == set()
    assert rules("legacy_duration_ms", "unknown") == {"base-unit"}


def sanitized(attributes: dict[str, str]) -> dict[str, str]:
    """What the real sanitize processor writes for these attributes."""
    processor = SANITIZE.create_from(
        {}, ProcessorContext(registry=MetricsRegistry(), secrets={"pseudonym_key": "k" * 32})
    )
    point = NumberDataPoint(attributes, 0, 1, 1)
    metric = SDKMetric("logins", "", "1", Sum([point], AggregationTemporality.CUMULATIVE, True))
    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(InstrumentationScope("t"), [metric], "")], "")])
    [resource_metrics] = processor.process(data).resource_metrics
    return dict(resource_metrics.scope_metrics[0].metrics[0].data.data_points[0].attributes)  # type: ignore[arg-type]


def test_raw_user_ids_and_emails_are_flagged_and_their_sanitized_values_are_not() -> None:
    raw = {"user_id": "48213", "email": "ana@example.com", "path": "/users/48213"}
    clean = sanitized(raw)
    assert clean["user_id"] != raw["user_id"] and clean["email"] != raw["email"]
    flagged = label_findings(MetricFamily("logins_total", "counter", "Logins", {k: {v} for k, v in raw.items()}))
    assert {f.message.split("'")[1] for f in flagged} == {"user_id", "email", "path"}
    # sanitize leaves a path without personal data as it is: still one series per user
    after = label_findings(MetricFamily("logins_total", "counter", "Logins", {k: {v} for k, v in clean.items()}))
    assert [f.message.split("'")[1] for f in after] == ["path"]


def test_a_finding_never_prints_the_label_value() -> None:
    [finding] = label_findings(MetricFamily("x_total", "counter", "X", {"email": {"ana@example.com"}}))
    assert "ana@example.com" not in str(finding)


def test_templates_and_the_other_bucket_are_not_high_cardinality() -> None:
    family = MetricFamily("calls_total", "counter", "Calls", {"url": {"/users/{id}", "other"}})
    assert label_findings(family) == []


def test_declared_keys_are_flagged_unless_the_default_sanitize_pseudonymizes_them() -> None:
    registry = MetricsRegistry()
    registry.counter("orders_total", "Orders", labelnames=("customer_id", "email"))
    [family] = families_from_registry(registry)
    assert [f.message.split("'")[1] for f in label_findings(family)] == ["email"]


def test_catalogued_names_are_exempt_from_naming_rules_but_not_from_label_rules(documented: frozenset[str]) -> None:
    assert "process_thread_count" in documented and name_findings("process_thread_count", "gauge")
    exempt = MetricFamily("process_thread_count", "gauge", "")
    assert lint_families([exempt], documented) == []
    labelled = MetricFamily("http_server_request_duration_seconds", "histogram", "", {"url": {"/a/1"}})
    assert [f.rule for f in lint_families([labelled], documented)] == ["high-cardinality-label"]


def test_undocumented_means_neither_catalogued_nor_described(documented: frozenset[str]) -> None:
    described = MetricFamily("jobs_total", "counter", "Jobs run")
    bare = MetricFamily("jobs_total", "counter", "")
    assert lint_families([described], documented) == []
    assert [f.rule for f in lint_families([bare], documented)] == ["undocumented"]


def test_exposition_families_keep_their_written_names_and_labels() -> None:
    registry = CollectorRegistry()
    Counter("jobs", "Jobs", ["queue"], registry=registry).labels("mail").inc()
    Gauge("depth_total", "Depth", registry=registry).set(3)
    Histogram("wait_seconds", "Wait", registry=registry).observe(0.2)
    families = {f.name: f for f in families_from_exposition(generate_latest(registry).decode())}
    assert families["jobs_total"].type == "counter" and families["jobs_total"].labels == {"queue": {"mail"}}
    assert families["depth_total"].type == "gauge"
    assert families["wait_seconds"].labels == {}  # le is the histogram's, not a label of the metric


def test_openmetrics_counters_are_named_with_total() -> None:
    text = "# TYPE jobs counter\n# HELP jobs Jobs.\njobs_total 1.0\n# EOF\n"
    assert [(f.name, f.type) for f in families_from_exposition(text)] == [("jobs_total", "counter")]


def test_a_file_that_is_not_an_exposition_is_bad_input() -> None:
    with pytest.raises(lint.LintInputError, match="not a Prometheus exposition"):
        families_from_exposition("this is { not metrics\n")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
        status = args.func(args)
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_lint_file_prints_one_line_per_finding_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exposition = tmp_path / "bad.txt"
    exposition.write_text(
        '# TYPE request_latency_ms histogram\nrequest_latency_ms_bucket{le="+Inf"} 1\n'
        "request_latency_ms_count 1\nrequest_latency_ms_sum 3\n"
        "# HELP queue_total Depth\n# TYPE queue_total gauge\nqueue_total 3\n"
    )
    status, lines, err = run_cli(["lint", "--file", str(exposition)], capsys)
    assert status == 1
    assert sorted(lines) == sorted(str(f) for f in lint_families(families_from_exposition(exposition.read_text())))
    assert "request_latency_ms: base-unit: 'ms' is not a base unit; use seconds (request_latency_seconds)" in lines
    assert "request_latency_ms: undocumented: not in the metrics catalog and has no HELP text" in lines
    assert "queue_total: total-suffix: _total is for counters; a gauge must not end in _total" in lines
    assert "2 metrics checked, 3 findings" in err


def test_lint_exits_0_on_a_clean_exposition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = CollectorRegistry()
    Counter("jobs", "Jobs run", ["queue"], registry=registry).labels("mail").inc()
    exposition = tmp_path / "clean.txt"
    exposition.write_bytes(generate_latest(registry))
    status, lines, _ = run_cli(["lint", "--file", str(exposition)], capsys)
    assert (status, lines) == (0, [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lint", "--file", "/nonexistent/metrics.txt"], "--file /nonexistent/metrics.txt: No such file"),
        (["lint", "--app", "no_such_module_for_lint:app"], "no module named 'no_such_module_for_lint'"),
        (["lint", "--app", "otel_monitoring.lint:nothing_here"], "has no attribute 'nothing_here'"),
        (["lint", "--app", "otel_monitoring.lint:__all__"], "is not a MetricsRegistry or an ASGI app"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, err = run_cli(argv, capsys)
    assert status == 2 and lines == []
    assert err.count("\n") == 1 and message in err


def test_lint_needs_exactly_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["lint"], capsys)[0] == 2
    assert run_cli(["lint", "--file", "a", "--metrics-url", "http://127.0.0.1:1/"], capsys)[0] == 2


def test_lint_app_reads_a_registry_s_declarations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lint_fixture_service.py").write_text(
        "from otel_monitoring.metrics import MetricsRegistry\n"
        "registry = MetricsRegistry()\n"
        "registry.counter('orders_total', 'Orders', labelnames=('customer_id',))\n"
        "registry.histogram('checkout_latency_ms', 'Checkout latency')\n"
        "registry.gauge('cart_items', '', labelnames=('email',))\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        status, lines, _ = run_cli(["lint", "--app", "lint_fixture_service:registry"], capsys)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lint_fixture_service", None)
    assert status == 1
    assert {line.split(": ")[0] for line in lines} == {"checkout_latency_ms", "cart_items"}
    assert {line.split(": ")[1] for line in lines} == {"base-unit", "undocumented", "high-cardinality-label"}


@pytest.mark.parametrize("module", [lint, catalog_module])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
