"""The alerting commands of the ``otel-monitoring`` CLI: ``alertmanager render``, ``alert-relay`` and ``alerts``.

:func:`add_commands` registers them on the CLI's subparsers, like the other ``_add_<name>_command`` functions
of :mod:`otel_monitoring.cli`. Bad input prints one line on stderr and exits 2; an unreachable Alertmanager or
archive exits 1.

    $ otel-monitoring alertmanager render --out /etc/alertmanager/alertmanager.yml
    $ otel-monitoring alert-relay
    $ otel-monitoring alerts list
    $ otel-monitoring alerts silence --matcher alertname=HighLatency --duration 2h --comment "deploying a fix"
    $ otel-monitoring alerts history --since 24h --status firing
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_monitoring._cli_common import config_option, failure, load_command_settings, usage_error
from otel_monitoring.rules.model import parse_duration
from otel_monitoring.settings import Settings, SettingsError, hide_url_password

if TYPE_CHECKING:
    from otel_monitoring._cli_common import Subparsers

__all__ = ["add_commands", "parse_duration", "parse_matcher"]

_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


def parse_matcher(text: str) -> dict[str, Any]:
    """``name=value`` (or ``!=``, ``=~``, ``!~``) as an Alertmanager API v2 matcher; quotes around the value go.

    >>> parse_matcher('severity=~"warning|info"')
    {'name': 'severity', 'value': 'warning|info', 'isRegex': True, 'isEqual': True}
    """
    match = _MATCHER.fullmatch(text)
    if match is None or not match[3]:
        raise ValueError(f"{text!r} is not a matcher such as alertname=HighLatency")
    name, operator, value = match[1], match[2], match[3]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return {"name": name, "value": value, "isRegex": "~" in operator, "isEqual": not operator.startswith("!")}


def _describe(error: BaseException) -> str:
    """``Type: message`` on one line, URL passwords masked: httpx and SQLAlchemy messages quote the URL, and
    SQLAlchemy's run on over several lines."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {hide_url_password(lines[0])}" if lines else type(error).__name__


# --- alertmanager render --------------------------------------------------------------------------------------


def _add_alertmanager_command(subparsers: Subparsers) -> None:
    alertmanager = subparsers.add_parser(
        "alertmanager",
        help="render an Alertmanager config from settings",
        description="Alertmanager configuration rendered from the alerting settings (docs/alertmanager.md).",
        parents=[config_option()],
    )
    actions = alertmanager.add_subparsers(dest="alertmanager_command", metavar="ACTION", required=True)
    render = actions.add_parser(
        "render",
        help="write alertmanager.yml and its notification templates",
        description="Write the Alertmanager config to --out and otel-monitoring.tmpl beside it: routes by "
        "severity, grouping, inhibition, Slack/email/PagerDuty/SMS receivers for the channels set in settings.",
        parents=[config_option()],
    )
    render.add_argument("--out", metavar="FILE", required=True, help="the config file to write")
    render.add_argument(
        "--secrets-dir",
        metavar="DIR",
        help="write secrets (Slack webhook, PagerDuty key, SMTP password, relay token) as files here and "
        "reference them from the config instead of inlining them",
    )
    render.add_argument("--group-wait", metavar="DURATION", default="30s", help="default: 30s")
    render.add_argument("--group-interval", metavar="DURATION", default="5m", help="default: 5m")
    render.add_argument("--repeat-interval", metavar="DURATION", default="4h", help="warnings; default: 4h")
    render.set_defaults(func=_alertmanager_render)


def _alertmanager_render(args: argparse.Namespace) -> int:
    from otel_monitoring.alertmanager_config import RouteTiming, write_alertmanager_config

    settings = load_command_settings(args)
    try:
        timing = RouteTiming(
            group_wait=args.group_wait, group_interval=args.group_interval, repeat_interval=args.repeat_interval
        )
    except SettingsError as error:
        return usage_error(f"--{error.key.replace('_', '-')}: {error.problem} (got {error.got})")
    try:
        rendered = write_alertmanager_config(settings, args.out, timing=timing, secrets_dir=args.secrets_dir)
    except SettingsError as error:
        return usage_error(str(error))
    except OSError as error:
        return failure(f"--out {args.out}: {error.strerror or error}")
    print(f"{args.out}: written; templates in {Path(args.out).parent / 'otel-monitoring.tmpl'}")
    print(rendered.summary())
    return 0


