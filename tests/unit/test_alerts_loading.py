"""Rules from YAML (the seed's shape, and bare lists), errors naming the key, and ``--app module:attr``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_monitoring import alerts, rules_cli
from otel_monitoring.rules.pack import builtin_groups

SEED_RULES = """
# the seed's examples, as written
- alert: HighLatency
  expr: http_request_duration_seconds > 1
  for: 5m
  labels:
    severity: warning
  annotations:
    summary: "Alta latência detectada"

- alert: IntegrationError
  expr: integration_errors_total > 0
  for: 1m
  labels:
    severity: critical
  annotations:
    summary: "Erro na integração detectado"
"""


def test_the_seeds_rule_examples_load_as_alerts() -> None:
    [group] = alerts.parse_rules(SEED_RULES, group="seed")
    latency, integration = group.rules
    assert isinstance(latency, alerts.Alert)
    assert (latency.name, latency.for_, latency.severity) == ("HighLatency", "5m", "warning")
    assert latency.annotations == {"summary": "Alta latência detectada"}
    assert isinstance(integration, alerts.Alert)
    assert (integration.query, integration.severity) == ("integration_errors_total > 0", "critical")


def test_a_rule_file_round_trips_through_rendering(tmp_path: Path) -> None:
    groups = builtin_groups()
    path = tmp_path / "pack.rules.yml"
    from otel_monitoring.rules.render import render_rule_groups

    path.write_text(render_rule_groups(groups))
    assert alerts.load_rule_file(path) == groups


def test_a_bare_list_file_becomes_a_group_named_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "checkout.yaml"
    path.write_text(SEED_RULES)
    [group] = alerts.load_rule_file(path)
    assert group.name == "checkout"
    runbook = "- alert: A\n  expr: up == 0\n  labels: {severity: info}\n  annotations: {runbook_url: https://r/A}\n"
    [alert] = alerts.parse_rules(runbook)[0].rules
    assert isinstance(alert, alerts.Alert) and alert.runbook_url == "https://r/A"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- alert: A\n  expr: up == 0\n  labels: {severity: info}\n- alert: B\n  expr: up == 0\n"
            "  labels: {severity: info}\n- alert: C\n  expr: up == 0\n  for: 5 minutes\n  labels: {severity: info}\n",
            "rules.yml: rules[2].for: must be a Prometheus duration such as 30s, 5m or 1h (got '5 minutes')",
        ),
        ("- alert: A\n  expr: up == 0\n", "rules.yml: rules[0].labels.severity: required: one of critical, warning"),
        (
            "- alert: A\n  expr: up == 0\n  labels: {severity: urgent}\n",
            "rules.yml: rules[0].labels.severity: Input should be 'critical', 'warning', 'info' or 'none'",
        ),
        ("- alert: A\n  labels: {severity: info}\n", "rules.yml: rules[0].expr: required: the PromQL expression"),
        (
            "- alert: A\n  expr: up\n  labels: {severity: info}\n  summary: x\n",
            "rules.yml: rules[0].summary: unknown key (valid: alert, annotations, expr, for, keep_firing_for, labels)",
        ),
        ("- alert: A\n  record: b\n  expr: up\n", "rules.yml: rules[0]: needs exactly one of 'alert'"),
        ("- record: 'bad name'\n  expr: up\n", "rules.yml: rules[0].record: must be a metric name"),
        (
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    labels: {severity: info, __x: y}\n",
            "rules.yml: groups[0].rules[0].labels: invalid label name '__x'",
        ),
        (
            "groups:\n- name: g\n  interval: soon\n  rules: []\n",
            "rules.yml: groups[0].interval: must be a Prometheus duration",
        ),
        (
            "groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n",
            "rules.yml: groups[1].name: group 'g' is defined",
        ),
        ("groups:\n- rules: []\n", "rules.yml: groups[0].name: required"),
        ("groups: {}\n", "rules.yml: groups: must be a list of groups (got a mapping)"),
        ("alerts: []\n", "rules.yml: alerts: unknown key (valid: groups; or give a bare list of rules)"),
        ("- alert: [1\n", "rules.yml: line 2: not valid YAML"),
        (
            "- alert: A\n  expr: up\n  labels: {severity: info}\n  annotations: {summary: [a]}\n",
            "rules.yml: rules[0].annotations.summary: must be a string (got a list)",
        ),
    ],
)
def test_bad_rule_files_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(alerts.RuleFileError) as raised:
        alerts.parse_rules(text, source="rules.yml")
    assert str(raised.value).startswith(message)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(alerts.RuleFileError, match=r"missing\.yml: file: cannot be read"):
        alerts.load_rule_file(tmp_path / "missing.yml")


APP = """
from otel_monitoring import alerts

registry = alerts.AlertRegistry()
registry.register(alerts.Alert(name="QueueBacklog", query="jobs_waiting > 100", severity="warning", for_="10m"))
registry.register(alerts.SLO(name="jobs", objective=99.5, total="jobs_total", bad='jobs_total{result="failed"}'))
listed = [alerts.Alert(name="Listed", query="up == 0", severity="info")]
not_rules = 42

