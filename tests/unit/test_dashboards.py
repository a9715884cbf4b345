"""The nine dashboards as Grafana JSON: the seed's UIDs, every panel with a data source and a query, template
variables, links that resolve, Grafana's dashboard schema essentials, recording rules that exist, and the render CLI.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_monitoring import dashboards_cli
from otel_monitoring.dashboards import DASHBOARD_UIDS, TAG, build_dashboards, dashboard_specs
from otel_monitoring.dashboards.provisioning import PROVIDER_FILE, render_provider
from otel_monitoring.rules.pack import builtin_groups

SEED_UIDS = {
    "system-overview",
    "system-resources",
    "system-network",
    "app-overview",
    "app-performance",
    "app-errors",
    "business-kpis",
    "business-costs",
    "business-usage",
}
GRAFANA_11_SCHEMA_VERSION = 41
DATASOURCE_VARIABLE = "${datasource}"
# A recording rule name: level:metric:operations (Prometheus's naming practice) - at least two colons.
RECORD_NAME = re.compile(r"\b[a-z_]+:[a-zA-Z_]+:[a-zA-Z0-9_]+\b")


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return build_dashboards()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def every_panel(dashboards: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(uid, panel) for uid, dashboard in dashboards.items() for panel in panels(dashboard)]


def variable_names(dashboard: dict[str, Any]) -> set[str]:
    return {variable["name"] for variable in dashboard["templating"]["list"]}


def test_the_nine_dashboards_have_the_seeds_uids(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == SEED_UIDS
    assert set(DASHBOARD_UIDS) == SEED_UIDS
    assert all(dashboard["uid"] == uid for uid, dashboard in dashboards.items())
    assert len({dashboard["title"] for dashboard in dashboards.values()}) == len(SEED_UIDS)


def test_every_dashboard_an_alert_links_to_exists(dashboards: dict[str, dict[str, Any]]) -> None:
    linked = {
        match.group(1)
        for group in builtin_groups()
        for alert in group.alerts()
        if (match := re.search(r"/d/([\w-]+)", alert.annotations.get("dashboard_url", "")))
    }
    assert linked and linked <= set(dashboards)


def test_every_panel_reads_the_datasource_variable_and_has_a_query(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, panel in every_panel(dashboards):
        where = f"{uid}: {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_VARIABLE}, where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == DATASOURCE_VARIABLE, where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), where


def test_panel_ids_are_unique_within_a_dashboard(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), uid


def test_grid_positions_fit_the_24_columns_and_never_overlap(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        taken: dict[tuple[int, int], str] = {}
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, (uid, panel["title"])
            assert grid["x"] + grid["w"] <= 24, (uid, panel["title"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in taken, f"{uid}: {panel['title']!r} overlaps {taken[(x, y)]!r} at {(x, y)}"
                    taken[(x, y)] = panel["title"]


def test_dashboards_carry_grafanas_schema_essentials(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        assert dashboard["schemaVersion"] == GRAFANA_11_SCHEMA_VERSION, uid
        assert TAG in dashboard["tags"], uid
        assert {"time", "templating", "annotations", "panels", "links", "title", "uid"} <= set(dashboard), uid
        assert dashboard["time"] == {"from": "now-1h", "to": "now"}, uid
        rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
        assert rows and all(row["gridPos"]["w"] == 24 and row["gridPos"]["h"] == 1 for row in rows), uid
        assert json.loads(json.dumps(dashboard)) == dashboard  # plain JSON, nothing the encoder would change


def test_service_and_instance_variables_everywhere_and_route_on_request_dashboards(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for uid, dashboard in dashboards.items():
        names = variable_names(dashboard)
        assert {"datasource", "job", "instance"} <= names, uid
    for uid in ("app-performance", "app-errors"):
        assert "route" in variable_names(dashboards[uid])


def test_variables_come_from_label_values_of_real_metrics_and_chain(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        by_name = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        for name in ("job", "instance", "route"):
            if name not in by_name:
                continue
            variable = by_name[name]
            assert re.fullmatch(r"label_values\([a-z_]+(\{.*\})?, [a-z_]+\)", variable["query"]), (uid, name)
            assert variable["datasource"]["uid"] == DATASOURCE_VARIABLE
            assert variable["includeAll"] and variable["allValue"] == ".*", (uid, name)
        assert "$job" in by_name["instance"]["query"], uid  # instances of the chosen services only


def test_every_variable_a_query_uses_is_defined(dashboards: dict[str, dict[str, Any]]) -> None:
    builtin = {"__rate_interval", "__interval", "__range", "__range_s", "__range_ms"}
    for uid, dashboard in dashboards.items():
        defined = variable_names(dashboard) | builtin
        for panel in panels(dashboard):
            for target in panel["targets"]:
                used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
                assert used <= defined, (uid, panel["title"], used - defined)


def test_dashboard_links_resolve_to_existing_uids_and_keep_variables(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        targets = []
        for link in dashboard["links"]:
            assert link["includeVars"] and link["keepTime"], (uid, link["title"])
            if link["type"] == "link":
                match = re.fullmatch(r"/d/([\w-]+)", link["url"])
                assert match, link["url"]
                targets.append(match.group(1))
            else:
                assert link["tags"] == [TAG]
        assert len(targets) >= 3 and set(targets) <= set(dashboards), uid


def test_panel_data_links_point_to_existing_dashboards(dashboards: dict[str, dict[str, Any]]) -> None:
    found = 0
    for uid, panel in every_panel(dashboards):
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
            target = re.match(r"/d/([\w-]+)\?", link["url"])
            assert target and target.group(1) in dashboards, (uid, panel["title"], link["url"])
            assert "var-job=${__field.labels.job}" in link["url"]
            found += 1
    assert found


def test_alert_annotations_show_firing_alerts_but_the_watchdog(dashboards: dict[str, dict[str, Any]]) -> None:
    for uid, dashboard in dashboards.items():
        [annotation] = dashboard["annotations"]["list"]
        assert annotation["expr"] == 'ALERTS{alertstate="firing", alertname!="Watchdog"}', uid
        assert annotation["enable"] and annotation["datasource"]["uid"] == DATASOURCE_VARIABLE
        assert annotation["titleFormat"] == "{{alertname}}"


def test_recording_rule_names_in_queries_are_rules_of_the_pack(dashboards: dict[str, dict[str, Any]]) -> None:
    recorded = {rule.record for group in builtin_groups() for rule in group.recording_rules()}
    used = {
        name
        for _, panel in every_panel(dashboards)
        for target in panel["targets"]
        for name in RECORD_NAME.findall(target["expr"])
    }
    assert len(used) >= 15  # the heavy panels read recording rules
    assert used - recorded == set()


def test_histogram_quantiles_over_raw_buckets_stay_few(dashboards: dict[str, dict[str, Any]]) -> None:
    # The seed's slow dashboards: request latency percentiles must come from the recorded bucket rates.
    for uid, panel in every_panel(dashboards):
        for target in panel["targets"]:
            assert "http_server_request_duration_seconds_bucket[" not in target["expr"], (uid, panel["title"])


def test_spec_and_json_agree_on_titles_and_order() -> None:
    specs = dashboard_specs()
    assert [spec.uid for spec in specs] == list(DASHBOARD_UIDS)


def run_cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    dashboards_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            args = parser.parse_args(list(argv))
            args.environ = {}
            status = args.func(args)
        except SystemExit as exit_:
            status = int(exit_.code or 0)
    return status, out.getvalue(), err.getvalue()


def test_render_writes_one_json_per_dashboard_and_a_provider_file(tmp_path: Path) -> None:
    status, out, _ = run_cli("dashboards", "render", "--out", str(tmp_path), "--folder", "AIAgency")
    assert status == 0
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == sorted([f"{uid}.json" for uid in SEED_UIDS] + [PROVIDER_FILE])
    assert json.loads((tmp_path / "app-errors.json").read_text()) == build_dashboards()["app-errors"]
    provider = yaml.safe_load((tmp_path / PROVIDER_FILE).read_text())["providers"][0]
    assert provider["folder"] == "AIAgency" and provider["folderUid"] == "aiagency"
    assert provider["type"] == "file" and provider["options"]["path"]
    assert "9 dashboards" in out


def test_render_is_stable_across_runs(tmp_path: Path) -> None:
    run_cli("dashboards", "render", "--out", str(tmp_path / "a"))
    run_cli("dashboards", "render", "--out", str(tmp_path / "b"))
    for path in (tmp_path / "a").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_render_into_a_file_path_exits_2_naming_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err = run_cli("dashboards", "render", "--out", str(blocker / "sub"))
    assert status == 2
    assert err.startswith("otel-monitoring: error: --out ") and len(err.strip().splitlines()) == 1


def test_provider_points_at_the_given_path() -> None:
    provider = yaml.safe_load(render_provider("Ops", "/srv/dashboards"))["providers"][0]
    assert provider["options"]["path"] == "/srv/dashboards"
    assert provider["folder"] == "Ops"
