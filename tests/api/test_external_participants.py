"""External SMS participants are established, never asserted (issue 9, defect 1): a consent admits a
number only if it names that number, or names an organization whose admins listed the number in its
contact directory, and only with scope sms plus the workflow's own scope and purposes. A directory
vouches only to its own organization's staff: named by anyone else it is not read. When several
consents qualify, the one the decision records is chosen by the documented order."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.support.api import Api, Person
from tests.support.messaging import add_contact, send, unique_phone


async def _clinic(api: Api) -> tuple[Person, Person, int, int]:
    """A peer support specialist on a patient's care team, the officer, the patient, a partner org."""
    org, partner = await api.organization(), await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    return peer, officer, await api.patient(peer), partner


async def _partner_nurse(api: Api, peer: Person, patient_id: int, partner: int) -> Person:
    """A nurse of ``partner`` put on the patient's care team by the patient's organization's admin
    (a consent naming the partner must cover them): who brings the partner's contacts in."""
    nurse = await api.person("care_team_member", partner)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", peer)
    admin = await api.person("admin", peer.organization_id)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", admin, json={"userId": nurse.id}
    )
    assert status == 201, body
    return nurse


async def _start(api: Api, peer: Person, patient_id: int, *members: dict[str, Any]) -> tuple[int, Any]:
    body = {
        "title": "Coordination",
        "patientId": patient_id,
        "memberIds": [],
        "externalMembers": list(members),
    }
    return await api.call("POST", "/api/conversations", peer, json=body)


async def test_an_organization_consent_for_payment_and_reading_admits_no_texting(api: Api) -> None:
    peer, officer, patient_id, partner = await _clinic(api)
    phone = unique_phone()
    await add_contact(api, await api.person("admin", partner), partner, phone)
    await api.consent(officer, patient_id, organizationId=partner, purpose="payment", scope=["read"])
    # What covers the partner's nurse for conversations discloses nothing by text either.
    await api.consent(officer, patient_id, organizationId=partner, scope=["read", "message"])
    nurse = await _partner_nurse(api, peer, patient_id, partner)

    status, body = await _start(
        api, nurse, patient_id, {"phoneNumber": phone, "name": "x", "organizationId": partner}
    )

    assert (status, body["reason"], body["field"]) == (403, "no_external_consent", "externalMembers[0]")


async def test_naming_an_organization_for_a_number_it_never_listed_admits_nobody(api: Api) -> None:
    peer, officer, patient_id, partner = await _clinic(api)
    await api.consent(officer, patient_id, organizationId=partner, purpose="treatment")
    nurse = await _partner_nurse(api, peer, patient_id, partner)

    status, body = await _start(
        api, nurse, patient_id, {"phoneNumber": unique_phone(), "name": "x", "organizationId": partner}
    )

    assert (status, body["reason"]) == (403, "no_external_consent")


async def test_a_number_in_the_consented_organizations_directory_is_admitted_under_that_consent(
    api: Api, db: asyncpg.Connection
) -> None:
    peer, officer, patient_id, partner = await _clinic(api)
    phone = unique_phone()
    await add_contact(api, await api.person("admin", partner), partner, phone)
    consent = await api.consent(officer, patient_id, organizationId=partner, purpose="care_coordination")
    nurse = await _partner_nurse(api, peer, patient_id, partner)

    status, created = await _start(
        api, nurse, patient_id, {"phoneNumber": phone, "name": "x", "organizationId": partner}
    )

    assert status == 201, created
    admitted_under = await db.fetchval(
        "SELECT consent_id FROM external_participants WHERE conversation_id = $1", created["id"]
    )
    assert admitted_under == consent["id"]


async def test_the_most_specific_and_longest_lasting_consent_is_the_one_recorded(
    api: Api, db: asyncpg.Connection
) -> None:
    peer, officer, patient_id, partner = await _clinic(api)
    phone = unique_phone()
    await add_contact(api, await api.person("admin", partner), partner, phone)
    # Lower ids first: an organization consent, a read-only number consent (does not count), a
    # number consent that expires, and one that does not.
    await api.consent(officer, patient_id, organizationId=partner)
    await api.consent(officer, patient_id, externalParty={"phoneNumber": phone, "name": "x"}, scope=["read"])
    await api.consent(
        officer,
        patient_id,
        externalParty={"phoneNumber": phone, "name": "x"},
        expiresAt="2099-01-01T00:00:00+00:00",
    )
    lasting = await api.consent(officer, patient_id, externalParty={"phoneNumber": phone, "name": "x"})
    nurse = await _partner_nurse(api, peer, patient_id, partner)

    status, created = await _start(
        api, nurse, patient_id, {"phoneNumber": phone, "name": "x", "organizationId": partner}
    )

    assert status == 201, created
    recorded = await db.fetchval(
        "SELECT details->>'consent_id' FROM audit_events WHERE workflow = 'conversation.join'"
        " AND patient_id = $1 AND decision = 'allow'",
        patient_id,
    )
    assert recorded == str(lasting["id"])


