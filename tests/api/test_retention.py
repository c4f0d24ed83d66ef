"""Retention end to end: the real app, PostgreSQL, the outbox relay and the Sendbird emulator. Once
a message's content outlives its organization's lifespan, the sweep empties it in caremsg (reads
show ``contentDeleted`` and no text), the channel no longer holds it (deleted, no notice), and the
audit trail keeps every record of it plus one of the deletion, without content. ``caremsg retention
plan|run`` count and run the same sweep (in process, tests/support/cli.py).

Longer than 400 lines because the sweep and the legal holds that stop it are tested together: the
hold tests shorten the lifespan with the same ``_lifespan`` and put the shipped policy back with the
same fixture as the sweep's, on the one app the module shares.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from engine.policy import Policy
from engine.workflows.retention import SWEEP, sweep_retention
from handlers.keys import policy_key, services_key
from integrations.policy_files import read_policy_sources
from integrations.sendbird import sign_webhook
from integrations.sendbird_emulator import sendbird_json
from tests.support.api import Api
from tests.support.cli import caremsg_in_process
from tests.support.fakes import ShiftedClock
from tests.support.messaging import (
    care_team,
    emulator,
    receive_sms,
    send,
    settled_deliveries,
    staff_post,
    wire_webhooks,
)
from tests.support.polling import eventually, settled

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
TEXT = "Ann Lee's potassium is 6.1"


@pytest.fixture
def shipped_policy_back(api: Api) -> Iterator[None]:
    """The app's policy is the shipped one again after the test (the module shares one app)."""
    holder = api.app[policy_key]
    shipped = holder.current
    yield
    holder.swap(shipped)


def _lifespan(api: Api, organization_id: int, days: int) -> None:
    sources = dataclasses.replace(
        read_policy_sources(POLICY_DIR),
        retention=f"[organization.{organization_id}]\ncontent_days = {days}\n",
    )
    api.app[policy_key].swap(Policy.from_sources(sources))


@pytest.mark.usefixtures("shipped_policy_back")
async def test_expired_content_leaves_caremsg_and_the_channel_and_the_audit_trail_stays(
    api: Api, db: asyncpg.Connection, clock: ShiftedClock
) -> None:
    team = await care_team(api)
    status, sent = await send(api, team.peer, team.conversation_id, TEXT)
    assert status == 202, sent
    await settled_deliveries(api, team.peer, sent["id"])
    channel = emulator(api).channels[team.conversation["channelUrl"]]
    [posted] = [m for m in channel.messages if json.loads(m.data or "{}").get("message_id") == sent["id"]]
    before = await db.fetchval("SELECT count(*) FROM audit_events WHERE patient_id = $1", team.patient_id)
    _lifespan(api, team.organization_id, 30)
    services = api.app[services_key]

    clock.advance(days=29)
    assert await sweep_retention(services) == 0  # not yet
    clock.advance(days=2)
    assert await sweep_retention(services) == 1

    await eventually(lambda: settled(posted.is_removed), "the channel's copy to be deleted")
    assert not [m for m in channel.messages if m.custom_type == "caremsg_recall_notice"]
    status, one = await api.call("GET", f"/api/messages/{sent['id']}", team.nurse)
    assert status == 200, one
    assert (one["contentDeleted"], one["message"], one["senderId"]) == (True, None, team.peer.id)
    assert one["contentDeletedAt"] is not None
    status, conversation = await api.call("GET", f"/api/conversations/{team.conversation_id}", team.nurse)
    [shown] = [m for m in conversation["messages"] if m["id"] == sent["id"]]
    assert (shown["contentDeleted"], shown["message"]) == (True, None)
    assert await db.fetchval("SELECT body FROM messages WHERE id = $1", sent["id"]) == ""
    # every record stays, and the deletion and its channel delivery are added, without content
    deliveries = await eventually(
        lambda: db.fetch(
            "SELECT outcome FROM audit_events WHERE workflow = 'delivery.delete_message'"
            " AND resource_id = $1",
            str(sent["id"]),
        ),
        "the channel deletion's delivery record",
    )
    assert [r["outcome"] for r in deliveries] == ["success"]
    [deleted] = await db.fetch(
        "SELECT * FROM audit_events WHERE workflow = $1 AND resource_type = 'message' AND resource_id = $2",
        SWEEP,
        str(sent["id"]),
    )
    assert (deleted["event"], deleted["actor_id"], deleted["organization_id"]) == (
        "message.content_deleted",
        None,
        team.organization_id,
    )
    after = await db.fetchval("SELECT count(*) FROM audit_events WHERE patient_id = $1", team.patient_id)
    assert after >= before + 1
    everything = await db.fetch(
        "SELECT details::text AS d FROM audit_events WHERE patient_id = $1", team.patient_id
    )
    assert not any(TEXT in r["d"] for r in everything)


