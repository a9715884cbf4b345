"""Every metric the built-in rule pack reads is one the product really exposes: names are collected from real
expositions (the embedded exporter of an instrumented service, the in-process pipeline with a container cgroup and
a cardinality overflow, the collector sidecar, and Debian's Pushgateway after a push), never from a list.

A rule over a misspelled metric is valid PromQL and silently never fires; this is the test that catches it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from prometheus_client.parser import text_string_to_metric_families

from otel_monitoring.rules.pack import builtin_groups
from tests.integration.test_zero_code_collectors import INSTRUMENT, serve
from tests.sidecar_support import send_as_worker, write_sidecar_config
from tests.support import ROOT, free_port, running

PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")
CGROUP_V2 = ROOT / "tests" / "unit" / "testdata" / "cgroup" / "v2"
# Series Prometheus writes itself on every scrape, not found in any exposition.
PROMETHEUS_OWN = {"up"}

pytestmark = [
    pytest.mark.skipif(not Path(INSTRUMENT).exists(), reason="opentelemetry-instrument is not installed"),
    pytest.mark.skipif(not PUSHGATEWAY.exists(), reason="apt-get install -y prometheus-pushgateway"),
]

_KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # a string
    r"|\{[^}]*\}"  # label matchers
    r"|\[[^\]]*\]"  # a range
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
    r"|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*"  # numbers and durations
    # an aggregation may carry its label list before its argument: sum by (job) (...)
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<call>\s*(?:(?:by|without)\s*\([^)]*\)\s*)?\()?"
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    names = set()
    for match in _TOKEN.finditer(expr):
        name = match.group("name")
        if name and not match.group("call") and name not in _KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_read_from_selectors_and_not_from_functions_labels_or_durations() -> None:
    expr = 'sum by (job, le) (rate(a_bucket{x="y{z}"}[5m] offset 1h)) / on (job) group_left b_total > 0.5 and c'
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def sample_names(exposition: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def embedded_service_names(tmp_path: Path) -> set[str]:
    """opentelemetry-instrument'ed FastAPI service: HTTP server and client, database, cache, business, system."""
    with serve(tmp_path) as (base, metrics_url), httpx.Client(base_url=base) as client:
        item = client.post("/items", json={"name": "a", "owner": "b"}).json()["id"]
        assert client.get(f"/items/{item}").status_code == 200
        assert client.get(f"/upstream/{item}").json() == {"status": 200}
        generation = {"client_id": "c-1", "model": "gpt-4o", "provider": "openai"}
        assert client.post("/generate", json={**generation, "input_tokens": 10, "output_tokens": 5}).status_code == 200
        return sample_names(httpx.get(metrics_url).text)


IN_PROCESS = """
import json, sys
from otel_monitoring.collectors.container import ContainerMetricsCollector
from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import load_settings
from otel_monitoring.telemetry import Telemetry

settings = load_settings(environ={"OTEL_MONITORING_PROCESSORS": json.dumps({"cardinality": {"limit": 3}})})
telemetry = Telemetry(settings, MetricsRegistry(), start_exporters=False)
tree = sys.argv[1]
ContainerMetricsCollector(
    telemetry.meter_provider, root=tree + "/sys/fs/cgroup", proc_self_cgroup=tree + "/proc_self_cgroup"
)
counter = telemetry.meter_provider.get_meter("t").create_counter("burst")
for value in range(10):  # past the limit of 3 attribute sets: the processor merges the rest
    counter.add(1, {"k": str(value)})
render_exposition(telemetry.prometheus_registry, None, None)  # the pipeline counts its own metrics here
print(render_exposition(telemetry.prometheus_registry, None, None)[0].decode())
"""


def in_process_names() -> set[str]:
    """The embedded pipeline in a container (a cgroup v2 tree) with a metric past its cardinality limit."""
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(CGROUP_V2)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return sample_names(result.stdout)


def sidecar_names(tmp_path: Path) -> set[str]:
    ports = {"otlp": free_port(), "prometheus": free_port(), "health": free_port()}
    config = write_sidecar_config(
        tmp_path / "collector.yaml", otlp=ports["otlp"], prometheus=ports["prometheus"], health=ports["health"]
    )
    argv = [sys.executable, "-m", "otel_monitoring", "collector", "--config", str(config)]
    env = {"OTEL_MONITORING_PSEUDONYM_KEY": "rule-pack-pseudonym-key-0123456789"}
    with running(argv, f"http://127.0.0.1:{ports['health']}/", env=env):
        exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{ports['otlp']}/v1/metrics")
        send_as_worker(exporter, "worker-1", [1], {"content.type": "article"})
        return sample_names(httpx.get(f"http://127.0.0.1:{ports['prometheus']}/metrics", timeout=5).text)


PUSH_JOB = """
import sys
from otel_monitoring import config, exporter, metrics
config.configure_exporter(push_gateway=sys.argv[1], job_name="rule-pack")
metrics.counter("rule_pack_rows_total", "Rows").inc()
assert exporter.push()
"""


@pytest.fixture
def pushgateway() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    argv = [str(PUSHGATEWAY), f"--web.listen-address={address}", "--persistence.file="]
    with running(argv, f"http://{address}/-/ready"):
        yield f"http://{address}"


def pushgateway_names(url: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PUSH_JOB, url], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return sample_names(httpx.get(f"{url}/metrics").text)


def test_every_metric_the_rule_pack_reads_is_exposed_by_the_product(tmp_path: Path, pushgateway: str) -> None:
    exposed = (
        embedded_service_names(tmp_path) | in_process_names() | sidecar_names(tmp_path) | pushgateway_names(pushgateway)
    )
    groups = builtin_groups()
    recorded = {rule.record for group in groups for rule in group.recording_rules()}
    read = {
        group.name: set().union(*(metric_names(rule.to_rule()["expr"]) for rule in group.rules)) for group in groups
    }
    assert all(read.values()), read  # every group reads something: the extraction works
    missing = {group: sorted(names - exposed - recorded - PROMETHEUS_OWN) for group, names in read.items()}
    assert {group: names for group, names in missing.items() if names} == {}, json.dumps(sorted(exposed))