async def test_only_the_organizations_admin_keeps_its_contact_directory(api: Api) -> None:
    org, other = await api.organization(), await api.organization()
    admin = await api.person("admin", org)
    officer = await api.person("compliance_officer", org)
    foreign_admin = await api.person("admin", other)
    phone = unique_phone()
    path = f"/api/organizations/{org}/contacts"

    contact = await add_contact(api, admin, org, phone)
    status, again = await api.call("POST", path, admin, json={"phoneNumber": phone, "name": "y"})
    assert status == 409, again
    status, denied = await api.call(
        "POST", path, foreign_admin, json={"phoneNumber": unique_phone(), "name": "z"}
    )
    assert (status, denied["reason"]) == (403, "other_organization")
    status, denied = await api.call("POST", path, officer, json={"phoneNumber": unique_phone(), "name": "z"})
    assert (status, denied["reason"]) == (403, "role_not_permitted")
    status, bad = await api.call("POST", path, admin, json={"phoneNumber": "12345", "name": "z"})
    assert status == 422
    assert bad["errors"][0]["field"] == "phoneNumber"

    status, listed = await api.call("GET", path, officer)

    assert status == 200
    assert [(c["id"], c["phoneNumber"]) for c in listed["items"]] == [(contact["id"], phone)]
    assert (await api.call("GET", path, foreign_admin))[0] == 403


async def test_a_text_is_recorded_under_the_consent_that_allows_texting_not_a_read_only_one(
    api: Api, db: asyncpg.Connection
) -> None:
    peer, officer, patient_id, partner = await _clinic(api)
    phone = unique_phone()
    await add_contact(api, await api.person("admin", partner), partner, phone)
    await api.consent(officer, patient_id, organizationId=partner, scope=["read"])  # the lowest id
    texting = await api.consent(officer, patient_id, externalParty={"phoneNumber": phone, "name": "x"})
    await api.consent(officer, patient_id, organizationId=partner, scope=["read", "message"])  # the nurse's
    nurse = await _partner_nurse(api, peer, patient_id, partner)
    status, created = await _start(
        api, nurse, patient_id, {"phoneNumber": phone, "name": "x", "organizationId": partner}
    )
    assert status == 201, created

    status, accepted = await send(api, nurse, created["id"], "See you at 3")

    assert status == 202, accepted
    details = await db.fetchval(
        "SELECT details FROM audit_events WHERE workflow = 'sms.send_full_text' AND resource_id = $1",
        str(accepted["id"]),
    )
    assert f'"consent_id": {texting["id"]}' in details


async def test_a_number_taken_out_of_the_directory_is_no_longer_texted_under_the_organization_consent(
    api: Api,
) -> None:
    peer, officer, patient_id, partner = await _clinic(api)
    phone = unique_phone()
    admin = await api.person("admin", partner)
    contact = await add_contact(api, admin, partner, phone)
    await api.consent(officer, patient_id, organizationId=partner)
    nurse = await _partner_nurse(api, peer, patient_id, partner)
    status, created = await _start(
        api, nurse, patient_id, {"phoneNumber": phone, "name": "x", "organizationId": partner}
    )
    assert status == 201, created
    path = f"/api/organizations/{partner}/contacts/{contact['id']}"
    assert (await api.call("DELETE", path, await api.person("admin", await api.organization())))[0] == 403

    status, _ = await api.call("DELETE", path, admin)

    assert status == 204
    assert (await api.call("DELETE", path, admin))[0] == 404
    status, accepted = await send(api, nurse, created["id"], "See you at 3")
    assert status == 202, accepted
    sms = [d for d in accepted["deliveries"] if d["channel"] == "sms"]
    assert [(d["state"], d["reason"]) for d in sms] == [("failed", "no_sms_consent")]


async def test_another_organization_learns_nothing_of_a_directory_and_texts_none_of_its_contacts(
    api: Api, db: asyncpg.Connection
) -> None:
    """The reviewer's probe: B records a consent naming A, then names A for guessed numbers. A listed
    number and an unlisted one get the same refusal, and nobody is added."""
    peer, officer, patient_id, partner = await _clinic(api)
    listed = unique_phone()
    await add_contact(api, await api.person("admin", partner), partner, listed)
    await api.consent(officer, patient_id, organizationId=partner)

    answers = []
    for phone in (listed, unique_phone()):
        status, body = await _start(
            api, peer, patient_id, {"phoneNumber": phone, "name": "x", "organizationId": partner}
        )
        answers.append((status, body.get("reason"), body.get("field"), body.get("hint")))

    assert answers[0] == answers[1]
    assert answers[0][:3] == (403, "no_external_consent", "externalMembers[0]")
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE patient_id = $1", patient_id) == 0