def make():
    return listed

def needs_argument(x):
    return listed

alerts.register(alerts.Alert(name="RegisteredAtImport", query="up == 0", severity="critical"))
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "alert_app_under_test.py").write_text(APP)
    registered_before = dict(alerts._DEFAULT._alerts)  # the module registers at import: undo it afterwards
    yield tmp_path
    alerts._DEFAULT._alerts.clear()
    alerts._DEFAULT._alerts.update(registered_before)
    sys.modules.pop("alert_app_under_test", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_app_registry_gives_its_alerts_and_one_group_per_slo(app_dir: Path) -> None:
    groups = alerts.resolve_app("alert_app_under_test:registry", search_path=str(app_dir))
    assert [group.name for group in groups] == ["application", "slo-jobs"]
    assert [alert.name for alert in groups[0].alerts()] == ["QueueBacklog"]
    assert {alert.severity for alert in groups[1].alerts()} == {"critical", "warning"}


@pytest.mark.parametrize("attr", ["listed", "make"])
def test_app_list_or_callable_gives_its_alerts(app_dir: Path, attr: str) -> None:
    [group] = alerts.resolve_app(f"alert_app_under_test:{attr}", search_path=str(app_dir))
    assert [alert.name for alert in group.alerts()] == ["Listed"]


def test_app_module_alone_gives_what_its_import_registered(app_dir: Path) -> None:
    groups = alerts.resolve_app("alert_app_under_test", search_path=str(app_dir))
    assert "RegisteredAtImport" in [alert.name for group in groups for alert in group.alerts()]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:x", "--app no_such_module_xyz:x: no module named 'no_such_module_xyz'"),
        ("alert_app_under_test:missing", "module 'alert_app_under_test' has no attribute 'missing'"),
        ("alert_app_under_test:not_rules", "is int, not an AlertRegistry, a list of alerts"),
        ("alert_app_under_test:needs_argument", "it must take no arguments"),
        ("alert_app_under_test:", "must be module:attr or module"),
    ],
)
def test_bad_app_specs_say_what_is_wrong(app_dir: Path, spec: str, message: str) -> None:
    with pytest.raises(alerts.AppRulesError, match=message):
        alerts.resolve_app(spec, search_path=str(app_dir))


def run_cli(argv: list[str], environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    parser.add_argument("--config", default=None)
    rules_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.environ = environ or {}
    status: int = args.func(args)
    return status


def test_cli_render_writes_one_file_per_group_with_the_apps_rules(
    app_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_dir)  # --app imports from the working directory, as uvicorn does
    out = tmp_path / "rendered"
    assert run_cli(["rules", "render", "--out", str(out), "--app", "alert_app_under_test:registry"]) == 0
    expected = {f"{group.name}.rules.yml" for group in builtin_groups()} | {
        "application.rules.yml",
        "slo-jobs.rules.yml",
    }
    assert {path.name for path in out.iterdir()} == expected
    assert f"wrote {len(expected)} files" in capsys.readouterr().out


def test_cli_render_reads_slo_objectives_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "rendered"
    assert run_cli(["rules", "render", "--out", str(out)], {"OTEL_MONITORING_SLO_AVAILABILITY": "99.5"}) == 0
    rendered = (out / "slo-http-availability.rules.yml").read_text()
    assert "> 0.072\n" in rendered  # 14.4 x (1 - 0.995)


def test_cli_render_includes_yaml_rule_files_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "seed.yaml", tmp_path / "bad.yaml"
    good.write_text(SEED_RULES)
    bad.write_text("- alert: A\n  expr: up\n  for: soon\n  labels: {severity: info}\n")
    out = tmp_path / "out"
    assert run_cli(["rules", "render", "--out", str(out), "--no-builtin", "--rules", str(good)]) == 0
    assert [p.name for p in out.iterdir()] == ["seed.rules.yml"]
    assert run_cli(["rules", "render", "--out", str(out), "--rules", str(bad)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"otel-monitoring: error: {bad}: rules[0].for: must be a Prometheus duration such as 30s, 5m or 1h (got 'soon')"
    ]


def test_cli_refuses_an_app_that_is_not_importable_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["rules", "check", "--app", "no_such_module_xyz:rules"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "otel-monitoring: error: --app no_such_module_xyz:rules: no module named 'no_such_module_xyz' "
        "(is its directory on the path?)"
    ]


@pytest.mark.skipif(__import__("shutil").which("promtool") is None, reason="promtool missing")
def test_cli_check_passes_rendered_rules_and_fails_a_broken_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["rules", "check"]) == 0  # what render would write
    assert "SUCCESS" in capsys.readouterr().out
    (tmp_path / "broken.rules.yml").write_text("groups:\n- name: g\n  rules:\n  - record: r\n    expr: sum(\n")
    assert run_cli(["rules", "check", str(tmp_path)]) == 1
    assert "broken.rules.yml" in capsys.readouterr().out
    assert run_cli(["rules", "check", str(tmp_path / "nowhere")]) == 2