async def test_caremsg_retention_plan_counts_and_run_deletes(
    api: Api, db: asyncpg.Connection, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = await care_team(api)
    ids = []
    for _ in range(2):
        status, sent = await send(api, team.peer, team.conversation_id, TEXT)
        assert status == 202, sent
        ids.append(sent["id"])
    await db.execute("UPDATE messages SET created_at = now() - interval '8 days' WHERE id = ANY($1)", ids)
    policies = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policies)
    (policies / "retention.toml").write_text(f"[organization.{team.organization_id}]\ncontent_days = 7\n")
    monkeypatch.setenv("CAREMSG_POLICY_DIRECTORY", str(policies))

    code, out = await caremsg_in_process(database_url, "retention", "plan")
    assert code == 0, out
    assert f"organization {team.organization_id}: 2 message(s)" in out
    assert TEXT not in out

    code, out = await caremsg_in_process(database_url, "retention", "run")
    assert code == 0, out
    assert f"organization {team.organization_id}: 2 message(s) content deleted" in out
    bodies = await db.fetch("SELECT body FROM messages WHERE id = ANY($1)", ids)
    assert [r["body"] for r in bodies] == ["", ""]
    code, out = await caremsg_in_process(database_url, "retention", "plan")
    assert f"organization {team.organization_id}" not in out


# --- legal holds ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("shipped_policy_back")
async def test_a_legal_hold_on_a_conversation_keeps_its_content_until_it_is_lifted(
    api: Api, db: asyncpg.Connection, clock: ShiftedClock
) -> None:
    team = await care_team(api)
    status, sent = await send(api, team.peer, team.conversation_id, TEXT)
    assert status == 202, sent
    await settled_deliveries(api, team.peer, sent["id"])
    status, hold = await api.call(
        "POST",
        "/api/legal-holds",
        team.officer,
        json={"conversationId": team.conversation_id, "reason": "matter 2026-117"},
    )
    assert status == 201, hold
    assert (hold["active"], hold["subjectPatientId"], hold["patientId"]) == (True, team.patient_id, None)
    _lifespan(api, team.organization_id, 1)
    services = api.app[services_key]
    clock.advance(days=2)

    assert await sweep_retention(services) == 0
    status, one = await api.call("GET", f"/api/messages/{sent['id']}", team.nurse)
    assert (one["contentDeleted"], one["message"]) == (False, TEXT)

    status, lifted = await api.call(
        "POST", f"/api/legal-holds/{hold['id']}/lift", team.officer, json={"reason": "matter closed"}
    )
    assert status == 200, lifted
    assert (lifted["active"], lifted["liftedBy"], lifted["liftReason"]) == (
        False,
        team.officer.id,
        "matter closed",
    )
    status, again = await api.call(
        "POST", f"/api/legal-holds/{hold['id']}/lift", team.officer, json={"reason": "twice"}
    )
    assert status == 409, again
    assert await sweep_retention(services) == 1
    status, one = await api.call("GET", f"/api/messages/{sent['id']}", team.nurse)
    assert (one["contentDeleted"], one["message"]) == (True, None)
    # audited: the place and the lift decisions, naming the hold and the patient, never the reason
    records = await db.fetch(
        "SELECT workflow, actor_id, outcome, details::text AS d FROM audit_events"
        " WHERE workflow LIKE 'legal_hold.%' AND patient_id = $1 ORDER BY id",
        team.patient_id,
    )
    assert [(r["workflow"], r["actor_id"], r["outcome"]) for r in records] == [
        ("legal_hold.place", team.officer.id, "success"),
        ("legal_hold.lift", team.officer.id, "success"),
        ("legal_hold.lift", team.officer.id, "failure"),  # lifted already: 409
    ]
    assert not any("matter" in r["d"] for r in records)