# --- alert-relay ----------------------------------------------------------------------------------------------


def _add_alert_relay_command(subparsers: Subparsers) -> None:
    relay = subparsers.add_parser(
        "alert-relay",
        help="receive Alertmanager webhooks: archive them and send SMS",
        description="Serve the alert relay (docs/alert-relay.md): POST /webhook archives, POST /webhook/sms "
        "archives and sends SMS, GET /healthz. Runs until SIGTERM or SIGINT.",
        parents=[config_option()],
    )
    relay.add_argument("--listen", metavar="HOST:PORT", help="default: alerting.relay_listen_address")
    relay.set_defaults(func=_alert_relay)


def _alert_relay(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from otel_monitoring.alert_relay import create_alert_relay_app, exposure_warning

    settings = load_command_settings(args)
    listen = args.listen or settings.alerting.relay_listen_address
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return usage_error(f"--listen: must be host:port (got {listen!r})")
    # A program, not a library in a host: it owns its log output, as the collector sidecar does.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = settings.alerting.relay_token
    warning = exposure_warning(host, int(port), None if token is None else token.get_secret_value())
    if warning is not None:
        logging.getLogger("otel_monitoring.alert_relay").warning("%s", warning)
    app = create_alert_relay_app(settings)
    uvicorn.run(app, host=host.strip("[]"), port=int(port), log_level="warning", server_header=False)
    return 0


# --- alerts list / silence / history ---------------------------------------------------------------------------


def _add_alerts_command(subparsers: Subparsers) -> None:
    alerts = subparsers.add_parser(
        "alerts",
        help="list and silence alerts in Alertmanager, read the alert history",
        description="Talk to Alertmanager at ALERTMANAGER_URL (API v2), or read the alert relay's archive.",
        parents=[config_option()],
    )
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list", help="alerts Alertmanager holds now", description="Alerts Alertmanager holds now, newest first.",
        parents=[config_option()],
    )  # fmt: skip
    listing.add_argument("--filter", action="append", default=[], metavar="MATCHER", help="e.g. severity=critical")
    listing.add_argument("--json", action="store_true", help="print Alertmanager's JSON")
    listing.set_defaults(func=_alerts_list)

    silence = actions.add_parser(
        "silence",
        help="silence alerts for a while",
        description="Create a silence in Alertmanager for the alerts matching every --matcher.",
        parents=[config_option()],
    )
    silence.add_argument(
        "--matcher", action="append", required=True, metavar="MATCHER", help="name=value, !=, =~ or !~; repeatable"
    )
    silence.add_argument("--duration", required=True, metavar="DURATION", help="e.g. 2h")
    silence.add_argument("--comment", required=True, help="why (Alertmanager requires it)")
    silence.add_argument("--author", default="otel-monitoring", help="createdBy (default: otel-monitoring)")
    silence.set_defaults(func=_alerts_silence)

    history = actions.add_parser(
        "history",
        help="alerts the relay archived",
        description="Alerts the alert relay archived (alerting.history_database_url), oldest first.",
        parents=[config_option()],
    )
    history.add_argument("--since", default="24h", metavar="DURATION", help="default: 24h")
    history.add_argument("--status", choices=("firing", "resolved"), help="only firing or only resolved")
    history.add_argument("--limit", type=int, default=None, help="at most this many rows")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(func=_alerts_history)


