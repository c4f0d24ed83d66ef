"""Consents over HTTP: POST /api/consents and GET /api/patients/{patientId}/consents.

Only compliance officers of the patient's organization record consents; a consent names exactly one
recipient (an organization, a compliance group or an external party by phone) and is active from
``effectiveAt`` until ``expiresAt``. Every decision is on record in ``audit_events``; a refused or
invalid request stores no consent.

Longer than 400 lines because recording and listing consents share the Clinic setup, the denial and
validation assertions and the consent count, and the list is checked on consents recorded through
the same endpoint; the invalid bodies are one table built by ``_body``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from tests.support.api import Api, Person

FIRST, LAST = "Marguerite", "Okonkwo"
PATIENT_FIELDS = {"firstName", "lastName", "dateOfBirth", "riskLevel"}
CONSENT_KEYS = {
    "id",
    "patientId",
    "recipientType",
    "organizationId",
    "complianceGroupId",
    "externalParty",
    "purpose",
    "effectiveAt",
    "expiresAt",
    "recordedBy",
    "createdAt",
    "revokedAt",
    "status",
    "scope",
    "revokedBy",
    "revocationReason",
    "part2",
}
PHONE = "+16175550123"


def iso(moment: datetime) -> str:
    return moment.isoformat()


def assert_denied(body: dict[str, Any], reason: str) -> None:
    assert body["status"] == 403
    assert body["code"] == "forbidden"
    assert body["reason"] == reason
    assert not PATIENT_FIELDS & body.keys()
    assert "items" not in body
    text = json.dumps(body)
    assert FIRST not in text
    assert PHONE not in text


def assert_validation_problem(body: dict[str, Any], field: str) -> None:
    assert body["status"] == 422
    assert body["code"] == "validation_error"
    assert field in [e["field"] for e in body["errors"]], body


async def decisions(db: asyncpg.Connection, actor: Person, workflow: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = $2 AND event = 'decision' ORDER BY id",
        actor.id,
        workflow,
    )


async def consent_count(db: asyncpg.Connection, patient_id: int) -> int:
    return await db.fetchval("SELECT count(*) FROM consents WHERE patient_id = $1", patient_id)


@dataclass
class Clinic:
    org: int
    nurse: Person
    officer: Person
    patient_id: int


async def clinic(api: Api) -> Clinic:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    officer = await api.person("compliance_officer", org)
    patient_id = await api.patient(nurse, firstName=FIRST, lastName=LAST)
    return Clinic(org, nurse, officer, patient_id)


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/api/consents", id="record"),
        pytest.param("GET", "/api/patients/1/consents", id="list"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="no-token"), pytest.param({"Authorization": "Bearer forged"}, id="garbage-token")],
)
async def test_consent_endpoints_require_a_valid_bearer_token(
    api: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    payload = {
        "patientId": 1,
        "purpose": "treatment",
        "externalParty": {"phoneNumber": PHONE, "name": "Aunt"},
    }
    status, body = await api.call(method, path, json=payload, headers=headers)
    assert status == 401
    assert body["code"] == "unauthenticated"
    assert PHONE not in json.dumps(body)


# --- POST /api/consents: recording ---------------------------------------------------------------------


async def test_a_compliance_officer_records_a_consent_for_another_organization(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    recipient = await api.organization()

    status, body = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={"patientId": c.patient_id, "purpose": "care_coordination", "organizationId": recipient},
    )

    assert status == 201
    assert body.keys() == CONSENT_KEYS
    assert (body["patientId"], body["recipientType"], body["organizationId"]) == (
        c.patient_id,
        "organization",
        recipient,
    )
    assert (body["complianceGroupId"], body["externalParty"], body["expiresAt"], body["revokedAt"]) == (
        None,
        None,
        None,
        None,
    )
    assert (body["purpose"], body["recordedBy"], body["status"]) == (
        "care_coordination",
        c.officer.id,
        "active",
    )
    assert datetime.fromisoformat(body["effectiveAt"]) <= datetime.now(UTC)
    stored = await db.fetchrow("SELECT * FROM consents WHERE id = $1", body["id"])
    assert (stored["patient_id"], stored["organization_id"], stored["recorded_by"]) == (
        c.patient_id,
        recipient,
        c.officer.id,
    )
    [row] = await decisions(db, c.officer, "consent.create")
    assert (row["decision"], row["outcome"], row["reason"]) == ("allow", "success", "allowed")
    assert (row["patient_id"], row["resource_id"]) == (c.patient_id, str(body["id"]))
    assert "compliance_officer, consent.create, own_org" in row["matched_rule"]
    assert json.loads(row["details"])["recipient_type"] == "organization"


async def test_a_consent_may_name_a_compliance_group(api: Api) -> None:
    c = await clinic(api)
    _, group = await api.call(
        "POST", "/api/compliance-groups", c.officer, json={"name": "Network", "organizationIds": [c.org]}
    )
    consent = await api.consent(c.officer, c.patient_id, complianceGroupId=group["id"])
    assert (consent["recipientType"], consent["complianceGroupId"]) == ("compliance_group", group["id"])
    assert (consent["organizationId"], consent["externalParty"]) == (None, None)


async def test_a_consent_may_name_an_external_party_whose_number_is_stored_in_e164(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    consent = await api.consent(
        c.officer, c.patient_id, externalParty={"phoneNumber": " +4930901820 ", "name": "Sister"}
    )
    assert consent["recipientType"] == "external"
    assert consent["externalParty"] == {"phoneNumber": "+4930901820", "name": "Sister"}
    assert (consent["organizationId"], consent["complianceGroupId"]) == (None, None)
    stored = await db.fetchval("SELECT external_phone_number FROM consents WHERE id = $1", consent["id"])
    assert stored == "+4930901820"
    # the audit trail never carries the phone number
    rows = await decisions(db, c.officer, "consent.create")
    assert "+4930901820" not in json.dumps([dict(r) for r in rows], default=str)


async def test_a_consent_window_given_with_any_utc_offset_is_kept_as_the_same_instants(api: Api) -> None:
    c = await clinic(api)
    effective = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    expires = effective + timedelta(days=90)
    offset = timedelta(hours=-5)
    consent = await api.consent(
        c.officer,
        c.patient_id,
        organizationId=await api.organization(),
        effectiveAt=iso(effective.astimezone(timezone(offset))),
        expiresAt=iso(expires),
    )
    assert datetime.fromisoformat(consent["effectiveAt"]) == effective
    assert datetime.fromisoformat(consent["expiresAt"]) == expires
    assert consent["status"] == "active"


@pytest.mark.parametrize(
    ("effective", "expires", "status"),
    [
        pytest.param(None, None, "active", id="active-open-ended"),
        pytest.param(timedelta(days=-1), timedelta(days=30), "active", id="active-with-end"),
        pytest.param(timedelta(days=-30), timedelta(days=-1), "expired", id="expired"),
        pytest.param(timedelta(days=2), timedelta(days=30), "pending", id="not-yet-effective"),
    ],
)
async def test_a_recorded_consent_reports_its_status(
    api: Api, effective: timedelta | None, expires: timedelta | None, status: str
) -> None:
    c = await clinic(api)
    now = datetime.now(UTC)
    window: dict[str, str] = {}
    if effective is not None:
        window["effectiveAt"] = iso(now + effective)
    if expires is not None:
        window["expiresAt"] = iso(now + expires)
    consent = await api.consent(c.officer, c.patient_id, organizationId=await api.organization(), **window)
    assert consent["status"] == status


# --- POST /api/consents: who may record ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "admin", "auditor"])
async def test_only_compliance_officers_record_consents(api: Api, db: asyncpg.Connection, role: str) -> None:
    c = await clinic(api)
    who = c.nurse if role == "care_team_member" else await api.person(role, c.org)

    status, body = await api.call(
        "POST",
        "/api/consents",
        who,
        json={"patientId": c.patient_id, "purpose": "treatment", "organizationId": c.org},
    )

    assert status == 403
    assert_denied(body, "role_not_permitted")
    assert await consent_count(db, c.patient_id) == 0
    [row] = await decisions(db, who, "consent.create")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", "role_not_permitted")
    assert (row["patient_id"], row["actor_id"]) == (c.patient_id, who.id)


@pytest.mark.parametrize(
    "covered", [False, True], ids=["uncovered", "even-with-consent-for-their-organization"]
)
async def test_a_compliance_officer_of_another_organization_cannot_record_a_consent(
    api: Api, db: asyncpg.Connection, covered: bool
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outside_officer = await api.person("compliance_officer", outside_org)
    if covered:
        await api.consent(c.officer, c.patient_id, organizationId=outside_org)
    before = await consent_count(db, c.patient_id)

    status, body = await api.call(
        "POST",
        "/api/consents",
        outside_officer,
        json={"patientId": c.patient_id, "purpose": "treatment", "organizationId": outside_org},
    )

    if covered:  # a consent covers their organization: they may know the patient exists
        assert status == 403
        assert_denied(body, "other_organization")
        assert body["field"] == "patientId"
        assert "compliance_officer, consent.create, own_org" in body["rule"]
    else:  # no relation to the patient: answered exactly as for a patient that does not exist
        assert (status, body["code"], body["detail"]) == (404, "not_found", "No such patient.")
    assert await consent_count(db, c.patient_id) == before
    [row] = await decisions(db, outside_officer, "consent.create")
    assert (row["decision"], row["reason"], row["patient_id"]) == ("deny", "other_organization", c.patient_id)
    assert "roles.csv:" in row["matched_rule"]


async def test_recording_a_consent_for_a_patient_that_does_not_exist_is_a_404(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)
    status, body = await api.call(
        "POST",
        "/api/consents",
        officer,
        json={"patientId": 2**31 - 1, "purpose": "treatment", "organizationId": org},
    )
    assert status == 404
    assert body["code"] == "not_found"
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = 'consent.create'", officer.id
    )
    assert (row["event"], row["outcome"], row["reason"]) == ("lookup", "failure", "not_found")


# --- POST /api/consents: input -----------------------------------------------------------------------------


def _submitted_strings(payload: Any) -> list[str]:
    """The strings a client sent worth looking for, except the purpose an error message lists as allowed."""
    if isinstance(payload, dict):
        return [s for v in payload.values() for s in _submitted_strings(v)]
    if isinstance(payload, str) and payload != "treatment" and len(payload.strip()) >= 4:
        return [payload.strip()]
    return []


def _body(**fields: Any) -> dict[str, Any]:
    return {"purpose": "treatment", **fields}


_LATER = datetime(2031, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"organizationId": 1}, "purpose", id="missing-purpose"),
        pytest.param(_body(organizationId=1, purpose="marketing"), "purpose", id="unknown-purpose"),
        pytest.param(_body(organizationId="1"), "organizationId", id="organization-id-as-string"),
        pytest.param(_body(organizationId=0), "organizationId", id="organization-id-zero"),
        pytest.param(
            _body(externalParty={"phoneNumber": "3035550188", "name": "Aunt"}),
            "externalParty.phoneNumber",
            id="phone-without-country-code",
        ),
        pytest.param(
            _body(externalParty={"phoneNumber": "+1 (303) 555-0188", "name": "Aunt"}),
            "externalParty.phoneNumber",
            id="phone-with-punctuation",
        ),
        pytest.param(
            _body(externalParty={"phoneNumber": "+99912345678", "name": "Aunt"}),
            "externalParty.phoneNumber",
            id="phone-with-unknown-country-code",
        ),
        pytest.param(
            _body(externalParty={"phoneNumber": "+1303555018800000000000", "name": "Aunt"}),
            "externalParty.phoneNumber",
            id="oversized-phone",
        ),
        pytest.param(
            _body(externalParty={"phoneNumber": PHONE}), "externalParty.name", id="external-without-name"
        ),
        pytest.param(
            _body(externalParty={"phoneNumber": PHONE, "name": "A" * 101}),
            "externalParty.name",
            id="oversized-external-name",
        ),
        pytest.param(
            _body(externalParty={"phoneNumber": PHONE, "name": "Aunt", "relation": "aunt"}),
            "externalParty.relation",
            id="unknown-external-field",
        ),
        pytest.param(
            _body(organizationId=1, effectiveAt="next tuesday"), "effectiveAt", id="effective-not-a-date"
        ),
        pytest.param(_body(organizationId=1, scope="everything"), "scope", id="unknown-field"),
    ],
)
async def test_an_invalid_consent_is_a_422_naming_the_field_without_echoing_values(
    api: Api, db: asyncpg.Connection, payload: dict[str, Any], field: str
) -> None:
    c = await clinic(api)

    status, body = await api.call(
        "POST", "/api/consents", c.officer, json={"patientId": c.patient_id, **payload}
    )

    assert status == 422
    assert_validation_problem(body, field)
    text = json.dumps(body)
    for value in _submitted_strings(payload):
        assert value not in text
    assert await consent_count(db, c.patient_id) == 0


@pytest.mark.parametrize(
    "recipients",
    [
        pytest.param({}, id="none"),
        pytest.param({"organizationId": 1, "complianceGroupId": 1}, id="organization-and-group"),
        pytest.param(
            {"complianceGroupId": 1, "externalParty": {"phoneNumber": PHONE, "name": "Aunt"}},
            id="group-and-external-party",
        ),
        pytest.param(
            {
                "organizationId": 1,
                "complianceGroupId": 1,
                "externalParty": {"phoneNumber": PHONE, "name": "A"},
            },
            id="all-three",
        ),
    ],
)
async def test_a_consent_names_exactly_one_recipient(
    api: Api, db: asyncpg.Connection, recipients: dict[str, Any]
) -> None:
    c = await clinic(api)
    status, body = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={"patientId": c.patient_id, "purpose": "treatment", **recipients},
    )
    assert status == 422
    assert body["code"] == "validation_error"
    [error] = body["errors"]
    assert "exactly one of organizationId, complianceGroupId or externalParty" in error["message"]
    assert PHONE not in json.dumps(body)
    assert await consent_count(db, c.patient_id) == 0


@pytest.mark.parametrize(
    ("window", "field"),
    [
        pytest.param({"effectiveAt": "2031-06-01T12:00:00"}, "effectiveAt", id="naive-effective-at"),
        pytest.param({"expiresAt": "2031-06-01T12:00:00"}, "expiresAt", id="naive-expires-at"),
    ],
)
async def test_a_consent_time_without_a_time_zone_is_a_422_naming_the_field(
    api: Api, db: asyncpg.Connection, window: dict[str, str], field: str
) -> None:
    c = await clinic(api)
    status, body = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={"patientId": c.patient_id, "purpose": "treatment", "organizationId": c.org, **window},
    )
    assert status == 422
    assert_validation_problem(body, field)
    assert await consent_count(db, c.patient_id) == 0


@pytest.mark.parametrize(
    "window",
    [
        pytest.param(
            {"effectiveAt": iso(_LATER), "expiresAt": iso(_LATER - timedelta(days=1))},
            id="expires-before-effective",
        ),
        pytest.param({"effectiveAt": iso(_LATER), "expiresAt": iso(_LATER)}, id="expires-when-effective"),
        pytest.param({"expiresAt": "2001-01-01T00:00:00+00:00"}, id="expires-in-the-past-effective-now"),
    ],
)
async def test_a_consent_must_expire_after_it_takes_effect(
    api: Api, db: asyncpg.Connection, window: dict[str, str]
) -> None:
    c = await clinic(api)
    status, body = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={"patientId": c.patient_id, "purpose": "treatment", "organizationId": c.org, **window},
    )
    assert status == 422
    assert_validation_problem(body, "expiresAt")
    assert await consent_count(db, c.patient_id) == 0
    [row] = await decisions(db, c.officer, "consent.create")
    assert (row["decision"], row["outcome"]) == ("allow", "failure")


@pytest.mark.parametrize(
    ("recipient", "field"),
    [
        pytest.param({"organizationId": 2**31 - 1}, "organizationId", id="unknown-organization"),
        pytest.param({"complianceGroupId": 2**31 - 1}, "complianceGroupId", id="unknown-compliance-group"),
    ],
)
async def test_a_consent_for_a_recipient_that_does_not_exist_is_a_422_naming_it(
    api: Api, db: asyncpg.Connection, recipient: dict[str, int], field: str
) -> None:
    c = await clinic(api)
    status, body = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={"patientId": c.patient_id, "purpose": "treatment", **recipient},
    )
    assert status == 422
    assert_validation_problem(body, field)
    assert await consent_count(db, c.patient_id) == 0


# --- GET /api/patients/{patientId}/consents --------------------------------------------------------


async def test_the_consent_list_shows_each_consents_status(api: Api, db: asyncpg.Connection) -> None:
    c = await clinic(api)
    now = datetime.now(UTC)
    org = await api.organization()
    active = await api.consent(c.officer, c.patient_id, organizationId=org)
    expired = await api.consent(
        c.officer,
        c.patient_id,
        organizationId=org,
        effectiveAt=iso(now - timedelta(days=60)),
        expiresAt=iso(now - timedelta(days=30)),
    )
    pending = await api.consent(
        c.officer,
        c.patient_id,
        externalParty={"phoneNumber": PHONE, "name": "Aunt"},
        effectiveAt=iso(now + timedelta(days=7)),
    )

    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/consents", c.officer)

    assert status == 200
    assert body["nextCursor"] is None
    assert [(i["id"], i["status"]) for i in body["items"]] == [
        (active["id"], "active"),
        (expired["id"], "expired"),
        (pending["id"], "pending"),
    ]
    assert all(i.keys() == CONSENT_KEYS for i in body["items"])
    assert body["items"][2]["externalParty"] == {"phoneNumber": PHONE, "name": "Aunt"}
    [row] = await decisions(db, c.officer, "consent.list")
    assert (row["decision"], row["patient_id"]) == ("allow", c.patient_id)
    assert "compliance_officer, consent.list, own_org" in row["matched_rule"]


async def test_the_consent_list_of_a_patient_without_consents_is_empty(api: Api) -> None:
    c = await clinic(api)
    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/consents", c.officer)
    assert status == 200
    assert body == {"items": [], "nextCursor": None}


async def test_a_care_team_member_reads_their_patients_consents(api: Api, db: asyncpg.Connection) -> None:
    c = await clinic(api)
    consent = await api.consent(c.officer, c.patient_id, organizationId=await api.organization())
    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/consents", c.nurse)
    assert status == 200
    assert [i["id"] for i in body["items"]] == [consent["id"]]
    [row] = await decisions(db, c.nurse, "consent.list")
    assert row["decision"] == "allow"
    assert "care_team_member, consent.list, care_team & covered" in row["matched_rule"]


async def test_a_partners_care_team_member_lists_only_the_consents_disclosing_to_their_organization(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    partner, other = await api.organization(), await api.organization()
    theirs = await api.consent(
        c.officer, c.patient_id, organizationId=partner, purpose="payment", scope=["read"]
    )
    await api.consent(c.officer, c.patient_id, organizationId=other)
    await api.consent(c.officer, c.patient_id, externalParty={"phoneNumber": PHONE, "name": "Aunt"})
    group = await api.call(
        "POST",
        "/api/compliance-groups",
        c.officer,
        json={"name": f"G {c.patient_id}", "organizationIds": [partner]},
    )
    through_group = await api.consent(c.officer, c.patient_id, complianceGroupId=group[1]["id"])
    outsider = await api.person("care_team_member", partner)
    _, team = await api.call("GET", f"/api/patients/{c.patient_id}/care-team", c.nurse)
    status, _ = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", c.nurse, json={"userId": outsider.id}
    )
    assert status == 201

    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/consents", outsider)
    _, everything = await api.call("GET", f"/api/patients/{c.patient_id}/consents", c.nurse)

    assert status == 200
    assert [i["id"] for i in body["items"]] == [theirs["id"], through_group["id"]]
    assert PHONE not in json.dumps(body)
    assert len(everything["items"]) == 4
    [row] = await decisions(db, outsider, "consent.list")
    assert (row["decision"], json.loads(row["details"])["shown"]) == (
        "allow",
        "disclosed_to_own_organization",
    )


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        pytest.param("admin", "role_not_permitted", id="admin"),
        pytest.param("auditor", "role_not_permitted", id="auditor"),
        pytest.param("colleague_off_team", "not_on_care_team", id="colleague-off-the-team"),
        pytest.param("outside_nurse", "not_on_care_team", id="care-team-member-of-another-organization"),
        pytest.param(
            "outside_officer", "other_organization", id="compliance-officer-of-another-organization"
        ),
    ],
)
async def test_people_who_may_not_see_a_patients_consents_are_refused_and_audited(
    api: Api, db: asyncpg.Connection, who: str, reason: str
) -> None:
    c = await clinic(api)
    await api.consent(c.officer, c.patient_id, externalParty={"phoneNumber": PHONE, "name": "Aunt"})
    outside = await api.organization()
    role, org = {
        "admin": ("admin", c.org),
        "auditor": ("auditor", c.org),
        "colleague_off_team": ("peer_support", c.org),
        "outside_nurse": ("care_team_member", outside),
        "outside_officer": ("compliance_officer", outside),
    }[who]
    intruder = await api.person(role, org)

    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/consents", intruder)

    if org == outside:  # no relation to the patient: answered as for a patient that does not exist
        assert (status, body["code"]) == (404, "not_found")
    else:
        assert status == 403
        assert_denied(body, reason)
    # The audit record keeps the real reason either way.
    [row] = await decisions(db, intruder, "consent.list")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", reason)
    assert (row["patient_id"], row["actor_id"]) == (c.patient_id, intruder.id)


async def test_the_consents_of_a_patient_that_does_not_exist_are_a_404(api: Api) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)
    status, body = await api.call("GET", f"/api/patients/{2**31 - 1}/consents", officer)
    assert status == 404
    assert body["code"] == "not_found"


@pytest.mark.parametrize("bad_id", ["abc", "0", "-2", "99999999999"])
async def test_a_consent_list_path_whose_patient_id_is_not_an_id_is_a_422_naming_it(
    api: Api, bad_id: str
) -> None:
    org = await api.organization()
    officer = await api.person("compliance_officer", org)
    status, body = await api.call("GET", f"/api/patients/{bad_id}/consents", officer)
    assert status == 422
    assert_validation_problem(body, "patientId")
