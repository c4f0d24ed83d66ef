"""Break the glass: a clinician opens emergency access to a patient with a mandatory reason; it
lets them read the record while it lasts, ends by itself, flags every audit record it produces,
and shows up in the compliance officer's review list."""

from __future__ import annotations

from typing import TypeVar

import asyncpg

from handlers.keys import emulator_key
from integrations.effects.break_glass import alerts_channel
from tests.support.api import Api, Person
from tests.support.polling import eventually

T = TypeVar("T")
REASON = "Unresponsive patient in the ED, care team unreachable"


async def setting(api: Api) -> tuple[Person, Person, Person, int]:
    """A patient of one organization, a clinician of a partner organization the patient consented
    to for treatment (conversations only: not the record), and the patient organization's officer."""
    org, other = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    clinician = await api.person("care_team_member", other)
    patient_id = await api.patient(peer)
    await api.consent(officer, patient_id, organizationId=other, purpose="treatment", scope=["message"])
    return clinician, officer, peer, patient_id


async def test_an_open_session_lets_the_clinician_read_the_record_and_flags_the_audit(
    api: Api, db: asyncpg.Connection
) -> None:
    clinician, _, _, patient_id = await setting(api)
    status, denied = await api.call("GET", f"/api/patients/{patient_id}", clinician)
    assert (status, denied["reason"]) == (403, "not_on_care_team")  # covered for messages, not the record

    status, session = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )

    assert status == 201, session
    assert (session["patientId"], session["userId"], session["open"]) == (patient_id, clinician.id, True)
    status, _ = await api.call("GET", f"/api/patients/{patient_id}", clinician)
    assert status == 200
    rows = await db.fetch(
        "SELECT workflow, event, decision, break_glass, matched_rule FROM audit_events"
        " WHERE actor_id = $1 AND patient_id = $2 ORDER BY id",
        clinician.id,
        patient_id,
    )
    assert [(r["workflow"], r["event"], r["decision"], r["break_glass"]) for r in rows] == [
        ("patient.read", "decision", "deny", False),
        ("break_glass.open", "decision", "allow", False),
        ("break_glass.open", "break_glass.opened", None, True),
        ("break_glass.open", "break_glass.compliance_notified", None, True),
        ("patient.read", "decision", "allow", True),
    ]
    assert "patient.read, break_glass & treatable" in rows[-1]["matched_rule"]
    # It opens reading, nothing else.
    status, _body = await api.call("PUT", f"/api/patients/{patient_id}", clinician, json={"riskLevel": "low"})
    assert status == 403


async def test_a_session_ends_by_itself_when_it_expires(api: Api, db: asyncpg.Connection) -> None:
    clinician, _, _, patient_id = await setting(api)
    # A session that ends an hour from now (the configured length is in minutes)...
    session_id = await db.fetchval(
        "INSERT INTO break_glass_sessions (user_id, organization_id, patient_id, reason, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + interval '1 hour') RETURNING id",
        clinician.id,
        clinician.organization_id,
        patient_id,
        REASON,
    )
    assert (await api.call("GET", f"/api/patients/{patient_id}", clinician))[0] == 200

    # ...and then that hour has passed: nobody ended the session, its end is simply behind us.
    # (The session moved back in time instead of waiting: the reads compare its end with
    # PostgreSQL's clock, and nothing else about it changes.)
    await db.execute(
        "UPDATE break_glass_sessions SET opened_at = opened_at - interval '1 hour 1 second',"
        " expires_at = expires_at - interval '1 hour 1 second' WHERE id = $1",
        session_id,
    )
    status, body = await api.call("GET", f"/api/patients/{patient_id}", clinician)
    assert status == 403, body


async def test_a_session_needs_a_real_reason_a_clinician_and_an_existing_patient(api: Api) -> None:
    clinician, officer, _, patient_id = await setting(api)
    path = f"/api/patients/{patient_id}/break-glass"

    status, body = await api.call("POST", path, clinician, json={"reason": "urgent"})
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["reason"])
    status, body = await api.call("POST", path, clinician, json={})
    assert (status, [e["field"] for e in body["errors"]]) == (422, ["reason"])
    status, body = await api.call("POST", path, officer, json={"reason": REASON})
    assert (status, body["reason"]) == (403, "role_not_permitted")
    status, _ = await api.call(
        "POST", "/api/patients/2000000000/break-glass", clinician, json={"reason": REASON}
    )
    assert status == 404


async def test_compliance_officers_review_the_sessions_on_their_patients(api: Api) -> None:
    clinician, officer, peer, patient_id = await setting(api)
    _, opened = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )
    stranger = await api.person("compliance_officer", await api.organization())

    status, page = await api.call("GET", "/api/break-glass", officer)

    assert status == 200
    assert [(s["id"], s["reason"], s["userId"]) for s in page["items"]] == [
        (opened["id"], REASON, clinician.id)
    ]
    _, elsewhere = await api.call("GET", "/api/break-glass", stranger)
    assert elsewhere["items"] == []
    assert (await api.call("GET", "/api/break-glass", peer))[0] == 403


