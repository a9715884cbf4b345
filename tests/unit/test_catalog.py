"""The metrics catalog: built from the components themselves, committed as docs/metrics.md, and named as the
exporters name what they expose."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from otel_monitoring import business
from otel_monitoring.asgi import HTTPServerMetricsMiddleware
from otel_monitoring.catalog import Catalog, build_catalog, render, render_json, render_markdown
from otel_monitoring.collectors.cache import CacheMetrics
from otel_monitoring.collectors.container import ContainerMetricsCollector, KubernetesMetricsCollector
from otel_monitoring.collectors.system import PROCESS_GROUPS, SystemMetricsCollector
from otel_monitoring.docs_cli import add_commands
from otel_monitoring.exporter import render_exposition
from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import KubernetesConfig, load_settings
from otel_monitoring.sidecar.config import load_collector_config
from otel_monitoring.sidecar.service import CollectorService
from otel_monitoring.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[2]
METRICS_MD = ROOT / "docs" / "metrics.md"
CGROUP_V2 = Path(__file__).parent / "testdata" / "cgroup" / "v2"
KEY = {"OTEL_MONITORING_PSEUDONYM_KEY": "unit-test-pseudonym-key-0123456789"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog()


def test_committed_docs_metrics_md_is_the_catalog_output(catalog: Catalog) -> None:
    assert METRICS_MD.read_text(encoding="utf-8") == render_markdown(catalog), (
        "docs/metrics.md is out of date; regenerate it with: "
        "otel-monitoring metrics catalog --format markdown > docs/metrics.md"
    )


def test_the_catalog_is_the_same_when_built_twice(catalog: Catalog) -> None:
    assert build_catalog() == catalog


def test_every_instrument_the_system_collector_registers_on_this_host_is_catalogued(catalog: Catalog) -> None:
    # The real psutil and /proc here, the sample host in the catalog: the names must agree.
    collector = SystemMetricsCollector(MeterProvider(), PROCESS_GROUPS)
    names = {entry.name for entry in catalog.entries}
    assert collector.instrument_names
    assert set(collector.instrument_names) - names == set()


def test_container_and_kubernetes_instruments_from_a_real_cgroup_tree_are_catalogued(catalog: Catalog) -> None:
    container = ContainerMetricsCollector(
        MeterProvider(),
        root=CGROUP_V2 / "sys/fs/cgroup",
        proc_self_cgroup=CGROUP_V2 / "proc_self_cgroup",
    )
    pod = KubernetesConfig(cpu_request_millicores=1, cpu_limit_millicores=2, memory_request=3, memory_limit=4)
    kubernetes = KubernetesMetricsCollector(MeterProvider(), pod)
    by_name = {entry.name: entry for entry in catalog.entries}
    for name in container.instrument_names:
        assert by_name[name].component == "container (cgroup)"
    for name in kubernetes.instrument_names:
        assert by_name[name].component == "Kubernetes (downward API)"
    assert container.instrument_names and kubernetes.instrument_names


def _served_exposition() -> str:
    """A service recording through the middleware, a cache and the business API, scraped from the embedded
    exporter; system metrics off so the check is about the components recorded here."""
    environ = {**KEY, "OTEL_MONITORING_SYSTEM_METRICS": "none"}
    registry = MetricsRegistry()
    telemetry = Telemetry(load_settings(environ=environ), registry, start_exporters=False)
    try:
        app = Starlette(routes=[Route("/items/{item_id}", lambda request: PlainTextResponse("ok"))])
        asgi = HTTPServerMetricsMiddleware(app, registry=registry, buckets=(0.1, 1.0), excluded_paths=())

        async def request() -> None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as client:
                assert (await client.get("/items/7")).status_code == 200

        asyncio.run(request())  # httpx's sync client cannot drive an ASGI app
        CacheMetrics("items", registry).hit()
        business.record_generation(
            client_id="customer-9", model="gpt-4o", provider="openai", input_tokens=10, output_tokens=5,
            content_type="article", duration=0.5, cost=0.01, registry=registry,
        )  # fmt: skip
        business.record_satisfaction(4, client_id="customer-9", channel="web", registry=registry)
        business.record_usage(client_id="customer-9", feature="upscale", units=2, registry=registry)
        body, _ = render_exposition(telemetry.prometheus_registry, None, None)
        return body.decode()
    finally:
        telemetry.shutdown()


def _family_names(exposition: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(exposition):
        if family.samples:
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_every_metric_the_embedded_exporter_exposes_is_catalogued_under_the_name_it_exposes(catalog: Catalog) -> None:
    exposed = _family_names(_served_exposition()) - {"target_info"}
    assert {"http_server_request_duration_seconds", "otel_monitoring_business_cost_USD_total"} <= exposed
    assert exposed - catalog.prometheus_names() == set()


def test_the_sidecar_own_metrics_are_catalogued_as_the_sidecar_exposes_them(catalog: Catalog) -> None:
    settings = load_settings(environ=KEY)
    service = CollectorService(load_collector_config(None, environ={}), settings=settings)
    exposed = {
        f"{f.name}_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(service.render_own_metrics())
    }
    sidecar = {entry.prometheus_name for entry in catalog.entries if entry.component == "collector sidecar"}
    assert sidecar == exposed
    assert any(name.startswith("otelcol_") for name in sidecar)


def test_histograms_expose_bucket_count_and_sum(catalog: Catalog) -> None:
    entry = catalog.get("http.server.request.duration")
    assert entry.exposed_sample_names() == tuple(f"{entry.prometheus_name}{s}" for s in ("_bucket", "_count", "_sum"))


def test_json_lists_the_same_metrics_as_markdown(catalog: Catalog) -> None:
    listed = json.loads(render_json(catalog))
    markdown = render_markdown(catalog)
    assert len(listed) == len(catalog.entries)
    for item in listed:
        assert f"`{item['prometheus_name']}` ({item['prometheus_type']})" in markdown


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="valid: json, markdown"):
        render(Catalog(()), "yaml")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
        status = args.func(args)
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_metrics_catalog_command_writes_markdown_by_default_and_json_on_request(
    catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_cli(["metrics", "catalog"], capsys)
    assert status == 0 and out == render_markdown(catalog)
    status, out, _ = run_cli(["metrics", "catalog", "--format", "json"], capsys)
    assert status == 0 and len(json.loads(out)) == len(catalog.entries)
    status, _, err = run_cli(["metrics", "catalog", "--format", "yaml"], capsys)
    assert status == 2 and "invalid choice" in err


def documented_variables(page: Path, declared: set[str]) -> set[str]:
    """Variables in the first column of a page's tables; ``/ `_PORT``` after a full name abbreviates one that
    shares its prefix (``OTEL_EXPORTER_PROMETHEUS_HOST`` / ``_PORT``)."""
    documented: set[str] = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        tokens = re.findall(r"`([A-Z_][A-Z0-9_]*)`", line.split("|")[1])
        full = [token for token in tokens if not token.startswith("_")]
        documented.update(full)
        for short in (token for token in tokens if token.startswith("_")):
            for name in full:
                cuts = [i for i, char in enumerate(name) if char == "_"] + [len(name)]
                documented.update({name[:cut] + short for cut in cuts} & declared)
    return documented


def test_every_variable_settings_declares_is_documented() -> None:
    from otel_monitoring import settings as settings_module

    declared = {name for leaf in settings_module._LEAVES.values() for name in leaf.env.names}
    documented = set()
    for page in ("settings.md", "configuration.md"):
        documented |= documented_variables(ROOT / "docs" / page, declared)
    assert declared - documented == set(), "add these variables to docs/settings.md"
    assert documented - declared == {settings_module.CONFIG_FILE_ENV}, "documented variables settings.py lacks"


def test_docs_readme_lists_every_page() -> None:
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)]+\.md)\)", index))
    pages = {page.name for page in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages - linked == set(), "add these pages to docs/README.md"
    assert linked - pages == set(), "docs/README.md links pages that do not exist"
