"""An SMS reply never lands in a conversation silently (issue 9, item 10).

One phone number can be an external participant in conversations of several organizations. A reply
is posted only where it unambiguously belongs: the conversation its leading ``#code`` names, or the
number's one active conversation. Otherwise it is held, audited for every candidate conversation, and
the sender is asked back with the codes alone (no titles, names or organizations).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.api.conftest import Api
from tests.api.messaging_support import (
    NOTIFICATION,
    CareTeam,
    care_team,
    emulator,
    eventually,
    receive_sms,
    running_emulator,
    send,
    settled_deliveries,
    texts,
    twilio,
    unique_phone,
    wire_webhooks,
)


async def _value(value: Any) -> Any:
    return value


async def _codes(db: asyncpg.Connection, team: CareTeam) -> int:
    return int(
        await db.fetchval("SELECT reply_code FROM external_participants WHERE id = $1", team.external_id)
    )


async def _two_organizations_one_number(api: Api) -> tuple[CareTeam, CareTeam, str]:
    """Organization A's conversation, then organization B's, both with the same external number."""
    wire_webhooks(api)
    phone = unique_phone()
    return await care_team(api, phones=(phone,)), await care_team(api, phones=(phone,)), phone


async def _texted(api: Api, phone: str, count: int) -> list[str]:
    async def probe() -> list[str] | None:
        sent = [t.text for t in texts(api, phone)]
        return sent if len(sent) >= count else None

    return await eventually(probe, f"{count} texts to the number")


async def _held(db: asyncpg.Connection, *teams: CareTeam) -> list[asyncpg.Record]:
    async def probe() -> list[asyncpg.Record] | None:
        rows = await db.fetch(
            "SELECT patient_id, outcome, reason, details FROM audit_events"
            " WHERE event = 'sms_reply_held' AND patient_id = ANY($1::int[]) ORDER BY patient_id",
            [t.patient_id for t in teams],
        )
        return rows if len(rows) == len(teams) else None

    return await eventually(probe, "the held reply's records")


async def test_a_number_in_two_organizations_conversations_is_told_which_code_each_text_is_for(
    api: Api, db: asyncpg.Connection
) -> None:
    a, b, phone = await _two_organizations_one_number(api)
    code_a, code_b = await _codes(db, a), await _codes(db, b)
    assert code_a != code_b

    for team in (a, b):
        status, accepted = await send(api, team.peer, team.conversation_id, "Lithium level is 1.4")
        assert status == 202, accepted
        await settled_deliveries(api, team.peer, accepted["id"])

    texts = await _texted(api, phone, 2)
    assert texts == [
        f"{NOTIFICATION} To reply, start your message with #{code_a}.",
        f"{NOTIFICATION} To reply, start your message with #{code_b}.",
    ]


async def test_a_reply_without_a_code_is_held_and_asked_back_never_posted_where_it_texted_last(
    api: Api, db: asyncpg.Connection
) -> None:
    a, b, phone = await _two_organizations_one_number(api)
    # Organization B texted the number last: the old routing would have posted there.
    status, accepted = await send(api, b.peer, b.conversation_id, "See you Monday")
    assert status == 202, accepted
    await settled_deliveries(api, b.peer, accepted["id"])
    sent_before = len(await _texted(api, phone, 1))

    provider_id = receive_sms(api, phone, "Yes, she took her dose at 9")

    held = await _held(db, a, b)
    # Held, never posted (the sender is asked to resend): the stored webhook keeps no body, so the
    # text is nowhere in caremsg (no conversation's lifespan would ever time its deletion).
    stored = await db.fetchrow(
        "SELECT status, body FROM webhook_events WHERE dedupe_key = $1", f"sms:{provider_id}"
    )
    assert (stored["status"], stored["body"]) == ("processed", "")
    assert [(r["patient_id"], r["outcome"], r["reason"]) for r in held] == [
        (a.patient_id, "failure", "ambiguous_reply"),
        (b.patient_id, "failure", "ambiguous_reply"),
    ]
    question = (await _texted(api, phone, sent_before + 1))[-1]
    codes = sorted([await _codes(db, a), await _codes(db, b)])
    assert question == (
        "Your reply was not delivered: this number is in more than one conversation. "
        f"Please send it again starting with one of #{codes[0]}, #{codes[1]}."
    )
    await twilio(api).drain()
    await running_emulator(api).drain_webhooks()
    externals = {
        r["chat_user_id"]
        for r in await db.fetch(
            "SELECT chat_user_id FROM external_participants WHERE id = ANY($1::int[])",
            [a.external_id, b.external_id],
        )
    }
    for team in (a, b):  # nothing posted as the external participant, anywhere
        assert [
            m for m in emulator(api).messages(team.conversation["channelUrl"]) if m.sender_id in externals
        ] == []
    assert await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'post_sms_reply' AND conversation_id = ANY($1::int[])",
        [a.conversation_id, b.conversation_id],
    ) == 0  # fmt: skip


async def test_a_reply_starting_with_a_code_goes_to_that_conversation_only_without_the_code(
    api: Api, db: asyncpg.Connection
) -> None:
    a, b, phone = await _two_organizations_one_number(api)
    external_a = await db.fetchval(
        "SELECT chat_user_id FROM external_participants WHERE id = $1", a.external_id
    )

    provider_id = receive_sms(api, phone, f"#{await _codes(db, a)} Yes, at 9")

    channel_a, channel_b = a.conversation["channelUrl"], b.conversation["channelUrl"]
    posted = await eventually(
        lambda: _value([m for m in emulator(api).messages(channel_a) if m.dedup_id == provider_id] or None),
        "the reply in A's channel",
    )
    assert [(m.sender_id, m.message) for m in posted] == [(external_a, "Yes, at 9")]
    assert [m for m in emulator(api).messages(channel_b) if m.dedup_id == provider_id] == []
    [decision] = await db.fetch(
        "SELECT decision, resource_id, request_id, details FROM audit_events"
        " WHERE workflow = 'sms.reply' AND event = 'decision' AND patient_id = $1",
        a.patient_id,
    )
    assert (decision["decision"], decision["resource_id"]) == ("allow", str(a.conversation_id))
    # The decision is tied to the inbound text, as its other records are (found by the reference model).
    event_id = await db.fetchval("SELECT id FROM webhook_events WHERE dedupe_key = $1", f"sms:{provider_id}")
    assert decision["request_id"] == f"webhook-{event_id}"
    # Posted: the stored webhook keeps its body until retention ends the reply's lifespan.
    body = await db.fetchval("SELECT body FROM webhook_events WHERE id = $1", event_id)
    assert "Yes, at 9" in body


async def test_a_reply_with_a_code_the_number_does_not_have_is_held_too(
    api: Api, db: asyncpg.Connection
) -> None:
    a, b, phone = await _two_organizations_one_number(api)
    unused = max(await _codes(db, a), await _codes(db, b)) + 5

    receive_sms(api, phone, f"#{unused} hello")

    held = await _held(db, a, b)
    assert {r["reason"] for r in held} == {"unknown_reply_code"}
    question = (await _texted(api, phone, 1))[-1]
    assert question.startswith("Your reply was not delivered")
    assert "Care coordination" not in question  # the conversation's title never goes out


async def test_a_number_in_one_conversation_replies_without_a_code(api: Api, db: asyncpg.Connection) -> None:
    wire_webhooks(api)
    team = await care_team(api)

    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])
    assert await _texted(api, team.phone, 1) == [NOTIFICATION]  # no code needed
    provider_id = receive_sms(api, team.phone, "thanks")

    channel = team.conversation["channelUrl"]
    posted = await eventually(
        lambda: _value([m for m in emulator(api).messages(channel) if m.dedup_id == provider_id] or None),
        "the reply in the channel",
    )
    assert [m.message for m in posted] == ["thanks"]


async def test_stop_after_a_code_still_opts_the_number_out(api: Api, db: asyncpg.Connection) -> None:
    a, _b, phone = await _two_organizations_one_number(api)

    receive_sms(api, phone, f"#{await _codes(db, a)} STOP")

    await eventually(
        lambda: db.fetchval("SELECT count(*) = 1 FROM sms_opt_outs WHERE phone_number = $1", phone),
        "the opt-out",
    )
    posts = "SELECT count(*) FROM outbox WHERE kind = 'post_sms_reply' AND conversation_id = $1"
    assert await db.fetchval(posts, a.conversation_id) == 0


async def test_a_number_removed_from_its_conversation_is_not_brought_back_by_a_later_consent(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    team = await care_team(api)
    [consent_id] = [
        r["id"]
        for r in await db.fetch(
            "SELECT id FROM consents WHERE patient_id = $1 AND external_phone_number = $2",
            team.patient_id,
            team.phone,
        )
    ]
    status, body = await api.call(
        "POST", f"/api/consents/{consent_id}/revoke", team.officer, json={"reason": "Patient withdrew it"}
    )
    assert status == 200, body
    await eventually(
        lambda: db.fetchval(
            "SELECT removed_at IS NOT NULL FROM external_participants WHERE id = $1", team.external_id
        ),
        "the participant removed by the revocation",
    )
    # A new consent naming the same number, for another conversation some day.
    await api.consent(
        team.officer, team.patient_id, externalParty={"phoneNumber": team.phone, "name": "Dr. E"}
    )

    provider_id = receive_sms(api, team.phone, "Is she still on lithium?")

    [decided] = await eventually(
        lambda: db.fetch(
            "SELECT outcome, reason, details FROM audit_events WHERE event = 'decision'"
            " AND workflow = 'sms.reply' AND patient_id = $1",
            team.patient_id,
        ),
        "the reply's decision",
    )
    assert (decided["outcome"], decided["reason"]) == ("denied", "no_external_consent")
    assert '"participant_removed": true' in decided["details"]
    await twilio(api).drain()
    await running_emulator(api).drain_webhooks()
    channel = team.conversation["channelUrl"]
    assert [m for m in emulator(api).messages(channel) if m.dedup_id == provider_id] == []
