"""The alert relay's ASGI app: Alertmanager webhooks in, history rows and SMS out.

=====================  ==================================================================================
``POST /webhook``      archive the notification's alerts
``POST /webhook/sms``  archive, then send them by SMS (de-duplicated, rate-limited)
``GET /healthz``       ``200`` with counters
=====================  ==================================================================================

Answers: ``200`` with what was done; ``400`` naming the bad field; ``401`` without the bearer token when one is
configured; ``413`` for a body over :data:`MAX_BODY_BYTES`; ``500`` when the archive cannot be written and
``502`` when the SMS gateway fails, so that Alertmanager retries (the archive and the SMS de-duplication keep a
retry from writing or texting twice what was already done).

>>> from otel_monitoring.alert_relay.history import AlertHistory
>>> app = make_alert_relay_app(AlertHistory("sqlite://"))  # serve with uvicorn
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otel_monitoring.alert_relay.history import AlertHistory
from otel_monitoring.alert_relay.sms import SMSDeliveryError, SMSNotifier, TwilioSMSGateway
from otel_monitoring.alert_relay.webhook import PayloadError, parse_notification
from otel_monitoring.settings import Settings

__all__ = ["MAX_BODY_BYTES", "RelayStats", "create_alert_relay_app", "exposure_warning", "make_alert_relay_app"]

_logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""Largest webhook body accepted (1 MiB). Alertmanager's notifications are a few KiB per alert; the cap keeps a
client from making the relay buffer whatever it sends."""


def exposure_warning(host: str, port: int, token: str | None) -> str | None:
    """The warning to log when the relay listens beyond this machine without a bearer token, else ``None``.

    >>> exposure_warning("127.0.0.1", 9095, None) is None, exposure_warning("0.0.0.0", 9095, "s3cret") is None
    (True, True)
    """
    if token is not None or _is_loopback(host):
        return None
    return (
        f"alert relay: listening on {host}:{port} without alerting.relay_token "
        "(OTEL_MONITORING_ALERT_RELAY_TOKEN): anyone who can reach it can write the alert history and send SMS"
    )


def _is_loopback(host: str) -> bool:
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes: on the declared length first, then while streaming (chunked)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BodyTooLarge
    return bytes(body)


@dataclass(slots=True)
class RelayStats:
    """Counters shown by ``/healthz``."""

    notifications: int = 0
    alerts_archived: int = 0
    rejected: int = 0
    archive_failures: int = 0
    sms_sent: int = 0
    sms_deduplicated: int = 0
    sms_held: int = 0
    sms_failures: int = 0
    purged: int = 0


async def _every(seconds: float, action: Callable[[], Awaitable[Any]], what: str) -> None:
    while True:
        try:
            await action()
        except Exception:
            # A timer must outlive one failure (database briefly down, gateway timeout).
            _logger.exception("alert relay: %s failed", what)
        await asyncio.sleep(seconds)


