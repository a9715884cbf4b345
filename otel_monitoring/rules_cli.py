"""``otel-monitoring rules render`` and ``rules check``: the built-in rule pack plus an application's own rules,
as Prometheus rule files or Kubernetes PrometheusRule objects, checked with promtool.

    $ otel-monitoring rules render --out deploy/prometheus/rules --app myservice.alerting:registry
    $ otel-monitoring rules render --out k8s/ --format prometheusrule --namespace monitoring
    $ otel-monitoring rules check deploy/prometheus/rules

Without ``--app`` the application comes from the ``alerting.app`` setting (``OTEL_MONITORING_ALERTS_APP``), and
without ``--rules`` the files from ``alerting.rule_files`` (``OTEL_MONITORING_ALERT_RULE_FILES``).
``add_commands(subparsers)`` adds the ``rules`` command to the CLI's parser.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_monitoring._cli_common import EXIT_FAILURE, config_option, load_command_settings, usage_error

__all__ = ["add_commands", "collect_groups"]

if TYPE_CHECKING:
    from otel_monitoring._cli_common import Subparsers
    from otel_monitoring.rules.model import RuleGroup


def _source_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--app",
        metavar="MODULE[:ATTR]",
        action="append",
        default=[],
        help="the application's alerts and SLOs: an AlertRegistry, a list, or a callable returning them; "
        "without ATTR, what importing MODULE registered (repeatable; default: alerting.app, "
        "$OTEL_MONITORING_ALERTS_APP)",
    )
    parent.add_argument(
        "--rules",
        metavar="FILE",
        action="append",
        default=[],
        help="a YAML rule file (groups, or a bare list of '- alert:' rules) to include (repeatable; default: "
        "alerting.rule_files, $OTEL_MONITORING_ALERT_RULE_FILES)",
    )
    parent.add_argument("--no-builtin", action="store_true", help="leave out the built-in rule pack")
    return parent


def add_commands(subparsers: Subparsers) -> None:
    """Add ``rules render`` and ``rules check`` to the CLI's subparsers."""
    rules = subparsers.add_parser(
        "rules",
        help="render or check Prometheus alerting and recording rules",
        description="The built-in rule pack (docs/alerts.md), the application's alerts and SLOs, and YAML rule "
        "files, rendered as Prometheus rule files or PrometheusRule objects, and checked with promtool.",
        parents=[config_option()],
    )
    actions = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    render = actions.add_parser(
        "render",
        help="write one rule file per group into a directory",
        description="Write one file per rule group into --out: <group>.rules.yml for Prometheus's rule_files, "
        "or <group>.prometheusrule.yaml (monitoring.coreos.com/v1) for the Prometheus Operator.",
        parents=[config_option(), _source_options()],
    )
    render.add_argument("--out", metavar="DIR", required=True, help="directory to write into (created if missing)")
    render.add_argument("--format", dest="rule_format", choices=("prometheus", "prometheusrule"), default="prometheus")
    render.add_argument("--namespace", help="metadata.namespace of PrometheusRule objects")
    render.set_defaults(func=_render)
    check = actions.add_parser(
        "check",
        help="run promtool check rules",
        description="Run 'promtool check rules' on the YAML files of DIR (PrometheusRule files included), or, "
        "without DIR, on what 'rules render' would write.",
        parents=[config_option(), _source_options()],
    )
    check.add_argument("directory", nargs="?", metavar="DIR", help="directory of rule files")
    check.set_defaults(func=_check)


def collect_groups(
    settings: Any,
    apps: Sequence[str] | None = None,
    rule_files: Sequence[str] | None = None,
    *,
    builtin: bool = True,
    search_path: str | None = None,
) -> list[RuleGroup]:
    """The groups ``rules render`` writes: the built-in pack (objectives from ``settings``), each app and each
    YAML rule file. ``apps`` and ``rule_files`` left as ``None`` are read from ``settings.alerting.app`` and
    ``settings.alerting.rule_files``; an error in one of those names the setting and where it came from.
    Raises ``AppRulesError``, ``RuleFileError`` or ``ValueError`` (a group name used twice).

    >>> from otel_monitoring.settings import Settings
    >>> groups = collect_groups(Settings(), ["otel_monitoring.rules.pack:builtin_groups"], builtin=False)
    >>> groups[0].name
    'otel-monitoring-http'
    """
    from otel_monitoring.alerts import AppRulesError, resolve_apps
    from otel_monitoring.rules.loading import RuleFileError, load_rule_file
    from otel_monitoring.rules.pack import builtin_groups

    groups = list(builtin_groups(settings)) if builtin else []
    apps_setting = _from_settings(settings, "alerting.app") if apps is None else None
    try:
        # All at once: plain modules share the process-wide registry, which must be read only once.
        groups.extend(resolve_apps(settings.alerting.app if apps is None else apps, search_path=search_path))
    except AppRulesError as error:
        if apps_setting is None:
            raise
        raise AppRulesError(f"{apps_setting}: {str(error).removeprefix('--app ')}") from None
    files_setting = _from_settings(settings, "alerting.rule_files") if rule_files is None else None
    for path in settings.alerting.rule_files if rule_files is None else rule_files:
        try:
            groups.extend(load_rule_file(path))
        except RuleFileError as error:
            if files_setting is None:
                raise
            raise RuleFileError(error.key, error.message, f"{files_setting}: {error.source}") from None
    names = [group.name for group in groups]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(f"rule group {name!r} is defined twice (rename one of them)")
    return groups


def _from_settings(settings: Any, path: str) -> str:
    # "alerting.app (from environment variable OTEL_MONITORING_ALERTS_APP)": what to change, and where.
    return f"{path} (from {settings.source_of(path)})"


def _groups_or_error(args: argparse.Namespace) -> list[RuleGroup] | int:
    from otel_monitoring.alerts import AppRulesError
    from otel_monitoring.rules.loading import RuleFileError

    settings = load_command_settings(args)
    try:
        return collect_groups(
            settings,
            args.app or None,  # none given: alerting.app
            args.rules or None,  # none given: alerting.rule_files
            builtin=not args.no_builtin,
            search_path=os.getcwd(),
        )
    except (AppRulesError, RuleFileError, ValueError) as error:
        return usage_error(str(error))


def _render(args: argparse.Namespace) -> int:
    from otel_monitoring.rules.render import write_rule_files

    groups = _groups_or_error(args)
    if isinstance(groups, int):
        return groups
    try:
        written = write_rule_files(groups, args.out, rule_format=args.rule_format, namespace=args.namespace)
    except OSError as error:
        return usage_error(f"--out {args.out}: {error.strerror or error}")
    rules = sum(len(group.rules) for group in groups)
    print(f"wrote {len(written)} files ({rules} rules) to {args.out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from otel_monitoring.rules.check import PromtoolNotFoundError, check_rules, rule_files_in
    from otel_monitoring.rules.render import write_rule_files

    try:
        if args.directory is not None:
            directory = Path(args.directory)
            if not directory.is_dir():
                return usage_error(f"{directory}: not a directory")
            files = rule_files_in(directory)
            if not files:
                return usage_error(f"{directory}: no .yml or .yaml files")
            result = check_rules(files)
        else:
            groups = _groups_or_error(args)
            if isinstance(groups, int):
                return groups
            with tempfile.TemporaryDirectory(prefix="otel-monitoring-rules-") as scratch:
                result = check_rules(write_rule_files(groups, scratch))
    except PromtoolNotFoundError as error:
        return usage_error(str(error))
    print(result.output)
    return 0 if result.ok else EXIT_FAILURE
