"""`otel-monitoring config show`, and how the CLI reports bad configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from otel_monitoring.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = Path(__file__).parent / "testdata" / "settings"


def test_config_show_prints_the_effective_settings_as_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["config", "show"], environ={"PROMETHEUS_PUSH_GATEWAY": "http://pushgateway:9091"})

    out, err = capsys.readouterr()
    assert status == 0
    assert err == ""
    document = yaml.safe_load(out)
    assert document["pushgateway"]["url"] == "http://pushgateway:9091"
    assert document["prometheus"]["retention_days"] == 15


def test_config_show_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"GRAFANA_API_KEY": "glsa_TOPSECRET", "ALERT_SLACK_WEBHOOK": "https://hooks.slack.com/TOPSECRET"}

    assert main(["config", "show"], environ=environ) == 0

    out = capsys.readouterr().out
    assert "TOPSECRET" not in out
    assert yaml.safe_load(out)["grafana"]["api_key"] == "********"


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", str(TESTDATA / "good.yaml"), "config", "show"],
        ["config", "--config", str(TESTDATA / "good.yaml"), "show"],
        ["config", "show", "--config", str(TESTDATA / "good.yaml")],
    ],
)
def test_config_option_is_accepted_before_or_after_the_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ={}) == 0

    assert yaml.safe_load(capsys.readouterr().out)["service"]["name"] == "aiagency-core"


def test_config_file_defaults_to_otel_monitoring_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"], environ={"OTEL_MONITORING_CONFIG": str(TESTDATA / "good.yaml")}) == 0

    assert yaml.safe_load(capsys.readouterr().out)["pushgateway"]["job_name"] == "aiagency-batch"


def test_environment_overrides_the_config_file_in_config_show(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--config", str(TESTDATA / "good.yaml"), "config", "show"], environ={"OTEL_SERVICE_NAME": "env"})

    assert status == 0
    assert yaml.safe_load(capsys.readouterr().out)["service"]["name"] == "env"


def test_config_show_sources_names_where_values_came_from(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--sources"], environ={"GRAFANA_URL": "http://grafana:3000"}) == 0

    out = capsys.readouterr().out
    assert "#   grafana.url: environment variable GRAFANA_URL\n" in out


def test_bad_environment_value_exits_2_with_one_line_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["config", "show"], environ={"PROMETHEUS_RETENTION_DAYS": "abc"})

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err == "otel-monitoring: error: PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'abc')\n"


def test_unknown_yaml_key_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    path = TESTDATA / "bad" / "unknown_key.yaml"

    status = main(["--config", str(path), "config", "show"], environ={})

    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"otel-monitoring: error: pushgateway.urll (from {path}): unknown key (valid: ")
    assert err.count("\n") == 1


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"

    status = main(["--config", str(missing), "config", "show"], environ={})

    assert status == 2
    assert capsys.readouterr().err == (
        f"otel-monitoring: error: config file {missing}: cannot be read (No such file or directory)\n"
    )


@pytest.mark.parametrize("argv", [[], ["config"], ["config", "shwo"], ["nonsense"]])
def test_usage_errors_return_2_instead_of_exiting(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, environ={}) == 2

    assert "usage: otel-monitoring" in capsys.readouterr().err


def test_help_returns_0_and_lists_the_config_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], environ={}) == 0

    assert "config" in capsys.readouterr().out


def test_python_m_otel_monitoring_exits_2_with_one_stderr_line_on_bad_environment() -> None:
    # The one test that sets real environment variables: in a child process, through env=.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "PROMETHEUS_", "ALERT", "GRAFANA_"))
    }
    env["PROMETHEUS_RETENTION_DAYS"] = "abc"

    result = subprocess.run(
        [sys.executable, "-m", "otel_monitoring", "config", "show"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "otel-monitoring: error: PROMETHEUS_RETENTION_DAYS: must be an integer >= 1 (got 'abc')"
    ]


def test_bad_processor_config_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["config", "show"], environ={"OTEL_MONITORING_PIPELINE": "sanitize,cardinality,sanitise"})
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        "otel-monitoring: error: processing.pipeline[2]: unknown processor type 'sanitise' for id 'sanitise' "
        "(valid: aggregate, business, cardinality, sanitize)"
    ]
