"""Read receipts over HTTP: ``POST /api/conversations/{id}/read``, each member's receipt of a message
(``GET /api/messages/{id}``, a conversation's messages), the caller's ``unreadCount``, and a chat
client's read receipt arriving through the Sendbird emulator's signed ``message_read`` webhook.
tests/unit/test_workflows_read_receipts.py covers the same workflows on fakes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from integrations.http_clients import http_client
from tests.support.api import Api, Person
from tests.support.messaging import (
    CareTeam,
    care_team,
    emulator,
    message_status,
    running_emulator,
    send,
    settled_deliveries,
    wire_webhooks,
)
from tests.support.polling import eventually


async def _sent(api: Api, who: Person, team: CareTeam, text: str) -> int:
    status, accepted = await send(api, who, team.conversation_id, text)
    assert status == 202, accepted
    assert accepted["recipients"] is None  # the answer to sending does not read receipts
    return int(accepted["id"])


async def _mark(api: Api, who: Person, conversation_id: int, message_id: Any) -> tuple[int, Any]:
    return await api.call(
        "POST", f"/api/conversations/{conversation_id}/read", who, json={"messageId": message_id}
    )


async def _conversation(api: Api, who: Person, conversation_id: int) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/conversations/{conversation_id}", who)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def _listed_unread(api: Api, who: Person, conversation_id: int) -> int:
    status, page = await api.call("GET", "/api/conversations?limit=200", who)
    assert status == 200, page
    [item] = [c for c in page["items"] if c["id"] == conversation_id]
    return int(item["unreadCount"])


async def test_a_member_marks_read_and_every_member_sees_who_read_what_and_when(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    first = await _sent(api, team.peer, team, "Seen at 9, BP stable.")
    second = await _sent(api, team.peer, team, "Discharge tomorrow.")
    await settled_deliveries(api, team.peer, first)
    assert await _listed_unread(api, team.nurse, team.conversation_id) == 2

    status, state = await _mark(api, team.nurse, team.conversation_id, first)

    assert status == 200, state
    assert state == {
        **state,
        "conversationId": team.conversation_id,
        "userId": team.nurse.id,
        "lastReadMessageId": first,
        "source": "api",
        "unreadCount": 1,
    }
    body = await message_status(api, team.peer, first)
    [nurse] = body["recipients"]  # every member but the sender
    assert (nurse["userId"], nurse["state"]) == (team.nurse.id, "read")
    assert nurse["readAt"] == state["readAt"]
    assert datetime.fromisoformat(nurse["deliveredAt"]) <= datetime.fromisoformat(nurse["readAt"])
    later = await message_status(api, team.nurse, second)
    assert [(r["userId"], r["state"], r["readAt"]) for r in later["recipients"]] == [
        (team.nurse.id, later["recipients"][0]["state"], None)
    ]
    assert later["recipients"][0]["state"] in ("sent", "delivered")
    # The existing fields stay as they were (the seed's clients read them).
    assert {"id", "conversationId", "senderId", "message", "state", "createdAt", "deliveries"} <= set(body)
    detail = await _conversation(api, team.nurse, team.conversation_id)
    assert detail["unreadCount"] == 1
    assert [m["recipients"][0]["state"] for m in detail["messages"]][:1] == ["read"]
    assert await _listed_unread(api, team.nurse, team.conversation_id) == 1
    assert await _listed_unread(api, team.peer, team.conversation_id) == 0  # own messages
    stored = await db.fetchrow(
        "SELECT last_read_message_id, source FROM conversation_reads"
        " WHERE conversation_id = $1 AND user_id = $2",
        team.conversation_id,
        team.nurse.id,
    )
    assert dict(stored) == {"last_read_message_id": first, "source": "api"}


async def test_marking_read_is_idempotent_forward_only_and_audited_without_text(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    first = await _sent(api, team.peer, team, "Potassium 3.1, please recheck.")
    second = await _sent(api, team.peer, team, "Recheck done.")

    _, forward = await _mark(api, team.nurse, team.conversation_id, second)
    status_again, again = await _mark(api, team.nurse, team.conversation_id, second)
    status_back, back = await _mark(api, team.nurse, team.conversation_id, first)

    assert (status_again, status_back) == (200, 200)
    assert forward == again == back
    assert back["lastReadMessageId"] == second
    rows = await db.fetch(
        "SELECT outcome, resource_type, resource_id, details FROM audit_events"
        " WHERE workflow = 'conversation.read' AND actor_id = $1 AND details ? 'read_up_to' ORDER BY id",
        team.nurse.id,
    )
    details = [json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows]
    assert [(d["read_up_to"], d["read_moved"]) for d in details] == [
        (second, True),
        (second, False),
        (first, False),
    ]
    assert {(r["outcome"], r["resource_type"], r["resource_id"]) for r in rows} == {
        ("success", "conversation", str(team.conversation_id))
    }
    assert "Potassium" not in json.dumps(details)


async def test_a_message_of_another_conversation_is_422_naming_message_id_and_changes_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    other = await care_team(api)
    elsewhere = await _sent(api, other.peer, other, "Elsewhere.")

    status, problem = await _mark(api, team.nurse, team.conversation_id, elsewhere)
    status_none, problem_none = await _mark(api, team.nurse, team.conversation_id, 2**31 - 1)
    status_bad, problem_bad = await _mark(api, team.nurse, team.conversation_id, "1")

    assert (status, status_none, status_bad) == (422, 422, 422)
    assert [e["field"] for e in problem["errors"]] == ["messageId"]
    assert problem["errors"] == problem_none["errors"]
    assert [e["field"] for e in problem_bad["errors"]] == ["messageId"]
    count = await db.fetchval(
        "SELECT count(*) FROM conversation_reads WHERE conversation_id = $1", team.conversation_id
    )
    assert count == 0


async def test_a_non_member_is_403_and_another_organization_gets_the_404_of_no_conversation(api: Api) -> None:
    team = await care_team(api)
    message = await _sent(api, team.peer, team, "Members only.")
    colleague = await api.person("care_team_member", team.organization_id)
    stranger = await api.person("care_team_member", await api.organization())

    status, denied = await _mark(api, colleague, team.conversation_id, message)
    status_other, other = await _mark(api, stranger, team.conversation_id, message)
    status_none, none = await _mark(api, stranger, 2**31 - 1, message)

    assert (status, denied["reason"]) == (403, "not_conversation_member")
    assert (status_other, status_none) == (404, 404)
    assert {k: v for k, v in other.items() if k != "requestId"} == {
        k: v for k, v in none.items() if k != "requestId"
    }


async def _mark_as_read_in_chat(api: Api, channel_url: str, chat_user_id: str) -> None:
    """What a Sendbird client does when its user reads the channel (the emulator then sends the
    signed ``group_channel:message_read`` webhook)."""
    running = running_emulator(api)
    async with http_client(base_url=running.base_url) as client:
        resp = await client.put(
            f"/v3/group_channels/{channel_url}/messages/mark_as_read",
            json={"user_id": chat_user_id},
            headers={"Api-Token": emulator(api).api_token},
        )
    assert resp.status_code == 200, resp.text


async def test_reading_in_a_chat_client_shows_as_read_through_the_webhook(
    api: Api, db: asyncpg.Connection
) -> None:
    wire_webhooks(api)
    team = await care_team(api)
    message = await _sent(api, team.peer, team, "Please confirm the dose.")
    await settled_deliveries(api, team.peer, message)
    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)

    await _mark_as_read_in_chat(api, team.conversation["channelUrl"], nurse_chat)

    async def read() -> dict[str, Any] | None:
        body = await message_status(api, team.peer, message)
        [nurse] = body["recipients"]
        return nurse if nurse["state"] == "read" else None

    nurse = await eventually(read, "the chat client's read receipt")
    assert nurse["userId"] == team.nurse.id
    assert nurse["readAt"] is not None
    mark = await db.fetchrow(
        "SELECT last_read_message_id, source FROM conversation_reads"
        " WHERE conversation_id = $1 AND user_id = $2",
        team.conversation_id,
        team.nurse.id,
    )
    assert dict(mark) == {"last_read_message_id": message, "source": "chat"}
    assert await _listed_unread(api, team.nurse, team.conversation_id) == 0
    decided = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE workflow = 'conversation.read' AND actor_id = $1"
        " AND details->>'via' = 'chat_app' AND outcome = 'success'",
        team.nurse.id,
    )
    assert decided == 1


async def test_a_read_receipt_of_someone_in_the_channel_who_is_no_member_delivers_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    """The external SMS participant's chat user is in the Sendbird channel but is no member: their
    receipt leaves the message ``sent``; the member's that follows delivers it."""
    wire_webhooks(api)
    team = await care_team(api)
    message = await _sent(api, team.peer, team, "Please confirm the dose.")
    await settled_deliveries(api, team.peer, message)
    external_chat = await db.fetchval(
        "SELECT chat_user_id FROM external_participants WHERE id = $1", team.external_id
    )
    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)

    async def processed() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) FROM webhook_events WHERE category = 'group_channel:message_read'"
                " AND status <> 'pending' AND body LIKE $1",
                f"%{team.conversation['channelUrl']}%",
            )
        )

    await _mark_as_read_in_chat(api, team.conversation["channelUrl"], external_chat)
    await eventually(processed, "the outsider's read receipt to be processed")
    after_outsider = await message_status(api, team.peer, message)
    await _mark_as_read_in_chat(api, team.conversation["channelUrl"], nurse_chat)

    async def delivered_by_member() -> bool:
        # Both together: one GET reads the message and the receipts in statements of their own, so
        # it may see the receipt's commit in the second and not in the first.
        body = await message_status(api, team.peer, message)
        return body["state"] == "delivered" and [r["state"] for r in body["recipients"]] == ["read"]

    await eventually(delivered_by_member, "the member's read receipt to deliver the message")

    chat = [d["state"] for d in after_outsider["deliveries"] if d["channel"] == "chat"]
    assert (after_outsider["state"], chat) == ("sent", ["sent"])
    assert [r["state"] for r in after_outsider["recipients"]] == ["delivered"]  # in the channel, unread
