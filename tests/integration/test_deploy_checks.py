"""The rendered deploy files pass the tools that will load them: promtool (server config, web config, rule files,
PrometheusRule objects), amtool, Debian's Prometheus serving the rendered config behind the rendered basic auth,
and ``deploy grafana-org`` against a local stand-in of Grafana's organization API (no Grafana server runs here).
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otel_monitoring import deploy_cli
from otel_monitoring.deploy import render_deploy, write_deploy
from otel_monitoring.deploy.stack import WEB_USERNAME
from otel_monitoring.rules.check import check_rules
from otel_monitoring.settings import load_settings
from tests.alerting_support import serve_app
from tests.support import free_port, running

ROOT = Path(__file__).resolve().parents[2]
STACK_SETTINGS = ROOT / "deploy" / "settings.yaml"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
PROMETHEUS = shutil.which("prometheus")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool (Debian package prometheus-alertmanager) is not installed"
)

CHANNELS = {
    "ALERT_SLACK_WEBHOOK": "https://hooks.slack.com/services/T0/B0/x",
    "OTEL_MONITORING_ALERT_EMAIL": "oncall@aiagency.example",
    "OTEL_MONITORING_SMTP_HOST": "smtp.aiagency.example",
    "OTEL_MONITORING_SMTP_FROM": "alerts@aiagency.example",
    "OTEL_MONITORING_SMTP_USERNAME": "alerts",
    "OTEL_MONITORING_SMTP_PASSWORD": "smtp-password",
    "OTEL_MONITORING_ALERT_PAGERDUTY_ROUTING_KEY": "pagerduty-key",
    "OTEL_MONITORING_ALERT_RELAY_TOKEN": "relay-token",
    "OTEL_MONITORING_SMS_ACCOUNT_SID": "AC0123",
    "OTEL_MONITORING_SMS_AUTH_TOKEN": "sms-token",
    "OTEL_MONITORING_SMS_FROM": "+15550000000",
    "OTEL_MONITORING_SMS_TO": "+15551234567",
}


def run_cli(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    parser.add_argument("--config", default=None)
    deploy_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.environ = {} if environ is None else environ
    status: int = args.func(args)
    return status


def render_into(out: Path, environ: Mapping[str, str] | None = None, config: Path | None = STACK_SETTINGS) -> Path:
    write_deploy(render_deploy(load_settings(config, environ=environ or {}, strict=True)), out)
    return out


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_into(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def web_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("web")
    password = "a web password"
    (directory / "password").write_text(password + "\n")
    out = directory / "web.yml"
    argv = ["deploy", "web-config", "--username", WEB_USERNAME, "--password-file", str(directory / "password")]
    assert run_cli([*argv, "--out", str(out)]) == 0
    return out, password


@needs_promtool
def test_promtool_accepts_the_prometheus_config_and_its_rule_files(rendered: Path) -> None:
    result = run([str(PROMTOOL), "check", "config", str(rendered / "compose/prometheus/prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = sorted((rendered / "compose/prometheus/rules").glob("*.rules.yml"))
    assert f"SUCCESS: {len(rule_files)} rule files found" in result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_prometheusrule_objects(rendered: Path) -> None:
    result = check_rules(sorted((rendered / "kubernetes/rules").glob("*.prometheusrule.yaml")))
    assert result.ok, result.output


@needs_promtool
def test_promtool_accepts_the_web_config_and_its_client_config(web_config: tuple[Path, str]) -> None:
    path, _ = web_config
    result = run([str(PROMTOOL), "check", "web-config", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_amtool
@pytest.mark.parametrize("environ", [{}, CHANNELS], ids=["relay-only", "every-channel-with-secret-files"])
def test_amtool_accepts_the_alertmanager_configs(tmp_path: Path, environ: dict[str, str]) -> None:
    out = render_into(tmp_path, environ)
    compose_config = out / "compose/alertmanager/alertmanager.yml"
    result = run([str(AMTOOL), "check-config", str(compose_config)])
    assert result.returncode == 0, result.stdout + result.stderr
    # The Kubernetes Secret carries the same config shape with the Operator's secret mount path.
    secret = yaml.safe_load((out / "kubernetes/alertmanager-secret.yaml").read_text())
    kubernetes_dir = tmp_path / "kubernetes-alertmanager"
    kubernetes_dir.mkdir()
    for name, text in secret["stringData"].items():
        (kubernetes_dir / name).write_text(text)
    result = run([str(AMTOOL), "check-config", str(kubernetes_dir / "alertmanager.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    receivers = yaml.safe_load(secret["stringData"]["alertmanager.yaml"])["receivers"]
    assert f"{len(receivers)} receivers" in result.stdout
    channels = {key for receiver in receivers for key in receiver if key.endswith("_configs")}
    assert channels == (
        {"webhook_configs"}
        if not environ
        else {"webhook_configs", "slack_configs", "email_configs", "pagerduty_configs"}
    )


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) is not installed")
def test_prometheus_serves_the_rendered_config_behind_the_rendered_basic_auth(
    rendered: Path, web_config: tuple[Path, str], tmp_path: Path
) -> None:
    web_path, password = web_config
    port = free_port()
    argv = [
        str(PROMETHEUS),
        f"--config.file={rendered / 'compose/prometheus/prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.config.file={web_path}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    base = f"http://127.0.0.1:{port}"
    with running(argv, f"{base}/-/ready", timeout=30):
        assert httpx.get(f"{base}/-/ready", timeout=10).status_code == 401
        assert httpx.get(f"{base}/-/ready", auth=(WEB_USERNAME, "wrong"), timeout=10).status_code == 401
        ready = httpx.get(f"{base}/-/ready", auth=(WEB_USERNAME, password), timeout=10)
        assert ready.status_code == 200
        rules = httpx.get(f"{base}/api/v1/rules", auth=(WEB_USERNAME, password), timeout=10).json()
        loaded = {group["name"] for group in rules["data"]["groups"]}
        assert "otel-monitoring-http" in loaded
        config = httpx.get(f"{base}/api/v1/status/flags", auth=(WEB_USERNAME, password), timeout=10).json()
        assert config["data"]["web.config.file"] == str(web_path)


# --- grafana-org against a stand-in of Grafana's org API ------------------------------------------------------------


class FakeGrafanaOrgs:
    """Grafana's ``GET``/``PUT /api/orgs/:id`` with basic auth, as far as ``deploy grafana-org`` uses them."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.name = "Main Org."
        self.puts: list[dict[str, Any]] = []

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"admin:{self.password}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    async def org(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        if request.path_params["org_id"] != 1:
            return JSONResponse({"message": "Organization not found"}, status_code=404)
        if request.method == "PUT":
            body = await request.json()
            self.puts.append(body)
            self.name = body["name"]
            return JSONResponse({"message": "Organization updated"})
        return JSONResponse({"id": 1, "name": self.name, "address": {}})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/orgs/{org_id:int}", self.org, methods=["GET", "PUT"])])


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafanaOrgs, str]]:
    fake = FakeGrafanaOrgs("grafana-admin-password")
    with serve_app(fake.app()) as url:
        yield fake, url


def test_grafana_org_renames_the_main_organization_once(
    grafana: tuple[FakeGrafanaOrgs, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    password_file = tmp_path / "password"
    password_file.write_text(fake.password + "\n")
    argv = ["deploy", "grafana-org", "--url", url, "--name", "AIAgency", "--username", "admin"]
    argv += ["--password-file", str(password_file)]
    assert run_cli(argv) == 0
    assert run_cli(argv) == 0  # idempotent: the second run finds the name set
    assert fake.name == "AIAgency"
    assert fake.puts == [{"name": "AIAgency"}]
    assert "already named AIAgency" in capsys.readouterr().out


def test_grafana_org_exits_1_naming_the_refusal(
    grafana: tuple[FakeGrafanaOrgs, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = grafana
    password_file = tmp_path / "password"
    password_file.write_text("not the password")
    argv = ["deploy", "grafana-org", "--url", url, "--name", "AIAgency", "--username", "admin"]
    assert run_cli([*argv, "--password-file", str(password_file)]) == 1
    error = capsys.readouterr().err
    assert "HTTP 401" in error and "/api/orgs/1" in error
