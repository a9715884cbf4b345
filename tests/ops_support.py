"""The monitoring stack that ``doctor`` and ``backup`` are tested against, on 127.0.0.1.

- Debian's Prometheus (scraping the sidecar, with the rendered rule pack, sending to Alertmanager, reloadable),
  Alertmanager (with a config rendered from settings) and Pushgateway, started as in tests/e2e/conftest.py.
- The collector sidecar, ``otel-monitoring collector``, as a restartable subprocess.
- :class:`GrafanaStandIn`: Grafana cannot run here (no Grafana server, no Docker engine), so a small HTTP server
  plays the part of its HTTP API that doctor, backup and restore use: ``/api/health``, ``/api/search``,
  ``/api/dashboards/uid/<uid>``, folders and ``/api/dashboards/db``, behind a bearer token.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from otel_monitoring import ops_cli
from otel_monitoring.alertmanager_config import write_alertmanager_config
from otel_monitoring.rules.render import write_rule_files
from otel_monitoring.rules_cli import collect_groups
from otel_monitoring.settings import Settings, load_settings
from tests.alerting_support import Program, start_alertmanager, start_program, wait_for
from tests.e2e.conftest import PUSHGATEWAY_BINARY, DebianServer, start_debian_server
from tests.sidecar_support import write_sidecar_config
from tests.support import free_port

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
SIDECAR_JOB = "sidecar"
PSEUDONYM_KEY = "ops-tests-pseudonym-key-0123456789"


def run_ops_cli(argv: list[str], environ: Mapping[str, str]) -> int:
    """Run doctor/backup/restore through ``ops_cli``'s parser with ``environ`` as the environment."""
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    ops_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.environ = dict(environ)
    status: int = args.func(args)
    return status


