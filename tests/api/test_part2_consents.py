"""42 CFR Part 2 consents over HTTP: a consent marked as covering Part 2 records must hold every
element of 2.31 (who discloses, to whom, what information, purpose, expiry date or event, the
patient's signature and its date, the right to revoke); POST /api/consents refuses one that lacks
any with a 422 naming the field, stores nothing, and a recorded one shows its elements."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.api import Api, Person
from tests.support.part2 import PART2_ELEMENTS


async def officer_and_patient(api: Api) -> tuple[Person, int, int]:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    return officer, await api.patient(nurse), await api.organization()


def in_a_year() -> str:
    return (datetime.now(UTC) + timedelta(days=365)).isoformat()


async def test_a_part2_consent_with_every_element_is_recorded_and_shows_them(
    api: Api, db: asyncpg.Connection
) -> None:
    officer, patient_id, recipient = await officer_and_patient(api)

    status, body = await api.call(
        "POST",
        "/api/consents",
        officer,
        json={
            "patientId": patient_id,
            "purpose": "treatment",
            "organizationId": recipient,
            "expiresAt": in_a_year(),
            "part2": PART2_ELEMENTS,
        },
    )

    assert status == 201, body
    assert body["part2"] == {**PART2_ELEMENTS, "expiryEvent": None}
    _, listed = await api.call("GET", f"/api/patients/{patient_id}/consents", officer)
    assert listed["items"][0]["part2"] == body["part2"]
    row = await db.fetchrow(
        "SELECT part2, part2_discloser, part2_signed_on FROM consents WHERE id = $1", body["id"]
    )
    assert (row["part2"], row["part2_discloser"], row["part2_signed_on"]) == (
        True,
        PART2_ELEMENTS["discloser"],
        date(2026, 11, 30),
    )
    details = await db.fetchval(
        "SELECT details FROM audit_events WHERE workflow = 'consent.create' AND resource_id = $1"
        " AND event = 'decision'",
        str(body["id"]),
    )
    assert json.loads(details)["part2"] is True


async def test_an_expiry_event_stands_in_for_an_expiry_date(api: Api) -> None:
    officer, patient_id, recipient = await officer_and_patient(api)
    part2 = {**PART2_ELEMENTS, "expiryEvent": "End of treatment at Riverside"}

    status, body = await api.call(
        "POST",
        "/api/consents",
        officer,
        json={"patientId": patient_id, "purpose": "treatment", "organizationId": recipient, "part2": part2},
    )

    assert status == 201, body
    assert (body["expiresAt"], body["part2"]["expiryEvent"]) == (None, "End of treatment at Riverside")


async def test_a_consent_without_part2_is_unchanged(api: Api) -> None:
    officer, patient_id, recipient = await officer_and_patient(api)
    created = await api.consent(officer, patient_id, organizationId=recipient)
    assert created["part2"] is None


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in PART2_ELEMENTS.items() if k != key}


@pytest.mark.parametrize(
    ("part2", "expires", "field"),
    [
        pytest.param(_without("discloser"), True, "part2.discloser", id="who-discloses"),
        pytest.param(_without("information"), True, "part2.information", id="what-information"),
        pytest.param(_without("signedBy"), True, "part2.signedBy", id="signature"),
        pytest.param(_without("signedOn"), True, "part2.signedOn", id="signature-date"),
        pytest.param(
            _without("revocationRightStated"), True, "part2.revocationRightStated", id="right-to-revoke"
        ),
        pytest.param(
            {**PART2_ELEMENTS, "revocationRightStated": False},
            True,
            "part2.revocationRightStated",
            id="revoke-false",
        ),
        pytest.param({**PART2_ELEMENTS, "discloser": "  "}, True, "part2.discloser", id="blank-discloser"),
        pytest.param(
            {**PART2_ELEMENTS, "information": "x" * 501}, True, "part2.information", id="long-information"
        ),
        pytest.param(PART2_ELEMENTS, False, "part2.expiryEvent", id="no-expiry-date-or-event"),
        pytest.param(
            {**PART2_ELEMENTS, "signedOn": (datetime.now(UTC).date() + timedelta(days=2)).isoformat()},
            True,
            "part2.signedOn",
            id="signed-in-the-future",
        ),
        pytest.param({**PART2_ELEMENTS, "signedOn": "30/11/2026"}, True, "part2.signedOn", id="not-a-date"),
    ],
)
async def test_a_part2_consent_lacking_an_element_is_refused_naming_it_and_nothing_is_stored(
    api: Api, db: asyncpg.Connection, part2: dict[str, Any], expires: bool, field: str
) -> None:
    officer, patient_id, recipient = await officer_and_patient(api)
    body: dict[str, Any] = {"patientId": patient_id, "purpose": "treatment", "organizationId": recipient}
    if expires:
        body["expiresAt"] = in_a_year()

    status, problem = await api.call("POST", "/api/consents", officer, json={**body, "part2": part2})

    assert status == 422, problem
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await db.fetchval("SELECT count(*) FROM consents WHERE patient_id = $1", patient_id) == 0


async def test_a_disclosure_under_a_part2_consent_carries_the_notice_in_the_accounting(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    patient_id = await api.patient(nurse)
    partner = await api.organization()
    outsider = await api.person("care_team_member", partner)
    part2 = await api.consent(
        officer, patient_id, organizationId=partner, expiresAt=in_a_year(), part2=PART2_ELEMENTS
    )
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", nurse)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": outsider.id}
    )
    assert status == 201, body
    status, _ = await api.call("GET", f"/api/patients/{patient_id}", outsider)
    assert status == 200

    status, body = await api.call("GET", f"/api/patients/{patient_id}/disclosures", officer)

    assert status == 200, body
    under_part2 = [d for d in body["items"] if d["consentId"] == part2["id"]]
    assert {d["workflow"] for d in under_part2} == {"care_team.join", "patient.read"}
    assert {d["part2Notice"] for d in under_part2} == {
        "42 CFR part 2 prohibits unauthorized use or disclosure of these records."
    }


async def test_a_disclosure_under_an_ordinary_consent_carries_no_notice(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    patient_id = await api.patient(nurse)
    partner = await api.organization()
    outsider = await api.person("care_team_member", partner)
    await api.consent(officer, patient_id, organizationId=partner)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", nurse)
    await api.call("POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": outsider.id})

    _, body = await api.call("GET", f"/api/patients/{patient_id}/disclosures", officer)

    assert body["items"]
    assert {d["part2Notice"] for d in body["items"]} == {None}


async def test_a_patient_marked_part2_shows_it_and_takes_only_part2_consents(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    recipient = await api.organization()
    patient_id = await api.patient(nurse, part2=True)
    plain = {"patientId": patient_id, "purpose": "treatment", "organizationId": recipient}

    _, read = await api.call("GET", f"/api/patients/{patient_id}", nurse)
    refused, problem = await api.call(
        "POST", "/api/consents", officer, json={**plain, "expiresAt": in_a_year()}
    )
    _, listed = await api.call("GET", f"/api/patients/{patient_id}/consents", officer)
    recorded, consent = await api.call(
        "POST", "/api/consents", officer, json={**plain, "expiresAt": in_a_year(), "part2": PART2_ELEMENTS}
    )

    assert read["part2"] is True
    assert refused == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["part2"]
    assert listed["items"] == []
    assert recorded == 201, consent


async def test_marking_a_patient_part2_is_an_update_and_null_is_refused(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)

    _, before = await api.call("GET", f"/api/patients/{patient_id}", nurse)
    status, updated = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"part2": True})
    null, problem = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"part2": None})
    _, after = await api.call("GET", f"/api/patients/{patient_id}", nurse)

    assert before["part2"] is False
    assert (status, updated["part2"]) == (200, True), updated
    assert null == 422
    assert [e["field"] for e in problem["errors"]] == ["part2"]
    assert after["part2"] is True


async def test_marking_a_patient_part2_is_refused_while_a_consent_without_part2_is_in_force(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    recipient = await api.organization()
    patient_id = await api.patient(nurse)
    in_force = await api.consent(officer, patient_id, organizationId=recipient)
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    pending = await api.consent(officer, patient_id, organizationId=recipient, effectiveAt=later)
    part2 = await api.consent(
        officer, patient_id, organizationId=recipient, expiresAt=in_a_year(), part2=PART2_ELEMENTS
    )
    revoked = await api.consent(
        officer, patient_id, externalParty={"phoneNumber": "+12025550143", "name": "Al"}
    )
    status, body = await api.call(
        "POST", f"/api/consents/{revoked['id']}/revoke", officer, json={"reason": "asked"}
    )
    assert status == 200, body

    refused, problem = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"part2": True})
    _, unchanged = await api.call("GET", f"/api/patients/{patient_id}", nurse)

    assert refused == 409, problem
    assert (problem["code"], problem["field"]) == ("consents_not_part2", "part2")
    named = {int(n) for n in re.findall(r"\d+", problem["detail"].split(" were ")[0])}
    assert named == {in_force["id"], pending["id"]}  # not the Part 2 one, nor the revoked one
    assert "Zed Quill" not in json.dumps(problem)
    assert "2025550143" not in json.dumps(problem)
    assert unchanged["part2"] is False
    audited = await db.fetchrow(
        "SELECT outcome, reason, details FROM audit_events WHERE workflow = 'patient.update'"
        " AND patient_id = $1 AND event = 'decision' ORDER BY id DESC LIMIT 1",
        patient_id,
    )
    details = json.loads(audited["details"])
    assert (audited["outcome"], details["ended_by"]) == ("failure", "consents_not_part2")
    assert details["consents_not_part2"] == f"{in_force['id']}, {pending['id']}"
    assert part2["part2"] is not None

    for consent in (in_force, pending):
        status, body = await api.call(
            "POST", f"/api/consents/{consent['id']}/revoke", officer, json={"reason": "not Part 2"}
        )
        assert status == 200, body
    marked, updated = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"part2": True})
    assert (marked, updated["part2"]) == (200, True), updated
