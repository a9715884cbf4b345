"""The alert relay's HTTP side and its archive: validation, auth, archiving, SMS path, retention, the history CLI."""

from __future__ import annotations

import argparse
import asyncio
import doctest
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from otel_monitoring import alert_relay
from otel_monitoring.alert_relay import (
    MAX_BODY_BYTES,
    AlertHistory,
    SMSDeliveryError,
    SMSNotifier,
    exposure_warning,
    make_alert_relay_app,
)
from otel_monitoring.alert_relay import history as history_module
from otel_monitoring.alert_relay import sms as sms_module
from otel_monitoring.alert_relay import webhook as webhook_module
from otel_monitoring.alert_relay.webhook import parse_notification
from otel_monitoring.alerting_cli import add_commands, parse_duration, parse_matcher


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class RecordingGateway:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail = False

    async def send(self, to: str, body: str) -> None:
        if self.fail:
            raise SMSDeliveryError(f"SMS to {to}: gateway answered 503")
        self.sent.append((to, body))

    async def aclose(self) -> None:
        pass


def webhook_alert(
    name: str, status: str = "firing", fingerprint: str | None = None, starts_at: str = "2026-11-25T11:58:00Z"
) -> dict[str, Any]:
    # Alertmanager's fingerprint is a hash of the labels: alerts of different names never share one.
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "critical", "service": "checkout"},
        "annotations": {"summary": f"{name} summary", "description": f"{name} description"},
        "startsAt": starts_at,
        "endsAt": "2026-11-25T12:01:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint or f"fp-{name}",
    }


def notification(*alerts: dict[str, Any], receiver: str = "critical") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="X"}',
        "truncatedAlerts": 0,
        "status": alerts[0]["status"],
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def history(clock: FakeClock) -> Iterator[AlertHistory]:
    archive = AlertHistory("sqlite://", clock=clock)
    yield archive
    archive.close()


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


