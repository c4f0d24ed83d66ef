"""Every delivery the relay settles is on the audit record once, with its outcome."""

from __future__ import annotations

import asyncio

import asyncpg

from handlers.keys import emulator_key
from tests.support.api import Api


async def _row(db: asyncpg.Connection, workflow: str, resource_id: str) -> asyncpg.Record:
    async with asyncio.timeout(10):
        while True:
            row = await db.fetchrow(
                "SELECT * FROM audit_events WHERE workflow = $1 AND resource_id = $2", workflow, resource_id
            )
            if row is not None:
                return row
            await asyncio.sleep(0.02)


async def test_a_delivered_message_and_its_channel_leave_one_audit_record_each(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)
    status, conversation = await api.call(
        "POST", "/api/conversations", nurse, json={"title": "Discharge follow-up", "patientId": patient_id}
    )
    assert status == 201, conversation
    status, message = await api.call(
        "POST",
        "/api/conversations/send-message",
        nurse,
        json={"conversationId": conversation["id"], "message": "Please call the clinic."},
    )
    assert status == 202, message

    channel = await _row(db, "delivery.ensure_channel", str(conversation["id"]))
    delivered = await _row(db, "delivery.send_message", str(message["id"]))
    for row in (channel, delivered):
        assert (row["event"], row["outcome"], row["patient_id"]) == ("delivery", "success", patient_id)
        assert row["actor_id"] is None  # the relay acts for the system
    assert delivered["resource_type"] == "message"
    count = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow = 'delivery.send_message' AND resource_id = $1",
        str(message["id"]),
    )
    assert count == 1
    assert "Please call the clinic." not in str(dict(delivered))


async def test_a_delivery_that_fails_for_good_is_recorded_as_a_failure(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)
    status, conversation = await api.call(
        "POST", "/api/conversations", nurse, json={"title": "Medication review", "patientId": patient_id}
    )
    assert status == 201, conversation
    await _row(db, "delivery.ensure_channel", str(conversation["id"]))
    # The channel disappears at Sendbird: posting into it is a permanent error (not found).
    api.app[emulator_key].state.channels.pop(conversation["channelUrl"])
    status, message = await api.call(
        "POST",
        "/api/conversations/send-message",
        nurse,
        json={"conversationId": conversation["id"], "message": "Dose changed."},
    )
    assert status == 202, message

    row = await _row(db, "delivery.send_message", str(message["id"]))
    assert (row["outcome"], row["reason"], row["patient_id"]) == ("failure", "chat_not_found", patient_id)
