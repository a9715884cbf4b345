"""backup's archive without servers: what is rendered from code when nothing answers, secret masking, the
manifest's checksums, and restore's refusals (damaged, unlisted or escaping members)."""

from __future__ import annotations

import doctest
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from otel_monitoring import backup
from otel_monitoring.backup import (
    BackupError,
    BackupSources,
    Manifest,
    create_backup,
    mask_secrets,
    restore_backup,
)
from otel_monitoring.dashboards import DASHBOARD_UIDS
from otel_monitoring.rules.pack import builtin_groups
from otel_monitoring.rules.render import file_name
from otel_monitoring.settings import MASK, SettingsError, load_settings
from tests.ops_support import run_ops_cli

SLACK = "https://hooks.slack.com/services/T1/B1/unit-slack-secret"
GRAFANA_KEY = "glsa_unit-grafana-secret"
CREATED = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


def refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture
def offline_archive(tmp_path: Path) -> tuple[Path, Manifest]:
    settings = load_settings(environ={"ALERT_SLACK_WEBHOOK": SLACK, "GRAFANA_API_KEY": GRAFANA_KEY}, strict=True)
    out = tmp_path / "backup.tar.gz"
    manifest = create_backup(settings, out, transport=httpx.MockTransport(refusing), now=lambda: CREATED)
    return out, manifest


