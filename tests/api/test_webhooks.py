"""Inbound webhooks over HTTP: Sendbird's signed events and the SMS provider's (played by the emulator).

The endpoints are public and authenticated by ``x-sendbird-signature`` only; they answer at once and
the events are processed in the background, so tests poll for the effect with a deadline.

Longer than 400 lines because Sendbird's and the SMS provider's webhooks are the two ends of one
path: a staff post in the channel becomes a text and a texted reply becomes a post, so the tests
follow events through both, on the same care teams and emulators.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from handlers.app import create_app
from handlers.settings import Settings
from integrations.sendbird import sign_webhook
from integrations.sendbird_emulator import sendbird_json
from integrations.twilio import sign_request
from tests.support.api import Api
from tests.support.audit import webhook_request_id
from tests.support.messaging import (
    NOTIFICATION,
    PHONE,
    care_team,
    emulator,
    receive_sms,
    running_emulator,
    send,
    settled_deliveries,
    staff_post,
    texts,
    twilio,
    unique_phone,
    wire_webhooks,
)
from tests.support.polling import eventually

SENDBIRD = "/api/webhooks/sendbird"


def token(api: Api) -> str:
    return emulator(api).api_token


async def post(api: Api, body: bytes, signature: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["x-sendbird-signature"] = signature
    return await api.call("POST", SENDBIRD, data=body, headers=headers)


# --- signatures -------------------------------------------------------------------------------------


async def test_a_correctly_signed_event_is_accepted_without_a_bearer_token(api: Api) -> None:
    body = sendbird_json({"category": "group_channel:message_read", "channel": {"channel_url": "nope"}})

    status, answer = await post(api, body, sign_webhook(body, token(api)))

    assert status == 200, answer
    assert answer == {"status": "accepted"}


async def test_an_event_whose_body_was_tampered_with_is_401(api: Api, db: asyncpg.Connection) -> None:
    body = sendbird_json({"category": "group_channel:message_read", "channel": {"channel_url": "a"}})
    signature = sign_webhook(body, token(api))

    status, problem = await post(api, body.replace(b'"a"', b'"b"'), signature)

    assert status == 401, problem
    assert problem["code"] == "unauthenticated"
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE body LIKE '%\"b\"%'") == 0


async def test_an_event_signed_with_another_token_is_401(api: Api) -> None:
    body = sendbird_json({"category": "group_channel:message_read"})

    status, problem = await post(api, body, sign_webhook(body, "a-secondary-or-wrong-token"))

    assert status == 401, problem


async def test_an_event_without_a_signature_is_401(api: Api) -> None:
    status, problem = await post(api, sendbird_json({"category": "group_channel:message_read"}), None)

    assert status == 401, problem
    assert problem["status"] == 401


async def test_the_signature_covers_the_raw_bytes_so_re_serialised_json_is_401(api: Api) -> None:
    event = {"category": "group_channel:message_read", "sender": {"profile_url": "https://cdn.example/a.png"}}
    raw = sendbird_json(event)
    assert b"https:\\/\\/" in raw  # Sendbird escapes "/" as "\/"
    signature = sign_webhook(raw, token(api))

    reserialised = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    status, problem = await post(api, reserialised, signature)
    assert status == 401, problem

    status, answer = await post(api, raw, signature)
    assert status == 200, answer


@pytest.mark.parametrize("depth", [100, 5000])  # parsed by every Python; past 3.11's parser, not 3.13's
async def test_a_signed_body_nested_too_deep_is_400_not_500(api: Api, depth: int) -> None:
    body = b'{"category": "group_channel:message_send", "payload": ' + b"[" * depth + b"]" * depth + b"}"

    status, problem = await post(api, body, sign_webhook(body, token(api)))

    assert status == 400, problem
    assert [e["field"] for e in problem["errors"]] == ["body"]


async def test_a_retried_event_is_stored_once(api: Api, db: asyncpg.Connection) -> None:
    body = sendbird_json({"category": "group_channel:message_send", "payload": {"message_id": 987654321}})
    signature = sign_webhook(body, token(api))

    first = await post(api, body, signature)
    second = await post(api, body, signature)

    assert first == (200, {"status": "accepted"})
    assert second == (200, {"status": "duplicate"})
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE dedupe_key LIKE '%:987654321'") == 1


async def test_after_a_restart_the_new_emulators_events_are_processed_not_dropped_as_retries(
    aiohttp_client: Any, settings: Settings, db: asyncpg.Connection
) -> None:
    # `caremsg serve` twice on one database: each run is a new app with a new emulator.
    first = await _serve_and_send(Api(await aiohttp_client(create_app(settings))), db)
    second = await _serve_and_send(Api(await aiohttp_client(create_app(settings))), db)

    # Each run's echo of our own send is stored under its message id and processed (ignored), not
    # answered "duplicate" because an earlier emulator had handed out the same id.
    assert first[1] == second[1] == "ignored"
    assert first[0] != second[0]


async def _serve_and_send(api: Api, db: asyncpg.Connection) -> tuple[int, str]:
    """Send one message through this app; its emulator's message id and how its echo was processed."""
    wire_webhooks(api)
    team = await care_team(api)
    channel = team.conversation["channelUrl"]
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])
    await running_emulator(api).drain_webhooks()
    (posted,) = emulator(api).messages(channel)
    # (an ignored event keeps no body: found by its key alone; first[0] != second[0] below says
    # the key is this run's)
    processed = await eventually(
        lambda: db.fetchval(
            "SELECT status FROM webhook_events WHERE dedupe_key = $1 AND status <> 'pending'",
            f"group_channel:message_send:{posted.message_id}",
        ),
        "the echo to be processed",
    )
    await api.client.close()  # this run stops before the next starts
    return posted.message_id, processed


