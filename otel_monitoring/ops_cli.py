"""``otel-monitoring doctor``, ``backup`` and ``restore``: operating the monitoring stack.

    $ otel-monitoring doctor                       # every component, a table; exit 1 if something is wrong
    $ otel-monitoring doctor --only prometheus,sidecar --json
    $ otel-monitoring backup --out monitoring-backup.tar.gz
    $ otel-monitoring restore --from monitoring-backup.tar.gz --to restored/

URLs and credentials come from the settings (docs/settings.md). ``add_commands(subparsers)`` adds the three
commands to the CLI's parser. Bad input exits 2 with one line on stderr naming what is wrong.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from otel_monitoring._cli_common import (
    EXIT_FAILURE,
    config_option,
    failure,
    load_command_settings,
    usage_error,
)

if TYPE_CHECKING:
    from otel_monitoring._cli_common import Subparsers

__all__ = ["add_commands"]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 (got {text!r})") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0 (got {text!r})")
    return value


def _components(text: str) -> list[str]:
    from otel_monitoring.doctor import COMPONENTS

    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name components (valid: {', '.join(COMPONENTS)})")
    for name in names:
        if name not in COMPONENTS:
            raise argparse.ArgumentTypeError(f"unknown component {name!r} (valid: {', '.join(COMPONENTS)})")
    return list(dict.fromkeys(names))


def add_commands(subparsers: Subparsers) -> None:
    """Add ``doctor``, ``backup`` and ``restore`` to the CLI's subparsers."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check Prometheus, Alertmanager, Grafana, Pushgateway and the sidecar; explain each problem",
        description="Check the health of every component, that targets are up, rules load and evaluate, "
        "Alertmanager is connected and samples are recent; print the likely cause and fix of each failure. "
        "Exit 0 when everything checked is healthy, 1 when something is wrong, 2 on bad input. "
        "See docs/doctor.md.",
        parents=[config_option()],
    )
    doctor.add_argument(
        "--only",
        type=_components,
        metavar="LIST",
        help="comma-separated components to check (prometheus, alertmanager, grafana, pushgateway, sidecar); "
        "a component named here fails rather than being skipped when it does not answer",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument(
        "--timeout", type=_positive_seconds, default=2.0, metavar="SECONDS", help="per request (default: 2)"
    )
    doctor.add_argument(
        "--max-sample-age",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="newest sample older than this is a failure (default: 120)",
    )
    doctor.set_defaults(func=_doctor)

    backup = subparsers.add_parser(
        "backup",
        help="archive Prometheus config and rules, Alertmanager config, dashboards and settings",
        description="Write one tar.gz with a manifest (versions, time, sha256 of every file): Prometheus's "
        "config and rules, Alertmanager's config, Grafana's dashboards and the settings, secrets masked. Live "
        "from the servers when they answer, else rendered from code; --prometheus-config, --rules, "
        "--alertmanager-config and --dashboards take files instead. See docs/backup.md.",
        parents=[config_option()],
    )
    backup.add_argument("--out", metavar="FILE", required=True, help="archive to write (.tar.gz)")
    backup.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    backup.add_argument("--prometheus-config", metavar="FILE", help="take prometheus.yml from this file")
    backup.add_argument("--rules", metavar="DIR", help="take rule files (*.yml, *.yaml) from this directory")
    backup.add_argument("--alertmanager-config", metavar="FILE", help="take alertmanager.yml from this file")
    backup.add_argument("--dashboards", metavar="DIR", help="take dashboard JSON files from this directory")
    backup.add_argument(
        "--timeout", type=_positive_seconds, default=5.0, metavar="SECONDS", help="per request (default: 5)"
    )
    backup.set_defaults(func=_backup)

    restore = subparsers.add_parser(
        "restore",
        help="verify a backup archive and write its files into a directory",
        description="Check every file of a backup against the manifest's sha256, then write them under --to. "
        "Existing files are not overwritten without --force. With --push-dashboards, dashboards also go to "
        "Grafana (GRAFANA_URL, GRAFANA_API_KEY).",
        parents=[config_option()],
    )
    restore.add_argument("--from", dest="archive", metavar="FILE", required=True, help="backup archive")
    restore.add_argument("--to", metavar="DIR", default=".", help="directory to write into (default: .)")
    restore.add_argument("--force", action="store_true", help="overwrite files that exist")
    restore.add_argument("--verify-only", action="store_true", help="check the archive, write nothing")
    restore.add_argument("--push-dashboards", action="store_true", help="also create or update them in Grafana")
    restore.add_argument(
        "--folder", metavar="NAME", help="Grafana folder for --push-dashboards (default: otel-monitoring)"
    )
    restore.set_defaults(func=_restore)


def _doctor(args: argparse.Namespace) -> int:
    from otel_monitoring.doctor import run_doctor

    settings = load_command_settings(args)
    report = run_doctor(settings, only=args.only, timeout=args.timeout, max_sample_age=args.max_sample_age)
    sys.stdout.write(report.to_json() + "\n" if args.json else report.render_text())
    return 0 if report.ok else EXIT_FAILURE


def _backup(args: argparse.Namespace) -> int:
    from otel_monitoring.backup import BackupError, BackupSources, create_backup

    settings = load_command_settings(args)
    sources = BackupSources(
        prometheus_config=args.prometheus_config,
        rules_dir=args.rules,
        alertmanager_config=args.alertmanager_config,
        dashboards_dir=args.dashboards,
    )
    try:
        manifest = create_backup(settings, args.out, sources=sources, overwrite=args.force, timeout=args.timeout)
    except BackupError as error:
        return usage_error(str(error))
    for line in manifest.summary_lines():
        print(line)
    print(f"wrote {args.out} ({len(manifest.files)} files)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from otel_monitoring.backup import BackupError, push_dashboards, restore_backup

    if args.verify_only and args.push_dashboards:
        return usage_error("--verify-only and --push-dashboards cannot be combined (--verify-only pushes nothing)")
    # Settings first: a bad config must stop the push before any file is written.
    settings = load_command_settings(args) if args.push_dashboards else None
    try:
        restored = restore_backup(args.archive, args.to, overwrite=args.force, verify_only=args.verify_only)
    except BackupError as error:
        return usage_error(str(error))
    if args.verify_only:
        print(f"{args.archive}: {len(restored.manifest.files)} files, every checksum matches")
        return 0
    print(f"restored {len(restored.written)} files into {args.to} (checksums verified)")
    if settings is not None:
        try:
            pushed = push_dashboards(settings, restored.dashboards, folder=args.folder)
        except BackupError as error:
            return failure(str(error))
        print(f"pushed {pushed} of {len(restored.dashboards)} dashboards to {settings.grafana.url} (others unchanged)")
    return 0
