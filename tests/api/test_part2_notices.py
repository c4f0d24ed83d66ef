"""The 42 CFR 2.32 notice travels with disclosures under a Part 2 consent: an SMS to an external
participant admitted by one ends with the notice of policies/notices.toml (full text or notification
alike), and the audit record of the send names the consent; the first message a partner
organization's members get in a conversation under one is preceded in the channel by the notice,
once, recorded and audited with the consent. Under any other consent nothing carries a notice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from engine.policy import PART2_SHORT_NOTICE
from tests.api.test_part2_consents import ELEMENTS
from tests.support.api import Api, Person
from tests.support.messaging import (
    NOTIFICATION,
    CareTeam,
    care_team,
    emulator,
    ready,
    send,
    settled_deliveries,
    texts,
)

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


async def partner_conversation(api: Api, **consent: Any) -> tuple[Person, int, int, int]:
    """A peer's conversation about their patient with a nurse of a partner organization, whose access
    rests on a consent naming it (with ``consent`` besides); the sender, conversation, consent and
    partner organization ids."""
    org, partner_org = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    partner = await api.person("care_team_member", partner_org)
    patient_id = await api.patient(peer)
    recorded = await api.consent(officer, patient_id, organizationId=partner_org, **consent)
    body = {"title": "Care coordination", "patientId": patient_id, "memberIds": [partner.id]}
    status, created = await api.call("POST", "/api/conversations", peer, json=body)
    assert status == 201, created
    await ready(api, CareTeam(org, peer, partner, officer, patient_id, created))
    return peer, int(created["id"]), int(recorded["id"]), partner_org


def posts(api: Api, conversation_id: int, channel_url: str) -> list[tuple[str, str]]:
    return [(m.custom_type, m.message) for m in emulator(api).channels[channel_url].messages]


async def test_the_first_message_to_a_part2_partner_is_preceded_by_the_notice_once_and_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    peer, conversation_id, consent_id, partner_org = await partner_conversation(api, **PART2)
    url = await db.fetchval("SELECT channel_url FROM conversations WHERE id = $1", conversation_id)

    for text in ("first", "second"):
        status, accepted = await send(api, peer, conversation_id, text)
        assert status == 202, accepted
        await settled_deliveries(api, peer, accepted["id"])

    assert [p for p in posts(api, conversation_id, url) if p[0] != "caremsg_conversation"] == [
        ("caremsg_part2_notice", PART2_SHORT_NOTICE),
        ("caremsg_message", "first"),
        ("caremsg_message", "second"),
    ]
    recorded = await db.fetch(
        "SELECT organization_id, consent_id FROM part2_notices WHERE conversation_id = $1", conversation_id
    )
    assert [tuple(r) for r in recorded] == [(partner_org, consent_id)]
    audited = await db.fetch(
        "SELECT details FROM audit_events WHERE event = 'part2.notice_sent' AND resource_id = $1",
        str(conversation_id),
    )
    assert [json.loads(a["details"])["consent_id"] for a in audited] == [consent_id]


async def test_a_partner_under_a_consent_that_is_not_part2_gets_no_notice(
    api: Api, db: asyncpg.Connection
) -> None:
    peer, conversation_id, _, _ = await partner_conversation(api)
    url = await db.fetchval("SELECT channel_url FROM conversations WHERE id = $1", conversation_id)

    status, accepted = await send(api, peer, conversation_id, "first")
    assert status == 202, accepted
    await settled_deliveries(api, peer, accepted["id"])

    assert "caremsg_part2_notice" not in [p[0] for p in posts(api, conversation_id, url)]
    assert not await db.fetchval(
        "SELECT count(*) FROM part2_notices WHERE conversation_id = $1", conversation_id
    )
