"""Urgent messages: sending one (message.send_urgent), acknowledging it (message.acknowledge), and the
escalation scheduler taking each step on a fake clock, through the real relay and the emulators,
until someone acknowledges.

Longer than 400 lines because sending, acknowledging and escalating are one urgent message's life:
the tests share its helpers (``send_urgent``, ``urgent_message``, the fake-clock ``scheduler``,
``steps``), and escalation is checked up to the acknowledgement that stops it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from engine.effects import RealertUrgent
from handlers.keys import policy_key, services_key, sessions_key
from integrations.effects.executor import RelayContext
from integrations.effects.outbox import OutboxEntry
from integrations.effects.urgent import (
    URGENT_ALERTS_USER,
    URGENT_TEXT,
    UrgentAlertExecutor,
    escalations_channel,
)
from integrations.escalation import EscalationScheduler
from tests.support.api import Api, Person
from tests.support.fakes import FakeChannel, FakeChatGateway, FakeClock
from tests.support.messaging import CareTeam, care_team, emulator, texts, unique_phone
from tests.support.polling import eventually, settled


async def send_urgent(
    api: Api, who: Person, team: CareTeam, text: str = "BP 70/40, call me"
) -> tuple[int, Any]:
    body = {"conversationId": team.conversation_id, "message": text, "priority": "urgent"}
    return await api.call("POST", "/api/conversations/send-message", who, json=body)


async def urgent_message(api: Api, team: CareTeam) -> int:
    """An urgent message from the peer, once the relay has posted it (the relay's settle locks the
    message's row for a moment, and a scheduler's claim skips a locked row until its next round)."""
    status, sent = await send_urgent(api, team.peer, team)
    assert status == 202, sent
    assert sent["priority"] == "urgent"
    await eventually(lambda: message_state(api, team.peer, sent["id"]), f"message {sent['id']} to be posted")
    return int(sent["id"])


async def message_state(api: Api, who: Person, message_id: int) -> bool:
    return (await api.call("GET", f"/api/messages/{message_id}", who))[1]["state"] != "queued"


async def sent_at(db: asyncpg.Connection, message_id: int) -> datetime:
    created: datetime = await db.fetchval("SELECT created_at FROM messages WHERE id = $1", message_id)
    return created


def scheduler(api: Api, clock: Callable[[], datetime]) -> EscalationScheduler:
    """A second scheduler on the app's database, on a fake clock (the app's own runs on real time)."""
    return EscalationScheduler(
        api.app[sessions_key],
        lambda: api.app[policy_key].current,
        api.app[services_key].consents,
        clock=clock,
        wake=api.services.delivery.wake,
    )


async def steps(db: asyncpg.Connection, message_id: int) -> list[tuple[str, int, list[int], str]]:
    rows = await db.fetch(
        "SELECT step, round, target_user_ids, state FROM escalation_steps WHERE message_id = $1 ORDER BY id",
        message_id,
    )
    return [(r["step"], r["round"], list(r["target_user_ids"]), r["state"]) for r in rows]


async def care_team_id(db: asyncpg.Connection, patient_id: int) -> int:
    found: int = await db.fetchval("SELECT id FROM care_teams WHERE patient_id = $1", patient_id)
    return found


async def join_care_team(db: asyncpg.Connection, team: CareTeam, who: Person) -> None:
    await db.execute(
        "INSERT INTO care_team_members (care_team_id, user_id, added_by) VALUES ($1, $2, $3)",
        await care_team_id(db, team.patient_id),
        who.id,
        team.peer.id,
    )


def alerts_in(api: Api, channel_url: str, custom_type: str) -> list[Any]:
    return [
        m
        for m in emulator(api).messages(channel_url)
        if m.sender_id == URGENT_ALERTS_USER and m.custom_type == custom_type
    ]


# --- sending ---------------------------------------------------------------------------------------


async def test_a_care_team_member_sends_an_urgent_message_and_both_decisions_are_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)

    body = (await api.call("GET", f"/api/messages/{message_id}", team.peer))[1]
    assert (body["priority"], body["acknowledgement"], body["escalation"]) == ("urgent", None, [])
    decisions = await db.fetch(
        "SELECT workflow, decision FROM audit_events WHERE actor_id = $1 AND event = 'decision'"
        " AND workflow LIKE 'message.send%' ORDER BY id",
        team.peer.id,
    )
    assert [(r["workflow"], r["decision"]) for r in decisions] == [
        ("message.send", "allow"),
        ("message.send_urgent", "allow"),
    ]
    due = await db.fetchval("SELECT escalation_due_at - created_at FROM messages WHERE id = $1", message_id)
    assert due == timedelta(minutes=2)  # the first re-alert of policies/escalation.toml


async def test_a_routine_message_is_the_default_and_is_never_escalated(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    body = {"conversationId": team.conversation_id, "message": "Lunch at noon"}
    status, sent = await api.call("POST", "/api/conversations/send-message", team.peer, json=body)

    assert (status, sent["priority"]) == (202, "routine")
    row = await db.fetchrow("SELECT priority, escalation_due_at FROM messages WHERE id = $1", sent["id"])
    assert (row["priority"], row["escalation_due_at"]) == ("routine", None)


async def test_a_member_who_is_not_on_the_care_team_may_not_send_urgent_and_nothing_is_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)  # the nurse is a member of the conversation, not of the care team
    before = await db.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id
    )

    status, refused = await send_urgent(api, team.nurse, team)

    assert (status, refused["reason"]) == (403, "not_on_care_team")
    after = await db.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_id = $1", team.conversation_id
    )
    assert after == before


async def test_an_unknown_priority_is_refused_naming_the_field(api: Api) -> None:
    team = await care_team(api)
    body = {"conversationId": team.conversation_id, "message": "x", "priority": "stat"}
    status, problem = await api.call("POST", "/api/conversations/send-message", team.peer, json=body)

    assert status == 422
    assert "priority" in str(problem["errors"])


# --- acknowledging ---------------------------------------------------------------------------------


async def test_the_first_acknowledgement_wins_and_a_later_one_answers_with_it(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)
    await join_care_team(db, team, team.nurse)

    status, first = await api.call("POST", f"/api/messages/{message_id}/acknowledge", team.nurse)
    assert status == 200, first
    assert (first["acknowledgement"]["userId"], first["alreadyAcknowledged"]) == (team.nurse.id, False)
    status, again = await api.call("POST", f"/api/messages/{message_id}/acknowledge", team.peer)

    assert status == 200, again
    assert again["acknowledgement"] == first["acknowledgement"]
    assert again["alreadyAcknowledged"] is True
    shown = (await api.call("GET", f"/api/messages/{message_id}", team.peer))[1]
    assert shown["acknowledgement"] == first["acknowledgement"]
    conversation = (await api.call("GET", f"/api/conversations/{team.conversation_id}", team.peer))[1]
    listed = next(m for m in conversation["messages"] if m["id"] == message_id)
    assert listed["acknowledgement"] == first["acknowledgement"]
    row = await db.fetchrow(
        "SELECT acknowledged_by, escalation_due_at FROM messages WHERE id = $1", message_id
    )
    assert (row["acknowledged_by"], row["escalation_due_at"]) == (team.nurse.id, None)
    # Of this organization: an acknowledgement refused elsewhere is audited under the id it named.
    events = await db.fetch(
        "SELECT actor_id, decision, details->>'first' AS first, details->>'acknowledged_by' AS by"
        " FROM audit_events WHERE workflow = 'message.acknowledge' AND resource_id = $1"
        " AND organization_id = $2 ORDER BY id",
        str(message_id),
        team.organization_id,
    )
    assert [(e["actor_id"], e["decision"], e["first"], e["by"]) for e in events] == [
        (team.nurse.id, "allow", "1", str(team.nurse.id)),
        (team.peer.id, "allow", "0", str(team.nurse.id)),
    ]


async def test_only_a_member_of_the_patients_care_team_acknowledges(api: Api) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)

    status, refused = await api.call("POST", f"/api/messages/{message_id}/acknowledge", team.nurse)
    assert (status, refused["reason"]) == (403, "not_on_care_team")
    status, refused = await api.call("POST", f"/api/messages/{message_id}/acknowledge", team.officer)
    assert (status, refused["reason"]) == (403, "role_not_permitted")


async def test_a_routine_message_cannot_be_acknowledged_and_the_answer_says_why(api: Api) -> None:
    team = await care_team(api)
    body = {"conversationId": team.conversation_id, "message": "routine"}
    sent = (await api.call("POST", "/api/conversations/send-message", team.peer, json=body))[1]

    status, problem = await api.call("POST", f"/api/messages/{sent['id']}/acknowledge", team.peer)

    assert status == 409
    assert "routine" in problem["detail"]


async def test_a_message_of_another_organization_answers_as_one_that_does_not_exist(api: Api) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)
    stranger = await api.person("care_team_member", await api.organization())

    status, hidden = await api.call("POST", f"/api/messages/{message_id}/acknowledge", stranger)
    status_missing, missing = await api.call("POST", "/api/messages/999999999/acknowledge", stranger)

    assert (status, status_missing) == (404, 404)
    assert hidden["detail"] == missing["detail"]


# --- the escalation steps, on a fake clock ------------------------------------------------------------


async def test_every_step_is_taken_on_schedule_through_the_relay_until_someone_acknowledges(
    api: Api, db: asyncpg.Connection
) -> None:
    """End to end on the emulators with the app's real relay: re-alerts in the channel, the text,
    the on-call member, the admins; the acknowledgement stops what is left."""
    team = await care_team(api)
    phone = unique_phone()
    await db.execute("UPDATE users SET alert_phone = $1 WHERE id = $2", phone, team.nurse.id)
    on_call = await api.person("care_team_member", team.organization_id)
    await join_care_team(db, team, on_call)
    admin = await api.person("admin", team.organization_id)
    message_id = await urgent_message(api, team)
    start = await sent_at(db, message_id)
    clock = FakeClock(start + timedelta(minutes=1))
    await db.execute(
        "INSERT INTO on_call_shifts (care_team_id, user_id, starts_at, ends_at, created_by)"
        " VALUES ($1, $2, $3, $4, $5)",
        await care_team_id(db, team.patient_id),
        on_call.id,
        start - timedelta(hours=1),
        start + timedelta(hours=8),
        team.peer.id,
    )
    channel = team.conversation["channelUrl"]
    schedule = scheduler(api, clock)

    await schedule.run_once()
    assert await steps(db, message_id) == []  # nothing due after a minute
    clock.now = start + timedelta(minutes=2, seconds=1)
    await schedule.run_once()
    assert [(s, r, t) for s, r, t, _ in await steps(db, message_id)] == [("realert", 1, [team.nurse.id])]
    await eventually(
        lambda: settled(len(alerts_in(api, channel, "caremsg_urgent_realert")) == 1), "the re-alert"
    )
    assert URGENT_ALERTS_USER in emulator(api).channels[channel].members

    clock.now = start + timedelta(minutes=5, seconds=1)
    await schedule.run_once()
    await eventually(
        lambda: settled([t.text for t in texts(api, phone)] == [URGENT_TEXT]), "the text to the phone"
    )

    clock.now = start + timedelta(minutes=10, seconds=1)
    await schedule.run_once()
    await eventually(
        lambda: settled(len(alerts_in(api, channel, "caremsg_urgent_on_call")) == 1), "the on-call alert"
    )
    members = await db.fetch(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1", team.conversation_id
    )
    assert on_call.id in {m["user_id"] for m in members}  # added to the conversation, to read it

    clock.now = start + timedelta(minutes=15, seconds=1)
    await schedule.run_once()
    admins = escalations_channel(team.organization_id)
    await eventually(
        lambda: settled(len(alerts_in(api, admins, "caremsg_urgent_admin")) == 1), "the admins' alert"
    )
    assert admin.id in (await steps(db, message_id))[-1][2]

    status, _ = await api.call("POST", f"/api/messages/{message_id}/acknowledge", on_call)
    assert status == 200
    clock.now = start + timedelta(minutes=30)
    await schedule.run_once()  # acknowledged: nothing more
    taken = await steps(db, message_id)
    assert [(s, r) for s, r, _, _ in taken] == [
        ("realert", 1),
        ("realert", 2),
        ("text", 1),
        ("realert", 5),
        ("on_call", 1),
        ("realert", 7),
        ("admin", 1),
    ]
    shown = (await api.call("GET", f"/api/messages/{message_id}", team.peer))[1]
    assert [(e["step"], e["round"]) for e in shown["escalation"]] == [(s, r) for s, r, _, _ in taken]
    assert shown["acknowledgement"]["userId"] == on_call.id
    audited = await db.fetch(
        "SELECT details->>'step' AS step, count(*) AS n FROM audit_events WHERE workflow = 'message.escalate'"
        " AND event = 'escalation_step' AND resource_id = $1 GROUP BY 1",
        str(message_id),
    )
    assert {r["step"]: r["n"] for r in audited} == {"realert": 4, "text": 1, "on_call": 1, "admin": 1}
    # Of the message: a conversation's deliveries carry its id, which may be this message's number.
    delivered = await db.fetch(
        "SELECT DISTINCT workflow FROM audit_events WHERE event = 'delivery' AND resource_type = 'message'"
        " AND resource_id = $1",
        str(message_id),
    )
    assert {r["workflow"] for r in delivered} >= {
        "delivery.urgent_realert",
        "delivery.urgent_text",
        "delivery.urgent_escalate",
    }


async def test_an_acknowledgement_before_the_first_step_stops_every_step(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)
    start = await sent_at(db, message_id)
    assert (await api.call("POST", f"/api/messages/{message_id}/acknowledge", team.peer))[0] == 200

    for minutes in (2, 5, 10, 15, 60):
        await scheduler(api, FakeClock(start + timedelta(minutes=minutes, seconds=1))).run_once()

    assert await steps(db, message_id) == []


async def test_a_step_queued_before_the_acknowledgement_is_cancelled_when_it_would_go_out(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)
    start = await sent_at(db, message_id)
    # A step taken (its row, as the scheduler writes it), then the acknowledgement, before it went out.
    step_id = await db.fetchval(
        "INSERT INTO escalation_steps (message_id, step, round, due_at, taken_at, target_user_ids)"
        " VALUES ($1, 'realert', 1, $2, $2, $3) RETURNING id",
        message_id,
        start + timedelta(minutes=2),
        [team.nurse.id],
    )
    assert (await api.call("POST", f"/api/messages/{message_id}/acknowledge", team.peer))[0] == 200
    chat = FakeChatGateway()
    chat.channels[team.conversation["channelUrl"]] = FakeChannel("c", [], "", "")
    executor = UrgentAlertExecutor()
    entry = OutboxEntry(1, "urgent_realert", RealertUrgent(team.conversation_id, message_id, step_id), 1)

    await executor.deliver(
        RealertUrgent(team.conversation_id, message_id, step_id),
        entry,
        RelayContext(api.app[sessions_key], chat),
    )

    assert chat.channels[team.conversation["channelUrl"]].messages == []
    async with api.app[sessions_key]() as session, session.begin():
        await executor.settle([entry], [], session)
    step = await db.fetchrow("SELECT state, reason FROM escalation_steps WHERE id = $1", step_id)
    assert (step["state"], step["reason"]) == ("cancelled", "acknowledged")


async def test_a_member_who_read_it_is_not_re_alerted_and_someone_away_is_replaced_by_their_delegate(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    delegate = await api.person("care_team_member", team.organization_id)
    await join_care_team(db, team, delegate)
    colleague = await api.person("care_team_member", team.organization_id)
    await db.execute(
        "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2)",
        team.conversation_id,
        colleague.id,
    )
    message_id = await urgent_message(api, team)
    start = await sent_at(db, message_id)
    # The nurse read it; the colleague is away and named the delegate.
    await db.execute(
        "INSERT INTO conversation_reads (conversation_id, user_id, last_read_message_id, source)"
        " VALUES ($1, $2, $3, 'api')",
        team.conversation_id,
        team.nurse.id,
        message_id,
    )
    await db.execute(
        "INSERT INTO staff_away (user_id, delegate_id, starts_at) VALUES ($1, $2, $3)",
        colleague.id,
        delegate.id,
        start - timedelta(minutes=1),
    )

    await scheduler(api, FakeClock(start + timedelta(minutes=2, seconds=1))).run_once()

    assert [(s, r, t) for s, r, t, _ in await steps(db, message_id)] == [("realert", 1, [delegate.id])]
    decided = await db.fetchrow(
        "SELECT decision, details->>'delegate_for' AS delegate_for FROM audit_events"
        " WHERE workflow = 'message.escalate' AND event = 'decision' AND resource_id = $1",
        str(message_id),
    )
    assert (decided["decision"], decided["delegate_for"]) == ("allow", str(colleague.id))
    members = await db.fetch(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1", team.conversation_id
    )
    assert delegate.id in {m["user_id"] for m in members}


async def test_a_step_with_nobody_to_alert_is_recorded_as_such(api: Api, db: asyncpg.Connection) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)
    start = await sent_at(db, message_id)

    await scheduler(api, FakeClock(start + timedelta(minutes=10, seconds=1))).run_once()

    # The nurse is unread (re-alert, text without a phone); no one is on call.
    taken = {(s, r): (t, state) for s, r, t, state in await steps(db, message_id)}
    assert taken[("on_call", 1)] == ([], "none")
    assert taken[("realert", 5)][0] == [team.nurse.id]
    assert ("realert", 1) not in taken  # rounds missed while no scheduler ran are not made up


async def test_a_restarted_scheduler_resumes_from_what_postgresql_holds(
    api: Api, db: asyncpg.Connection
) -> None:
    team = await care_team(api)
    message_id = await urgent_message(api, team)
    start = await sent_at(db, message_id)
    clock = FakeClock(start + timedelta(minutes=2, seconds=1))
    await scheduler(api, clock).run_once()

    restarted = scheduler(api, clock)
    await restarted.run_once()  # round 1 is taken already: not again
    assert [(s, r) for s, r, _, _ in await steps(db, message_id)] == [("realert", 1)]
    clock.now = start + timedelta(minutes=4, seconds=1)
    await restarted.run_once()

    assert [(s, r) for s, r, _, _ in await steps(db, message_id)] == [("realert", 1), ("realert", 2)]
