"""The alert archive: every alert of every notification the relay receives, firing and resolved.

Alertmanager keeps no history, so the relay writes one row per alert state into a SQL table through SQLAlchemy:
the same alert (fingerprint), status, start and receiver is archived once, however often Alertmanager repeats or
retries the notification. A SQLite file by default, PostgreSQL (or any SQLAlchemy database) with a URL. Rows
older than the retention are deleted by :meth:`AlertHistory.purge`, which the relay runs on a timer.

>>> from datetime import UTC, datetime, timedelta
>>> history = AlertHistory("sqlite://")  # in memory
>>> history.query(since=datetime.now(UTC) - timedelta(days=1))
[]
>>> history.close()
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from otel_monitoring.alert_relay.webhook import WebhookNotification

__all__ = ["AlertHistory", "HistoryEntry", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (the default clock)."""
    return datetime.now(UTC)


class _UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no time zones), read back as aware UTC, so comparisons agree everywhere."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("alert history times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


_metadata = MetaData()

notifications = Table(
    "otel_monitoring_alert_notifications",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", _UTCDateTime(), nullable=False),
    Column("receiver", String(200), nullable=False),
    Column("group_key", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("alertname", String(200), nullable=False),
    Column("severity", String(32), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("starts_at", _UTCDateTime(), nullable=False),
    Column("ends_at", _UTCDateTime(), nullable=True),
    Column("generator_url", Text, nullable=False),
    Index("ix_otel_monitoring_alert_notifications_received_at", "received_at"),
    # One row per alert state and receiver: a retry after the relay's 502, or a repeat, adds nothing. Archives
    # created before this index existed do not get it (create_all leaves existing tables alone); record() still
    # looks before it writes, the index only settles two receipts racing.
    Index(
        "ux_otel_monitoring_alert_notifications_state",
        "fingerprint",
        "status",
        "starts_at",
        "receiver",
        unique=True,
    ),
)

_StateKey = tuple[str, str, datetime, str]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One archived alert, as one notification carried it."""

    received_at: datetime
    receiver: str
    status: str
    fingerprint: str
    alertname: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    group_key: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with ISO 8601 times (``alerts history --json``)."""
        return {
            "received_at": self.received_at.isoformat(),
            "receiver": self.receiver,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "severity": self.severity,
            "labels": self.labels,
            "annotations": self.annotations,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": None if self.ends_at is None else self.ends_at.isoformat(),
            "generator_url": self.generator_url,
            "group_key": self.group_key,
        }


class AlertHistory:
    """The archive in the database at ``database_url``; the table is created if missing.

    Methods block (SQLAlchemy's synchronous engine, so any installed driver works); the relay calls them from a
    worker thread. ``clock`` gives the current aware time, for receipt times and retention.
    """

    def __init__(self, database_url: str, *, clock: Callable[[], datetime] = utc_now) -> None:
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            # One shared connection: SQLAlchemy's default would give every thread its own empty in-memory database.
            self._engine: Engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            self._engine = create_engine(url)
        self._clock = clock
        _metadata.create_all(self._engine)

    def record(self, notification: WebhookNotification) -> int:
        """Archive the alerts of ``notification`` not archived yet (same fingerprint, status, start and receiver),
        with the current time; returns how many rows were written."""
        received_at = self._clock()
        rows: dict[_StateKey, dict[str, Any]] = {}
        for alert in notification.alerts:
            key = (alert.fingerprint, alert.status, alert.starts_at, notification.receiver)
            rows[key] = {
                "received_at": received_at,
                "receiver": notification.receiver,
                "group_key": notification.group_key,
                "status": alert.status,
                "fingerprint": alert.fingerprint,
                "alertname": alert.name,
                "severity": alert.labels.get("severity", ""),
                "labels": alert.labels,
                "annotations": alert.annotations,
                "starts_at": alert.starts_at,
                "ends_at": alert.ends_at,
                "generator_url": alert.generator_url,
            }
        try:
            return self._insert_new(rows, notification.receiver)
        except IntegrityError:
            # The same notification received twice at once: the other receipt wrote first; now its rows are seen.
            return self._insert_new(rows, notification.receiver)

    def _insert_new(self, rows: dict[_StateKey, dict[str, Any]], receiver: str) -> int:
        with self._engine.begin() as connection:
            archived = self._archived(connection, {key[0] for key in rows}, receiver)
            new = [row for key, row in rows.items() if key not in archived]
            if new:
                connection.execute(insert(notifications), new)
        return len(new)

    @staticmethod
    def _archived(connection: Connection, fingerprints: set[str], receiver: str) -> set[_StateKey]:
        columns = notifications.c
        statement = select(columns.fingerprint, columns.status, columns.starts_at, columns.receiver).where(
            columns.fingerprint.in_(fingerprints), columns.receiver == receiver
        )
        return {(row[0], row[1], row[2], row[3]) for row in connection.execute(statement)}

    def query(self, *, since: datetime, status: str | None = None, limit: int | None = None) -> list[HistoryEntry]:
        """Alerts received at or after ``since``, oldest first; ``status`` keeps only firing or resolved ones."""
        statement = select(notifications).where(notifications.c.received_at >= since)
        if status is not None:
            statement = statement.where(notifications.c.status == status)
        statement = statement.order_by(notifications.c.received_at, notifications.c.id)
        if limit is not None:
            statement = statement.limit(limit)
        with self._engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
        return [
            HistoryEntry(
                received_at=row["received_at"],
                receiver=row["receiver"],
                status=row["status"],
                fingerprint=row["fingerprint"],
                alertname=row["alertname"],
                severity=row["severity"],
                labels=_as_dict(row["labels"]),
                annotations=_as_dict(row["annotations"]),
                starts_at=row["starts_at"],
                ends_at=row["ends_at"],
                generator_url=row["generator_url"],
                group_key=row["group_key"],
            )
            for row in rows
        ]

    def purge(self, retention: timedelta) -> int:
        """Delete what was received more than ``retention`` ago; returns how many rows went."""
        cutoff = self._clock() - retention
        with self._engine.begin() as connection:
            result = connection.execute(delete(notifications).where(notifications.c.received_at < cutoff))
        return int(result.rowcount or 0)

    def close(self) -> None:
        self._engine.dispose()


def _as_dict(value: Any) -> dict[str, str]:
    # JSON columns come back decoded; a driver that returns text is decoded here.
    if isinstance(value, str):
        value = json.loads(value)
    return {str(key): str(item) for key, item in dict(value).items()}
