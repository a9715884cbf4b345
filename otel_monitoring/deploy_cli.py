"""``otel-monitoring deploy``: render the deployable stack from settings, and the two jobs the stack runs at start.

    $ otel-monitoring --config deploy/settings.yaml deploy render --out deploy
    $ otel-monitoring deploy web-config --username admin --password-file /run/secrets/p --out web.yml
    $ otel-monitoring deploy grafana-org --url http://grafana:3000 --name AIAgency --username admin --password-file F

``render`` writes ``compose/`` and ``kubernetes/`` under ``--out`` (docs/deploy.md); secrets are never written,
only the names of the files and variables that hold them. ``add_commands(subparsers)`` adds the ``deploy``
command to the CLI's parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from otel_monitoring._cli_common import PROG, config_option, failure, load_command_settings, usage_error
from otel_monitoring.settings import SettingsError

if TYPE_CHECKING:
    from otel_monitoring._cli_common import Subparsers

__all__ = ["add_commands"]


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        required=True,
        help="file holding the password (a compose or Kubernetes secret); a trailing newline is ignored",
    )


def add_commands(subparsers: Subparsers) -> None:
    """Add ``deploy render``, ``deploy web-config`` and ``deploy grafana-org`` to the CLI's subparsers."""
    deploy = subparsers.add_parser(
        "deploy",
        help="render the deployable stack (compose, Kubernetes) from settings",
        description="The deployable stack (docs/deploy.md): docker compose and Kubernetes manifests with "
        "Prometheus, Alertmanager and Grafana provisioning, rendered from settings.",
        parents=[config_option()],
    )
    actions = deploy.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    render = actions.add_parser(
        "render",
        help="write compose/ and kubernetes/ from settings",
        description="Write compose/ and kubernetes/ under --out from settings: the service with its sidecar, "
        "Prometheus (rules from the rule pack, retention from prometheus.retention_days), Alertmanager (from the "
        "alerting settings, secrets as files), Pushgateway, the alert relay and Grafana. No secret is written.",
        parents=[config_option()],
    )
    render.add_argument("--out", metavar="DIR", default="deploy", help="directory to write into (default: deploy)")
    render.set_defaults(func=_render)
    web = actions.add_parser(
        "web-config",
        help="write Prometheus's web config (basic auth, bcrypt hash) from a password file",
        description="Hash the password of --password-file with bcrypt and write Prometheus's --web.config.file. "
        "The compose stack runs this at start, so no hash is ever committed.",
    )
    web.add_argument("--username", required=True)
    _password_option(web)
    web.add_argument("--out", metavar="FILE", required=True, help="the web config file to write")
    web.set_defaults(func=_web_config)
    org = actions.add_parser(
        "grafana-org",
        help="name Grafana's main organization through its HTTP API",
        description="Rename Grafana's main organization (id 1) to --name if it is named otherwise; exit 1 if "
        "Grafana cannot be reached or refuses.",
    )
    org.add_argument("--url", required=True, help="Grafana base URL")
    org.add_argument("--name", required=True, help="organization name")
    org.add_argument("--username", required=True, help="a Grafana admin")
    _password_option(org)
    org.set_defaults(func=_grafana_org)


def _render(args: argparse.Namespace) -> int:
    from otel_monitoring.alerts import AppRulesError
    from otel_monitoring.deploy import render_deploy, stale_files, write_deploy
    from otel_monitoring.rules.loading import RuleFileError

    try:
        settings = load_command_settings(args)
        rendered = render_deploy(settings)
    except (SettingsError, AppRulesError, RuleFileError, ValueError) as error:
        return usage_error(str(error))
    try:
        written = write_deploy(rendered, args.out)
    except OSError as error:
        return usage_error(f"--out {args.out}: {error.strerror or error}")
    for warning in rendered.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    for path in stale_files(rendered, args.out):
        print(f"{PROG}: warning: {Path(args.out, path)} was not rendered (left by an older render?)", file=sys.stderr)
    print(f"wrote {len(written)} files to {args.out} (compose/, kubernetes/)")
    return 0


def _read_password(path: str) -> str:
    """The password in ``path`` without its final newline; ``ValueError`` saying what is wrong with the file."""
    try:
        password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as error:
        raise ValueError(f"--password-file {path}: {error.strerror or error}") from None
    if not password:
        raise ValueError(f"--password-file {path}: the file is empty")
    return password


def _web_config(args: argparse.Namespace) -> int:
    from otel_monitoring.deploy.prometheus import hash_password, render_web_config

    try:
        password = _read_password(args.password_file)
    except ValueError as error:
        return usage_error(str(error))
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Prometheus runs as another user and must read it; a bcrypt hash is made to be stored.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(render_web_config(args.username, hash_password(password)))
    except OSError as error:
        return usage_error(f"--out {args.out}: {error.strerror or error}")
    print(f"{args.out}: written (basic auth for {args.username})")
    return 0


def _grafana_org(args: argparse.Namespace) -> int:
    from otel_monitoring.deploy.grafana import GrafanaOrgError, set_grafana_org_name

    try:
        password = _read_password(args.password_file)
    except ValueError as error:
        return usage_error(str(error))
    try:
        changed = set_grafana_org_name(args.url, args.name, username=args.username, password=password)
    except GrafanaOrgError as error:
        return failure(str(error))
    print(f"organization 1 {'renamed to' if changed else 'already named'} {args.name}")
    return 0
