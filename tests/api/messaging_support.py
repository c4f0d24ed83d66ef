"""Older import path for the messaging helpers, kept for tests written before tests/support existed:
import from ``tests.support.messaging`` (and ``eventually`` from ``tests.support.polling``)."""

from tests.support.messaging import (
    INVALID_PHONE,
    NOTIFICATION,
    PHONE,
    CareTeam,
    add_contact,
    care_team,
    emulator,
    message_status,
    ready,
    receive_sms,
    running_emulator,
    send,
    settled_deliveries,
    texts,
    twilio,
    unique_phone,
    wire_webhooks,
)
from tests.support.polling import eventually

__all__ = [
    "INVALID_PHONE",
    "NOTIFICATION",
    "PHONE",
    "CareTeam",
    "add_contact",
    "care_team",
    "emulator",
    "eventually",
    "message_status",
    "ready",
    "receive_sms",
    "running_emulator",
    "send",
    "settled_deliveries",
    "texts",
    "twilio",
    "unique_phone",
    "wire_webhooks",
]
