"""Consent lifecycle over HTTP: revocation and expiry end access at the moment they happen, with no
restart; a revocation takes the people it covered out of the patient's conversations (their chat
channel too, through the outbox) and stops SMS to external participants it admitted, all audited.
Scope and purpose of use decide which consents count for which workflow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from handlers.keys import emulator_key
from tests.support.api import Api, Person
from tests.support.fakes import ShiftedClock
from tests.support.polling import eventually

T = TypeVar("T")
EXTERNAL_PHONE = "+12025550188"


@dataclass
class Clinic:
    """A patient of one organization, its care-team peer and compliance officer, and a care-team
    member of a partner organization who is on the care team under a consent."""

    org: int
    peer: Person
    officer: Person
    admin: Person
    partner_org: int
    outsider: Person
    patient_id: int


async def clinic(api: Api, **consent: Any) -> tuple[Clinic, dict[str, Any]]:
    org = await api.organization()
    partner_org = await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    admin = await api.person("admin", org)
    outsider = await api.person("care_team_member", partner_org)
    patient_id = await api.patient(peer)
    created = await api.consent(officer, patient_id, organizationId=partner_org, **consent)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", admin)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", admin, json={"userId": outsider.id}
    )
    assert status == 201, body
    return Clinic(org, peer, officer, admin, partner_org, outsider, patient_id), created


async def ready_conversation(api: Api, c: Clinic, **extra: Any) -> dict[str, Any]:
    body = {"title": "Coordination", "patientId": c.patient_id, "memberIds": [c.outsider.id], **extra}
    status, created = await api.call("POST", "/api/conversations", c.peer, json=body)
    assert status == 201, created

    async def probe() -> dict[str, Any] | None:
        _, found = await api.call("GET", f"/api/conversations/{created['id']}", c.peer)
        return found if found["channelState"] == "ready" else None  # type: ignore[no-any-return]

    return await eventually(probe, "the conversation's channel")


async def chat_id(db: asyncpg.Connection, person: Person) -> str:
    return str(await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", person.id))


async def revoke(
    api: Api, who: Person, consent_id: int, reason: str = "Patient withdrew consent"
) -> tuple[int, Any]:
    return await api.call("POST", f"/api/consents/{consent_id}/revoke", who, json={"reason": reason})


async def test_revoking_a_consent_ends_access_at_once_and_takes_the_member_out_of_the_channel(
    api: Api, db: asyncpg.Connection
) -> None:
    c, consent = await clinic(api)
    conversation = await ready_conversation(api, c)
    channel = api.app[emulator_key].state.channels[conversation["channelUrl"]]
    outsider_chat = await chat_id(db, c.outsider)
    assert outsider_chat in channel.members
    status, _ = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert status == 200

    status, body = await revoke(api, c.officer, consent["id"])

    assert status == 200, body
    assert body["consent"]["status"] == "revoked"
    assert body["consent"]["revokedBy"] == c.officer.id
    assert body["removedMembers"] == [{"conversationId": conversation["id"], "userId": c.outsider.id}]
    status, denied = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert (status, denied["reason"]) == (403, "no_active_consent")
    status, _ = await api.call("GET", f"/api/conversations/{conversation['id']}", c.outsider)
    assert status == 403
    status, _ = await api.call(
        "POST",
        "/api/conversations/send-message",
        c.outsider,
        json={"conversationId": conversation["id"], "message": "still here?"},
    )
    assert status == 403
    assert not await db.fetchval(
        "SELECT count(*) FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        conversation["id"],
        c.outsider.id,
    )

    async def left_channel() -> bool:
        return outsider_chat not in channel.members

    await eventually(left_channel, "the outsider's removal from the chat channel")
    assert await chat_id(db, c.peer) in channel.members

    rows = await db.fetch(
        "SELECT event, decision, outcome, details FROM audit_events WHERE workflow = 'consent.revoke'"
        " AND patient_id = $1 ORDER BY id",
        c.patient_id,
    )
    assert [(r["event"], r["decision"], r["outcome"]) for r in rows] == [
        ("decision", "allow", "success"),
        ("conversation.member_removed", None, "success"),
    ]
    assert json.loads(rows[1]["details"]) == {"consent_id": consent["id"], "subject_user_id": c.outsider.id}


async def test_a_member_still_covered_by_another_consent_stays_in_the_conversation(
    api: Api, db: asyncpg.Connection
) -> None:
    c, consent = await clinic(api)
    await api.consent(c.officer, c.patient_id, organizationId=c.partner_org, purpose="care_coordination")
    conversation = await ready_conversation(api, c)

    status, body = await revoke(api, c.officer, consent["id"])

    assert status == 200, body
    assert body["removedMembers"] == []
    status, _ = await api.call("GET", f"/api/conversations/{conversation['id']}", c.outsider)
    assert status == 200


async def test_an_expired_consent_stops_granting_access_the_moment_it_ends_and_is_swept_out_of_the_channel(
    api: Api, db: asyncpg.Connection, clock: ShiftedClock
) -> None:
    c, consent = await clinic(api, expiresAt=(clock() + timedelta(minutes=1)).isoformat())
    ends = datetime.fromisoformat(consent["expiresAt"])
    conversation = await ready_conversation(api, c)
    channel = api.app[emulator_key].state.channels[conversation["channelUrl"]]
    outsider_chat = await chat_id(db, c.outsider)
    assert outsider_chat in channel.members
    status, _ = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert status == 200
    clock.move_to(ends - timedelta(seconds=1))
    status, _ = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert status == 200  # not before it ends

    clock.move_to(ends)
    status, body = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert status == 403, body
    assert body["reason"] == "no_active_consent"
    _, listed = await api.call("GET", f"/api/patients/{c.patient_id}/consents", c.officer)
    assert [item["status"] for item in listed["items"]] == ["expired"]

    # The expiry sweep then ends what the consent granted, as a revocation does.
    async def left_channel() -> bool:
        return outsider_chat not in channel.members

    await eventually(left_channel, "the expiry sweep's removal from the chat channel", within=10.0)
    assert await chat_id(db, c.peer) in channel.members
    assert not await db.fetchval(
        "SELECT count(*) FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        conversation["id"],
        c.outsider.id,
    )
    rows = await db.fetch(
        "SELECT event, actor_id, resource_id, details FROM audit_events WHERE workflow = 'consent.expire'"
        " AND patient_id = $1 ORDER BY id",
        c.patient_id,
    )
    assert [(r["event"], r["actor_id"]) for r in rows] == [
        ("consent.expired", None),
        ("conversation.member_removed", None),
    ]
    assert rows[0]["resource_id"] == str(consent["id"])
    assert json.loads(rows[1]["details"]) == {"consent_id": consent["id"], "subject_user_id": c.outsider.id}
    assert await db.fetchval("SELECT expiry_swept_at FROM consents WHERE id = $1", consent["id"]) is not None


async def test_revoking_an_external_partys_consent_marks_the_sms_participant_removed(
    api: Api, db: asyncpg.Connection
) -> None:
    c, _ = await clinic(api)
    external = await api.consent(
        c.officer, c.patient_id, externalParty={"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}
    )
    conversation = await ready_conversation(
        api, c, memberIds=[], externalMembers=[{"phoneNumber": EXTERNAL_PHONE, "name": "Dr. External"}]
    )
    participant = await db.fetchrow(
        "SELECT id, chat_user_id, removed_at FROM external_participants WHERE conversation_id = $1",
        conversation["id"],
    )
    channel = api.app[emulator_key].state.channels[conversation["channelUrl"]]
    assert participant["removed_at"] is None
    assert participant["chat_user_id"] in channel.members

    status, body = await revoke(api, c.officer, external["id"])

    assert status == 200, body
    assert body["removedExternalParticipants"] == [participant["id"]]
    assert (
        await db.fetchval("SELECT removed_at FROM external_participants WHERE id = $1", participant["id"])
        is not None
    )

    async def left_channel() -> bool:
        return participant["chat_user_id"] not in channel.members

    await eventually(left_channel, "the external participant's removal from the channel")
    # Still listed, for the record, but marked removed (not as if they were still texted).
    status, shown = await api.call("GET", f"/api/conversations/{conversation['id']}", c.peer)
    assert status == 200, shown
    [member] = shown["externalMembers"]
    assert member["id"] == participant["id"]
    assert member["removedAt"] is not None
    removed = await db.fetchrow(
        "SELECT details FROM audit_events WHERE event = 'conversation.external_removed' AND patient_id = $1",
        c.patient_id,
    )
    assert json.loads(removed["details"]) == {
        "consent_id": external["id"],
        "external_participant_id": participant["id"],
    }
    assert EXTERNAL_PHONE not in removed["details"]


async def test_only_a_compliance_officer_of_the_patients_organization_revokes(api: Api) -> None:
    c, consent = await clinic(api)
    elsewhere = await api.person("compliance_officer", c.partner_org)

    status, body = await revoke(api, elsewhere, consent["id"])
    assert (status, body["reason"]) == (403, "other_organization")
    status, body = await revoke(api, c.peer, consent["id"])
    assert (status, body["reason"]) == (403, "role_not_permitted")
    status, _ = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert status == 200


async def test_a_revocation_needs_a_reason_an_existing_consent_and_happens_once(api: Api) -> None:
    c, consent = await clinic(api)

    status, body = await revoke(api, c.officer, consent["id"], reason="   ")
    assert status == 422
    assert [e["field"] for e in body["errors"]] == ["reason"]
    status, _ = await revoke(api, c.officer, 2_000_000_000)
    assert status == 404
    assert (await revoke(api, c.officer, consent["id"]))[0] == 200
    status, body = await revoke(api, c.officer, consent["id"])
    assert (status, body["code"]) == (409, "conflict")


async def test_a_read_only_consent_lets_the_partner_read_but_not_join_a_conversation(api: Api) -> None:
    c, _ = await clinic(api, scope=["read"])

    status, _ = await api.call("GET", f"/api/patients/{c.patient_id}", c.outsider)
    assert status == 200
    body = {"title": "t", "patientId": c.patient_id, "memberIds": [c.outsider.id]}
    status, denied = await api.call("POST", "/api/conversations", c.peer, json=body)
    assert (status, denied["reason"], denied["field"]) == (403, "no_active_consent", "memberIds[0]")


@pytest.mark.parametrize(("purpose", "allowed"), [("payment", False), ("care_coordination", True)])
async def test_a_consent_counts_only_for_the_purposes_of_use_a_workflow_serves(
    api: Api, purpose: str, allowed: bool
) -> None:
    org, partner_org = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    admin = await api.person("admin", org)
    outsider = await api.person("care_team_member", partner_org)
    patient_id = await api.patient(peer)
    await api.consent(officer, patient_id, organizationId=partner_org, purpose=purpose)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", admin)

    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", admin, json={"userId": outsider.id}
    )

    # care_team.join accepts treatment, care_coordination and healthcare_operations, not payment.
    assert (status == 201) is allowed, body
    if not allowed:
        assert body["reason"] == "no_active_consent"


async def test_a_consent_records_its_scope_and_rejects_an_unknown_one(api: Api) -> None:
    c, consent = await clinic(api, scope=["message", "read"])
    assert consent["scope"] == ["message", "read"]
    status, body = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={
            "patientId": c.patient_id,
            "purpose": "treatment",
            "organizationId": c.partner_org,
            "scope": ["everything"],
        },
    )
    assert status == 422
    assert body["errors"][0]["field"].startswith("scope")
