"""``otel-monitoring alert-relay``: receives Alertmanager webhooks, archives every alert and sends SMS.

Alertmanager has no SMS receiver and keeps no history; the relay does both (docs/alert-relay.md).

>>> from otel_monitoring.settings import Settings
>>> app = create_alert_relay_app(Settings(alerting={"history_database_url": "sqlite://"}))
"""

from otel_monitoring.alert_relay.app import (
    MAX_BODY_BYTES,
    RelayStats,
    create_alert_relay_app,
    exposure_warning,
    make_alert_relay_app,
)
from otel_monitoring.alert_relay.history import AlertHistory, HistoryEntry
from otel_monitoring.alert_relay.sms import (
    SMSDeliveryError,
    SMSGateway,
    SMSNotifier,
    SMSOutcome,
    TokenBucket,
    TwilioSMSGateway,
    format_sms,
)
from otel_monitoring.alert_relay.webhook import PayloadError, WebhookAlert, WebhookNotification, parse_notification

__all__ = [
    "MAX_BODY_BYTES",
    "AlertHistory",
    "HistoryEntry",
    "PayloadError",
    "RelayStats",
    "SMSDeliveryError",
    "SMSGateway",
    "SMSNotifier",
    "SMSOutcome",
    "TokenBucket",
    "TwilioSMSGateway",
    "WebhookAlert",
    "WebhookNotification",
    "create_alert_relay_app",
    "exposure_warning",
    "format_sms",
    "make_alert_relay_app",
    "parse_notification",
]
