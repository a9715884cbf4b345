"""``otel-monitoring dashboards render`` and ``dashboards push``: the nine Grafana dashboards as provisioning files,
or sent to Grafana's HTTP API (``GRAFANA_URL``, ``GRAFANA_API_KEY``) into a folder, idempotently.

    $ otel-monitoring dashboards render --out deploy/grafana/dashboards
    $ GRAFANA_URL=https://grafana.example GRAFANA_API_KEY=glsa_... otel-monitoring dashboards push --folder AIAgency

``add_commands(subparsers)`` adds the ``dashboards`` command to the CLI's parser.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from otel_monitoring._cli_common import config_option, failure, load_command_settings, usage_error

if TYPE_CHECKING:
    from otel_monitoring._cli_common import Subparsers

__all__ = ["add_commands"]


def _folder_option() -> argparse.ArgumentParser:
    from otel_monitoring.dashboards.provisioning import DEFAULT_FOLDER

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--folder", metavar="NAME", default=DEFAULT_FOLDER, help=f"Grafana folder (default: {DEFAULT_FOLDER})"
    )
    return parent


def add_commands(subparsers: Subparsers) -> None:
    """Add ``dashboards render`` and ``dashboards push`` to the CLI's subparsers."""
    from otel_monitoring.dashboards.provisioning import DEFAULT_PROVISIONING_PATH

    dashboards = subparsers.add_parser(
        "dashboards",
        help="render or push the Grafana dashboards",
        description="The nine otel-monitoring dashboards (docs/dashboards.md) as Grafana JSON.",
        parents=[config_option()],
    )
    actions = dashboards.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    render = actions.add_parser(
        "render",
        help="write one JSON file per dashboard and a provisioning provider file",
        description="Write <uid>.json for every dashboard and dashboards.yaml (a Grafana dashboard provider "
        "reading them) into --out.",
        parents=[config_option(), _folder_option()],
    )
    render.add_argument("--out", metavar="DIR", required=True, help="directory to write into (created if missing)")
    render.add_argument(
        "--provisioning-path",
        metavar="PATH",
        default=DEFAULT_PROVISIONING_PATH,
        help=f"where Grafana reads the JSON files, written into dashboards.yaml (default: {DEFAULT_PROVISIONING_PATH})",
    )
    render.set_defaults(func=_render)
    push = actions.add_parser(
        "push",
        help="create or update the dashboards in Grafana (GRAFANA_URL, GRAFANA_API_KEY)",
        description="Create the folder if missing, then save each dashboard that differs from Grafana's copy "
        "(POST /api/dashboards/db, overwrite). A dashboard already up to date is reported unchanged.",
        parents=[config_option(), _folder_option()],
    )
    push.set_defaults(func=_push)


def _render(args: argparse.Namespace) -> int:
    from otel_monitoring.dashboards import build_dashboards
    from otel_monitoring.dashboards.provisioning import write_dashboards

    if not args.folder.strip():
        return usage_error("--folder: must not be empty")
    dashboards = build_dashboards()
    try:
        written = write_dashboards(args.out, dashboards, folder=args.folder, provisioning_path=args.provisioning_path)
    except OSError as error:
        return usage_error(f"--out {args.out}: {error.strerror or error}")
    panels = sum(len([p for p in d["panels"] if p["type"] != "row"]) for d in dashboards.values())
    print(f"wrote {len(written)} files ({len(dashboards)} dashboards, {panels} panels) to {args.out}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from otel_monitoring.dashboards import build_dashboards
    from otel_monitoring.dashboards.grafana import GrafanaClient, GrafanaError, push_dashboards
    from otel_monitoring.dashboards.provisioning import folder_uid

    if not args.folder.strip():
        return usage_error("--folder: must not be empty")
    settings = load_command_settings(args)
    if settings.grafana.api_key is None:
        return usage_error("GRAFANA_API_KEY (grafana.api_key) is not set: a Grafana service-account token is needed")
    with GrafanaClient(str(settings.grafana.url), settings.grafana.api_key.get_secret_value()) as client:
        try:
            results = push_dashboards(client, build_dashboards(), folder_uid(args.folder), args.folder)
        except GrafanaError as error:
            return failure(str(error))
    for result in results:
        version = f" (version {result.version})" if result.version is not None else ""
        print(f"{result.status:<9} {result.uid}{version}")
    counts = {status: sum(r.status == status for r in results) for status in ("created", "updated", "unchanged")}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    print(f"{summary} in folder {args.folder!r} at {client.url}")
    return 0