# --- what events do ----------------------------------------------------------------------------------


async def test_echoes_of_our_own_sends_are_ignored(api: Api, db: asyncpg.Connection) -> None:
    wire_webhooks(api)
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "hello")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])
    await running_emulator(api).drain_webhooks()

    (posted,) = emulator(api).messages(team.conversation["channelUrl"])
    statuses = await eventually(
        lambda: db.fetch(
            "SELECT status, body FROM webhook_events WHERE dedupe_key = $1 AND status <> 'pending'",
            f"group_channel:message_send:{posted.message_id}",
        ),
        "the echo to be processed",
    )
    # ignored, and its body (the text, a copy of what caremsg holds) not kept
    assert [(r["status"], r["body"]) for r in statuses] == [("ignored", "")]
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id)
        == 1
    )
    assert len(texts(api, team.phone)) == 1


async def test_a_staff_post_from_the_chat_app_texts_external_members_a_notification(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)
    body = sendbird_json(staff_post(team, nurse_chat, message_id=424242, text="Sent from the phone app"))

    status, answer = await post(api, body, sign_webhook(body, token(api)))
    assert status == 200, answer

    sent = await eventually(lambda: _async(texts(api, team.phone)), "the SMS notification")
    assert [t.text for t in sent] == [NOTIFICATION]
    stored = await db.fetchrow(
        "SELECT sender_id, state, chat_message_id FROM messages WHERE conversation_id = $1",
        team.conversation_id,
    )
    assert dict(stored) == {"sender_id": team.nurse.id, "state": "sent", "chat_message_id": 424242}

    # Sendbird retries the same event: nothing happens twice.
    status, answer = await post(api, body, sign_webhook(body, token(api)))
    assert answer == {"status": "duplicate"}
    assert len(texts(api, team.phone)) == 1


async def test_a_post_caremsg_ignores_keeps_no_body(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)
    event = staff_post(team, nurse_chat, message_id=515151, text="Posted where caremsg has no conversation")
    event["channel"]["channel_url"] = "not_a_caremsg_channel"
    body = sendbird_json(event)

    status, answer = await post(api, body, sign_webhook(body, token(api)))
    assert status == 200, answer

    stored = await eventually(
        lambda: db.fetchrow(
            "SELECT status, body FROM webhook_events WHERE dedupe_key = $1 AND status <> 'pending'",
            "group_channel:message_send:515151",
        ),
        "the post to be processed",
    )
    # the workflow ignored it (no conversation): the text it carried is not kept
    assert (stored["status"], stored["body"]) == ("ignored", "")


async def test_a_read_receipt_marks_the_channel_delivery_delivered(api: Api, db: asyncpg.Connection) -> None:
    wire_webhooks(api)
    team = await care_team(api)
    status, accepted = await send(api, team.peer, team.conversation_id, "please read")
    assert status == 202, accepted
    await settled_deliveries(api, team.peer, accepted["id"])

    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)
    gateway = api.app[_chat_key()]
    await gateway._client.mark_as_read(team.conversation["channelUrl"], nurse_chat)

    async def delivered() -> dict[str, Any] | None:
        status, body = await api.call("GET", f"/api/messages/{accepted['id']}", team.peer)
        assert status == 200, body
        return body if body["state"] == "delivered" else None

    body = await eventually(delivered, "the read receipt")
    assert body["deliveries"][0] == {**body["deliveries"][0], "channel": "chat", "state": "delivered"}


