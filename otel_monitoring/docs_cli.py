"""``otel-monitoring metrics catalog`` and ``otel-monitoring lint``: the documented metrics, and the check of names.

    $ otel-monitoring metrics catalog --format markdown > docs/metrics.md
    $ otel-monitoring lint --metrics-url http://127.0.0.1:8000/metrics
    $ otel-monitoring lint --app myservice.main:app

``lint`` exits 1 when it finds something (one line per finding on stdout), 0 when not, 2 on bad input.
``add_commands(subparsers)`` adds both commands to the CLI's parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from otel_monitoring._cli_common import EXIT_FAILURE, PROG, usage_error

if TYPE_CHECKING:
    from otel_monitoring._cli_common import Subparsers

__all__ = ["add_commands"]


def add_commands(subparsers: Subparsers) -> None:
    """Add ``metrics catalog`` and ``lint`` to the CLI's subparsers."""
    metrics = subparsers.add_parser(
        "metrics",
        help="the catalog of every metric the product emits",
        description="The metrics catalog, collected from the code that emits each metric (docs/metrics.md).",
    )
    actions = metrics.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    catalog = actions.add_parser(
        "catalog",
        help="print the metrics catalog",
        description="Print every metric the product can emit: name, type, unit, labels, description and the "
        "Prometheus name. docs/metrics.md is this command's markdown output.",
    )
    catalog.add_argument("--format", dest="catalog_format", choices=("markdown", "json"), default="markdown")
    catalog.set_defaults(func=_catalog)

    lint = subparsers.add_parser(
        "lint",
        help="flag metric names that break the naming guidelines, and undocumented metrics",
        description="Check metric names against docs/naming.md (snake_case, base units, unit suffixes, _total only "
        "on counters, no _count/_sum/_bucket on other types, no unsanitized high-cardinality labels) and flag "
        "metrics that are neither in the catalog nor described by HELP text. One line per finding; exit 1 "
        "when something is found, 0 when not, 2 on bad input.",
    )
    source = lint.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--app",
        metavar="MODULE[:ATTR]",
        help="a MetricsRegistry, an ASGI app serving /metrics (scraped in-process), or a function returning one; "
        "without ATTR, what importing MODULE declared",
    )
    source.add_argument("--metrics-url", metavar="URL", help="scrape this URL once")
    source.add_argument("--file", metavar="FILE", help="a Prometheus text or OpenMetrics exposition ('-': stdin)")
    lint.set_defaults(func=_lint)


def _catalog(args: argparse.Namespace) -> int:
    from otel_monitoring.catalog import build_catalog, render

    sys.stdout.write(render(build_catalog(), args.catalog_format))
    return 0


def _read_file(path: str) -> str:
    from otel_monitoring.lint import LintInputError

    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise LintInputError(f"--file {path}: {getattr(error, 'strerror', None) or error}") from None


def _lint(args: argparse.Namespace) -> int:
    from otel_monitoring.lint import (
        LintInputError,
        families_from_app,
        families_from_exposition,
        fetch_exposition,
        lint_families,
    )

    try:
        if args.app is not None:
            families = families_from_app(args.app, search_path=os.getcwd())
        elif args.metrics_url is not None:
            families = families_from_exposition(fetch_exposition(args.metrics_url))
        else:
            families = families_from_exposition(_read_file(args.file))
    except LintInputError as error:
        return usage_error(str(error))
    findings = lint_families(families)
    for finding in findings:
        print(finding)
    print(f"{PROG} lint: {len(families)} metrics checked, {len(findings)} findings", file=sys.stderr)
    return EXIT_FAILURE if findings else 0