def _alertmanager_api(settings: Settings) -> str:
    return settings.alerting.alertmanager_url.rstrip("/") + "/api/v2"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _alerts_list(args: argparse.Namespace) -> int:
    import httpx

    settings = load_command_settings(args)
    for item in args.filter:
        try:
            parse_matcher(item)
        except ValueError as error:
            return usage_error(f"--filter: {error}")
    url = _alertmanager_api(settings) + "/alerts"
    try:
        response = httpx.get(url, params={"filter": args.filter}, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as error:
        return failure(f"Alertmanager at {hide_url_password(settings.alerting.alertmanager_url)}: {_describe(error)}")
    alerts: list[dict[str, Any]] = sorted(response.json(), key=lambda alert: alert["startsAt"], reverse=True)
    if args.json:
        print(json.dumps(alerts, indent=2))
        return 0
    if not alerts:
        print("no alerts")
        return 0
    rows = [("STARTED", "SEVERITY", "ALERTNAME", "SERVICE", "STATE", "SUMMARY")]
    for alert in alerts:
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        rows.append(
            (
                alert["startsAt"][:19].replace("T", " "),
                labels.get("severity", ""),
                labels.get("alertname", ""),
                labels.get("service") or labels.get("job", ""),
                alert.get("status", {}).get("state", ""),
                annotations.get("summary", ""),
            )
        )
    print(_table(rows))
    return 0


def _alerts_silence(args: argparse.Namespace) -> int:
    import httpx

    settings = load_command_settings(args)
    try:
        matchers = [parse_matcher(item) for item in args.matcher]
    except ValueError as error:
        return usage_error(f"--matcher: {error}")
    try:
        duration = parse_duration(args.duration)
    except ValueError as error:
        return usage_error(f"--duration: {error}")
    if not args.comment.strip():
        return usage_error("--comment: must not be empty")
    starts = datetime.now(UTC)
    silence = {
        "matchers": matchers,
        "startsAt": starts.isoformat(),
        "endsAt": (starts + duration).isoformat(),
        "createdBy": args.author,
        "comment": args.comment,
    }
    try:
        response = httpx.post(_alertmanager_api(settings) + "/silences", json=silence, timeout=10.0)
    except httpx.HTTPError as error:
        return failure(f"Alertmanager at {hide_url_password(settings.alerting.alertmanager_url)}: {_describe(error)}")
    if response.status_code == 400:
        return usage_error(f"Alertmanager refused the silence: {response.text.strip()}")
    if not response.is_success:
        return failure(f"Alertmanager answered {response.status_code}: {response.text.strip()[:200]}")
    print(f"silence {response.json()['silenceID']} until {silence['endsAt']}")
    return 0


def _alerts_history(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from otel_monitoring.alert_relay.history import AlertHistory

    settings = load_command_settings(args)
    try:
        since = parse_duration(args.since)
    except ValueError as error:
        return usage_error(f"--since: {error}")
    if args.limit is not None and args.limit < 1:
        return usage_error(f"--limit: must be >= 1 (got {args.limit})")
    database_url = settings.alerting.history_database_url
    shown = hide_url_password(database_url)
    try:
        url = make_url(database_url)
        in_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        # Reading must not leave an empty database behind where the relay has never run.
        if in_file and not Path(str(url.database)).exists():
            return failure(f"no alert history at {url.database} (alerting.history_database_url): has the relay run?")
        history = AlertHistory(database_url)
    except (ArgumentError, ValueError, ImportError) as error:
        # A URL that does not parse, an unknown dialect or a driver that is not installed: the setting is wrong.
        return usage_error(f"alerting.history_database_url: {_describe(error)} (got {shown})")
    except SQLAlchemyError as error:
        return failure(f"alert history at {shown}: {_describe(error)}")
    try:
        entries = history.query(since=datetime.now(UTC) - since, status=args.status, limit=args.limit)
    except SQLAlchemyError as error:
        return failure(f"alert history at {shown}: {_describe(error)}")
    finally:
        history.close()
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_json()))
        return 0
    if not entries:
        print(f"no alerts archived in the last {args.since}")
        return 0
    rows = [("RECEIVED (UTC)", "STATUS", "SEVERITY", "ALERTNAME", "SERVICE", "SUMMARY")]
    for entry in entries:
        rows.append(
            (
                entry.received_at.strftime("%Y-%m-%d %H:%M:%S"),
                entry.status,
                entry.severity,
                entry.alertname,
                entry.labels.get("service") or entry.labels.get("job", ""),
                entry.annotations.get("summary", ""),
            )
        )
    print(_table(rows))
    return 0


def add_commands(subparsers: Subparsers) -> None:
    """Register ``alertmanager``, ``alert-relay`` and ``alerts`` on the CLI's subparsers.

    >>> parser = argparse.ArgumentParser(prog="otel-monitoring")
    >>> add_commands(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["alerts", "history", "--since", "2h"]).since
    '2h'
    """
    _add_alertmanager_command(subparsers)
    _add_alert_relay_command(subparsers)
    _add_alerts_command(subparsers)