class RelayClient:
    """Requests to the app in process through httpx's ASGI transport (no lifespan: the handlers need none)."""

    def __init__(self, app: Starlette, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = headers or {}

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
                return await client.request(method, path, headers={**self.headers, **(headers or {})}, **kwargs)

        return asyncio.run(send())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture
def client(history: AlertHistory, gateway: RecordingGateway) -> RelayClient:
    notifier = SMSNotifier(gateway, ["+15551230001"], rate_per_minute=10, dedupe_seconds=600)
    return RelayClient(
        make_alert_relay_app(history, notifier, token="s3cret"), headers={"Authorization": "Bearer s3cret"}
    )


def test_webhook_archives_every_alert_of_the_notification(client: RelayClient, history: AlertHistory) -> None:
    body = notification(webhook_alert("A", fingerprint="f1"), webhook_alert("B", "resolved", fingerprint="f2"))

    response = client.post("/webhook", json=body)

    assert response.status_code == 200
    assert response.json() == {"archived": 2}
    entries = history.query(since=datetime(2026, 11, 25, tzinfo=UTC))
    assert [(entry.alertname, entry.status, entry.fingerprint) for entry in entries] == [
        ("A", "firing", "f1"),
        ("B", "resolved", "f2"),
    ]
    assert entries[0].receiver == "critical"
    assert entries[0].labels == body["alerts"][0]["labels"]
    assert entries[0].annotations == body["alerts"][0]["annotations"]
    assert entries[0].ends_at is None
    assert entries[1].ends_at == datetime(2026, 11, 25, 12, 1, tzinfo=UTC)
    assert entries[0].received_at == datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_plain_webhook_sends_no_sms(client: RelayClient, gateway: RecordingGateway) -> None:
    client.post("/webhook", json=notification(webhook_alert("A")))

    assert gateway.sent == []


def test_sms_webhook_archives_and_texts_once_per_alert_and_status(
    client: RelayClient, gateway: RecordingGateway, history: AlertHistory
) -> None:
    first = client.post("/webhook/sms", json=notification(webhook_alert("A")))
    retry = client.post("/webhook/sms", json=notification(webhook_alert("A")))

    assert first.json()["sms"] == {"sent": 1, "deduplicated": 0, "held": 0}
    assert retry.json()["sms"] == {"sent": 0, "deduplicated": 1, "held": 0}
    assert len(gateway.sent) == 1 and "A summary" in gateway.sent[0][1]
    assert len(history.query(since=datetime(2026, 11, 25, tzinfo=UTC))) == 1  # the same notification, archived once


def test_gateway_failure_answers_502_so_alertmanager_retries(client: RelayClient, gateway: RecordingGateway) -> None:
    gateway.fail = True
    failed = client.post("/webhook/sms", json=notification(webhook_alert("A")))
    gateway.fail = False
    retried = client.post("/webhook/sms", json=notification(webhook_alert("A")))

    assert failed.status_code == 502 and "gateway answered 503" in failed.json()["error"]
    assert retried.status_code == 200 and len(gateway.sent) == 1


def test_retries_after_a_502_archive_the_notification_once(
    client: RelayClient, gateway: RecordingGateway, history: AlertHistory
) -> None:
    gateway.fail = True
    failures = [client.post("/webhook/sms", json=notification(webhook_alert("A"))) for _ in range(3)]
    gateway.fail = False
    delivered = client.post("/webhook/sms", json=notification(webhook_alert("A")))

    assert [response.status_code for response in failures] == [502, 502, 502] and delivered.status_code == 200
    entries = history.query(since=datetime(2026, 11, 25, tzinfo=UTC))
    assert [(entry.alertname, entry.status) for entry in entries] == [("A", "firing")]


def test_archive_keeps_each_status_episode_and_receiver_apart(history: AlertHistory) -> None:
    def record(alert: dict[str, Any], receiver: str = "critical") -> int:
        return history.record(parse_notification(json.dumps(notification(alert, receiver=receiver)).encode()))

    written = [
        record(webhook_alert("A")),
        record(webhook_alert("A")),  # Alertmanager's repeat: nothing new
        record(webhook_alert("A", "resolved")),
        record(webhook_alert("A", starts_at="2026-11-25T12:30:00Z")),  # fires again: a new episode
        record(webhook_alert("A"), receiver="warning"),
    ]

    assert written == [1, 0, 1, 1, 1]
    assert len(history.query(since=datetime(2026, 11, 25, tzinfo=UTC))) == 4


def test_a_body_over_the_limit_is_refused_with_413_naming_it(client: RelayClient, history: AlertHistory) -> None:
    body = json.dumps(notification(webhook_alert("A"))).encode()
    padded = body + b" " * (MAX_BODY_BYTES - len(body))  # JSON allows trailing blanks: exactly at the limit

    async def chunked(data: bytes) -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    at_limit = client.post("/webhook", content=padded)
    declared = client.post("/webhook", content=padded + b" ")
    streamed = client.post("/webhook/sms", content=chunked(padded + b" "))

    assert at_limit.status_code == 200
    assert declared.status_code == 413 and streamed.status_code == 413
    assert str(MAX_BODY_BYTES) in declared.json()["error"] and str(MAX_BODY_BYTES) in streamed.json()["error"]
    assert len(history.query(since=datetime(2026, 11, 25, tzinfo=UTC))) == 1


@pytest.mark.parametrize(
    ("host", "token", "warns"),
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("alert-relay.internal", None, True),
        ("192.0.2.10", None, True),
        ("0.0.0.0", "s3cret", False),
        ("127.0.0.1", None, False),
        ("127.0.0.53", None, False),
        ("[::1]", None, False),
        ("localhost", None, False),
    ],
)
def test_exposure_warning_only_for_a_reachable_address_without_a_token(
    host: str, token: str | None, warns: bool
) -> None:
    warning = exposure_warning(host, 9095, token)

    assert (warning is not None) is warns
    if warning is not None:
        assert f"{host}:9095" in warning and "relay_token" in warning


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda body: body.pop("version"), "version"),
        (lambda body: body.update(version="3"), "version"),
        (lambda body: body["alerts"][0].pop("fingerprint"), "alerts[0].fingerprint"),
        (lambda body: body["alerts"][0].update(status="pending"), "alerts[0].status"),
        (lambda body: body["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda body: body["alerts"][0].update(labels={"a": 1}), "alerts[0].labels.a"),
        (lambda body: body.update(alerts=[]), "alerts"),
    ],
)
def test_invalid_payload_is_refused_with_400_naming_the_field(
    client: RelayClient, history: AlertHistory, mutate: Any, field: str
) -> None:
    body = notification(webhook_alert("A"))
    mutate(body)

    response = client.post("/webhook", json=body)

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}: ")
    assert history.query(since=datetime(2000, 1, 1, tzinfo=UTC)) == []


