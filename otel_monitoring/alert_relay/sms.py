"""SMS for alerts: a Twilio-compatible gateway, de-duplication and a rate limit that never drops silently.

:class:`SMSNotifier` turns the alerts of one webhook call into one SMS to every recipient. An alert already sent
to a recipient with the same fingerprint, status and start time within the de-duplication window is left out for
that recipient (Alertmanager repeats notifications, and retries them); an alert that fires again after resolving
starts anew, so it is texted again. Messages are limited by a token bucket: what the bucket refuses is held,
counted and logged, and sent as one summary message as soon as a token is free again (:meth:`SMSNotifier.flush`,
called on every notification and by the relay's timer).

>>> bucket = TokenBucket(rate_per_minute=2, clock=lambda: 0.0)
>>> bucket.take(), bucket.take(), bucket.take()
(True, True, False)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias

import httpx

from otel_monitoring.alert_relay.webhook import WebhookAlert

__all__ = [
    "SMS_MAX_CHARS",
    "SMSDeliveryError",
    "SMSGateway",
    "SMSNotifier",
    "SMSOutcome",
    "TokenBucket",
    "TwilioSMSGateway",
    "format_sms",
]

_logger = logging.getLogger(__name__)

SMS_MAX_CHARS = 1600
"""Twilio's limit on a message body; longer texts are cut with a marker."""

Clock = Callable[[], float]

_AlertKey: TypeAlias = tuple[str, str, datetime]
"""One notification-worthy state of an alert: fingerprint, status and start of its firing episode."""


def _key(alert: WebhookAlert) -> _AlertKey:
    return alert.fingerprint, alert.status, alert.starts_at


class SMSDeliveryError(RuntimeError):
    """The gateway refused or could not be reached; the message names the recipient and status, never the token."""


class SMSGateway(Protocol):
    """Sends one text to one number, raising :class:`SMSDeliveryError` on failure."""

    async def send(self, to: str, body: str) -> None: ...

    async def aclose(self) -> None: ...