async def test_a_hold_is_for_compliance_officers_of_the_patients_organization(api: Api) -> None:
    team = await care_team(api)
    other = await api.person("compliance_officer", await api.organization())
    body = {"patientId": team.patient_id, "reason": "litigation"}

    status, refused = await api.call("POST", "/api/legal-holds", team.nurse, json=body)
    assert status == 403, refused
    status, hidden = await api.call("POST", "/api/legal-holds", other, json=body)
    assert status == 404, hidden
    status, hidden = await api.call(
        "POST", "/api/legal-holds", other, json={"conversationId": team.conversation_id, "reason": "x"}
    )
    assert status == 404, hidden
    status, hold = await api.call("POST", "/api/legal-holds", team.officer, json=body)
    assert status == 201, hold
    status, hidden = await api.call(
        "POST", f"/api/legal-holds/{hold['id']}/lift", other, json={"reason": "x"}
    )
    assert status == 404, hidden
    status, listed = await api.call("GET", "/api/legal-holds", other)
    assert (status, listed["holds"]) == (200, [])
    status, listed = await api.call("GET", "/api/legal-holds?active=true", team.officer)
    assert [h["id"] for h in listed["holds"]] == [hold["id"]]


async def test_another_organizations_hold_is_unknown_even_to_an_officer_whose_organization_knows_the_patient(
    api: Api,
) -> None:
    """A consent lets another organization know the patient; it does not let it know (or lift) the
    patient's organization's legal holds: the answer is the one for a hold that does not exist."""
    team = await care_team(api)
    other_org = await api.organization()
    other = await api.person("compliance_officer", other_org)
    await api.consent(team.officer, team.patient_id, organizationId=other_org)
    status, hold = await api.call(
        "POST", "/api/legal-holds", team.officer, json={"patientId": team.patient_id, "reason": "matter"}
    )
    assert status == 201, hold

    lifted = await api.call("POST", f"/api/legal-holds/{hold['id']}/lift", other, json={"reason": "x"})
    missing = await api.call("POST", "/api/legal-holds/2147483000/lift", other, json={"reason": "x"})
    assert lifted[0] == missing[0] == 404, lifted
    assert {k: v for k, v in lifted[1].items() if k not in ("instance", "requestId")} == {
        k: v for k, v in missing[1].items() if k not in ("instance", "requestId")
    }
    status, listed = await api.call("GET", "/api/legal-holds?active=true", team.officer)
    assert [h["id"] for h in listed["holds"]] == [hold["id"]]  # still held


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "x"}, "patientId"),
        ({"patientId": 1, "conversationId": 1, "reason": "x"}, "patientId"),
        ({"patientId": 1, "reason": "   "}, "reason"),
        ({"patientId": 1, "reason": "x" * 501}, "reason"),
        ({"patientId": "one", "reason": "x"}, "patientId"),
    ],
    ids=["no-subject", "two-subjects", "blank-reason", "long-reason", "not-an-id"],
)
async def test_a_bad_hold_is_422_naming_the_field(api: Api, body: dict[str, object], field: str) -> None:
    officer = await api.person("compliance_officer", await api.organization())
    status, problem = await api.call("POST", "/api/legal-holds", officer, json=body)
    assert status == 422, problem
    assert field in json.dumps(problem)


