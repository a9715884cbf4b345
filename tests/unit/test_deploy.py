"""``otel-monitoring deploy render``: the committed deploy/ is what the render writes; no secret reaches a rendered
file; compose matches the compose-spec schema, the Kubernetes manifests the Kubernetes schemas (and a schema of the
essential fields of the Prometheus Operator's CRDs), and the pieces refer to each other consistently.

promtool and amtool checks are in tests/integration/test_deploy_checks.py.
"""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from otel_monitoring import deploy_cli
from otel_monitoring._dashboard_uids import DASHBOARD_UIDS
from otel_monitoring.config import SettingsStore
from otel_monitoring.dashboards import build_dashboards
from otel_monitoring.dashboards.provisioning import DEFAULT_FOLDER, dashboard_provider, folder_uid
from otel_monitoring.deploy import GENERATED_DIRS, render_deploy, render_web_config
from otel_monitoring.deploy.compose import GRAFANA_OAUTH_VARIABLES, PASSWORD_VARIABLES
from otel_monitoring.deploy.prometheus import hash_password
from otel_monitoring.deploy.stack import BIND_ADDRESS_VARIABLE, GRAFANA_ORG_NAME, PORTS, SIDECAR_CONTAINER
from otel_monitoring.settings import KubernetesConfig, Settings, load_settings
from otel_monitoring.sidecar.config import load_collector_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STACK_SETTINGS = DEPLOY / "settings.yaml"
RENDER_COMMAND = "otel-monitoring --config deploy/settings.yaml deploy render --out deploy"