def test_with_no_server_answering_rules_and_alertmanager_are_rendered_from_code(
    offline_archive: tuple[Path, Manifest],
) -> None:
    out, manifest = offline_archive
    contents = members(out)

    sources = {item.path: item.source for item in manifest.files}
    expected_rules = {f"prometheus/rules/{file_name(group)}" for group in builtin_groups(load_settings(environ={}))}
    assert expected_rules <= {path for path in sources if path.startswith("prometheus/rules/")}
    assert all(sources[path] == "rendered from code" for path in expected_rules)
    assert sources["alertmanager/alertmanager.yml"].startswith("rendered from settings (http://localhost:9093")
    skipped = {item["item"]: item["reason"] for item in manifest.skipped}
    assert "connection refused" in skipped["prometheus/prometheus.yml"]
    assert "--prometheus-config FILE" in skipped["prometheus/prometheus.yml"]
    # The Slack webhook is referenced as a file, and the file is not in the archive.
    alertmanager = yaml.safe_load(contents["alertmanager/alertmanager.yml"])
    assert alertmanager["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    for data in contents.values():
        assert b"unit-slack-secret" not in data
        assert GRAFANA_KEY.encode() not in data
    assert manifest.created == "2026-11-05T12:00:00+00:00"
    # Dashboards: Grafana did not answer, so the dashboards as code are archived.
    dashboards = {path for path, source in sources.items() if path.startswith("grafana/dashboards/")}
    assert dashboards == {f"grafana/dashboards/{uid}.json" for uid in DASHBOARD_UIDS}
    assert all(sources[path].startswith("rendered from code") for path in dashboards)


def test_the_manifest_in_the_archive_lists_every_file_with_its_sha256(
    offline_archive: tuple[Path, Manifest],
) -> None:
    import hashlib

    out, manifest = offline_archive
    contents = members(out)
    stored = Manifest.from_json(contents.pop("manifest.json").decode())

    assert stored == manifest
    assert {item.path for item in stored.files} == set(contents)
    for item in stored.files:
        assert item.sha256 == hashlib.sha256(contents[item.path]).hexdigest()
        assert item.size == len(contents[item.path])


def test_files_given_as_flags_are_archived_byte_for_byte_unless_they_hold_credentials(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    rule_text = "groups:\n  - name: mine  # a comment kept as is\n    rules: []\n"
    (rules / "mine.rules.yml").write_text(rule_text)
    prometheus = tmp_path / "prometheus.yml"
    prometheus.write_text(
        "scrape_configs:\n  - job_name: app\n    basic_auth: {username: u, password: hunter2-secret}\n"
    )
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    (dashboards / "app-overview.json").write_text('{"uid": "app-overview", "title": "App"}')
    sources = BackupSources(prometheus_config=prometheus, rules_dir=rules, dashboards_dir=dashboards)
    out = tmp_path / "backup.tar.gz"

    create_backup(load_settings(environ={}), out, sources=sources, transport=httpx.MockTransport(refusing))

    contents = members(out)
    assert contents["prometheus/rules/mine.rules.yml"] == rule_text.encode()
    assert contents["grafana/dashboards/app-overview.json"] == (dashboards / "app-overview.json").read_bytes()
    config = yaml.safe_load(contents["prometheus/prometheus.yml"])
    assert config["scrape_configs"][0]["basic_auth"] == {"username": "u", "password": MASK}


def test_mask_secrets_keeps_yaml_and_json_valid_whatever_the_secret_contains() -> None:
    secret = 'a"quote\\and*star'
    yaml_text = f"receivers:\n  - name: hook\n    webhook_configs:\n      - url: 'http://x/{secret}'\n"
    json_text = json.dumps({"panels": [{"title": f"see {secret}"}]})

    masked_yaml = yaml.safe_load(mask_secrets(yaml_text, [secret]))
    masked_json = json.loads(mask_secrets(json_text, [secret], text_format="json"))

    assert masked_yaml["receivers"][0]["webhook_configs"][0]["url"] == f"http://x/{MASK}"
    assert masked_json["panels"][0]["title"] == f"see {MASK}"


def test_mask_secrets_drops_a_secret_left_in_a_yaml_comment() -> None:
    text = "route:\n  receiver: slack  # was https://hooks.slack.com/services/T/B/old-secret\n"

    masked = mask_secrets(text, ["https://hooks.slack.com/services/T/B/old-secret"])

    assert "old-secret" not in masked
    assert yaml.safe_load(masked) == {"route": {"receiver": "slack"}}


def test_mask_secrets_returns_text_without_secrets_unchanged() -> None:
    text = "# rules\ngroups: [ {name: a, rules: []} ]\n"

    assert mask_secrets(text, ["not-present"]) is text


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_restore_refuses_a_member_outside_the_target_directory(
    offline_archive: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, _ = offline_archive
    files = members(out)
    files["../escape.txt"] = b"x"
    evil = write_archive(tmp_path / "evil.tar.gz", files)

    with pytest.raises(BackupError, match=r"'\.\./escape\.txt': path outside the restore directory"):
        restore_backup(evil, tmp_path / "to")
    assert not (tmp_path / "escape.txt").exists()


def test_restore_refuses_a_member_the_manifest_does_not_list(
    offline_archive: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, _ = offline_archive
    files = members(out)
    files["extra.yml"] = b"x: 1\n"

    with pytest.raises(BackupError, match=r"'extra\.yml': not listed in manifest\.json"):
        restore_backup(write_archive(tmp_path / "extra.tar.gz", files), tmp_path / "to")


def test_restore_refuses_an_archive_without_a_manifest_or_of_another_format(tmp_path: Path) -> None:
    no_manifest = write_archive(tmp_path / "a.tar.gz", {"settings.yaml": b"x: 1\n"})
    with pytest.raises(BackupError, match=r"no manifest\.json"):
        restore_backup(no_manifest, tmp_path / "to")

    future = json.dumps({"format": "otel-monitoring-backup", "format_version": 99, "created": "", "files": []})
    with pytest.raises(BackupError, match="format_version 99 is not supported"):
        restore_backup(write_archive(tmp_path / "b.tar.gz", {"manifest.json": future.encode()}), tmp_path / "to")

    (tmp_path / "c.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(BackupError, match=r"not a readable tar\.gz"):
        restore_backup(tmp_path / "c.tar.gz", tmp_path / "to")


def test_restore_writes_the_manifest_and_every_file(offline_archive: tuple[Path, Manifest], tmp_path: Path) -> None:
    out, manifest = offline_archive
    target = tmp_path / "to"

    result = restore_backup(out, target)

    assert sorted(result.written) == sorted(
        [target / item.path for item in manifest.files] + [target / "manifest.json"]
    )
    assert Manifest.from_json((target / "manifest.json").read_text()) == manifest


def test_docstring_examples_run() -> None:
    result = doctest.testmod(backup)

    assert result.attempted > 0
    assert result.failed == 0


URL_PASSWORDS = {
    "OTEL_MONITORING_PROMETHEUS_URL": "http://u:prom-pw-secret@127.0.0.1:1",
    "ALERTMANAGER_URL": "http://u:am-pw-secret@127.0.0.1:2",
    "GRAFANA_URL": "http://u:graf-pw-secret@127.0.0.1:3",
}


def serving_prometheus_only(request: httpx.Request) -> httpx.Response:
    if request.url.port == 1 and request.url.path == "/api/v1/status/config":
        return httpx.Response(200, json={"status": "success", "data": {"yaml": "global: {scrape_interval: 15s}\n"}})
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_passwords_in_server_urls_appear_nowhere_in_the_manifest_or_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "backup.tar.gz"

    manifest = create_backup(
        load_settings(environ=URL_PASSWORDS), out, transport=httpx.MockTransport(serving_prometheus_only)
    )

    sources = {item.path: item.source for item in manifest.files}
    assert sources["prometheus/prometheus.yml"] == f"prometheus http://u:{MASK}@127.0.0.1:1/api/v1/status/config"
    everything = "\n".join(manifest.summary_lines()) + b"".join(members(out).values()).decode()
    for secret in ("prom-pw-secret", "am-pw-secret", "graf-pw-secret"):
        assert secret not in everything


def test_a_short_password_is_masked_under_its_key_but_not_blanked_everywhere_else(tmp_path: Path) -> None:
    prometheus = tmp_path / "prometheus.yml"
    prometheus.write_text("scrape_configs:\n  - job_name: admin\n    basic_auth: {username: admin, password: admin}\n")
    settings = load_settings(
        environ={"OTEL_MONITORING_PROMETHEUS_USERNAME": "admin", "OTEL_MONITORING_PROMETHEUS_PASSWORD": "admin"}
    )
    out = tmp_path / "backup.tar.gz"

    create_backup(
        settings, out, sources=BackupSources(prometheus_config=prometheus), transport=httpx.MockTransport(refusing)
    )

    job = yaml.safe_load(members(out)["prometheus/prometheus.yml"])["scrape_configs"][0]
    assert job == {"job_name": "admin", "basic_auth": {"username": "admin", "password": MASK}}


def test_relative_rule_files_of_the_live_config_are_not_read_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prometheus resolves them against its config file's directory, which its API does not tell.
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "unrelated.yml").write_text("groups: []\n")
    monkeypatch.chdir(tmp_path)

    def prometheus(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/status/config":
            return httpx.Response(200, json={"status": "success", "data": {"yaml": "rule_files: [rules/*.yml]\n"}})
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    manifest = create_backup(
        load_settings(environ={}), tmp_path / "b.tar.gz", transport=httpx.MockTransport(prometheus)
    )

    rules = {item.path: item.source for item in manifest.files if item.path.startswith("prometheus/rules/")}
    assert "prometheus/rules/unrelated.yml" not in rules
    expected = {f"prometheus/rules/{file_name(group)}" for group in builtin_groups(load_settings(environ={}))}
    assert expected <= set(rules)
    assert all("relative" in source and "rules/*.yml" in source for source in rules.values())


def test_verify_only_with_push_dashboards_is_refused_in_one_line(
    offline_archive: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = offline_archive
    status = run_ops_cli(["restore", "--from", str(out), "--verify-only", "--push-dashboards"], {})

    assert status == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--verify-only" in error and "--push-dashboards" in error


def test_push_dashboards_with_a_bad_setting_stops_restore_before_any_file_is_written(
    offline_archive: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, _ = offline_archive
    target = tmp_path / "restored"

    with pytest.raises(SettingsError, match="GRAFANA_URL"):
        run_ops_cli(["restore", "--from", str(out), "--to", str(target), "--push-dashboards"], {"GRAFANA_URL": "x"})

    assert not target.exists()
