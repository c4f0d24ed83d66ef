"""The 42 CFR 2.32 notice travels with disclosures under a Part 2 consent: an SMS to an external
participant admitted by one ends with the notice of policies/notices.toml (full text or notification
alike), and the audit record of the send names the consent; the first message a partner
organization's members get in a conversation under one is preceded in the channel by the notice,
once, recorded and audited with the consent. Under any other consent nothing carries a notice."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from engine.effects import PostMessage, kind_of
from engine.policy import PART2_SHORT_NOTICE
from handlers.keys import sessions_key
from integrations.effects.executor import RelayContext
from integrations.effects.messages import PART2_NOTICE_CUSTOM_TYPE, PostMessageExecutor
from integrations.effects.outbox import OutboxEntry
from tests.support.api import Api, Person
from tests.support.fakes import FakeChannel, FakeChatGateway
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
from tests.support.part2 import PART2_ELEMENTS

PART2 = {"expiresAt": (datetime.now(UTC) + timedelta(days=365)).isoformat(), "part2": PART2_ELEMENTS}


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


async def test_two_relays_posting_the_first_two_messages_at_once_give_the_notice_once(
    api: Api, db: asyncpg.Connection
) -> None:
    """Two instances' relays each hold one of the conversation's first two messages (sends committed
    out of id order let a relay take the later one while the earlier is claimed elsewhere): both read
    that no notice was given, and both post at once. The notice is given once, before both."""
    peer, conversation_id, consent_id, partner_org = await partner_conversation(api, **PART2)
    url = await db.fetchval("SELECT channel_url FROM conversations WHERE id = $1", conversation_id)
    # stored without outbox entries: the shared app's relay leaves them to the two relays below
    message_ids = [
        await db.fetchval(
            "INSERT INTO messages (conversation_id, sender_id, body) VALUES ($1, $2, $3) RETURNING id",
            conversation_id,
            peer.id,
            text,
        )
        for text in ("first", "second")
    ]
    chat = FakeChatGateway()
    chat.channels[url] = FakeChannel("Care coordination", [])
    ctx = RelayContext(api.app[sessions_key], chat)
    relays = [PostMessageExecutor(), PostMessageExecutor()]
    entries = []
    for relay, message_id in zip(relays, message_ids, strict=True):
        entry = OutboxEntry(-message_id, kind_of(PostMessage), PostMessage(conversation_id, message_id), 1)
        async with ctx.sessions() as session:
            prepared = await relay.prepare([entry], session)
        entries.append(dataclasses.replace(entry, prepared=prepared[entry.id]))
    assert all(e.prepared.notices for e in entries)  # type: ignore[attr-defined] # each thinks it is first

    await asyncio.gather(
        *(relay.deliver(e.effect, e, ctx) for relay, e in zip(relays, entries, strict=True))  # type: ignore[arg-type]
    )
    for relay, e in zip(relays, entries, strict=True):
        async with ctx.sessions() as session, session.begin():
            await relay.settle([e], [], session)

    posted = [(p.custom_type, p.text) for p in chat.channels[url].messages]
    assert posted[0] == (PART2_NOTICE_CUSTOM_TYPE, PART2_SHORT_NOTICE)
    assert sorted(posted[1:]) == [("caremsg_message", "first"), ("caremsg_message", "second")]
    recorded = await db.fetch(
        "SELECT organization_id, consent_id FROM part2_notices WHERE conversation_id = $1", conversation_id
    )
    assert [tuple(r) for r in recorded] == [(partner_org, consent_id)]
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE event = 'part2.notice_sent' AND resource_id = $1",
        str(conversation_id),
    )
    assert audited == 1


async def test_a_file_as_the_first_message_to_a_part2_partner_is_preceded_by_the_notice_once(
    api: Api, db: asyncpg.Connection
) -> None:
    peer, conversation_id, consent_id, partner_org = await partner_conversation(api, **PART2)
    url = await db.fetchval("SELECT channel_url FROM conversations WHERE id = $1", conversation_id)
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7\n%%EOF\n", filename="plan.pdf", content_type="application/pdf")
    status, attached = await api.call(
        "POST", f"/api/conversations/{conversation_id}/attachments", peer, data=form
    )
    assert status == 202, attached
    await settled_deliveries(api, peer, attached["id"])
    status, accepted = await send(api, peer, conversation_id, "see the plan")
    assert status == 202, accepted
    await settled_deliveries(api, peer, accepted["id"])

    channel = emulator(api).channels[url]
    assert [(m.custom_type, m.type) for m in channel.messages if m.custom_type != "caremsg_conversation"] == [
        ("caremsg_part2_notice", "MESG"),
        ("caremsg_message", "FILE"),
        ("caremsg_message", "MESG"),
    ]
    audited = await db.fetch(
        "SELECT workflow, details FROM audit_events WHERE event = 'part2.notice_sent' AND resource_id = $1",
        str(conversation_id),
    )
    assert [(a["workflow"], json.loads(a["details"])["consent_id"]) for a in audited] == [
        ("delivery.send_file", consent_id)
    ]
    assert (
        await db.fetchval(
            "SELECT organization_id FROM part2_notices WHERE conversation_id = $1", conversation_id
        )
        == partner_org
    )
    # the file is a disclosure to the partner's staff like a text: each names the consent
    disclosed = await db.fetch(
        "SELECT workflow, details FROM audit_events WHERE event = 'message.disclosed' AND resource_id = $1"
        " ORDER BY id",
        str(conversation_id),
    )
    assert [(d["workflow"], json.loads(d["details"])["consent_id"]) for d in disclosed] == [
        ("message.attach", consent_id),
        ("message.send", consent_id),
    ]
