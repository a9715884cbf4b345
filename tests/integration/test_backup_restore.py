"""``otel-monitoring backup`` and ``restore`` round trip against Debian's Prometheus and Alertmanager and a Grafana
stand-in (Grafana cannot run here: tests/ops_support.py's GrafanaStandIn plays its HTTP API).

The archive holds Prometheus's config and rule files, Alertmanager's config, the dashboards and the settings;
restored files equal what the servers serve, every checksum is verified, and no secret is anywhere in it."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from otel_monitoring.settings import MASK
from tests.ops_support import GrafanaStandIn, OpsStack, grafana_stand_in, run_ops_cli, sample_dashboard, start_ops_stack

SLACK_SECRET = "https://hooks.slack.com/services/T0SECRET/B0SECRET/slack-secret-token"
HEARTBEAT_SECRET = "http://127.0.0.1:9/heartbeat/heartbeat-secret-token"
GRAFANA_SECRET = "glsa_grafana-secret-token"
SCRAPE_SECRET = "scrape-password-secret"
SECRETS = (
    SLACK_SECRET,
    HEARTBEAT_SECRET,
    GRAFANA_SECRET,
    SCRAPE_SECRET,
    "slack-secret-token",
    "heartbeat-secret-token",
)

SETTINGS_ENVIRON = {"ALERT_SLACK_WEBHOOK": SLACK_SECRET, "OTEL_MONITORING_ALERT_HEARTBEAT_URL": HEARTBEAT_SECRET}
# A scrape job with a password, as a real prometheus.yml has: Prometheus's API masks it, backup must keep it out.
EXTRA_SCRAPE = {
    "job_name": "with-password",
    "basic_auth": {"username": "scraper", "password": SCRAPE_SECRET},
    "static_configs": [{"targets": ["127.0.0.1:9"]}],
}
DASHBOARDS = {
    "app-overview": sample_dashboard("app-overview", "App overview", 'sum by (job) (rate(up{job="$job"}[5m]))'),
    "business-costs": sample_dashboard("business-costs", "Business costs", "sum(otel_monitoring_cost_total)"),
}


@dataclass
class BackupStack:
    ops: OpsStack
    grafana: GrafanaStandIn

    def environ(self) -> dict[str, str]:
        return self.ops.environ(GRAFANA_URL=self.grafana.url, GRAFANA_API_KEY=GRAFANA_SECRET, **SETTINGS_ENVIRON)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupStack]:
    with (
        start_ops_stack(
            tmp_path_factory,
            settings_environ=SETTINGS_ENVIRON,
            with_pushgateway=False,
            extra_scrape_configs=[EXTRA_SCRAPE],
        ) as ops,
        grafana_stand_in(GRAFANA_SECRET, DASHBOARDS) as grafana,
    ):
        yield BackupStack(ops, grafana)


def archive_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]


def backup(stack: BackupStack, out: Path, *extra: str) -> int:
    return run_ops_cli(["backup", "--out", str(out), *extra], stack.environ())


def test_backup_then_restore_gives_back_what_the_servers_serve_without_any_secret(
    stack: BackupStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "monitoring.tar.gz"
    assert backup(stack, archive) == 0
    restored = tmp_path / "restored"
    assert run_ops_cli(["restore", "--from", str(archive), "--to", str(restored)], {}) == 0

    members = archive_members(archive)
    manifest = json.loads(members.pop("manifest.json"))
    assert manifest["format"] == "otel-monitoring-backup"
    assert {"otel-monitoring", "prometheus", "alertmanager", "grafana"} <= set(manifest["versions"])
    assert {item["path"] for item in manifest["files"]} == set(members)
    for item in manifest["files"]:
        assert (restored / item["path"]).read_bytes() == members[item["path"]]
    # Prometheus: its config as its API serves it, and the rule files byte for byte (read where rule_files says).
    prometheus_yaml = httpx.get(f"{stack.ops.prometheus.url}/api/v1/status/config", timeout=5).json()["data"]["yaml"]
    assert yaml.safe_load((restored / "prometheus/prometheus.yml").read_text()) == yaml.safe_load(prometheus_yaml)
    rule_files = sorted(stack.ops.rules_dir.glob("*.rules.yml"))
    assert len(rule_files) == stack.ops.rule_groups
    for path in rule_files:
        assert (restored / "prometheus/rules" / path.name).read_bytes() == path.read_bytes()
    # Alertmanager: its running config (secrets masked by Alertmanager itself, or by backup).
    status = httpx.get(f"{stack.ops.alertmanager_url}/api/v2/status", timeout=5).json()
    restored_alertmanager = yaml.safe_load((restored / "alertmanager/alertmanager.yml").read_text())
    running = yaml.safe_load(status["config"]["original"])
    assert restored_alertmanager["route"] == running["route"]
    assert [r["name"] for r in restored_alertmanager["receivers"]] == [r["name"] for r in running["receivers"]]
    # Dashboards: the stand-in's models.
    for uid, model in DASHBOARDS.items():
        assert json.loads((restored / f"grafana/dashboards/{uid}.json").read_text()) == model
    settings = yaml.safe_load("\n".join(
        line for line in (restored / "settings.yaml").read_text().splitlines() if not line.startswith("#")
    ))  # fmt: skip
    assert settings["grafana"]["api_key"] == MASK
    assert settings["alerting"]["slack_webhook"] == MASK
    # No secret anywhere: not in any member, not in the manifest, not in the compressed stream's plain text.
    everything = b"".join(members.values()) + json.dumps(manifest).encode() + gzip.decompress(archive.read_bytes())
    for secret in SECRETS:
        assert secret.encode() not in everything, secret
    out = capsys.readouterr().out
    assert f"restored {len(manifest['files']) + 1} files" in out


def test_restore_refuses_to_overwrite_without_force(
    stack: BackupStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "monitoring.tar.gz"
    assert backup(stack, archive) == 0
    target = tmp_path / "restored"
    assert run_ops_cli(["restore", "--from", str(archive), "--to", str(target)], {}) == 0
    (target / "settings.yaml").write_text("edited\n")
    capsys.readouterr()

    assert run_ops_cli(["restore", "--from", str(archive), "--to", str(target)], {}) == 2
    error = capsys.readouterr().err
    assert "exists (pass --force to overwrite)" in error
    assert (target / "settings.yaml").read_text() == "edited\n"

    assert run_ops_cli(["restore", "--from", str(archive), "--to", str(target), "--force"], {}) == 0
    assert (target / "settings.yaml").read_bytes() == archive_members(archive)["settings.yaml"]
    # backup too refuses to overwrite its archive without --force.
    assert backup(stack, archive) == 2
    assert backup(stack, archive, "--force") == 0


def test_a_tampered_archive_is_refused_naming_the_file_and_nothing_is_written(
    stack: BackupStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "monitoring.tar.gz"
    assert backup(stack, archive) == 0
    members = archive_members(archive)
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as out:
        for name, data in members.items():
            if name == "alertmanager/alertmanager.yml":
                data = data.replace(b"receivers:", b"receivers: # edited\n", 1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    capsys.readouterr()

    target = tmp_path / "restored"
    assert run_ops_cli(["restore", "--from", str(tampered), "--to", str(target)], {}) == 2
    assert "alertmanager/alertmanager.yml: checksum mismatch" in capsys.readouterr().err
    assert not target.exists()
    assert run_ops_cli(["restore", "--from", str(archive), "--verify-only"], {}) == 0


def test_backup_reads_grafana_with_the_api_key_and_records_the_folder(stack: BackupStack, tmp_path: Path) -> None:
    archive = tmp_path / "monitoring.tar.gz"
    assert backup(stack, archive) == 0

    manifest: dict[str, Any] = json.loads(archive_members(archive)["manifest.json"])
    sources = {item["path"]: item["source"] for item in manifest["files"]}
    for uid in DASHBOARDS:
        assert sources[f"grafana/dashboards/{uid}.json"] == f"grafana {stack.grafana.url} (folder AIAgency)"
    authorized = [auth for path, auth in stack.grafana.requests if path.startswith("/api/dashboards/uid/")]
    assert authorized and set(authorized) == {f"Bearer {GRAFANA_SECRET}"}


def test_restore_pushes_the_archived_dashboards_to_an_empty_grafana(
    stack: BackupStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "monitoring.tar.gz"
    assert backup(stack, archive) == 0
    with grafana_stand_in(GRAFANA_SECRET, {}) as empty:
        environ = {"GRAFANA_URL": empty.url, "GRAFANA_API_KEY": GRAFANA_SECRET}
        argv = ["restore", "--from", str(archive), "--to", str(tmp_path / "restored"), "--push-dashboards"]
        assert run_ops_cli([*argv, "--folder", "AIAgency"], environ) == 0

        assert set(empty.dashboards) == set(DASHBOARDS)
        for uid, model in DASHBOARDS.items():
            pushed = {key: value for key, value in empty.dashboards[uid].items() if key not in ("id", "version")}
            assert pushed == model
        assert empty.folders == {"aiagency": "AIAgency"}
        assert set(empty.dashboard_folders.values()) == {"aiagency"}
    assert f"pushed {len(DASHBOARDS)} of {len(DASHBOARDS)} dashboards" in capsys.readouterr().out