# --- inbound SMS ---------------------------------------------------------------------------------------


async def test_an_sms_reply_is_posted_into_the_channel_as_the_external_participant_once(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    team = await care_team(api)
    channel = team.conversation["channelUrl"]
    external_chat = await db.fetchval(
        "SELECT chat_user_id FROM external_participants WHERE id = $1", team.external_id
    )

    provider_id = receive_sms(api, team.phone, "Thanks, will call tomorrow")
    receive_sms(api, team.phone, "Thanks, will call tomorrow", message_sid=provider_id)  # repeated

    posted = await eventually(lambda: _async(emulator(api).messages(channel)), "the reply in the channel")
    await twilio(api).drain()
    # Only this conversation's entries: the test database is shared with every other test.
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) = 0 FROM outbox WHERE status = 'pending' AND conversation_id = $1",
            team.conversation["id"],
        ),
        "the outbox to drain",
    )
    posted = emulator(api).messages(channel)
    assert [(m.sender_id, m.message, m.dedup_id) for m in posted] == [
        (external_chat, "Thanks, will call tomorrow", provider_id)
    ]


async def test_stop_opts_out_so_no_further_texts_and_start_opts_back_in(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    team = await care_team(api)

    receive_sms(api, team.phone, " stop ")
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM sms_opt_outs WHERE phone_number = $1", team.phone), "STOP"
    )
    audit = await db.fetchrow(
        "SELECT event, workflow, resource_id, patient_id FROM audit_events WHERE event = 'sms_opt_out'"
        " AND patient_id = $1",
        team.patient_id,
    )
    assert dict(audit) == {
        "event": "sms_opt_out",
        "workflow": "sms.reply",
        "resource_id": str(team.external_id),
        "patient_id": team.patient_id,
    }

    status, accepted = await send(api, team.peer, team.conversation_id, "are you there?")
    assert status == 202, accepted
    assert accepted["deliveries"][1]["state"] == "failed"
    assert accepted["deliveries"][1]["reason"] == "opted_out"
    await settled_deliveries(api, team.peer, accepted["id"])
    # Twilio confirmed the STOP itself (it answers keywords); caremsg texted nothing.
    assert texts(api, team.phone) == []
    assert twilio(api).state.auto_replies == [(team.phone, "STOP")]

    receive_sms(api, team.phone, "START")
    await eventually(
        lambda: db.fetchval("SELECT count(*) = 0 FROM sms_opt_outs WHERE phone_number = $1", team.phone),
        "START",
    )
    status, accepted = await send(api, team.peer, team.conversation_id, "welcome back")
    assert status == 202, accepted
    assert [d["state"] for d in await settled_deliveries(api, team.peer, accepted["id"])] == ["sent", "sent"]
    assert [t.text for t in texts(api, team.phone)] == [NOTIFICATION]


async def test_keywords_are_recorded_every_time_and_answered_by_twilio_not_by_caremsg(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    team = await care_team(api)

    async def recorded(event: str, count: int) -> None:
        # Inbound texts are processed asynchronously: wait for each before sending the next.
        await eventually(
            lambda: db.fetchval(
                "SELECT count(*) >= $2 FROM audit_events WHERE event = $1 AND patient_id = $3",
                event,
                count,
                team.patient_id,
            ),
            f"{count} {event} record(s)",
        )

    receive_sms(api, team.phone, "STOP")
    await recorded("sms_opt_out", 1)
    receive_sms(api, team.phone, "stop")  # already opted out: changes nothing
    await recorded("sms_opt_out", 2)
    receive_sms(api, team.phone, "yes")  # one of Twilio's opt-in words: its OptOutType decides
    await recorded("sms_opt_in", 1)
    receive_sms(api, team.phone, "help")
    await recorded("sms_help", 1)

    changed = await db.fetch(
        "SELECT event, details->>'changed' AS changed FROM audit_events"
        " WHERE workflow = 'sms.reply' AND patient_id = $1 ORDER BY id",
        team.patient_id,
    )
    assert [(r["event"], r["changed"]) for r in changed] == [
        ("sms_opt_out", "1"),
        ("sms_opt_out", "0"),
        ("sms_opt_in", "1"),
        ("sms_help", None),
    ]
    assert await db.fetchval("SELECT count(*) FROM sms_opt_outs WHERE phone_number = $1", team.phone) == 0
    pending = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'send_sms' AND conversation_id = $1", team.conversation_id
    )
    assert pending == 0  # no keyword answer queued: Twilio answered each one
    assert texts(api, team.phone) == []
    assert [word for _, word in twilio(api).state.auto_replies] == ["STOP", "STOP", "START", "HELP"]