def run_cli(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    parser.add_argument("--config", default=None)
    deploy_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.environ = {} if environ is None else environ
    status: int = args.func(args)
    return status


def tree(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for directory in GENERATED_DIRS
        for path in sorted((root / directory).rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def stack() -> dict[str, str]:
    return render_deploy(load_settings(STACK_SETTINGS, environ={}, strict=True)).files


def load(files: Mapping[str, str], path: str) -> Any:
    return yaml.safe_load(files[path])


# --- The committed files ---------------------------------------------------------------------------------------


def test_committed_deploy_files_are_what_deploy_render_writes(tmp_path: Path) -> None:
    assert run_cli(["--config", str(STACK_SETTINGS), "deploy", "render", "--out", str(tmp_path)]) == 0
    rendered, committed = tree(tmp_path), tree(DEPLOY)
    missing = sorted(set(rendered) - set(committed))
    extra = sorted(set(committed) - set(rendered))
    changed = sorted(path for path in set(rendered) & set(committed) if rendered[path] != committed[path])
    assert not (missing or extra or changed), (
        f"deploy/ is out of date (missing {missing}, not rendered any more {extra}, changed {changed}): "
        f"run `{RENDER_COMMAND}` and commit the result"
    )


def test_render_is_reproducible() -> None:
    settings = load_settings(STACK_SETTINGS, environ={}, strict=True)
    assert render_deploy(settings).files == render_deploy(settings).files


# --- Secrets -----------------------------------------------------------------------------------------------------

SECRETS = {
    "ALERT_SLACK_WEBHOOK": "https://hooks.slack.com/services/T000/B000/slack-secret-0123456789",
    "OTEL_MONITORING_SMTP_PASSWORD": "smtp-secret-0123456789",
    "OTEL_MONITORING_ALERT_PAGERDUTY_ROUTING_KEY": "pagerduty-secret-0123456789",
    "OTEL_MONITORING_ALERT_RELAY_TOKEN": "relay-secret-0123456789",
    "OTEL_MONITORING_ALERT_HEARTBEAT_URL": "https://heartbeat.example/ping/heartbeat-secret-0123456789",
    "OTEL_MONITORING_SMS_AUTH_TOKEN": "sms-secret-0123456789",
    "OTEL_MONITORING_PSEUDONYM_KEY": "pseudonym-secret-0123456789",
    "GRAFANA_API_KEY": "grafana-secret-0123456789",
    "OTEL_MONITORING_METRICS_TOKEN": "metrics-secret-0123456789",
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20otlp-secret-0123456789",
}
CHANNELS = {
    "OTEL_MONITORING_ALERT_EMAIL": "oncall@aiagency.example",
    "OTEL_MONITORING_SMTP_HOST": "smtp.aiagency.example",
    "OTEL_MONITORING_SMTP_FROM": "alerts@aiagency.example",
    "OTEL_MONITORING_SMTP_USERNAME": "alerts",
    "OTEL_MONITORING_SMS_ACCOUNT_SID": "AC0123",
    "OTEL_MONITORING_SMS_FROM": "+15550000000",
    "OTEL_MONITORING_SMS_TO": "+15551234567",
    "OTEL_MONITORING_ALERT_RELAY_URL": "http://alert-relay:9095",
}


def secret_fragments(value: str) -> list[str]:
    # The distinctive part of each value, as it would appear whole, percent-decoded or inside a URL.
    return [part for part in value.replace("%20", " ").replace("/", " ").split() if "secret" in part]


def test_no_secret_from_the_environment_reaches_a_rendered_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {**SECRETS, **CHANNELS}
    assert run_cli(["deploy", "render", "--out", str(tmp_path)], environ) == 0
    files = tree(tmp_path)
    fragments = [fragment for value in SECRETS.values() for fragment in secret_fragments(value)]
    assert len(fragments) == len(SECRETS)
    leaks = [(path, fragment) for path, text in files.items() for fragment in fragments if fragment in text]
    assert leaks == []
    # The channels are there, reading their secrets from files that compose fills from the environment.
    alertmanager = load(files, "compose/alertmanager/alertmanager.yml")
    assert alertmanager["global"]["slack_api_url_file"] == "/run/secrets/slack-webhook"
    assert alertmanager["global"]["smtp_auth_password_file"] == "/run/secrets/smtp-password"
    compose = load(files, "compose/compose.yaml")
    assert compose["secrets"]["slack-webhook"] == {"environment": "ALERT_SLACK_WEBHOOK"}
    assert compose["secrets"]["pagerduty-routing-key"] == {"environment": "OTEL_MONITORING_ALERT_PAGERDUTY_ROUTING_KEY"}
    assert set(compose["services"]["alertmanager"]["secrets"]) == {
        "slack-webhook",
        "smtp-password",
        "pagerduty-routing-key",
        "relay-token",
    }
    secret = load(files, "kubernetes/alertmanager-secret.yaml")
    kubernetes_config = yaml.safe_load(secret["stringData"]["alertmanager.yaml"])
    assert kubernetes_config["global"]["slack_api_url_file"].endswith("/otel-monitoring-alert-channels/slack-webhook")
    # The heartbeat URL cannot be a file in Alertmanager's config: it is left out, and the user is told.
    assert "heartbeat_url" in capsys.readouterr().err
    assert "webhook_configs" not in {
        key for receiver in alertmanager["receivers"] if receiver["name"] == "heartbeat" for key in receiver
    }


def test_the_relay_token_is_offered_only_when_alertmanager_was_rendered_to_send_it(stack: dict[str, str]) -> None:
    # The relay refuses requests without the token it is given (401): giving it one Alertmanager does not send
    # would stop every alert reaching it.
    variable = "OTEL_MONITORING_ALERT_RELAY_TOKEN"
    assert variable not in stack["compose/env.example"]
    assert variable not in load(stack, "compose/compose.yaml")["services"]["alert-relay"]["environment"]
    settings = load_settings(STACK_SETTINGS, environ={variable: SECRETS[variable]}, strict=True)
    files = render_deploy(settings).files
    compose = load(files, "compose/compose.yaml")
    assert compose["services"]["alertmanager"]["secrets"] == ["relay-token"]
    assert variable in compose["services"]["alert-relay"]["environment"]
    assert f"\n{variable}=\n" in files["compose/env.example"]


def test_grafana_oauth_settings_are_passed_through_by_name_only(stack: dict[str, str]) -> None:
    grafana = load(stack, "compose/compose.yaml")["services"]["grafana"]["environment"]
    assert {name: grafana[name] for name in GRAFANA_OAUTH_VARIABLES} == dict.fromkeys(GRAFANA_OAUTH_VARIABLES)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana  # only the __FILE form, from a compose secret
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"


# --- Settings flow into the files ----------------------------------------------------------------------------------


def retention_flag(settings: Settings) -> str:
    command = yaml.safe_load(render_deploy(settings).files["compose/compose.yaml"])["services"]["prometheus"]["command"]
    flags = [flag for flag in command if flag.startswith("--storage.tsdb.retention.time=")]
    assert len(flags) == 1
    return str(flags[0])


def test_prometheus_retention_comes_from_the_environment_and_from_set_metrics_retention() -> None:
    assert retention_flag(load_settings(environ={"PROMETHEUS_RETENTION_DAYS": "30"})) == (
        "--storage.tsdb.retention.time=30d"
    )
    store = SettingsStore(environ={"PROMETHEUS_RETENTION_DAYS": "30"})
    store.set_metrics_retention(days=7)  # the seed's config.set_metrics_retention: code wins over the environment
    assert retention_flag(store.get()) == "--storage.tsdb.retention.time=7d"


def test_service_name_is_the_scrape_job_and_the_kubernetes_job_label(stack: dict[str, str]) -> None:
    name = load_settings(STACK_SETTINGS, environ={}).service.name
    prometheus = load(stack, "compose/prometheus/prometheus.yml")
    sidecar_jobs = [
        job["job_name"]
        for job in prometheus["scrape_configs"]
        if job["static_configs"][0]["targets"] == [f"sidecar:{PORTS['sidecar_metrics']}"]
    ]
    assert sidecar_jobs == [name]
    service = load(stack, "kubernetes/service.yaml")
    monitor = load(stack, "kubernetes/servicemonitor.yaml")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == name


def test_a_service_name_that_is_not_a_kubernetes_name_is_made_one() -> None:
    files = render_deploy(load_settings(environ={"OTEL_SERVICE_NAME": "Checkout_API"})).files
    deployment = load(files, "kubernetes/deployment.yaml")
    assert deployment["metadata"]["name"] == "checkout-api"
    env = {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_SERVICE_NAME"] == "Checkout_API"


# --- compose -------------------------------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (dev dependency) bundles the compose-spec schema")
    text = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return schema


def compose_errors(document: Any) -> list[str]:
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)  # the schema names its draft (2020-12)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_spec_schema(stack: dict[str, str]) -> None:
    document = load(stack, "compose/compose.yaml")
    assert compose_errors(document) == []
    broken = copy.deepcopy(document)
    broken["services"]["prometheus"]["helthcheck"] = broken["services"]["prometheus"].pop("healthcheck")
    assert any("helthcheck" in error for error in compose_errors(broken))


def test_compose_services_have_health_checks_restart_policies_and_loopback_ports(stack: dict[str, str]) -> None:
    services = load(stack, "compose/compose.yaml")["services"]
    one_shot = {name for name, service in services.items() if service["restart"] in ("no", "on-failure:5")}
    assert one_shot == {"prometheus-web-config", "grafana-org"}
    for name, service in services.items():
        if name not in one_shot:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] == "CMD", name
        for port in service.get("ports", []):
            assert port.startswith(f"${{{BIND_ADDRESS_VARIABLE}:-127.0.0.1}}:"), (name, port)
    published = {int(port.rsplit(":", 1)[1]) for service in services.values() for port in service.get("ports", [])}
    assert published == {PORTS[key] for key in ("service", "prometheus", "alertmanager", "pushgateway", "grafana")}


def test_compose_references_resolve(stack: dict[str, str]) -> None:
    document = load(stack, "compose/compose.yaml")
    services = document["services"]
    for name, service in services.items():
        assert set(service.get("secrets", [])) <= set(document["secrets"]), name
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                # A bind mount of rendered files: a file or a directory that the render produced.
                relative = "compose/" + source[2:]
                assert any(path == relative or path.startswith(relative + "/") for path in stack), (name, source)
            else:
                assert source in document["volumes"], (name, source)
    assert set(PASSWORD_VARIABLES) <= set(document["secrets"])


def test_prometheus_scrapes_the_sidecar_and_alerts_to_alertmanager(stack: dict[str, str]) -> None:
    config = load(stack, "compose/prometheus/prometheus.yml")
    targets = {
        target for job in config["scrape_configs"] for group in job["static_configs"] for target in group["targets"]
    }
    assert f"sidecar:{PORTS['sidecar_metrics']}" in targets
    assert f"pushgateway:{PORTS['pushgateway']}" in targets
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"alertmanager:{PORTS['alertmanager']}"
    ]
    rule_files = [path for path in stack if path.startswith("compose/prometheus/rules/")]
    assert rule_files and all(path.endswith(".rules.yml") for path in rule_files)


def test_grafana_is_provisioned_with_prometheus_and_names_its_organization(stack: dict[str, str]) -> None:
    datasource = load(stack, "compose/grafana/provisioning/datasources/prometheus.yaml")["datasources"][0]
    assert datasource["url"] == f"http://prometheus:{PORTS['prometheus']}"
    assert datasource["basicAuth"] is True
    assert datasource["secureJsonData"]["basicAuthPassword"] == "$__file{/run/secrets/prometheus_web_password}"
    provider = load(stack, "compose/grafana/provisioning/dashboards/otel-monitoring.yaml")["providers"][0]
    mounts = load(stack, "compose/compose.yaml")["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    command = load(stack, "compose/compose.yaml")["services"]["grafana-org"]["command"]
    assert command[command.index("--name") + 1] == GRAFANA_ORG_NAME


def test_grafana_dashboards_are_the_dashboards_package_rendering(stack: dict[str, str]) -> None:
    files = {
        path.rsplit("/", 1)[1]: text for path, text in stack.items() if path.startswith("compose/grafana/dashboards/")
    }
    assert {name.removesuffix(".json") for name in files} == set(DASHBOARD_UIDS)
    built = build_dashboards()
    assert {name: json.loads(text) for name, text in files.items()} == {f"{uid}.json": built[uid] for uid in built}


def test_grafana_dashboard_provider_is_the_dashboards_package_provider_for_the_mounted_path(
    stack: dict[str, str],
) -> None:
    provider = load(stack, "compose/grafana/provisioning/dashboards/otel-monitoring.yaml")
    path = provider["providers"][0]["options"]["path"]
    assert provider == dashboard_provider(path=path)
    # The folder `dashboards push` uses, so a pushed and a provisioned copy are one dashboard.
    assert provider["providers"][0]["folderUid"] == folder_uid(DEFAULT_FOLDER)


def test_sidecar_configs_load_as_the_sidecar_reads_them(stack: dict[str, str], tmp_path: Path) -> None:
    compose_file = tmp_path / "compose-sidecar.yaml"
    compose_file.write_text(stack["compose/sidecar/sidecar.yaml"])
    configmap = load(stack, "kubernetes/sidecar-configmap.yaml")
    pod_file = tmp_path / "pod-sidecar.yaml"
    pod_file.write_text(configmap["data"]["sidecar.yaml"])
    in_compose = load_collector_config(compose_file, environ={})
    in_pod = load_collector_config(pod_file, environ={})
    # Another container in compose; the same network namespace (loopback only) in a pod.
    assert in_compose.receivers["otlp"].protocols.http.endpoint == f"0.0.0.0:{PORTS['otlp_http']}"  # type: ignore[union-attr]
    assert in_pod.receivers["otlp"].protocols.http.endpoint == f"127.0.0.1:{PORTS['otlp_http']}"  # type: ignore[union-attr]


# --- Kubernetes ----------------------------------------------------------------------------------------------------

# The essential fields of the Prometheus Operator's CRDs (monitoring.coreos.com/v1): kubernetes-validate has no
# schema for custom resources.
_CRD_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}},
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _CRD_METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {
                                    "type": "string",
                                    "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                                },
                                "scrapeTimeout": {"type": "string"},
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _CRD_METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                        "properties": {
                                            "expr": {"type": ["string", "integer"]},
                                            "for": {"type": "string"},
                                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                            "annotations": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def manifest_errors(document: dict[str, Any]) -> list[str]:
    import jsonschema

    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate==1.37.0 (dev)")
    if document["kind"] in CRD_SCHEMAS:
        validator = jsonschema.Draft7Validator(CRD_SCHEMAS[document["kind"]])
        return [error.message for error in validator.iter_errors(document)]
    try:
        kubernetes_validate.validate(document, "1.37.0", strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.path))}: {error.message}"]
    return []


