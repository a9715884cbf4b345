"""Alerts as code: the seed's Alert validates and renders rules promtool accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from otel_monitoring import alerts


def seed_alert() -> alerts.Alert:
    return alerts.Alert(
        name="high_error_rate",
        query="rate(http_errors_total[5m]) > 0.1",
        severity="critical",
        annotations={"summary": "Alta taxa de erros", "description": "Taxa de erros > 10% nos últimos 5 minutos"},
    )


def test_alert_renders_as_a_prometheus_rule_with_severity_label() -> None:
    rule = alerts.Alert(
        name="HighLatency", query="x > 1", severity="warning", for_="5m", runbook_url="https://runbooks/latency"
    ).to_rule()
    assert rule == {
        "alert": "HighLatency",
        "expr": "x > 1",
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {"runbook_url": "https://runbooks/latency"},
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("severity", "urgent", "severity"), ("for_", "5 minutes", "Prometheus duration"), ("labels", {"__x": "y"}, "__x")],
)
def test_bad_alert_fields_are_refused_naming_the_field(field: str, value: object, message: str) -> None:
    arguments = {"name": "a", "query": "up == 0", "severity": "info", field: value}
    with pytest.raises(ValidationError, match=message):
        alerts.Alert(**arguments)  # type: ignore[arg-type]


def test_registering_a_different_rule_under_a_taken_name_is_refused() -> None:
    registry = alerts.AlertRegistry()
    alerts.register(seed_alert(), registry=registry)
    alerts.register(seed_alert(), registry=registry)  # the same rule again is fine
    with pytest.raises(ValueError, match="already registered"):
        alerts.register(seed_alert().model_copy(update={"query": "up == 0"}), registry=registry)
    assert [a.name for a in alerts.registered(registry=registry)] == ["high_error_rate"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_rendered_rule_file_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(alerts.render_rule_file([seed_alert()]))
    assert yaml.safe_load(rules.read_text())["groups"][0]["rules"][0]["labels"] == {"severity": "critical"}
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
