"""The send-message workflow's own unit of work (integrations/db/send_uow.py): one read, one statement
that stores everything, over HTTP against the real app and PostgreSQL.

What the general unit of work guarantees must hold here too: the message, its delivery rows, its
outbox entries (the chat post and one text per SMS delivery that may be sent), the Idempotency-Key
binding and the audit record are stored together or not at all.
"""

from __future__ import annotations

import json
import secrets

import asyncpg

from integrations.db.uow import AUDIT_FIELDS
from tests.support.api import Api
from tests.support.database import audit_refuses
from tests.support.messaging import care_team, send


async def test_every_audit_event_field_is_a_column_of_the_audit_table(db: asyncpg.Connection) -> None:
    columns = {
        r["column_name"]
        for r in await db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_events'"
        )
    }

    assert set(AUDIT_FIELDS) <= columns


async def test_a_send_stores_the_message_its_deliveries_its_outbox_entries_and_its_audit_record(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)

    status, accepted = await send(api, team.peer, team.conversation_id, "Follow-up on Tuesday.")

    assert status == 202, accepted
    message_id = accepted["id"]
    deliveries = await db.fetch(
        "SELECT id, recipient, state, content FROM message_deliveries WHERE message_id = $1 ORDER BY id",
        message_id,
    )
    assert [(d["recipient"], d["state"]) for d in deliveries] == [
        ("channel", "queued"),
        (f"sms:{team.external_id}", "queued"),
    ]
    assert deliveries[1]["content"] == "notification"
    entries = await db.fetch(
        "SELECT kind, payload, conversation_id FROM outbox WHERE message_id = $1 ORDER BY id", message_id
    )
    assert [(e["kind"], json.loads(e["payload"])) for e in entries] == [
        ("send_message", {"message_id": message_id}),
        ("send_sms", {"delivery_id": deliveries[1]["id"]}),
    ]
    assert {e["conversation_id"] for e in entries} == {team.conversation_id}
    [decision] = await db.fetch(
        "SELECT outcome, resource_id, details FROM audit_events"
        " WHERE workflow = 'message.send' AND details->>'message_id' = $1",
        str(message_id),
    )
    assert decision["outcome"] == "success"
    assert decision["resource_id"] == str(team.conversation_id)
    [sms_decision] = await db.fetch(
        "SELECT decision FROM audit_events WHERE workflow = 'sms.send_full_text' AND resource_id = $1",
        str(message_id),
    )
    assert sms_decision["decision"] == "deny"  # the shipped policy texts a notification only


async def test_when_the_audit_record_cannot_be_written_no_delivery_row_or_text_is_queued_either(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    text_ = f"unaudited {secrets.token_hex(4)}"
    before = await db.fetchval("SELECT count(*) FROM message_deliveries")

    async with audit_refuses(db, "NEW.workflow = 'message.send' AND NEW.outcome = 'success'"):
        status, problem = await send(
            api, team.peer, team.conversation_id, text_, headers={"Idempotency-Key": "k-unaudited"}
        )

    assert status == 503, problem
    assert text_ not in json.dumps(problem)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE body = $1", text_) == 0
    assert await db.fetchval("SELECT count(*) FROM message_deliveries") == before
    assert await db.fetchval(
        "SELECT count(*) FROM outbox WHERE conversation_id = $1 AND kind = 'send_sms'", team.conversation_id
    ) == 0  # fmt: skip
    assert await db.fetchval(
        "SELECT count(*) FROM idempotency_keys WHERE key = 'k-unaudited' AND resource_id IS NOT NULL"
    ) == 0  # fmt: skip
    [failure] = await db.fetch(
        "SELECT outcome, details FROM audit_events WHERE workflow = 'message.send'"
        " AND actor_id = $1 ORDER BY id DESC LIMIT 1",
        team.peer.id,
    )
    assert failure["outcome"] == "failure"
    assert json.loads(failure["details"])["ended_by"] == "service_unavailable"


async def test_a_refused_send_leaves_only_its_denial(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    outsider = await api.person("peer_support", await api.organization())  # not a member, not covered
    text_ = f"not yours {secrets.token_hex(4)}"

    status, problem = await send(api, outsider, team.conversation_id, text_)

    assert status == 404, problem  # no relation to the patient: answered as no such conversation
    assert await db.fetchval("SELECT count(*) FROM messages WHERE body = $1", text_) == 0
    denial, lookup = await db.fetch(
        "SELECT event, outcome, decision FROM audit_events WHERE workflow = 'message.send' AND actor_id = $1"
        " ORDER BY id",
        outsider.id,
    )
    assert (denial["outcome"], denial["decision"]) == ("denied", "deny")
    assert (lookup["event"], lookup["outcome"]) == ("lookup", "failure")  # what its organization sees


async def test_a_send_to_a_conversation_that_does_not_exist_is_404_and_recorded(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)

    status, problem = await send(api, team.peer, 987_654_321, "anyone there?")

    assert status == 404, problem
    [lookup] = await db.fetch(
        "SELECT event, outcome, reason FROM audit_events WHERE workflow = 'message.send'"
        " AND actor_id = $1 AND resource_id = '987654321'",
        team.peer.id,
    )
    assert (lookup["event"], lookup["outcome"], lookup["reason"]) == ("lookup", "failure", "not_found")