def manifests(files: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    kustomization = load(files, "kubernetes/kustomization.yaml")
    return {name: load(files, f"kubernetes/{name}") for name in kustomization["resources"]}


def test_kubernetes_manifests_match_the_kubernetes_schemas(stack: dict[str, str]) -> None:
    documents = manifests(stack)
    listed = {path.removeprefix("kubernetes/") for path in stack if path.startswith("kubernetes/")}
    assert set(documents) == listed - {"kustomization.yaml"}
    kinds = {document["kind"] for document in documents.values()}
    assert kinds == {
        "Deployment",
        "ConfigMap",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "Secret",
        "NetworkPolicy",
    }
    assert {name: manifest_errors(document) for name, document in documents.items()} == {name: [] for name in documents}


def test_schema_checks_reject_a_broken_manifest(stack: dict[str, str]) -> None:
    deployment = copy.deepcopy(load(stack, "kubernetes/deployment.yaml"))
    deployment["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    assert manifest_errors(deployment) != []
    monitor = copy.deepcopy(load(stack, "kubernetes/servicemonitor.yaml"))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert manifest_errors(monitor) != []


def test_downward_api_environment_is_what_the_settings_read(stack: dict[str, str]) -> None:
    pod = load(stack, "kubernetes/deployment.yaml")["spec"]["template"]["spec"]
    app = pod["containers"][0]
    env = {item["name"]: item for item in app["env"]}
    expected = {
        names[0]
        for field in KubernetesConfig.model_fields.values()
        for names in [getattr(m, "names", None) for m in field.metadata]
        if names
    }
    assert expected <= set(env)
    assert env["K8S_CONTAINER_NAME"]["value"] == app["name"]
    for name in expected - {"K8S_POD_NAME", "K8S_NAMESPACE_NAME", "K8S_NODE_NAME", "K8S_CONTAINER_NAME"}:
        reference = env[name]["valueFrom"]["resourceFieldRef"]
        assert reference["containerName"] == app["name"], name
        assert reference.get("divisor") == ("1m" if "MILLICORES" in name else None), name
        section, which = reference["resource"].split(".")
        assert which in app["resources"][section], name  # a request or limit the container really sets


def test_sidecar_is_probed_on_its_health_check_and_serves_the_service_metrics_port(stack: dict[str, str]) -> None:
    documents = manifests(stack)
    pod = documents["deployment.yaml"]["spec"]["template"]["spec"]
    (sidecar,) = [container for container in pod["initContainers"] if container["name"] == SIDECAR_CONTAINER]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"]["port"] == PORTS["sidecar_health"]
    assert sidecar["restartPolicy"] == "Always"
    service = documents["service.yaml"]
    (metrics,) = [port for port in service["spec"]["ports"] if port["port"] == PORTS["sidecar_metrics"]]
    assert metrics["targetPort"] in {port["name"] for port in sidecar["ports"]}
    monitor = documents["servicemonitor.yaml"]
    assert monitor["spec"]["endpoints"][0]["port"] == metrics["name"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert (
        service["spec"]["selector"].items()
        <= documents["deployment.yaml"]["spec"]["template"]["metadata"]["labels"].items()
    )
    (volume,) = [volume for volume in pod["volumes"] if "configMap" in volume]
    assert volume["configMap"]["name"] == documents["sidecar-configmap.yaml"]["metadata"]["name"]


def test_prometheus_rules_are_the_rule_packs_groups(stack: dict[str, str]) -> None:
    compose_groups = sorted(
        group["name"]
        for path, text in stack.items()
        if path.startswith("compose/prometheus/rules/")
        for group in yaml.safe_load(text)["groups"]
    )
    kubernetes_groups = sorted(
        group["name"]
        for path, text in stack.items()
        if path.startswith("kubernetes/rules/")
        for group in yaml.safe_load(text)["spec"]["groups"]
    )
    assert compose_groups == kubernetes_groups
    assert "otel-monitoring-http" in compose_groups


# --- web-config and errors -----------------------------------------------------------------------------------------


def test_web_config_holds_a_bcrypt_hash_of_the_password_file(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("correct horse battery staple\n")
    out = tmp_path / "web" / "web.yml"
    argv = ["deploy", "web-config", "--username", "admin", "--password-file", str(password_file), "--out", str(out)]
    assert run_cli(argv) == 0
    text = out.read_text()
    assert "correct horse" not in text
    stored = yaml.safe_load(text)["basic_auth_users"]["admin"]
    assert bcrypt.checkpw(b"correct horse battery staple", stored.encode())
    assert not bcrypt.checkpw(b"correct horse battery staple\n", stored.encode())  # the newline is not the password


def test_render_web_config_is_the_web_config_shape() -> None:
    assert yaml.safe_load(render_web_config("admin", hash_password("x", rounds=4)))["basic_auth_users"].keys() == {
        "admin"
    }


def test_bad_settings_and_bad_paths_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["deploy", "render", "--out", str(tmp_path)], {"PROMETHEUS_RETENTION_DAYS": "zero"}) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "PROMETHEUS_RETENTION_DAYS" in error
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_cli(["deploy", "render", "--out", str(blocker)]) == 2
    assert f"--out {blocker}" in capsys.readouterr().err
    assert (
        run_cli(
            [
                "deploy",
                "web-config",
                "--username",
                "a",
                "--password-file",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "w"),
            ]
        )
        == 2
    )
    assert "--password-file" in capsys.readouterr().err
