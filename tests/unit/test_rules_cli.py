"""``rules render`` / ``rules check`` find the application and the YAML rule files in settings (``alerting.app``,
``alerting.rule_files``) when no ``--app`` / ``--rules`` is given; the flags win over the settings."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from otel_monitoring import alerts, rules_cli
from otel_monitoring.settings import load_settings

MODULE = "rules_cli_app_under_test"
APP = """
from otel_monitoring import alerts

registry = alerts.AlertRegistry()
registry.register(alerts.Alert(name="FromSettingsApp", query="up == 0", severity="warning"))
other = [alerts.Alert(name="FromFlagApp", query="up == 0", severity="info")]
"""
SEED_RULES = """
- alert: HighLatency
  expr: http_request_duration_seconds > 1
  for: 5m
  labels:
    severity: warning
  annotations:
    summary: "Alta latência detectada"
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / f"{MODULE}.py").write_text(APP)
    (tmp_path / "seed.yaml").write_text(SEED_RULES)
    (tmp_path / "flag.yaml").write_text(SEED_RULES.replace("HighLatency", "FlagLatency"))
    monkeypatch.chdir(tmp_path)  # the app is imported, and relative rule files read, from the working directory
    yield tmp_path
    sys.modules.pop(MODULE, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def run_cli(argv: list[str], environ: dict[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    rules_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.environ = environ
    status: int = args.func(args)
    return status


def alert_names(directory: Path) -> set[str]:
    names = set()
    for path in directory.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["alert"] for rule in group["rules"] if "alert" in rule)
    return names


def test_render_reads_the_app_and_rule_files_from_the_environment(app_dir: Path) -> None:
    environ = {"OTEL_MONITORING_ALERTS_APP": f"{MODULE}:registry", "OTEL_MONITORING_ALERT_RULE_FILES": "seed.yaml"}
    out = app_dir / "out"

    assert run_cli(["rules", "render", "--out", str(out), "--no-builtin"], environ) == 0

    assert alert_names(out) == {"FromSettingsApp", "HighLatency"}
    assert sorted(path.name for path in out.iterdir()) == ["application.rules.yml", "seed.rules.yml"]


def test_render_reads_them_from_the_settings_file(app_dir: Path) -> None:
    config = app_dir / "settings.yaml"
    config.write_text(yaml.safe_dump({"alerting": {"app": [f"{MODULE}:registry"], "rule_files": ["seed.yaml"]}}))
    out = app_dir / "out"

    assert run_cli(["rules", "render", "--config", str(config), "--out", str(out), "--no-builtin"], {}) == 0

    assert alert_names(out) == {"FromSettingsApp", "HighLatency"}


def test_flags_replace_the_settings_each_on_its_own(app_dir: Path) -> None:
    environ = {"OTEL_MONITORING_ALERTS_APP": f"{MODULE}:registry", "OTEL_MONITORING_ALERT_RULE_FILES": "seed.yaml"}
    only_app, only_rules = app_dir / "app", app_dir / "rules"

    assert (
        run_cli(["rules", "render", "--out", str(only_app), "--no-builtin", "--app", f"{MODULE}:other"], environ) == 0
    )
    assert run_cli(["rules", "render", "--out", str(only_rules), "--no-builtin", "--rules", "flag.yaml"], environ) == 0

    assert alert_names(only_app) == {"FromFlagApp", "HighLatency"}
    assert alert_names(only_rules) == {"FromSettingsApp", "FlagLatency"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OTEL_MONITORING_ALERTS_APP": f"{MODULE}:missing"},
            "alerting.app (from environment variable OTEL_MONITORING_ALERTS_APP): "
            f"{MODULE}:missing: module '{MODULE}' has no attribute 'missing'",
        ),
        (
            {"OTEL_MONITORING_ALERT_RULE_FILES": "absent.yaml"},
            "alerting.rule_files (from environment variable OTEL_MONITORING_ALERT_RULE_FILES): absent.yaml: file: "
            "cannot be read (No such file or directory)",
        ),
    ],
)
def test_a_bad_app_or_rule_file_from_settings_names_the_setting_in_one_line(
    app_dir: Path, capsys: pytest.CaptureFixture[str], environ: dict[str, str], message: str
) -> None:
    assert run_cli(["rules", "render", "--out", str(app_dir / "out"), "--no-builtin"], environ) == 2

    assert capsys.readouterr().err.splitlines() == [f"otel-monitoring: error: {message}"]


def test_check_without_a_directory_checks_the_rules_settings_name(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/usr/bin/promtool").exists():
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    environ = {"OTEL_MONITORING_ALERT_RULE_FILES": "seed.yaml"}

    assert run_cli(["rules", "check", "--no-builtin"], environ) == 0

    assert "SUCCESS: 1 rules found" in capsys.readouterr().out


def test_collect_groups_reads_settings_only_when_no_list_is_given(app_dir: Path) -> None:
    settings = load_settings(environ={"OTEL_MONITORING_ALERT_RULE_FILES": "seed.yaml"}, strict=True)

    from_settings = rules_cli.collect_groups(settings, builtin=False)
    none_given = rules_cli.collect_groups(settings, [], [], builtin=False)

    assert [group.name for group in from_settings] == ["seed"]
    assert none_given == []


REGISTERING_APP = """
from otel_monitoring import alerts

alerts.register(alerts.Alert(name="{name}", query="up == 0", severity="warning"))
"""


@pytest.fixture
def two_registering_modules(app_dir: Path) -> Iterator[list[str]]:
    """Two plain modules that register an alert each in the process-wide registry when imported."""
    modules = ["rules_cli_registers_a", "rules_cli_registers_b"]
    for module, name in zip(modules, ("RegisteredByA", "RegisteredByB"), strict=True):
        (app_dir / f"{module}.py").write_text(REGISTERING_APP.format(name=name))
    registered_before = dict(alerts._DEFAULT._alerts)  # importing registers: undo it afterwards
    yield modules
    alerts._DEFAULT._alerts.clear()
    alerts._DEFAULT._alerts.update(registered_before)
    for module in modules:
        sys.modules.pop(module, None)


def test_two_plain_modules_give_one_application_group_with_both_alerts(
    app_dir: Path, two_registering_modules: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = two_registering_modules
    out = app_dir / "out"

    status = run_cli(["rules", "render", "--out", str(out), "--no-builtin", "--app", first, "--app", second], {})

    assert status == 0, capsys.readouterr().err
    assert [path.name for path in out.glob("*.rules.yml")] == ["application.rules.yml"]
    assert {"RegisteredByA", "RegisteredByB"} <= alert_names(out)