# --- every copy -----------------------------------------------------------------------------------


async def _tables_holding(db: asyncpg.Connection, needle: str) -> list[str]:
    """The tables of caremsg's schema with a row whose text holds ``needle`` (JSON and bodies too)."""
    tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return [
        t["tablename"]
        for t in tables
        if await db.fetchval(
            f'SELECT count(*) FROM "{t["tablename"]}" t WHERE strpos(t::text, $1) > 0', needle
        )
    ]


async def _webhook(db: asyncpg.Connection, chat_message_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT status, body FROM webhook_events WHERE dedupe_key = $1 AND status <> 'pending'",
        f"group_channel:message_send:{chat_message_id}",
    )


@pytest.mark.parametrize("held", [False, True], ids=["swept", "held"])
@pytest.mark.usefixtures("shipped_policy_back")
async def test_a_sweep_leaves_the_text_in_no_table_and_a_legal_hold_keeps_every_copy(
    api: Api, db: asyncpg.Connection, clock: ShiftedClock, held: bool
) -> None:
    """The copies: the message's text (its sending's Idempotency-Key keeps none), a staff
    post from the chat app (its message and its raw webhook), an external participant's SMS reply
    (the outbox entry that posts it, its raw inbound webhook, and its copy in the channel); the
    echoes of caremsg's own posts keep no body once ignored. Every table of the schema is searched,
    audit_events included."""
    wire_webhooks(api)
    team = await care_team(api)
    sent_text, app_text, reply_text = (f"Potassium {secrets.token_hex(6)}" for _ in range(3))
    key = {"Idempotency-Key": secrets.token_hex(8)}
    status, sent = await send(api, team.peer, team.conversation_id, sent_text, headers=key)
    assert status == 202, sent
    await settled_deliveries(api, team.peer, sent["id"])
    nurse_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", team.nurse.id)
    chat_id = 900_000_000 + secrets.randbelow(10**8)
    raw = sendbird_json(staff_post(team, nurse_chat, message_id=chat_id, text=app_text))
    resp = await api.client.post(
        "/api/webhooks/sendbird",
        data=raw,
        headers={"x-sendbird-signature": sign_webhook(raw, emulator(api).api_token)},
    )
    assert resp.status == 200
    receive_sms(api, team.phone, reply_text)
    channel = emulator(api).channels[team.conversation["channelUrl"]]

    async def echoed(text: str) -> asyncpg.Record | None:
        posted = [m for m in channel.messages if m.message == text]
        return await _webhook(db, posted[0].message_id) if posted else None

    for text in (sent_text, reply_text):  # the echoes of caremsg's own posts, ignored: no body kept
        echo = await eventually(lambda t=text: echoed(t), "the echo of caremsg's post")  # type: ignore[misc]
        assert (echo["status"], echo["body"]) == ("ignored", "")
    await eventually(lambda: _webhook(db, chat_id), "the chat app's post to be stored")
    [reply_post] = [m for m in channel.messages if m.message == reply_text]
    before = {t: await _tables_holding(db, t) for t in (sent_text, app_text, reply_text)}
    assert before == {
        sent_text: ["messages"],  # its Idempotency-Key keeps only the message's id
        app_text: ["messages", "webhook_events"],
        reply_text: ["outbox", "webhook_events"],
    }
    if held:
        body = {"patientId": team.patient_id, "reason": "matter 2026-118"}
        status, hold = await api.call("POST", "/api/legal-holds", team.officer, json=body)
        assert status == 201, hold
    _lifespan(api, team.organization_id, 30)
    clock.advance(days=31)
    swept = 0
    while n := await sweep_retention(api.app[services_key]):
        swept += n

    after = {t: await _tables_holding(db, t) for t in (sent_text, app_text, reply_text)}
    if held:
        assert (swept, after, reply_post.is_removed) == (0, before, False)
        return
    assert (swept, after) == (3, {sent_text: [], app_text: [], reply_text: []})
    # the channel's copy of the reply goes too (by the id its post recorded), without a notice
    await eventually(lambda: settled(reply_post.is_removed), "the channel's copy of the reply to go")
    # the rows stay, without the text: the webhook's, the reply's entry; the key replays the message as now
    assert (await _webhook(db, chat_id))["body"] == ""  # type: ignore[index]
    status, replayed = await send(api, team.peer, team.conversation_id, sent_text, headers=key)
    assert status == 202, replayed
    assert (replayed["id"], replayed["message"], replayed["contentDeleted"]) == (sent["id"], None, True)
    records = await db.fetch(
        "SELECT resource_type, details ->> 'conversation_id' AS c FROM audit_events"
        " WHERE workflow = $1 AND patient_id = $2 ORDER BY resource_type",
        SWEEP,
        team.patient_id,
    )
    assert [(r["resource_type"], r["c"]) for r in records] == [
        ("message", str(team.conversation_id)),
        ("message", str(team.conversation_id)),
        ("sms_reply", str(team.conversation_id)),
    ]