def prometheus_api(url: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


def wait_for_alertmanager(prometheus_url: str, timeout: float = 30.0) -> None:
    """Prometheus discovers Alertmanagers in batches about 5 s apart, at start and after each reload."""
    wait_for(
        lambda: prometheus_api(prometheus_url, "alertmanagers")["activeAlertmanagers"],
        1,
        timeout,
        "Prometheus discovering Alertmanager",
    )


# --- Grafana stand-in ---------------------------------------------------------------------------------------------


def sample_dashboard(uid: str, title: str, expr: str) -> dict[str, Any]:
    """A dashboard model in Grafana's JSON shape, with one time-series panel."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["otel-monitoring"],
        "schemaVersion": 39,
        "templating": {"list": [{"name": "job", "type": "query", "query": "label_values(up, job)"}]},
        "panels": [{"id": 1, "type": "timeseries", "title": title, "targets": [{"refId": "A", "expr": expr}]}],
    }


class GrafanaStandIn:
    """Grafana's HTTP API as doctor, backup and restore use it: health, search, dashboards by UID, folders and
    saving a dashboard (``/api/dashboards/db``). Every call but ``/api/health`` needs ``Bearer <api_key>``."""

    def __init__(self, api_key: str, dashboards: Mapping[str, dict[str, Any]], folder: str = "AIAgency") -> None:
        self.api_key = api_key
        self.dashboards = dict(dashboards)
        self.folder = folder
        self.requests: list[tuple[str, str | None]] = []
        self.folders: dict[str, str] = {}
        self.dashboard_folders = dict.fromkeys(dashboards, "aiagency")
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.requests.append((self.path, self.headers.get("Authorization")))
                path = self.path.split("?", 1)[0]
                if path == "/api/health":
                    return self._reply(200, {"database": "ok", "version": "stand-in"})
                if self.headers.get("Authorization") != f"Bearer {stand_in.api_key}":
                    return self._reply(401, {"message": "Unauthorized"})
                if path == "/api/search":
                    found = [
                        {"uid": uid, "title": model["title"], "type": "dash-db", "folderTitle": stand_in.folder}
                        for uid, model in stand_in.dashboards.items()
                    ]
                    return self._reply(200, found)
                uid = path.removeprefix("/api/dashboards/uid/")
                if path.startswith("/api/dashboards/uid/") and uid in stand_in.dashboards:
                    folder_uid = stand_in.dashboard_folders.get(uid, "")
                    meta = {"folderTitle": stand_in.folder, "folderUid": folder_uid, "slug": uid}
                    return self._reply(200, {"dashboard": stand_in.dashboards[uid], "meta": meta})
                folder = path.removeprefix("/api/folders/")
                if path.startswith("/api/folders/") and folder in stand_in.folders:
                    return self._reply(200, {"uid": folder, "title": stand_in.folders[folder]})
                return self._reply(404, {"message": "Not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                stand_in.requests.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {stand_in.api_key}":
                    return self._reply(401, {"message": "Unauthorized"})
                if self.path == "/api/folders":
                    stand_in.folders[body["uid"]] = body["title"]
                    return self._reply(200, {"uid": body["uid"], "title": body["title"]})
                if self.path == "/api/dashboards/db":
                    dashboard = dict(body["dashboard"])
                    uid = dashboard["uid"]
                    dashboard["version"] = int(stand_in.dashboards.get(uid, {}).get("version", 0)) + 1
                    stand_in.dashboards[uid] = dashboard
                    stand_in.dashboard_folders[uid] = body.get("folderUid", "")
                    url = f"/d/{uid}/{uid}"
                    return self._reply(
                        200, {"uid": uid, "version": dashboard["version"], "url": url, "status": "success"}
                    )
                return self._reply(404, {"message": "Not found"})

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="grafana-stand-in", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def grafana_stand_in(api_key: str, dashboards: Mapping[str, dict[str, Any]]) -> Iterator[GrafanaStandIn]:
    server = GrafanaStandIn(api_key, dashboards)
    try:
        yield server
    finally:
        server.close()


# --- The sidecar --------------------------------------------------------------------------------------------------


class Sidecar:
    """``otel-monitoring collector`` on fixed ports, so it can be stopped and started again at the same address."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.otlp, self.metrics, self.health = free_port(), free_port(), free_port()
        self.config = write_sidecar_config(
            directory / "collector.yaml", otlp=self.otlp, prometheus=self.metrics, health=self.health
        )
        self.health_url = f"http://127.0.0.1:{self.health}/"
        self.metrics_url = f"http://127.0.0.1:{self.metrics}/metrics"
        self.target = f"127.0.0.1:{self.metrics}"
        self._stack: contextlib.ExitStack | None = None
        self.program: Program | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        stack = contextlib.ExitStack()
        argv = [sys.executable, "-m", "otel_monitoring", "collector", "--config", str(self.config)]
        log = self.directory / f"sidecar-{self._starts}.log"
        self.program = stack.enter_context(
            start_program(argv, log, env={"OTEL_MONITORING_PSEUDONYM_KEY": PSEUDONYM_KEY})
        )
        self._stack = stack
        try:
            self.program.wait_ready(self.health_url)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
            self.program = None


# --- The stack ----------------------------------------------------------------------------------------------------


@dataclass
class OpsStack:
    prometheus: DebianServer
    alertmanager_url: str
    pushgateway_url: str
    sidecar: Sidecar
    rules_dir: Path
    rule_groups: int
    directory: Path

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment doctor and backup run with: every URL of the stack."""
        return {
            "OTEL_MONITORING_PROMETHEUS_URL": self.prometheus.url,
            "ALERTMANAGER_URL": self.alertmanager_url,
            "PROMETHEUS_PUSH_GATEWAY": self.pushgateway_url,
            "OTEL_MONITORING_SIDECAR_HEALTH_URL": self.sidecar.health_url,
            "OTEL_MONITORING_SIDECAR_METRICS_URL": self.sidecar.metrics_url,
            **extra,
        }

    def reload_prometheus(self) -> None:
        """Reload Prometheus's config and rules, and wait until it has found Alertmanager again (about 5 s)."""
        httpx.post(f"{self.prometheus.url}/-/reload", timeout=10).raise_for_status()
        wait_for_alertmanager(self.prometheus.url)

    def wait_for_target(self, health: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until Prometheus reports the sidecar target with this health; returns the target."""

        def matching() -> list[dict[str, Any]]:
            targets = prometheus_api(self.prometheus.url, "targets", state="active")["activeTargets"]
            return [t for t in targets if t["labels"].get("job") == SIDECAR_JOB and t["health"] == health]

        found: list[dict[str, Any]] = wait_for(matching, 1, timeout, f"sidecar target {health}")
        return found[0]


def prometheus_config(
    rules_dir: Path, alertmanager: str, sidecar_target: str, extra_scrape_configs: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    scrape = [{"job_name": SIDECAR_JOB, "static_configs": [{"targets": [sidecar_target]}]}]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / "*.rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [*scrape, *map(dict, extra_scrape_configs)],
    }


def prometheus_args(config: dict[str, Any]) -> Any:
    def args(address: str, data_dir: Path) -> list[str]:
        path = data_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return [
            f"--config.file={path}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address={address}",
            "--web.enable-lifecycle",  # POST /-/reload, to load a broken rule file and take it out again
            "--log.level=warn",
        ]

    return args


def render_rules(rules_dir: Path, settings: Settings) -> int:
    groups = collect_groups(settings, [], [])
    write_rule_files(groups, rules_dir)
    return len(groups)


@contextlib.contextmanager
def start_ops_stack(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    settings_environ: Mapping[str, str] | None = None,
    with_pushgateway: bool = True,
    extra_scrape_configs: Sequence[Mapping[str, Any]] = (),
) -> Iterator[OpsStack]:
    """Sidecar, Alertmanager, Pushgateway and Prometheus; waits until Prometheus scrapes the sidecar and sees
    Alertmanager. ``settings_environ`` feeds the Alertmanager config render (channels, secrets)."""
    if not PROMETHEUS_BINARY.exists():
        pytest.skip(f"{PROMETHEUS_BINARY} is not installed (apt-get install -y prometheus)")
    tmp = tmp_path_factory.mktemp("ops-stack")
    settings = load_settings(environ=dict(settings_environ or {}), strict=True)
    rules_dir = tmp / "rules"
    groups = render_rules(rules_dir, settings)
    alertmanager_file = tmp / "alertmanager" / "alertmanager.yml"
    write_alertmanager_config(settings, alertmanager_file)
    with contextlib.ExitStack() as stack:
        sidecar = Sidecar(tmp)
        sidecar.start()
        stack.callback(sidecar.stop)
        alertmanager = stack.enter_context(start_alertmanager(alertmanager_file, tmp / "alertmanager-data"))
        pushgateway_url = ""
        if with_pushgateway:
            pushgateway = stack.enter_context(
                start_debian_server(
                    tmp_path_factory,
                    PUSHGATEWAY_BINARY,
                    lambda address, _: [f"--web.listen-address={address}", "--persistence.file=", "--log.level=warn"],
                    package="prometheus-pushgateway",
                )
            )
            pushgateway_url = pushgateway.url
        config = prometheus_config(
            rules_dir, alertmanager.url.removeprefix("http://"), sidecar.target, extra_scrape_configs
        )
        prometheus = stack.enter_context(
            start_debian_server(tmp_path_factory, PROMETHEUS_BINARY, prometheus_args(config), package="prometheus")
        )
        ops = OpsStack(prometheus, alertmanager.url, pushgateway_url, sidecar, rules_dir, groups, tmp)
        ops.wait_for_target("up")
        wait_for_alertmanager(prometheus.url)
        yield ops
