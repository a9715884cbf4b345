"""The ``alerts`` commands fail in one line, with the exit status of the CLI's conventions, and never print a
password from ALERTMANAGER_URL or the history database URL."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from otel_monitoring import rules_cli
from otel_monitoring.alerting_cli import add_commands, parse_duration
from otel_monitoring.alertmanager_config import ROUTED_SEVERITIES, RouteTiming
from otel_monitoring.rules.model import SEVERITIES, Alert
from otel_monitoring.settings import SettingsError
from tests.support import ROOT, free_port, stop_process_group, wait_until_ready

PASSWORD = "hunter2-alerting-secret"


def _cli(environ: dict[str, str], *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.environ = environ
    status: int = args.func(args)
    return status


class _Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unavailable_alertmanager() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers 503 to everything."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_unreachable_alertmanager_fails_in_one_line_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"ALERTMANAGER_URL": f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"}

    status = _cli(environ, "alerts", "list")

    error = capsys.readouterr().err
    assert status == 1
    assert error.count("\n") == 1 and "ConnectError" in error
    assert PASSWORD not in error and "admin:" in error  # the user stays, to tell which credentials were used


def test_alertmanager_error_answer_names_the_status_without_the_password(
    unavailable_alertmanager: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # httpx's own message quotes the request URL, credentials included.
    environ = {"ALERTMANAGER_URL": f"http://admin:{PASSWORD}@{unavailable_alertmanager}"}

    status = _cli(environ, "alerts", "list")

    error = capsys.readouterr().err
    assert status == 1
    assert error.count("\n") == 1 and "HTTPStatusError" in error and "503" in error
    assert PASSWORD not in error


def test_silence_on_an_unreachable_alertmanager_does_not_print_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"ALERTMANAGER_URL": f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"}

    status = _cli(environ, "alerts", "silence", "--matcher", "alertname=X", "--duration", "1h", "--comment", "c")

    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1 and PASSWORD not in error


@pytest.mark.parametrize(
    ("database_url", "problem"),
    [
        (f"postgresql://alerts:{PASSWORD}@127.0.0.1:notaport/alerts", "ValueError"),
        (f"postgresql+nosuchdriver://alerts:{PASSWORD}@127.0.0.1/alerts", "NoSuchModuleError"),
        pytest.param(
            f"mysql+mysqldb://alerts:{PASSWORD}@127.0.0.1/alerts",
            "ModuleNotFoundError",
            marks=pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is not None, reason="MySQLdb is installed"),
        ),
    ],
    ids=["bad-port", "unknown-driver", "driver-not-installed"],
)
def test_a_bad_history_database_url_is_a_usage_error_in_one_line(
    database_url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _cli({"OTEL_MONITORING_ALERT_HISTORY_DATABASE_URL": database_url}, "alerts", "history")

    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1 and "alerting.history_database_url" in error and problem in error
    assert PASSWORD not in error


def _serve_relay(tmp_path: Path, listen: str, health: str, **environ: str) -> str:
    """Start ``otel-monitoring alert-relay``, wait until it answers, stop it; return what it wrote on stderr."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OTEL_MONITORING_ALERT_HISTORY_DATABASE_URL": f"sqlite:///{tmp_path / 'history.sqlite3'}",
        **environ,
    }
    argv = [sys.executable, "-m", "otel_monitoring", "alert-relay", "--listen", listen]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_until_ready(health, process)
    finally:
        stop_process_group(process)
    assert process.stderr is not None
    with process.stderr:
        return process.stderr.read().decode()


def test_relay_on_every_interface_without_a_token_warns_once_at_start(tmp_path: Path) -> None:
    port = free_port()

    printed = _serve_relay(tmp_path, f"0.0.0.0:{port}", f"http://127.0.0.1:{port}/healthz")

    warnings = [line for line in printed.splitlines() if "WARNING" in line and "relay_token" in line]
    assert len(warnings) == 1 and f"0.0.0.0:{port}" in warnings[0]


def test_relay_with_a_token_does_not_warn(tmp_path: Path) -> None:
    port = free_port()

    printed = _serve_relay(
        tmp_path,
        f"0.0.0.0:{port}",
        f"http://127.0.0.1:{port}/healthz",
        OTEL_MONITORING_ALERT_RELAY_TOKEN="relay-token-for-tests",
    )

    assert "relay_token" not in printed


def _both_command_sets() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    rules_cli.add_commands(subparsers)
    return parser


@pytest.mark.parametrize("command", [["rules", "render"], ["rules", "check"], ["alerts", "list"], ["alertmanager"]])
def test_alerting_and_rules_commands_share_one_config_option(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _both_command_sets().parse_args([*command, "--help"])

    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines to the terminal's width
    assert "--config FILE YAML settings file (default: $OTEL_MONITORING_CONFIG)" in help_text
    assert "config" not in vars(_both_command_sets().parse_args(["rules", "check", "somewhere"]))


def test_rules_durations_and_alertmanager_timing_and_cli_durations_are_one_syntax() -> None:
    for text in ("30s", "1h30m", "250ms", "2w", "1y"):
        assert RouteTiming(group_wait=text).group_wait == text
        assert Alert(name="A", query="up == 0", severity="info", for_=text).for_ == text
        assert parse_duration(text) > timedelta(0)
    for text in ("1.5h", "5 m", "h", "5M"):
        with pytest.raises(SettingsError):
            RouteTiming(group_wait=text)
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)


def test_severities_that_notify_are_the_rule_severities_but_none() -> None:
    assert set(ROUTED_SEVERITIES) == set(SEVERITIES) - {"none"}
