"""The purpose of use: stated by the client per request, or taken from the consent that covered the
access, and recorded in the audit event."""

from __future__ import annotations

import asyncpg

from tests.support.api import Api


async def _purposes(db: asyncpg.Connection, request_id: str) -> list[str | None]:
    rows = await db.fetch("SELECT purpose FROM audit_events WHERE request_id = $1 ORDER BY id", request_id)
    return [r["purpose"] for r in rows]


async def test_a_stated_purpose_of_use_is_recorded_in_the_audit_event(
    api: Api, db: asyncpg.Connection
) -> None:
    nurse = await api.person("care_team_member", await api.organization())
    patient_id = await api.patient(nurse)

    status, _ = await api.call(
        "GET",
        f"/api/patients/{patient_id}",
        nurse,
        headers={"X-Purpose-Of-Use": "treatment", "X-Request-ID": "purpose-stated-0001"},
    )

    assert status == 200
    assert await _purposes(db, "purpose-stated-0001") == ["treatment"]


async def test_an_unknown_purpose_of_use_is_a_422_naming_the_header(api: Api) -> None:
    nurse = await api.person("care_team_member", await api.organization())

    status, body = await api.call("GET", "/api/patients", nurse, headers={"X-Purpose-Of-Use": "curiosity"})

    assert status == 422
    assert [e["field"] for e in body["errors"]] == ["X-Purpose-Of-Use"]
    assert "curiosity" not in str(body)


async def test_without_a_stated_purpose_the_covering_consents_purpose_is_recorded(
    api: Api, db: asyncpg.Connection
) -> None:
    home = await api.organization()
    partner = await api.organization()
    nurse = await api.person("care_team_member", home)
    officer = await api.person("compliance_officer", home)
    visitor = await api.person("care_team_member", partner)
    patient_id = await api.patient(nurse)
    await api.consent(officer, patient_id, organizationId=partner, purpose="care_coordination")
    status, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", nurse)
    assert status == 200, team
    status, added = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", nurse, json={"userId": visitor.id}
    )
    assert status == 201, added

    status, _ = await api.call(
        "GET", f"/api/patients/{patient_id}", visitor, headers={"X-Request-ID": "purpose-consent-0001"}
    )

    assert status == 200
    assert await _purposes(db, "purpose-consent-0001") == ["care_coordination"]


async def test_a_role_that_may_never_read_patients_is_refused_alike_for_an_unrelated_and_a_missing_one(
    api: Api,
) -> None:
    """Found by the reference model: with a stated purpose the workflow does not serve, an admin of
    another organization got 404 for an existing patient and 403 for an id nobody has, which told
    them the patient exists."""
    home = await api.organization()
    nurse = await api.person("care_team_member", home)
    patient_id = await api.patient(nurse)
    stranger = await api.person("admin", await api.organization())
    payment = {"X-Purpose-Of-Use": "payment"}

    existing = await api.call("GET", f"/api/patients/{patient_id}", stranger, headers=payment)
    missing = await api.call("GET", "/api/patients/2000000000", stranger, headers=payment)

    assert existing[0] == missing[0] == 403
    assert existing[1]["reason"] == missing[1]["reason"] == "purpose_not_permitted"
