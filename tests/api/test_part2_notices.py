"""The 42 CFR 2.32 notice travels with disclosures under a Part 2 consent: an SMS to an external
participant admitted by one ends with the notice of policies/notices.toml (full text or notification
alike), and the audit record of the send names the consent; under any other consent the text carries
no notice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from engine.policy import PART2_SHORT_NOTICE
from tests.api.test_part2_consents import ELEMENTS
from tests.support.api import Api
from tests.support.messaging import NOTIFICATION, care_team, send, settled_deliveries, texts

PART2 = {"expiresAt": (datetime.now(UTC) + timedelta(days=365)).isoformat(), "part2": ELEMENTS}


async def test_a_text_under_a_part2_consent_ends_with_the_notice_and_its_send_names_the_consent(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api, consent_fields=PART2)
    status, accepted = await send(api, team.peer, team.conversation_id, "Methadone dose changed")
    assert status == 202, accepted

    deliveries = await settled_deliveries(api, team.peer, accepted["id"])

    assert [d["state"] for d in deliveries] == ["sent", "sent"]
    (sent,) = texts(api, team.phone)
    assert sent.text == f"{NOTIFICATION}\n{PART2_SHORT_NOTICE}"
    consent_id = await db.fetchval("SELECT id FROM consents WHERE patient_id = $1 AND part2", team.patient_id)
    details = await db.fetchval(
        "SELECT details FROM audit_events WHERE workflow = 'sms.send_full_text' AND event = 'decision'"
        " AND resource_id = $1",
        str(accepted["id"]),
    )
    assert json.loads(details)["consent_id"] == consent_id
    assert json.loads(details)["part2"] is True


async def test_a_text_under_another_consent_carries_no_notice(api: Api) -> None:
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted

    await settled_deliveries(api, team.peer, accepted["id"])

    (sent,) = texts(api, team.phone)
    assert sent.text == NOTIFICATION
    assert PART2_SHORT_NOTICE not in sent.text