async def test_a_number_twilio_has_opted_out_is_not_texted_and_caremsg_records_the_opt_out(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    twilio(api).state.opted_out.add(team.phone)  # a STOP caremsg never heard of (its webhook was lost)

    status, accepted = await send(api, team.peer, team.conversation_id, "are you there?")
    assert status == 202, accepted
    deliveries = await settled_deliveries(api, team.peer, accepted["id"])

    assert [(d["state"], d.get("reason")) for d in deliveries] == [("sent", None), ("failed", "opted_out")]
    assert texts(api, team.phone) == []
    stored = await db.fetchval(
        "SELECT provider_message_id FROM sms_opt_outs WHERE phone_number = $1", team.phone
    )
    assert stored == "carrier_refusal"
    # The next message is not even tried: our record now says what the carrier's says.
    status, accepted = await send(api, team.peer, team.conversation_id, "still there?")
    assert status == 202, accepted
    assert accepted["deliveries"][1]["reason"] == "opted_out"
    tried = [form for _, _, form in twilio(api).state.received if form.get("To") == team.phone]
    assert len(tried) == 1


async def test_an_inbound_sms_with_a_bad_signature_is_401_and_one_with_the_right_one_is_accepted(
    api: Api,
) -> None:
    state = twilio(api).state
    url = str(api.client.make_url("/api/webhooks/twilio"))
    form = {"MessageSid": "SM" + "1" * 32, "AccountSid": state.account_sid, "From": PHONE, "Body": "hi"}

    bad = await api.client.post(
        "/api/webhooks/twilio", data=form, headers={"X-Twilio-Signature": sign_request(url, form, "wrong")}
    )
    good = await api.client.post(
        "/api/webhooks/twilio",
        data=form,
        headers={"X-Twilio-Signature": sign_request(url, form, state.auth_token)},
    )

    assert bad.status == 401
    assert bad.headers["Content-Type"].startswith("application/problem+json")
    assert good.status == 200
    assert good.headers["Content-Type"].startswith("text/xml")
    assert "<Response></Response>" in await good.text()


async def test_a_signed_request_that_is_not_an_incoming_message_is_400_naming_the_field(api: Api) -> None:
    state = twilio(api).state
    url = str(api.client.make_url("/api/webhooks/twilio"))
    form = {"AccountSid": state.account_sid, "From": PHONE, "Body": "hi"}

    reply = await api.client.post(
        "/api/webhooks/twilio",
        data=form,
        headers={"X-Twilio-Signature": sign_request(url, form, state.auth_token)},
    )

    assert reply.status == 400
    assert "MessageSid" in await reply.text()


async def _async(value: Any) -> Any:
    return value


def _chat_key() -> Any:
    from handlers.keys import chat_key

    return chat_key


async def test_a_stop_from_a_number_not_on_file_is_kept_so_it_is_not_texted_once_added(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    phone = unique_phone()

    sid = receive_sms(api, phone, "STOP")

    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM sms_opt_outs WHERE phone_number = $1", phone), "the STOP"
    )
    # The record of this text's webhook: the newest opt-out record may be another test's.
    audit = await db.fetchrow(
        "SELECT resource_type, resource_id, patient_id, details FROM audit_events"
        " WHERE event = 'sms_opt_out' AND request_id = $1",
        await webhook_request_id(db, f"sms:{sid}"),
    )
    assert (audit["resource_type"], audit["resource_id"], audit["patient_id"]) == ("phone_number", None, None)
    assert phone not in audit["details"]
    assert texts(api, phone) == []  # Twilio confirms a STOP itself; caremsg texts nothing

    team = await care_team(api, phones=(phone,))  # the number is added afterwards
    status, accepted = await send(api, team.peer, team.conversation_id, "are you there?")

    assert status == 202, accepted
    assert accepted["deliveries"][1]["state"] == "failed"
    assert accepted["deliveries"][1]["reason"] == "opted_out"
    await settled_deliveries(api, team.peer, accepted["id"])
    assert texts(api, phone) == []