class TwilioSMSGateway:
    """The Twilio Messages API, or any API that copies it: ``POST {url}/2010-04-01/Accounts/{sid}/Messages.json``
    with a form-encoded ``To``, ``From`` and ``Body`` and basic auth ``sid:token``.

    https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource

    >>> gateway = TwilioSMSGateway("https://api.twilio.com", "AC123", "token", "+15550001111")
    >>> gateway.endpoint
    'https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json'
    """

    def __init__(
        self,
        url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        *,
        timeout_seconds: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._sender = sender
        self._timeout = timeout_seconds
        self._client = client
        self._owns_client = client is None

    async def send(self, to: str, body: str) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        data = {"To": to, "From": self._sender, "Body": body}
        try:
            response = await self._client.post(self.endpoint, data=data, auth=self._auth)
        except httpx.HTTPError as error:
            raise SMSDeliveryError(f"SMS to {to}: {type(error).__name__}: {error}") from None
        if not response.is_success:
            raise SMSDeliveryError(f"SMS to {to}: gateway answered {response.status_code}: {response.text[:200]}")

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None


class TokenBucket:
    """``rate_per_minute`` tokens refilled evenly over a minute, holding at most ``rate_per_minute`` (the burst)."""

    def __init__(self, rate_per_minute: int, *, clock: Clock = time.monotonic) -> None:
        if rate_per_minute < 1:
            raise ValueError(f"rate_per_minute must be >= 1 (got {rate_per_minute})")
        self._capacity = float(rate_per_minute)
        self._per_second = rate_per_minute / 60.0
        self._clock = clock
        self._tokens = self._capacity
        self._updated = clock()

    def take(self) -> bool:
        """Take one token if there is one."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._per_second)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _headline(alert: WebhookAlert) -> str:
    service = f" ({alert.service})" if alert.service else ""
    severity = alert.labels.get("severity", "")
    return f"[{alert.status.upper()}] {severity + ' ' if severity else ''}{alert.name}{service}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_sms(alerts: Sequence[WebhookAlert], limit: int = SMS_MAX_CHARS) -> str:
    """One text for the alerts: a headline, the summary and description of each, cut to ``limit`` characters.

    >>> from datetime import datetime, UTC
    >>> alert = WebhookAlert(status="firing", labels={"alertname": "HighErrorRate", "severity": "critical",
    ...     "service": "checkout"}, annotations={"summary": "5% errors"}, startsAt=datetime.now(UTC), fingerprint="f1")
    >>> format_sms([alert])
    '[FIRING] critical HighErrorRate (checkout): 5% errors'
    """
    parts = []
    for alert in alerts:
        text = _headline(alert)
        summary = alert.annotations.get("summary")
        if summary:
            text += f": {summary}"
        description = alert.annotations.get("description")
        if description:
            text += f"\n{description}"
        parts.append(text)
    return _cut("\n\n".join(parts), limit)


def _summary(held: Sequence[WebhookAlert]) -> str:
    return _cut(
        f"{len(held)} alert notification(s) held back by the SMS rate limit:\n"
        + "\n".join(_headline(alert) for alert in held),
        SMS_MAX_CHARS,
    )


@dataclass(slots=True)
class SMSOutcome:
    """What became of the alerts of one call: sent now, left out as duplicates, or held by the rate limit."""

    sent: int = 0
    deduplicated: int = 0
    held: int = 0


class SMSNotifier:
    """De-duplicates, rate-limits and sends alert SMS to every recipient. Not thread-safe: one event loop.

    ``clock`` (monotonic seconds) drives both the window and the bucket, so tests need no sleeping.
    """

    def __init__(
        self,
        gateway: SMSGateway,
        recipients: Sequence[str],
        *,
        rate_per_minute: int,
        dedupe_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._gateway = gateway
        self._recipients = list(recipients)
        self._bucket = TokenBucket(rate_per_minute, clock=clock)
        self._dedupe_seconds = dedupe_seconds
        self._clock = clock
        # Per recipient, so that when one number fails, the retry texts only that one.
        self._delivered: dict[tuple[_AlertKey, str], float] = {}
        self._held: dict[_AlertKey, WebhookAlert] = {}
        self.messages_sent = 0
        """Texts sent (one per recipient), summaries included."""
        self.alerts_deduplicated = 0
        self.alerts_held = 0
        """Alerts the rate limit held back; each one reaches a later summary."""
        self.failures = 0

    @property
    def held(self) -> int:
        """Alerts waiting for the next summary."""
        return len(self._held)

    async def notify(self, alerts: Sequence[WebhookAlert]) -> SMSOutcome:
        """Send one SMS for the alerts not sent recently, or hold them if the rate limit says so.

        Raises :class:`SMSDeliveryError` if the gateway fails for a recipient (after trying every one); the
        alerts are then marked as sent to the other recipients only, so Alertmanager's retry texts just the
        recipients that missed them.
        """
        now = self._clock()
        self._forget_before(now - self._dedupe_seconds)
        outcome = SMSOutcome()
        fresh: dict[_AlertKey, WebhookAlert] = {}
        for alert in alerts:
            key = _key(alert)
            if key in fresh or key in self._held or self._delivered_to_all(key):
                outcome.deduplicated += 1
                continue
            fresh[key] = alert
        self.alerts_deduplicated += outcome.deduplicated
        if not fresh:
            return outcome
        await self.flush()
        # While a summary is pending, new alerts join it: sending them first would reorder the story.
        if self._held or not self._bucket.take():
            self._held.update(fresh)
            outcome.held = len(fresh)
            self.alerts_held += len(fresh)
            _logger.warning(
                "SMS rate limit: holding %d alert(s) (%s) for a summary; %d held in all",
                len(fresh),
                ", ".join(_headline(alert) for alert in fresh.values()),
                len(self._held),
            )
            return outcome
        await self._deliver(fresh, format_sms)
        outcome.sent = len(fresh)
        return outcome

    async def flush(self) -> int:
        """Send the held alerts as one summary if the rate limit allows it now; returns how many it covered."""
        if not self._held or not self._bucket.take():
            return 0
        held = dict(self._held)
        await self._deliver(held, _summary)
        self._held.clear()
        _logger.info("SMS rate limit: sent a summary of %d held alert(s)", len(held))
        return len(held)

    async def aclose(self) -> None:
        """Close the gateway's connections."""
        await self._gateway.aclose()

    def _delivered_to_all(self, key: _AlertKey) -> bool:
        return all((key, number) in self._delivered for number in self._recipients)

    async def _deliver(
        self, alerts: dict[_AlertKey, WebhookAlert], render: Callable[[Sequence[WebhookAlert]], str]
    ) -> None:
        """Text each recipient the alerts it has not had yet, recording each delivery as it succeeds; raise
        :class:`SMSDeliveryError` naming every recipient that failed, after trying them all."""
        errors: list[str] = []
        for number in self._recipients:
            missing = [key for key in alerts if (key, number) not in self._delivered]
            if not missing:
                continue
            try:
                await self._gateway.send(number, render([alerts[key] for key in missing]))
            except SMSDeliveryError as error:
                self.failures += 1
                _logger.error("%s", error)
                errors.append(str(error))
                continue
            self.messages_sent += 1
            now = self._clock()
            for key in missing:
                self._delivered[key, number] = now
        if errors:
            raise SMSDeliveryError("; ".join(errors))

    def _forget_before(self, cutoff: float) -> None:
        for key in [key for key, sent_at in self._delivered.items() if sent_at <= cutoff]:
            del self._delivered[key]
