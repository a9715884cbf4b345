"""SMS from the alert relay: the Twilio-compatible request, de-duplication and the rate limit, on a fake clock."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest

from otel_monitoring.alert_relay.sms import (
    SMS_MAX_CHARS,
    SMSDeliveryError,
    SMSNotifier,
    TokenBucket,
    TwilioSMSGateway,
    format_sms,
)
from otel_monitoring.alert_relay.webhook import WebhookAlert


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingGateway:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail = fail
        self.failing: set[str] = set()
        """Numbers the gateway refuses, as when one phone is unreachable."""
        self.closed = False

    async def send(self, to: str, body: str) -> None:
        if self.fail or to in self.failing:
            raise SMSDeliveryError(f"SMS to {to}: gateway answered 500")
        self.sent.append((to, body))

    async def aclose(self) -> None:
        self.closed = True


FIRST_START = datetime(2026, 11, 25, 10, tzinfo=UTC)


def alert(
    name: str,
    status: str = "firing",
    fingerprint: str | None = None,
    starts_at: datetime = FIRST_START,
    **annotations: str,
) -> WebhookAlert:
    return WebhookAlert(
        status=status,  # type: ignore[arg-type]
        labels={"alertname": name, "severity": "critical", "service": "checkout"},
        annotations={"summary": f"{name} summary", "description": f"{name} description", **annotations},
        startsAt=starts_at,
        fingerprint=fingerprint or f"fp-{name}",
    )


def notifier(gateway: RecordingGateway, clock: FakeClock, rate: int = 10, window: float = 600.0) -> SMSNotifier:
    return SMSNotifier(
        gateway, ["+15551230001", "+15551230002"], rate_per_minute=rate, dedupe_seconds=window, clock=clock
    )


def test_twilio_gateway_posts_form_encoded_to_from_body_with_basic_auth() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(201, json={"sid": "SM1"})

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            gateway = TwilioSMSGateway("https://sms.test/", "AC42", "tok", "+15550001111", client=client)
            await gateway.send("+15551230001", "hello & goodbye")

    asyncio.run(run())

    (request,) = requests
    assert request.method == "POST"
    assert str(request.url) == "https://sms.test/2010-04-01/Accounts/AC42/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "To": ["+15551230001"],
        "From": ["+15550001111"],
        "Body": ["hello & goodbye"],
    }
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC42:tok").decode()


def test_twilio_gateway_error_names_the_recipient_and_status_but_not_the_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "Authenticate"})

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            gateway = TwilioSMSGateway("https://sms.test", "AC42", "very-secret-token", "+1555", client=client)
            await gateway.send("+15551230001", "x")

    with pytest.raises(SMSDeliveryError) as excinfo:
        asyncio.run(run())

    assert "+15551230001" in str(excinfo.value) and "401" in str(excinfo.value)
    assert "very-secret-token" not in str(excinfo.value)


def test_sms_text_carries_status_severity_name_service_summary_and_description() -> None:
    text = format_sms([alert("HighErrorRate"), alert("HighLatency", status="resolved")])

    assert text.splitlines()[0] == "[FIRING] critical HighErrorRate (checkout): HighErrorRate summary"
    assert "HighErrorRate description" in text
    assert "[RESOLVED] critical HighLatency (checkout): HighLatency summary" in text


def test_sms_text_is_cut_to_the_gateway_limit() -> None:
    text = format_sms([alert("Long", description="x" * 5000)])

    assert len(text) == SMS_MAX_CHARS and text.endswith("…")


def test_token_bucket_refills_evenly_over_a_minute() -> None:
    clock = FakeClock()
    bucket = TokenBucket(6, clock=clock)

    burst = [bucket.take() for _ in range(7)]
    clock.now += 10  # 6 per minute: one token every 10 s
    after_ten_seconds = [bucket.take(), bucket.take()]

    assert burst == [True] * 6 + [False]
    assert after_ten_seconds == [True, False]


def test_one_message_per_notification_goes_to_every_recipient() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock)

    outcome = asyncio.run(sms.notify([alert("A"), alert("B")]))

    assert outcome.sent == 2
    assert [to for to, _ in gateway.sent] == ["+15551230001", "+15551230002"]
    assert gateway.sent[0][1] == format_sms([alert("A"), alert("B")])
    assert sms.messages_sent == 2


def test_same_fingerprint_and_status_within_the_window_is_sent_once() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock, window=600)

    async def run() -> list[int]:
        first = await sms.notify([alert("A")])
        clock.now += 599
        repeat = await sms.notify([alert("A")])
        resolved = await sms.notify([alert("A", status="resolved")])
        clock.now += 2  # the firing one was sent 601 s ago: outside the window
        later = await sms.notify([alert("A")])
        return [first.sent, repeat.deduplicated, resolved.sent, later.sent]

    assert asyncio.run(run()) == [1, 1, 1, 1]
    bodies = [body for to, body in gateway.sent if to == "+15551230001"]
    assert [body.split("]")[0] for body in bodies] == ["[FIRING", "[RESOLVED", "[FIRING"]
    assert sms.alerts_deduplicated == 1


def test_duplicates_inside_one_notification_count_once() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock)

    outcome = asyncio.run(sms.notify([alert("A"), alert("A")]))

    assert (outcome.sent, outcome.deduplicated) == (1, 1)


def test_rate_limit_holds_the_excess_counts_and_logs_it_then_sends_one_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock, rate=2)

    async def run() -> tuple[list[int], int, int]:
        held = []
        for name in ("A", "B", "C", "D", "E"):
            outcome = await sms.notify([alert(name)])
            held.append(outcome.held)
        too_early = await sms.flush()
        clock.now += 30  # 2 per minute: one token back after 30 s
        summarised = await sms.flush()
        return held, too_early, summarised

    with caplog.at_level(logging.WARNING, logger="otel_monitoring.alert_relay.sms"):
        held, too_early, summarised = asyncio.run(run())

    assert held == [0, 0, 1, 1, 1]
    assert sms.alerts_held == 3
    assert sum("SMS rate limit: holding 1 alert(s)" in record.getMessage() for record in caplog.records) == 3
    assert (too_early, summarised) == (0, 3)
    summary = [body for to, body in gateway.sent if to == "+15551230001"][-1]
    assert summary.startswith("3 alert notification(s) held back by the SMS rate limit")
    assert all(f"critical {name} (checkout)" in summary for name in ("C", "D", "E"))
    assert sms.held == 0
    assert len([body for to, body in gateway.sent if to == "+15551230001"]) == 3  # A, B, then the summary


def test_alerts_arriving_while_a_summary_is_pending_join_it() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock, rate=1)

    async def run() -> tuple[int, int]:
        await sms.notify([alert("A")])
        await sms.notify([alert("B")])  # held: no token
        clock.now += 60  # one token: the pending summary takes it, C joins the summary after it
        joined = await sms.notify([alert("C")])
        return joined.held, sms.held

    joined, waiting = asyncio.run(run())

    summary = [body for to, body in gateway.sent if to == "+15551230001"][-1]
    assert "1 alert notification(s) held back" in summary and "B" in summary
    assert (joined, waiting) == (1, 1)


def test_a_gateway_failure_raises_and_does_not_mark_the_alert_sent() -> None:
    failing, clock = RecordingGateway(fail=True), FakeClock()
    sms = notifier(failing, clock)

    async def run() -> int:
        with pytest.raises(SMSDeliveryError):
            await sms.notify([alert("A")])
        failing.fail = False
        retried = await sms.notify([alert("A")])
        return retried.sent

    assert asyncio.run(run()) == 1
    assert sms.failures == 2


def test_an_alert_firing_again_after_resolving_is_texted_again_within_the_window() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock, window=3600)
    again = FIRST_START + timedelta(minutes=20)  # same fingerprint, a new firing episode

    async def run() -> list[int]:
        fired = await sms.notify([alert("A")])
        clock.now += 600
        resolved = await sms.notify([alert("A", status="resolved")])
        clock.now += 600
        refired = await sms.notify([alert("A", starts_at=again)])
        repeated = await sms.notify([alert("A", starts_at=again)])  # Alertmanager's repeat of the same episode
        return [fired.sent, resolved.sent, refired.sent, repeated.deduplicated]

    assert asyncio.run(run()) == [1, 1, 1, 1]
    bodies = [body for to, body in gateway.sent if to == "+15551230001"]
    assert [body.split("]")[0] for body in bodies] == ["[FIRING", "[RESOLVED", "[FIRING"]


def test_a_retry_after_one_recipient_failed_texts_only_that_recipient() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock)
    gateway.failing = {"+15551230002"}

    async def run() -> tuple[int, int]:
        with pytest.raises(SMSDeliveryError, match=r"\+15551230002"):
            await sms.notify([alert("A")])
        gateway.failing.clear()
        retried = await sms.notify([alert("A")])  # Alertmanager's retry after the relay's 502
        again = await sms.notify([alert("A")])  # and a repeat once both have it
        return retried.sent, again.deduplicated

    retried_sent, deduplicated = asyncio.run(run())

    assert [to for to, _ in gateway.sent] == ["+15551230001", "+15551230002"]
    assert (retried_sent, deduplicated) == (1, 1)


def test_a_summary_that_failed_for_one_recipient_is_retried_for_that_recipient_only() -> None:
    gateway, clock = RecordingGateway(), FakeClock()
    sms = notifier(gateway, clock, rate=1)

    async def run() -> tuple[int, int]:
        await sms.notify([alert("A")])
        await sms.notify([alert("B")])  # held: no token left
        gateway.failing = {"+15551230002"}
        clock.now += 60
        with pytest.raises(SMSDeliveryError):
            await sms.flush()
        gateway.failing.clear()
        clock.now += 60
        return await sms.flush(), sms.held

    covered, waiting = asyncio.run(run())

    summaries = [to for to, body in gateway.sent if body.startswith("1 alert notification(s) held back")]
    assert summaries == ["+15551230001", "+15551230002"]
    assert (covered, waiting) == (1, 0)


def test_aclose_closes_the_gateway() -> None:
    gateway = RecordingGateway()

    asyncio.run(notifier(gateway, FakeClock()).aclose())

    assert gateway.closed