def make_alert_relay_app(
    history: AlertHistory,
    notifier: SMSNotifier | None = None,
    *,
    token: str | None = None,
    retention: timedelta = timedelta(days=90),
    retention_interval_seconds: float = 3600.0,
    flush_interval_seconds: float = 5.0,
    close_on_shutdown: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """The relay app around an archive and an optional SMS notifier (``None``: ``/webhook/sms`` only archives,
    with an error logged, since SMS was asked for but is not configured).

    While the app runs, a timer purges the archive beyond ``retention`` every ``retention_interval_seconds``
    (first at start-up) and another sends the rate limit's held summary every ``flush_interval_seconds``.
    ``close_on_shutdown`` closes the archive and the SMS client when the app stops. ``app.state.stats`` holds
    the :class:`RelayStats`.
    """
    stats = RelayStats()
    expected = None if token is None else f"Bearer {token}".encode()

    async def receive(request: Request, sms: bool) -> JSONResponse:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                stats.rejected += 1
                return JSONResponse({"error": "authorization: a valid bearer token is required"}, status_code=401)
        try:
            notification = parse_notification(await _read_body(request, max_body_bytes))
        except _BodyTooLarge:
            stats.rejected += 1
            _logger.warning("alert relay: rejected a webhook body over %d bytes", max_body_bytes)
            return JSONResponse({"error": f"body: larger than the limit of {max_body_bytes} bytes"}, status_code=413)
        except PayloadError as error:
            stats.rejected += 1
            _logger.warning("alert relay: rejected a webhook: %s", error)
            return JSONResponse({"error": str(error), "field": error.field}, status_code=400)
        stats.notifications += 1
        try:
            archived = await run_in_threadpool(history.record, notification)
        except Exception:
            stats.archive_failures += 1
            _logger.exception("alert relay: cannot archive a notification for %s", notification.receiver)
            return JSONResponse({"error": "archive: cannot write the notification"}, status_code=500)
        stats.alerts_archived += archived
        body: dict[str, Any] = {"archived": archived}
        if sms:
            if notifier is None:
                _logger.error("alert relay: SMS asked for on /webhook/sms but alerting.sms_* are not configured")
                body["sms"] = "not configured"
            else:
                try:
                    outcome = await notifier.notify(notification.alerts)
                except SMSDeliveryError as error:
                    stats.sms_failures += 1
                    return JSONResponse({"archived": archived, "error": f"sms: {error}"}, status_code=502)
                stats.sms_sent += outcome.sent
                stats.sms_deduplicated += outcome.deduplicated
                stats.sms_held += outcome.held
                body["sms"] = asdict(outcome)
        return JSONResponse(body)

    async def webhook(request: Request) -> JSONResponse:
        return await receive(request, sms=False)

    async def webhook_sms(request: Request) -> JSONResponse:
        return await receive(request, sms=True)

    async def healthz(request: Request) -> JSONResponse:
        held = 0 if notifier is None else notifier.held
        return JSONResponse({"status": "ok", "sms": notifier is not None, "sms_waiting": held, **asdict(stats)})

    async def purge() -> None:
        deleted = await run_in_threadpool(history.purge, retention)
        stats.purged += deleted
        if deleted:
            _logger.info("alert relay: deleted %d archived alert(s) older than %s", deleted, retention)

    async def flush() -> None:
        if notifier is not None:
            await notifier.flush()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_every(retention_interval_seconds, purge, "retention"))]
        if notifier is not None:
            tasks.append(asyncio.create_task(_every(flush_interval_seconds, flush, "SMS summary")))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if close_on_shutdown:
                if notifier is not None:
                    await notifier.aclose()
                history.close()

    app = Starlette(
        routes=[
            Route("/webhook", webhook, methods=["POST"]),
            Route("/webhook/sms", webhook_sms, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.stats = stats
    return app


def create_alert_relay_app(settings: Settings) -> Starlette:
    """The relay as ``alerting`` settings describe it: the archive at ``history_database_url``, SMS when the
    account, sender and recipients are all set, the bearer token if ``relay_token`` is set."""
    alerting = settings.alerting
    notifier = None
    if alerting.sms_to and alerting.sms_account_sid and alerting.sms_auth_token and alerting.sms_from:
        gateway = TwilioSMSGateway(
            alerting.sms_url, alerting.sms_account_sid, alerting.sms_auth_token.get_secret_value(), alerting.sms_from
        )
        notifier = SMSNotifier(
            gateway,
            alerting.sms_to,
            rate_per_minute=alerting.sms_rate_limit_per_minute,
            dedupe_seconds=alerting.sms_dedupe_seconds,
        )
    return make_alert_relay_app(
        AlertHistory(alerting.history_database_url),
        notifier,
        token=None if alerting.relay_token is None else alerting.relay_token.get_secret_value(),
        retention=timedelta(days=alerting.history_retention_days),
        close_on_shutdown=True,
    )
