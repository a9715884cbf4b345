"""The built-in rule pack: every alert has a passing `promtool test rules` case in tests/rules/, every rendered file
passes `promtool check rules` (Prometheus and PrometheusRule formats), and every alert is annotated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from otel_monitoring.rules.check import check_rules, rule_files_in, test_rules
from otel_monitoring.rules.model import Alert
from otel_monitoring.rules.pack import PackContext, builtin_groups
from otel_monitoring.rules.render import write_rule_files

RULE_TESTS = Path(__file__).resolve().parent.parent / "rules"
DOCS = Path(__file__).resolve().parent.parent.parent / "docs"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing")


def builtin_alerts() -> list[Alert]:
    return [alert for group in builtin_groups() for alert in group.alerts()]


def static_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.test.yml"))


def alert_names_under_test() -> set[str]:
    names: set[str] = set()
    for path in static_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            names.update(test["alertname"] for test in case.get("alert_rule_test", []))
    return names


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    write_rule_files(builtin_groups(), tmp_path)
    return tmp_path


@needs_promtool
@pytest.mark.parametrize("test_file", static_test_files(), ids=lambda p: p.name)
def test_builtin_alerts_fire_and_stay_quiet_as_promtool_unit_tests_expect(rendered: Path, test_file: Path) -> None:
    shutil.copy(test_file, rendered / test_file.name)
    result = test_rules([rendered / test_file.name])
    assert result.ok, result.output


def test_every_builtin_alert_outside_the_slos_has_a_promtool_test() -> None:
    # SLO burn-rate alerts are generated per objective and tested in test_alerts_slo.py.
    names = {alert.name for alert in builtin_alerts() if "slo" not in alert.labels}
    assert names - alert_names_under_test() == set()


def test_every_builtin_alert_has_summary_description_runbook_and_dashboard() -> None:
    for alert in builtin_alerts():
        annotations = alert.to_rule()["annotations"]
        assert {"summary", "description", "runbook_url", "dashboard_url"} <= set(annotations), alert.name
        assert "/d/" in annotations["dashboard_url"], alert.name


def test_every_runbook_link_points_to_a_written_runbook() -> None:
    for alert in builtin_alerts():
        assert alert.runbook_url == f"docs/runbooks/{alert.name}.md"
        runbook = (DOCS / "runbooks" / f"{alert.name}.md").read_text()
        assert alert.name in runbook.splitlines()[0]  # the title names the alert


def test_links_follow_the_settings_grafana_and_runbook_base_urls() -> None:
    ctx = PackContext(grafana_url="https://grafana.example", runbook_base_url="https://wiki.example/runbooks")
    [high_latency] = [a for g in builtin_groups(ctx) for a in g.alerts() if a.name == "HighLatency"]
    assert high_latency.runbook_url == "https://wiki.example/runbooks/HighLatency.md"
    assert high_latency.annotations["dashboard_url"].startswith("https://grafana.example/d/app-performance?var-job=")


def test_watchdog_always_fires_and_notifies_nobody() -> None:
    [watchdog] = [alert for alert in builtin_alerts() if alert.name == "Watchdog"]
    assert watchdog.query == "vector(1)"
    assert watchdog.severity == "none"


@needs_promtool
def test_rendered_rule_files_pass_promtool_check(rendered: Path) -> None:
    files = rule_files_in(rendered)
    assert len(files) == len(builtin_groups())
    result = check_rules(files)
    assert result.ok, result.output
    rules_found = sum(int(line.split()[1]) for line in result.output.splitlines() if "SUCCESS" in line)
    assert rules_found == sum(len(group.rules) for group in builtin_groups())


@needs_promtool
def test_prometheus_rule_objects_hold_the_same_groups_and_pass_promtool(tmp_path: Path) -> None:
    files = write_rule_files(builtin_groups(), tmp_path, rule_format="prometheusrule", namespace="monitoring")
    documents = [yaml.safe_load(path.read_text()) for path in files]
    for document in documents:
        assert document["apiVersion"] == "monitoring.coreos.com/v1"
        assert document["kind"] == "PrometheusRule"
        assert document["metadata"]["namespace"] == "monitoring"
    names = [group["name"] for document in documents for group in document["spec"]["groups"]]
    assert names == [group.name for group in builtin_groups()]
    result = check_rules(files)
    assert result.ok, result.output
    assert str(files[0]) in result.output  # promtool's output names the user's file, not a scratch copy


@needs_promtool
def test_promtool_check_reports_a_broken_expression(tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(x[5m]\n")
    result = check_rules([broken])
    assert not result.ok
    assert "broken.rules.yml" in result.output


def test_missing_promtool_is_a_clear_error(tmp_path: Path) -> None:
    from otel_monitoring.rules.check import PromtoolNotFoundError

    with pytest.raises(PromtoolNotFoundError, match="promtool was not found on PATH; it ships with Prometheus"):
        check_rules([tmp_path / "x.yml"], promtool=str(tmp_path / "no-such-promtool"))
