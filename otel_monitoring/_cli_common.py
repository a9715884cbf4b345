"""What every command module of the ``otel-monitoring`` CLI shares: the program name, exit statuses, the
``--config`` option, strict settings loading and the one-line error.

Command modules (``rules_cli``, ``alerting_cli``...) add their commands with ``add_commands(subparsers)``;
:mod:`otel_monitoring.cli` builds the parser. Conventions: bad input (arguments, settings) prints one line on
stderr and exits :data:`EXIT_USAGE`; a failure of something the command talks to (a server, a database,
promtool's verdict) exits :data:`EXIT_FAILURE`.

>>> parser = argparse.ArgumentParser(parents=[config_option()])
>>> parser.parse_args(["--config", "monitoring.yaml"]).config
'monitoring.yaml'
>>> "config" in vars(parser.parse_args([]))  # absent: a value given before the command is kept
False
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from otel_monitoring.metrics import MetricsRegistry
from otel_monitoring.settings import CONFIG_FILE_ENV, Settings, load_settings
from processors import ProcessorContext, build_pipeline

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``add_commands(subparsers)`` receives."""

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "PROG",
    "config_option",
    "failure",
    "load_command_settings",
    "usage_error",
]

PROG = "otel-monitoring"
EXIT_FAILURE = 1
"""Something the command talks to failed, or a check it ran did not pass."""
EXIT_USAGE = 2
"""argparse's status for bad usage; bad configuration is a usage error too."""


def config_option(*, top_level: bool = False) -> argparse.ArgumentParser:
    """A parent parser with ``--config FILE``, accepted before or after the command.

    On a command (``top_level=False``) its default is ``SUPPRESS``, so that an absent option there does not
    overwrite a value given before the command.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        metavar="FILE",
        default=None if top_level else argparse.SUPPRESS,
        help=f"YAML settings file (default: ${CONFIG_FILE_ENV})",
    )
    return parent


def load_command_settings(args: argparse.Namespace) -> Settings:
    """Settings for a command: ``--config`` (else ``$OTEL_MONITORING_CONFIG``) and the environment, strictly.

    ``args.environ``, when set, replaces ``os.environ`` (tests). The processing pipeline is built once too, so
    a bad processor config fails here, before anything starts. Raises ``SettingsError`` or
    ``PipelineConfigError``; :func:`otel_monitoring.cli.main` turns them into one line and :data:`EXIT_USAGE`.
    """
    environ: Mapping[str, str] | None = getattr(args, "environ", None)
    settings = load_settings(getattr(args, "config", None), environ=environ, strict=True)
    processing = settings.processing
    # A stand-in key: this build only checks the config, and must not warn that no key is set.
    check = ProcessorContext(registry=MetricsRegistry(), secrets={"pseudonym_key": secrets.token_hex(16)})
    build_pipeline(processing.processors, processing.pipeline, check).shutdown()
    return settings


def usage_error(message: str) -> int:
    """Print ``otel-monitoring: error: <message>`` on stderr; return :data:`EXIT_USAGE`."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def failure(message: str) -> int:
    """Print ``otel-monitoring: error: <message>`` on stderr; return :data:`EXIT_FAILURE`."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_FAILURE