# --- recall, correction and the legal record after retention --------------------------------------


@pytest.mark.usefixtures("shipped_policy_back")
async def test_content_retention_deleted_is_409_to_recall_still_correctable_and_dated_in_the_legal_record(
    api: Api, db: asyncpg.Connection, clock: ShiftedClock
) -> None:
    team = await care_team(api)
    recalled, kept = [(await send(api, team.peer, team.conversation_id, TEXT))[1]["id"] for _ in range(2)]
    status, body = await api.call(
        "POST", f"/api/messages/{recalled}/recall", team.peer, json={"reason": "wrong patient"}
    )
    assert status == 200, body
    _lifespan(api, team.organization_id, 30)
    clock.advance(days=31)

    async def both_emptied() -> bool:
        # A sweep skips a row locked at that moment (SKIP LOCKED: the relay may be settling the
        # message's delivery); the next sweep takes it, as the schedule's next round would.
        await sweep_retention(api.app[services_key])
        emptied = await db.fetchval(
            "SELECT count(*) FROM messages WHERE id = ANY($1::int[]) AND content_deleted_at IS NOT NULL",
            [recalled, kept],
        )
        return bool(emptied == 2)

    await eventually(both_emptied, "retention to empty both messages")

    status, problem = await api.call(
        "POST", f"/api/messages/{kept}/recall", team.officer, json={"reason": "litigation review"}
    )
    assert status == 409, problem
    assert (problem["code"], problem["title"]) == ("content_deleted", "Content already deleted")
    assert await db.fetchval("SELECT count(*) FROM message_recalls WHERE message_id = $1", kept) == 0
    # Of this organization: a recall refused elsewhere is audited under the message id it named.
    records = await db.fetch(
        "SELECT outcome, details ->> 'recalled' AS recalled FROM audit_events"
        " WHERE workflow = 'message.recall' AND resource_id = $1 AND organization_id = $2",
        str(kept),
        team.organization_id,
    )
    assert [(r["outcome"], r["recalled"]) for r in records] == [("failure", None)]  # refused, not done
    status, one = await api.call("GET", f"/api/messages/{kept}", team.nurse)
    assert (one["recalled"], one["contentDeleted"]) == (False, True)

    status, correction = await api.call(
        "POST", f"/api/messages/{kept}/correct", team.peer, json={"message": "K+ was 4.1"}
    )
    assert status == 202, correction
    assert correction["correctsMessageId"] == kept

    status, record = await api.call("GET", f"/api/messages/{recalled}/legal-record", team.officer)
    assert status == 200, record
    assert (record["message"], record["contentDeleted"], record["reason"]) == (None, True, "wrong patient")
    deleted_at = await db.fetchval("SELECT content_deleted_at FROM messages WHERE id = $1", recalled)
    assert record["contentDeletedAt"] == deleted_at.isoformat().replace("+00:00", "Z")