def test_body_that_is_not_json_is_refused_with_400(client: RelayClient) -> None:
    response = client.post("/webhook", content=b"not json")

    assert response.status_code == 400 and response.json()["field"] == "body"


def test_missing_or_wrong_token_is_refused_with_401(client: RelayClient) -> None:
    missing = client.post("/webhook", json=notification(webhook_alert("A")), headers={"Authorization": ""})
    wrong = client.post("/webhook", json=notification(webhook_alert("A")), headers={"Authorization": "Bearer nope"})

    assert (missing.status_code, wrong.status_code) == (401, 401)


def test_healthz_reports_counters(client: RelayClient) -> None:
    client.post("/webhook/sms", json=notification(webhook_alert("A")))
    client.post("/webhook", content=b"{}")

    health = client.get("/healthz").json()

    assert health["status"] == "ok" and health["sms"] is True
    assert (health["notifications"], health["alerts_archived"], health["sms_sent"], health["rejected"]) == (1, 1, 1, 1)


def test_sms_path_without_sms_configured_still_archives(history: AlertHistory) -> None:
    response = RelayClient(make_alert_relay_app(history)).post("/webhook/sms", json=notification(webhook_alert("A")))

    assert response.status_code == 200
    assert response.json() == {"archived": 1, "sms": "not configured"}


def test_purge_deletes_only_rows_older_than_the_retention(history: AlertHistory, clock: FakeClock) -> None:
    history.record(parse_notification(json.dumps(notification(webhook_alert("Old"))).encode()))
    clock.now += timedelta(days=10)
    history.record(parse_notification(json.dumps(notification(webhook_alert("New"))).encode()))
    clock.now += timedelta(days=21)  # Old is 31 days old, New 21

    deleted = history.purge(timedelta(days=30))

    remaining = history.query(since=datetime(2000, 1, 1, tzinfo=UTC))
    assert deleted == 1
    assert [entry.alertname for entry in remaining] == ["New"]


def test_query_filters_by_time_status_and_limit(history: AlertHistory, clock: FakeClock) -> None:
    start = clock.now
    for minute, (name, status) in enumerate([("A", "firing"), ("B", "firing"), ("A", "resolved")]):
        clock.now = start + timedelta(minutes=minute)
        history.record(parse_notification(json.dumps(notification(webhook_alert(name, status))).encode()))

    assert [entry.alertname for entry in history.query(since=start + timedelta(minutes=1))] == ["B", "A"]
    assert [entry.alertname for entry in history.query(since=start, status="firing")] == ["A", "B"]
    assert len(history.query(since=start, limit=2)) == 2


def _history_cli(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="otel-monitoring")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["alerts", "history", *argv])
    args.environ = {"OTEL_MONITORING_ALERT_HISTORY_DATABASE_URL": f"sqlite:///{tmp_path / 'history.sqlite3'}"}
    status: int = args.func(args)
    return status


def test_history_cli_reads_back_firing_and_resolved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = AlertHistory(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    archive.record(parse_notification(json.dumps(notification(webhook_alert("A"))).encode()))
    archive.record(parse_notification(json.dumps(notification(webhook_alert("A", "resolved"))).encode()))
    archive.close()

    assert _history_cli(tmp_path, "--since", "1h", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert _history_cli(tmp_path, "--status", "resolved") == 0
    table = capsys.readouterr().out.splitlines()

    assert [(row["alertname"], row["status"]) for row in rows] == [("A", "firing"), ("A", "resolved")]
    assert rows[0]["annotations"]["summary"] == "A summary"
    assert len(table) == 2 and "resolved" in table[1] and "A summary" in table[1]


def test_history_cli_without_an_archive_fails_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _history_cli(tmp_path) == 1
    assert "no alert history" in capsys.readouterr().err
    assert not (tmp_path / "history.sqlite3").exists()


def test_history_cli_rejects_a_bad_since_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _history_cli(tmp_path, "--since", "yesterday") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--since" in error


def test_durations_and_matchers_parse_as_amtool_writes_them() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_matcher("service!=checkout") == {
        "name": "service",
        "value": "checkout",
        "isRegex": False,
        "isEqual": False,
    }
    for bad in ("0s", "2 hours", "h"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="matcher"):
        parse_matcher("no operator")


@pytest.mark.parametrize("module", [alert_relay, history_module, sms_module, webhook_module], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module)

    assert result.attempted > 0 and result.failed == 0