async def test_the_clinicians_organization_reviewing_first_leaves_the_patients_review_open(
    api: Api,
) -> None:
    clinician, officer, _, patient_id = await setting(api)
    _, opened = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )
    theirs = await api.person("compliance_officer", clinician.organization_id)
    path = f"/api/break-glass/{opened['id']}/review"

    by_them = await api.call("POST", path, theirs, json={"note": "Fine by us; nothing to see."})
    by_us = await api.call("POST", path, officer, json={"note": "Our own review of this access."})
    again = await api.call("POST", path, theirs, json={"note": "A second look."})
    [ours] = (await api.call("GET", "/api/break-glass", officer))[1]["items"]
    [their_view] = (await api.call("GET", "/api/break-glass", theirs))[1]["items"]

    assert (by_them[0], by_them[1]["reviewNote"]) == (200, "Fine by us; nothing to see.")
    assert (by_us[0], by_us[1]["reviewedBy"], by_us[1]["reviewNote"]) == (
        200,
        officer.id,
        "Our own review of this access.",
    )
    assert again[0] == 409
    # Each organization reads its own review only, never the other's note.
    assert (ours["reviewedBy"], ours["reviewNote"]) == (officer.id, "Our own review of this access.")
    assert (their_view["reviewedBy"], their_view["reviewNote"]) == (theirs.id, "Fine by us; nothing to see.")


async def test_a_clinician_cannot_break_the_glass_on_a_patient_their_organization_never_treats(
    api: Api,
) -> None:
    # Defect 8: a self-registered peer support specialist of any organization read every patient.
    home = await api.organization()
    peer = await api.person("peer_support", home)
    patient_id = await api.patient(peer)
    stranger = await api.person("peer_support", await api.organization())

    status, body = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", stranger, json={"reason": REASON}
    )

    # No relation to the patient at all: answered exactly as a patient that does not exist (the
    # audit record keeps not_treatable).
    _, nonexistent = await api.call(
        "POST", "/api/patients/2000000000/break-glass", stranger, json={"reason": REASON}
    )
    assert status == 404
    assert {k: v for k, v in body.items() if k != "requestId"} == {
        k: v for k, v in nonexistent.items() if k != "requestId"
    }
    assert "John" not in str(body)
    assert (await api.call("GET", f"/api/patients/{patient_id}", stranger))[0] == 404


async def test_a_consent_for_payment_does_not_make_a_patient_treatable(api: Api) -> None:
    org, other = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    clinician = await api.person("care_team_member", other)
    patient_id = await api.patient(peer)
    await api.consent(officer, patient_id, organizationId=other, purpose="payment")

    status, body = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )

    assert (status, body["reason"]) == (403, "not_treatable")


async def test_an_expired_treatment_consent_ends_emergency_reads_of_an_open_session(
    api: Api, db: asyncpg.Connection
) -> None:
    clinician, officer, _, patient_id = await setting(api)
    status, _ = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )
    assert status == 201
    assert (await api.call("GET", f"/api/patients/{patient_id}", clinician))[0] == 200
    # The consent that made the patient treatable ends: so does what the session allows.
    consent_id = await db.fetchval("SELECT max(id) FROM consents WHERE patient_id = $1", patient_id)
    path = f"/api/consents/{consent_id}/revoke"
    status, _ = await api.call("POST", path, officer, json={"reason": "Patient withdrew consent"})
    assert status == 200

    status, _ = await api.call("GET", f"/api/patients/{patient_id}", clinician)

    assert status == 403


async def test_each_opening_tells_the_patients_compliance_officers_at_once(
    api: Api, db: asyncpg.Connection
) -> None:
    clinician, officer, _, patient_id = await setting(api)

    status, session = await api.call(
        "POST", f"/api/patients/{patient_id}/break-glass", clinician, json={"reason": REASON}
    )

    assert status == 201
    channel = alerts_channel(officer.organization_id)
    state = api.app[emulator_key].state

    async def posted() -> list[str]:
        return [m.message for m in state.messages(channel)]

    texts = await eventually(posted, "the compliance alert")
    assert len(texts) == 1
    assert f"session {session['id']}" in texts[0]
    assert f"patient {patient_id}" in texts[0]
    assert REASON not in texts[0]  # ids only; the reason is for the review list
    members = set(state.channels[channel].members)
    officer_chat = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", officer.id)
    assert officer_chat in members

    async def delivered() -> str | None:
        row = await db.fetchrow(
            "SELECT outcome FROM audit_events WHERE workflow = 'delivery.notify_break_glass'"
            " AND details->>'outbox_id' = (SELECT id::text FROM outbox WHERE kind = 'notify_break_glass'"
            " AND payload->>'session_id' = $1)",
            str(session["id"]),
        )
        return row["outcome"] if row else None

    assert await eventually(delivered, "the notification's delivery record") == "success"
