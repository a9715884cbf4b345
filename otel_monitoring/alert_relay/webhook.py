"""Alertmanager's webhook payload (version 4), validated into typed models.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config describes the JSON. Unknown fields are
ignored (newer Alertmanagers add some); a missing or malformed one raises :class:`PayloadError` naming it.

>>> notification = parse_notification(b'''{"version": "4", "groupKey": "{}:{}", "status": "firing",
...   "receiver": "critical", "externalURL": "http://am:9093", "alerts": [{"status": "firing",
...   "labels": {"alertname": "Down"}, "startsAt": "2026-11-25T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
...   "fingerprint": "c0ffee"}]}''')
>>> notification.alerts[0].ends_at is None
True
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["PayloadError", "WebhookAlert", "WebhookNotification", "parse_notification"]


class PayloadError(ValueError):
    """A webhook body that is not a valid version-4 notification; ``field`` is its JSON path (``alerts[0].status``).

    >>> str(PayloadError("alerts[0].status", "must be firing or resolved"))
    'alerts[0].status: must be firing or resolved'
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class WebhookAlert(_Model):
    """One alert of a notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    """``None`` while firing: Alertmanager sends Go's zero time, 0001-01-01."""
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None or value.year <= 1:
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @property
    def name(self) -> str:
        """The ``alertname`` label."""
        return self.labels.get("alertname", "")

    @property
    def service(self) -> str:
        """The ``service`` label, else the ``job``: who is affected."""
        return self.labels.get("service") or self.labels.get("job", "")


class WebhookNotification(_Model):
    """One webhook call: a group of alerts sent to one receiver."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[WebhookAlert] = Field(min_length=1)


def _path(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def parse_notification(body: bytes) -> WebhookNotification:
    """Decode and validate a webhook body; :class:`PayloadError` names the first bad field."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError("body", f"is not JSON ({error})") from None
    if not isinstance(document, dict):
        raise PayloadError("body", "must be a JSON object")
    try:
        return WebhookNotification.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        raise PayloadError(_path(tuple(first["loc"])), first["msg"]) from None
