"""The demo's whole stack on 127.0.0.1, as a context manager: :class:`DemoStack`.

What runs (every port a free one, every file in one temp directory removed at the end):

- the sample service (``otel_monitoring.demo.app``, FastAPI on SQLite) under ``opentelemetry-instrument``, exporting
  OTLP every second to
- the collector sidecar (``otel-monitoring collector`` with a generated config), whose ``/metrics`` is the one
  scrape target;
- in this process: a fake model provider the service calls over httpx, and an alert sink standing in for Slack;
- when Debian's binaries are installed: Prometheus (scraping the sidecar and the Pushgateway every second, with the
  rules ``otel-monitoring rules render`` writes: the built-in pack, its recording rules and the demo's alerts),
  Alertmanager (the config ``otel-monitoring alertmanager render`` writes, its Slack channel pointed at the sink),
  and the Pushgateway, which a batch job (``otel_monitoring.demo.batch``) pushes to every 30 s;
- a traffic driver sending requests in a background thread, following a :class:`~otel_monitoring.demo.traffic
  .TrafficPlan`.

Use it from tests or notebooks::

    from otel_monitoring.demo import DemoStack

    with DemoStack() as stack:  # starts everything, traffic included; stops and removes everything at the end
        print(stack.prometheus_url, stack.sidecar_metrics_url, stack.service_url)
        with stack.failure_episode():  # the model provider fails and slows down while the block runs
            time.sleep(15)
        figures = stack.read_figures()
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

import otel_monitoring
from otel_monitoring.demo._process import ChildProcess, DemoError
from otel_monitoring.demo.figures import Figures, PrometheusReader, ScrapeReader
from otel_monitoring.demo.stubs import AlertSink, FakeModelProvider, Notification
from otel_monitoring.demo.traffic import NORMAL, Phase, TrafficDriver, TrafficPlan
from otel_monitoring.settings import process_environment

__all__ = ["SERVICE", "DebianBinaries", "DemoError", "DemoStack"]

SERVICE = "content-api"
"""The sample service's ``service.name``: its ``job`` label in Prometheus."""
RULES_APP = "otel_monitoring.demo.rules:demo_rules"
VIEW_WINDOW_SECONDS = 5.0
"""Window of the live view's rates: short, so the view follows the traffic within seconds (the alerts use 10 s)."""
_INSTALL = "sudo apt-get install -y --no-install-recommends prometheus prometheus-alertmanager prometheus-pushgateway"
# Variables of the user's shell that would redirect the demo's children (their own collector, Pushgateway, Slack):
# the demo's children get only the demo's own.
_ISOLATED_PREFIXES = ("OTEL_", "PROMETHEUS_", "ALERT", "GRAFANA_")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DebianBinaries:
    """Where Debian's Prometheus tools are, ``None`` for those not installed."""

    prometheus: Path | None
    alertmanager: Path | None
    pushgateway: Path | None

    @classmethod
    def find(cls) -> DebianBinaries:
        def which(name: str) -> Path | None:
            found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
            return Path(found) if found else None

        return cls(which("prometheus"), which("prometheus-alertmanager"), which("prometheus-pushgateway"))

    @classmethod
    def none(cls) -> DebianBinaries:
        return cls(None, None, None)

    def missing(self) -> list[str]:
        """Debian package names of the binaries not found."""
        packages = {"prometheus": self.prometheus, "prometheus-alertmanager": self.alertmanager,
                    "prometheus-pushgateway": self.pushgateway}  # fmt: skip
        return [package for package, path in packages.items() if path is None]

    def describe_missing(self) -> str | None:
        """One line saying what is missing and how to install it, or ``None`` when nothing is."""
        missing = self.missing()
        if not missing:
            return None
        without = "Prometheus" if self.prometheus is None else ", ".join(missing)
        return (
            f"not installed: {', '.join(missing)}; running without {without} "
            f"(install: {_INSTALL}, or scripts/bootstrap)"
        )


