"""The deployable stack rendered from settings: docker compose, Kubernetes manifests, and the Prometheus,
Alertmanager and Grafana provisioning (docs/deploy.md). ``otel-monitoring deploy render`` writes them.

>>> from otel_monitoring.settings import Settings
>>> files = render_deploy(Settings()).files
>>> "--storage.tsdb.retention.time=15d" in files["compose/compose.yaml"]
True
"""

from otel_monitoring.deploy.grafana import GrafanaOrgError, set_grafana_org_name
from otel_monitoring.deploy.prometheus import hash_password, render_web_config
from otel_monitoring.deploy.render import GENERATED_DIRS, RenderedDeploy, render_deploy, stale_files, write_deploy

__all__ = [
    "GENERATED_DIRS",
    "GrafanaOrgError",
    "RenderedDeploy",
    "hash_password",
    "render_deploy",
    "render_web_config",
    "set_grafana_org_name",
    "stale_files",
    "write_deploy",
]
