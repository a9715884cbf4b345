"""The ``otel-monitoring`` command line.

Each command is added by one ``_add_<name>_command(subparsers)`` function, listed in ``_COMMANDS``, that sets
``func`` on its parser; ``func(args) -> int`` returns the exit status. Commands load settings with
:func:`load_command_settings`, which is strict: a bad setting raises :class:`SettingsError`, and :func:`main`
turns it into one line on stderr and exit status 2.

    $ otel-monitoring --config monitoring.yaml config show
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

from otel_monitoring._cli_common import EXIT_USAGE, PROG, config_option, load_command_settings
from otel_monitoring.alerting_cli import add_commands as _add_alerting_commands
from otel_monitoring.dashboards_cli import add_commands as _add_dashboards_commands
from otel_monitoring.deploy_cli import add_commands as _add_deploy_commands
from otel_monitoring.docs_cli import add_commands as _add_docs_commands
from otel_monitoring.ops_cli import add_commands as _add_ops_commands
from otel_monitoring.rules_cli import add_commands as _add_rules_commands
from otel_monitoring.settings import SettingsError, render_settings
from processors import PipelineConfigError

__all__ = ["load_command_settings", "main", "make_parser"]

if TYPE_CHECKING:
    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def _add_config_command(subparsers: _Subparsers) -> None:
    config = subparsers.add_parser(
        "config",
        help="inspect settings",
        description="Inspect the effective settings.",
        parents=[config_option(top_level=False)],
    )
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print the effective settings as YAML, secrets masked",
        description="Print the effective settings (defaults < config file < environment) as YAML, secrets masked.",
        parents=[config_option(top_level=False)],
    )
    show.add_argument(
        "--sources", action="store_true", help="add a comment saying where each non-default value came from"
    )
    show.set_defaults(func=_config_show)


def _config_show(args: argparse.Namespace) -> int:
    settings = load_command_settings(args)
    sys.stdout.write(render_settings(settings, sources=args.sources))
    return 0


def _add_demo_command(subparsers: _Subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the sample service with the whole monitoring stack and show it live",
        description="Run the instrumented sample service, the collector sidecar and (when installed) Debian's "
        "Prometheus, Alertmanager and Pushgateway on 127.0.0.1, drive traffic with a failure episode and show "
        "requests per second, p95 latency, error rate, costs per customer and alerts live (docs/demo.md). Stops "
        "on Ctrl-C or after --duration and leaves nothing running.",
        parents=[config_option(top_level=False)],
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds of traffic, start-up not counted (default: until Ctrl-C on a terminal, else 60)",
    )
    demo.add_argument("--rate", type=float, default=20.0, help="requests per second to send (default: 20)")
    demo.add_argument("--port", type=int, default=0, help="port of the sample service (default: a free one)")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    load_command_settings(args)  # fail fast on bad settings; the demo's stack then runs on settings of its own
    if args.duration is not None and not args.duration > 0:
        print(f"{PROG}: error: --duration: must be a number of seconds > 0 (got {args.duration:g})", file=sys.stderr)
        return EXIT_USAGE
    if not args.rate > 0:
        print(f"{PROG}: error: --rate: must be requests per second > 0 (got {args.rate:g})", file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= args.port <= 65535:
        print(f"{PROG}: error: --port: must be from 0 (a free one) to 65535 (got {args.port})", file=sys.stderr)
        return EXIT_USAGE
    from otel_monitoring.demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate, service_port=args.port)


def _add_collector_command(subparsers: _Subparsers) -> None:
    collector = subparsers.add_parser(
        "collector",
        help="run the collector sidecar, or check its config",
        description="Run the collector sidecar (docs/sidecar.md): receive OTLP from the workers, run the "
        "processors and export, until SIGTERM or SIGINT. Without --config it runs the embedded default config.",
    )
    # Its own dest: the top-level --config is the settings file (the pseudonym key), this one the sidecar's config.
    collector.add_argument(
        "--config", dest="collector_config", metavar="FILE", default=None, help="sidecar config file (YAML)"
    )
    collector.set_defaults(func=_collector_run)
    actions = collector.add_subparsers(dest="collector_command", metavar="ACTION")
    validate = actions.add_parser(
        "validate",
        help="check a sidecar config file without starting anything",
        description="Load a sidecar config file as the sidecar would (${env:VAR} expanded, every reference "
        "checked) and print a one-line summary; exit 2 with one line naming the key if it is wrong.",
    )
    # Its own dest: the top-level --config is the settings file, this one the sidecar's config.
    validate.add_argument(
        "--config", dest="collector_config", metavar="FILE", required=True, help="sidecar config file (YAML)"
    )
    validate.set_defaults(func=_collector_validate)


def _collector_run(args: argparse.Namespace) -> int:
    import logging

    from otel_monitoring import config
    from otel_monitoring.sidecar.config import CollectorConfigError, load_collector_config
    from otel_monitoring.sidecar.service import CollectorService

    load_command_settings(args)  # fail fast on bad settings; they carry the pseudonym key
    try:
        collector = load_collector_config(args.collector_config, environ=getattr(args, "environ", None))
    except CollectorConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # The sidecar is a program, not a library in a host: it owns its log output.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for warning in collector.warnings:
        logging.getLogger("otel_monitoring.sidecar").warning("%s", warning)
    try:
        service = CollectorService(collector, settings=config.reload_settings(getattr(args, "config", None)))
        return service.run()
    except CollectorConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _collector_validate(args: argparse.Namespace) -> int:
    from otel_monitoring.sidecar.config import CollectorConfigError, load_collector_config

    try:
        collector = load_collector_config(args.collector_config, environ=getattr(args, "environ", None))
    except CollectorConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for warning in collector.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(f"{args.collector_config}: valid ({collector.summary()})")
    return 0


# One entry per command, in the order `--help` lists them.
_COMMANDS: tuple[Callable[[_Subparsers], None], ...] = (
    _add_alerting_commands,
    _add_collector_command,
    _add_config_command,
    _add_dashboards_commands,
    _add_demo_command,
    _add_deploy_commands,
    _add_docs_commands,
    _add_ops_commands,
    _add_rules_commands,
)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Monitoring for Python web services on OpenTelemetry.",
        parents=[config_option(top_level=True)],
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI and return its exit status; ``environ`` replaces ``os.environ`` (for tests)."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # argparse exits on --help and on usage errors; the caller decides whether to exit the process.
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        return EXIT_USAGE
    args.environ = environ
    try:
        status: int = args.func(args)
    except (SettingsError, PipelineConfigError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return status