class DemoStack:
    """Everything the demo runs, started by ``with`` (or :meth:`start`) and stopped by its end (or :meth:`close`).

    ``plan`` drives the traffic (default: steady traffic, no failures; :meth:`failure_episode` makes one on demand).
    ``binaries`` says which Debian servers to run (default: those installed; ``DebianBinaries.none()`` runs only the
    service and the sidecar). ``traffic=False`` starts no traffic driver. ``batch_every`` is the period of the
    Pushgateway batch job in seconds (``None``: never). URLs of what is not running are ``None``.

    Nothing outlives the stack: every child runs in its own process group, stopped by group (SIGTERM, then SIGKILL
    after 10 s), :meth:`close` is also registered with ``atexit``, and the temp directory is removed.
    """

    def __init__(
        self,
        *,
        plan: TrafficPlan | None = None,
        binaries: DebianBinaries | None = None,
        service_port: int = 0,
        traffic: bool = True,
        export_interval_ms: int = 1000,
        batch_every: float | None = 30.0,
        python: str = sys.executable,
    ) -> None:
        self.plan = plan or TrafficPlan.steady()
        self.binaries = binaries if binaries is not None else DebianBinaries.find()
        self._service_port = service_port
        self._with_traffic = traffic
        self._export_interval_ms = export_interval_ms
        self._batch_every = batch_every
        self._python = python
        self._forced: Phase | None = None
        self._children: list[ChildProcess] = []
        self._closers: list[Callable[[], None]] = []
        self._closed = False
        self._stop_batch = threading.Event()
        self._batch_thread: threading.Thread | None = None
        self.data_dir: Path | None = None
        self.service_url = ""
        self.sidecar_metrics_url = ""
        self.prometheus_url: str | None = None
        self.alertmanager_url: str | None = None
        self.pushgateway_url: str | None = None
        self.sink: AlertSink | None = None
        self.model_provider: FakeModelProvider | None = None
        self.traffic: TrafficDriver | None = None
        self.batch_runs: list[tuple[float, int]] = []
        """(second since traffic started, exit status) of each batch job run."""
        self._prometheus_reader: PrometheusReader | None = None
        self._scrape_reader: ScrapeReader | None = None
        self._prometheus_live_since: float | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> DemoStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start everything and wait until it answers; on any failure (Ctrl-C included) stop what started."""
        atexit.register(self.close)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.data_dir = data = Path(tempfile.mkdtemp(prefix="otel-monitoring-demo-"))
        self.sink = self._closing(AlertSink())
        self.model_provider = self._closing(FakeModelProvider(self.current_phase))
        ports = {name: _free_port() for name in ("otlp", "sidecar", "health", "prometheus", "alertmanager", "push")}
        ports["service"] = self._service_port or _free_port()
        self.service_url = f"http://127.0.0.1:{ports['service']}"
        self.sidecar_metrics_url = f"http://127.0.0.1:{ports['sidecar']}/metrics"
        settings_file = self._write_settings(data, ports)
        database = f"sqlite:///{data / 'content.db'}"
        env = self._child_environment(settings_file)

        # The slow starters (two Python processes) first, side by side with the rest of the set-up.
        collector_file = self._write_collector_config(data, ports)
        sidecar = self._spawn("sidecar", [self._python, "-m", "otel_monitoring", "--config", str(settings_file),
                                          "collector", "--config", str(collector_file)], env)  # fmt: skip
        service_env = {
            **env,
            "OTEL_SERVICE_NAME": SERVICE,
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{ports['otlp']}/v1/metrics",
            "OTEL_METRIC_EXPORT_INTERVAL": str(self._export_interval_ms),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        service = self._spawn(
            "sample service",
            [*self._instrument(), self._python, "-m", "otel_monitoring.demo.app", "--port", str(ports["service"]),
             "--database", database, "--model-api", self.model_provider.url],
            service_env,
        )  # fmt: skip

        servers: list[tuple[ChildProcess, str]] = [(sidecar, f"http://127.0.0.1:{ports['health']}/")]
        servers.append((service, f"{self.service_url}/health"))
        if self.binaries.prometheus is not None:
            servers += self._start_prometheus_stack(data, ports, settings_file)
        for child, ready_url in servers:
            child.wait_ready(ready_url)

        self._scrape_reader = ScrapeReader(self.sidecar_metrics_url, SERVICE, window=VIEW_WINDOW_SECONDS)
        if self.prometheus_url is not None:
            self._prometheus_reader = self._closing(
                PrometheusReader(
                    self.prometheus_url,
                    SERVICE,
                    alertmanager_url=self.alertmanager_url,
                    window=f"{VIEW_WINDOW_SECONDS:g}s",
                )
            )
        if self._with_traffic:
            self.traffic = TrafficDriver(self.service_url, self.plan, self.current_phase)
            self._closers.append(self.traffic.stop)
            self.traffic.start()
            if self.pushgateway_url is not None and self._batch_every is not None:
                self._batch_thread = threading.Thread(
                    target=self._batch_loop, args=(database,), name="demo-batch", daemon=True
                )
                self._batch_thread.start()
                self._closers.append(self._stop_batch_loop)

    def _start_prometheus_stack(
        self, data: Path, ports: Mapping[str, int], settings_file: Path
    ) -> list[tuple[ChildProcess, str]]:
        from otel_monitoring.alertmanager_config import RouteTiming, write_alertmanager_config
        from otel_monitoring.rules.render import write_rule_files
        from otel_monitoring.rules_cli import collect_groups
        from otel_monitoring.settings import load_settings

        assert self.binaries.prometheus is not None
        settings = load_settings(settings_file, environ={}, strict=True)
        servers: list[tuple[ChildProcess, str]] = []
        if self.binaries.alertmanager is not None:
            # What `otel-monitoring alertmanager render --group-wait 1s --group-interval 1s` writes.
            config = data / "alertmanager" / "alertmanager.yml"
            write_alertmanager_config(settings, config, timing=RouteTiming(group_wait="1s", group_interval="1s"))
            self.alertmanager_url = f"http://127.0.0.1:{ports['alertmanager']}"
            alertmanager = self._spawn("Alertmanager", [
                str(self.binaries.alertmanager), f"--config.file={config}", f"--storage.path={data / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                "--cluster.listen-address=",  # no clustering: otherwise it waits for peers
                "--log.level=warn",
            ])  # fmt: skip
            servers.append((alertmanager, f"{self.alertmanager_url}/-/ready"))
        if self.binaries.pushgateway is not None:
            self.pushgateway_url = f"http://127.0.0.1:{ports['push']}"
            pushgateway = self._spawn("Pushgateway", [
                str(self.binaries.pushgateway), f"--web.listen-address=127.0.0.1:{ports['push']}",
                "--persistence.file=",  # in memory: the default file would bring back pushes of an earlier run
                "--log.level=warn",
            ])  # fmt: skip
            servers.append((pushgateway, f"{self.pushgateway_url}/-/ready"))

        # What `otel-monitoring rules render --out DIR --app otel_monitoring.demo.rules:demo_rules` writes: the
        # built-in pack (alerts, SLOs, recording rules) and the demo's short-window alerts.
        write_rule_files(collect_groups(settings, [RULES_APP]), data / "rules")
        config_file = data / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self._prometheus_config(data, ports), sort_keys=False), encoding="utf-8")
        self.prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
        prometheus = self._spawn("Prometheus", [
            str(self.binaries.prometheus), f"--config.file={config_file}",
            f"--storage.tsdb.path={data / 'prometheus'}", f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            # Without it the first notification after start-up waits up to a minute.
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
        ])  # fmt: skip
        servers.append((prometheus, f"{self.prometheus_url}/-/ready"))
        return servers

    def _prometheus_config(self, data: Path, ports: Mapping[str, int]) -> dict[str, Any]:
        scrape = [
            # Named after the service, as a ServiceMonitor names it, so `up{job="content-api"}` is the service's
            # target; honor_labels keeps the sidecar's own `job` (the same name) instead of renaming it exported_job.
            {"job_name": SERVICE, "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{ports['sidecar']}"]}]},
        ]  # fmt: skip
        if self.pushgateway_url is not None:
            scrape.append({"job_name": "pushgateway", "honor_labels": True,
                           "static_configs": [{"targets": [f"127.0.0.1:{ports['push']}"]}]})  # fmt: skip
        config: dict[str, Any] = {
            # Seconds, not the usual 15 s and 1 m: the demo must fire and resolve an alert within half a minute.
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(data / "rules" / "*.rules.yml")],
            "scrape_configs": scrape,
        }
        if self.alertmanager_url is not None:
            target = self.alertmanager_url.removeprefix("http://")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
        return config

    def close(self) -> None:
        """Stop everything (traffic, then the service so its last export reaches the sidecar, then the rest at
        once) and remove the temp directory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        services = [child for child in self._children if child.name == "sample service"]
        for child in services:
            child.stop()
        others = [child for child in self._children if child not in services]
        for child in others:
            child.terminate()
        for child in others:
            child.wait()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- what callers use -----------------------------------------------------------------------------------

    def current_phase(self) -> Phase:
        """The phase now: a forced episode's, else the plan's at the traffic's elapsed time."""
        if self._forced is not None:
            return self._forced
        if self.traffic is None or self.traffic.started_at is None:
            return NORMAL
        return self.plan.phase_at(self.traffic.elapsed())

    @contextlib.contextmanager
    def failure_episode(self, phase: Phase | None = None) -> Iterator[None]:
        """Make the model provider fail (``phase``, default the plan's failure phase) while the block runs.

        >>> stack = DemoStack(binaries=DebianBinaries.none())
        >>> with stack.failure_episode():
        ...     stack.current_phase().name
        'failure'
        >>> stack.current_phase().name
        'normal'
        """
        self._forced = phase or self.plan.failure
        try:
            yield
        finally:
            self._forced = None

    def read_figures(self) -> Figures:
        """The view's figures: by PromQL once Prometheus has them, from the sidecar's scrape until then (and
        always without Prometheus). The sidecar is scraped every call, so its rates stay current either way."""
        if self._scrape_reader is None:
            raise RuntimeError("the stack is not started")
        scraped = self._scrape_reader.read()
        if self._prometheus_reader is not None:
            queried = self._prometheus_reader.read()
            now = self._scrape_reader.clock()
            if queried is None or not queried.live:
                self._prometheus_live_since = None
            elif self._prometheus_live_since is None:
                self._prometheus_live_since = now
            # Prometheus's first rates cover less than their window (its first scrape comes about 5 s after it
            # starts) and read low: keep the sidecar's figures until a whole window of scrapes is stored.
            elif now - self._prometheus_live_since >= VIEW_WINDOW_SECONDS:
                return queried
            if queried is not None:
                return replace(scraped, alerts=queried.alerts, alertmanager_active=queried.alertmanager_active)
        return scraped

    def notifications(self) -> list[Notification]:
        """What the alert sink received (Slack-shaped notifications from Alertmanager)."""
        return self.sink.notifications() if self.sink is not None else []

    def urls(self) -> dict[str, str]:
        """What to open, by name; only what runs."""
        found = {"service": self.service_url, "service API docs": f"{self.service_url}/docs",
                 "sidecar /metrics": self.sidecar_metrics_url}  # fmt: skip
        for name, url in (("Prometheus", self.prometheus_url), ("Alertmanager", self.alertmanager_url),
                          ("Pushgateway", self.pushgateway_url)):  # fmt: skip
            if url is not None:
                found[name] = url
        return found

    def children(self) -> list[ChildProcess]:
        """The child processes started so far."""
        return list(self._children)

    def run_batch_job(self) -> int:
        """Run the Pushgateway batch job once (``python -m otel_monitoring.demo.batch``); its exit status."""
        if self.pushgateway_url is None or self.data_dir is None:
            raise RuntimeError("no Pushgateway is running")
        return self._run_batch(f"sqlite:///{self.data_dir / 'content.db'}")

    # --- helpers --------------------------------------------------------------------------------------------

    def _closing(self, thing: Any) -> Any:
        self._closers.append(thing.close)
        return thing

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> ChildProcess:
        assert self.data_dir is not None
        log_file = self.data_dir / "logs" / f"{name.replace(' ', '-').lower()}.log"
        child = ChildProcess.start(name, argv, log_file, env=env, cwd=self.data_dir)
        self._children.append(child)
        return child

    def _instrument(self) -> list[str]:
        beside = Path(self._python).parent / "opentelemetry-instrument"
        found = str(beside) if beside.exists() else shutil.which("opentelemetry-instrument")
        if found is None:
            raise DemoError("opentelemetry-instrument is not installed (pip install opentelemetry-instrumentation)")
        return [found]

    def _child_environment(self, settings_file: Path) -> dict[str, str]:
        env = {key: value for key, value in process_environment().items() if not key.startswith(_ISOLATED_PREFIXES)}
        # The package the demo runs from, first on the path: the children run this code even from a source tree.
        package_root = str(Path(otel_monitoring.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = ":".join(filter(None, [package_root, env.get("PYTHONPATH", "")]))
        env["OTEL_MONITORING_CONFIG"] = str(settings_file)
        return env

    def _write_settings(self, data: Path, ports: Mapping[str, int]) -> Path:
        assert self.sink is not None
        document = {
            "service": {"name": SERVICE},
            # One key for the service and the sidecar: a customer gets one pseudonym on both paths.
            "processing": {"pseudonym_key": secrets.token_hex(16)},
            "alerting": {
                "alertmanager_url": f"http://127.0.0.1:{ports['alertmanager']}",
                "slack_webhook": self.sink.webhook_url,
            },
        }
        path = data / "otel-monitoring.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)  # it holds the pseudonym key
        return path

    def _write_collector_config(self, data: Path, ports: Mapping[str, int]) -> Path:
        config = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{ports['otlp']}"}}}},
            "processors": {
                "memory_limiter": None,
                "sanitize": None,
                "cardinality": None,
                "batch": {"timeout": "100ms"},
            },
            "exporters": {"prometheus": {"endpoint": f"127.0.0.1:{ports['sidecar']}"}},
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{ports['health']}"}},
            "service": {
                "extensions": ["health_check"],
                "pipelines": {
                    "metrics": {
                        "receivers": ["otlp"],
                        "processors": ["memory_limiter", "sanitize", "cardinality", "batch"],
                        "exporters": ["prometheus"],
                    }
                },
            },
        }
        path = data / "collector.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def _run_batch(self, database: str) -> int:
        assert self.data_dir is not None and self.pushgateway_url is not None
        log_file = self.data_dir / "logs" / "batch-job.log"
        with log_file.open("ab") as log:
            completed = subprocess.run(
                [self._python, "-m", "otel_monitoring.demo.batch", "--database", database,
                 "--pushgateway", self.pushgateway_url],
                cwd=self.data_dir, env=self._child_environment(self.data_dir / "otel-monitoring.yaml"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=60, check=False,
                start_new_session=True,  # a terminal's Ctrl-C is the demo's to handle, not the job's
            )  # fmt: skip
        at = self.traffic.elapsed() if self.traffic is not None else 0.0
        self.batch_runs.append((at, completed.returncode))
        return completed.returncode

    def _stop_batch_loop(self) -> None:
        self._stop_batch.set()
        if self._batch_thread is not None:
            self._batch_thread.join(70)  # a run in progress finishes (its own timeout is 60 s)

    def _batch_loop(self, database: str) -> None:
        # First run a few seconds in, so the report has rows; then every `batch_every` seconds.
        wait = 5.0
        while not self._stop_batch.wait(wait):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run_batch(database)
            wait = self._batch_every or 30.0
