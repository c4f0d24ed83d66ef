"""Patients over HTTP: POST/GET /api/patients and GET/PUT /api/patients/{id}.

Every decision the policy takes is checked twice: in the response (status, problem+json, reason) and
in ``audit_events``, where allowed and denied decisions alike must be on record.

Longer than 400 lines because registering, listing, reading and changing a patient are one endpoint
family decided on the same care-team and consent facts; the tests share the denial and validation
assertions, the audit reader (``decisions``) and the covered outsider whose consent a list test and
a read test revoke.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.api import Api, Person

PATIENT_FIELDS = {"firstName", "lastName", "dateOfBirth", "riskLevel"}
PATIENT_PUBLIC_KEYS = {
    "id",
    "firstName",
    "lastName",
    "dateOfBirth",
    "riskLevel",
    "organizationId",
    "createdBy",
    "createdAt",
    "updatedAt",
    "part2",
}
# Distinctive names, so a test can tell whether they leaked into a response.
FIRST, LAST = "Marguerite", "Okonkwo"


def error_fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body["errors"]]


def assert_validation_problem(body: dict[str, Any], field: str) -> None:
    assert body["status"] == 422
    assert body["code"] == "validation_error"
    assert body["requestId"]
    assert field in error_fields(body), body


def assert_denied(body: dict[str, Any], reason: str) -> None:
    """A 403 problem carrying the policy's reason, and nothing of the patient's record."""
    assert body["status"] == 403
    assert body["code"] == "forbidden"
    assert body["reason"] == reason
    assert not PATIENT_FIELDS & body.keys()
    text = json.dumps(body)
    assert FIRST not in text
    assert LAST not in text


def _without_request_id(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k != "requestId"}


async def decisions(db: asyncpg.Connection, actor: Person, workflow: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = $2 AND event = 'decision' ORDER BY id",
        actor.id,
        workflow,
    )


async def registered(api: Api, who: Person, **fields: Any) -> int:
    return await api.patient(who, firstName=FIRST, lastName=LAST, **fields)


@dataclass
class Outsider:
    """A care-team member of another organization, on the patient's care team under a consent."""

    person: Person
    consent_id: int
    officer: Person


async def covered_outsider(api: Api, patient_org: int, patient_id: int) -> Outsider:
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)
    officer = await api.person("compliance_officer", patient_org)
    admin = await api.person("admin", patient_org)
    consent = await api.consent(officer, patient_id, organizationId=outside_org)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", admin)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", admin, json={"userId": outsider.id}
    )
    assert status == 201, body
    return Outsider(outsider, consent["id"], officer)


async def revoke(api: Api, outsider: Outsider) -> None:
    status, body = await api.call(
        "POST",
        f"/api/consents/{outsider.consent_id}/revoke",
        outsider.officer,
        json={"reason": "The patient withdrew consent."},
    )
    assert status == 200, body


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("POST", "/api/patients", id="register"),
        pytest.param("GET", "/api/patients", id="list"),
        pytest.param("GET", "/api/patients/1", id="read"),
        pytest.param("PUT", "/api/patients/1", id="update"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer not-a-token"}, id="garbage-token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
    ],
)
async def test_patient_endpoints_require_a_valid_bearer_token(
    api: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    body_in = {"firstName": FIRST, "lastName": LAST, "riskLevel": "high"}
    status, body = await api.call(method, path, json=body_in, headers=headers)
    assert status == 401
    assert body["code"] == "unauthenticated"
    assert FIRST not in json.dumps(body)


# --- POST /api/patients --------------------------------------------------------------------------


async def test_registering_a_patient_returns_the_record_in_camel_case(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    status, body = await api.call(
        "POST",
        "/api/patients",
        nurse,
        json={"firstName": FIRST, "lastName": LAST, "riskLevel": "medium", "dateOfBirth": "1980-02-29"},
    )
    assert status == 201
    assert body.keys() == PATIENT_PUBLIC_KEYS
    assert body["firstName"] == FIRST
    assert body["lastName"] == LAST
    assert body["riskLevel"] == "medium"
    assert body["dateOfBirth"] == "1980-02-29"
    assert body["organizationId"] == org
    assert body["createdBy"] == nurse.id
    assert datetime.fromisoformat(body["createdAt"]).tzinfo is not None


@pytest.mark.parametrize("role", ["peer_support", "care_team_member"])
async def test_care_staff_may_register_patients_and_the_decision_is_audited(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    org = await api.organization()
    who = await api.person(role, org)
    patient_id = await registered(api, who)
    [row] = await decisions(db, who, "patient.create")
    assert row["decision"] == "allow"
    assert row["outcome"] == "success"
    assert row["reason"] == "allowed"
    assert row["patient_id"] == patient_id
    assert row["resource_id"] == str(patient_id)
    assert row["organization_id"] == org
    assert "roles.csv:" in row["matched_rule"]
    assert f"{role}, patient.create" in row["matched_rule"]
    # the audit trail never carries the patient's name
    assert FIRST not in json.dumps(dict(row), default=str)


@pytest.mark.parametrize("role", ["admin", "auditor", "compliance_officer"])
async def test_roles_without_patient_access_cannot_register_patients(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    org = await api.organization()
    who = await api.person(role, org)
    status, body = await api.call(
        "POST", "/api/patients", who, json={"firstName": FIRST, "lastName": LAST, "riskLevel": "low"}
    )
    assert status == 403
    assert_denied(body, "role_not_permitted")
    [row] = await decisions(db, who, "patient.create")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", "role_not_permitted")
    assert await db.fetchval("SELECT count(*) FROM patients WHERE organization_id = $1", org) == 0


@pytest.mark.parametrize(
    ("payload", "field", "error_type"),
    [
        pytest.param(
            {"lastName": LAST, "riskLevel": "high"}, "firstName", "missing", id="missing-first-name"
        ),
        pytest.param({"firstName": FIRST, "lastName": LAST}, "riskLevel", "missing", id="missing-risk-level"),
        pytest.param(
            {"firstName": 4711, "lastName": LAST, "riskLevel": "high"},
            "firstName",
            "string_type",
            id="name-not-a-string",
        ),
        pytest.param(
            {"firstName": FIRST, "lastName": LAST, "riskLevel": "extreme"},
            "riskLevel",
            "enum",
            id="unknown-risk-level",
        ),
        pytest.param(
            {"firstName": FIRST * 20, "lastName": LAST, "riskLevel": "high"},
            "firstName",
            "string_too_long",
            id="oversized-first-name",
        ),
        pytest.param(
            {"firstName": "   ", "lastName": LAST, "riskLevel": "high"},
            "firstName",
            "string_too_short",
            id="blank-first-name",
        ),
        pytest.param(
            {
                "firstName": FIRST,
                "lastName": LAST,
                "riskLevel": "high",
                "dateOfBirth": "Marguerite's birthday",
            },
            "dateOfBirth",
            "date_parsing",
            id="date-of-birth-not-a-date",
        ),
        pytest.param(
            {"firstName": FIRST, "lastName": LAST, "riskLevel": "high", "dateOfBirth": "1899-12-31"},
            "dateOfBirth",
            "value_error",
            id="date-of-birth-before-1900",
        ),
        pytest.param(
            {
                "firstName": FIRST,
                "lastName": LAST,
                "riskLevel": "high",
                # Not today anywhere: the furthest time zone is one day ahead of UTC at most.
                "dateOfBirth": (datetime.now(UTC) + timedelta(days=2)).date().isoformat(),
            },
            "dateOfBirth",
            "value_error",
            id="date-of-birth-in-the-future",
        ),
        pytest.param(
            {"firstName": FIRST, "lastName": LAST, "riskLevel": "high", "ssn": "078-05-1120"},
            "ssn",
            "extra_forbidden",
            id="unknown-field",
        ),
        pytest.param(
            {"firstName": FIRST, "lastName": LAST, "riskLevel": "high", "organizationId": 1},
            "organizationId",
            "extra_forbidden",
            id="organization-not-choosable",
        ),
    ],
)
async def test_an_invalid_patient_is_a_422_naming_the_field_without_echoing_values(
    api: Api, db: asyncpg.Connection, payload: dict[str, Any], field: str, error_type: str
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    status, body = await api.call("POST", "/api/patients", nurse, json=payload)
    assert status == 422
    assert_validation_problem(body, field)
    [error] = [e for e in body["errors"] if e["field"] == field]
    assert error["type"] == error_type
    text = json.dumps(body)
    for value in payload.values():
        if isinstance(value, str) and value.strip():
            assert value not in text
    assert await db.fetchval("SELECT count(*) FROM patients WHERE organization_id = $1", org) == 0


async def test_a_baby_born_today_where_the_clinic_is_is_registered_whatever_the_utc_date(api: Api) -> None:
    """A birth "today" is the clinic's today: east of UTC the date is already ahead of UTC's, so
    from 10:00 UTC on a birth today carries tomorrow's UTC date. The day after is today nowhere."""
    nurse = await api.person("care_team_member", await api.organization())
    today_somewhere = (datetime.now(UTC) + timedelta(hours=14)).date()
    patient_id = await registered(api, nurse, dateOfBirth=today_somewhere.isoformat())
    status, body = await api.call("GET", f"/api/patients/{patient_id}", nurse)
    assert (status, body["dateOfBirth"]) == (200, today_somewhere.isoformat())
    nowhere = (today_somewhere + timedelta(days=1)).isoformat()
    payload = {"firstName": FIRST, "lastName": LAST, "riskLevel": "high", "dateOfBirth": nowhere}
    status, body = await api.call("POST", "/api/patients", nurse, json=payload)
    assert status == 422
    assert_validation_problem(body, "dateOfBirth")


async def test_a_validation_problem_is_served_as_problem_json(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    resp = await api.client.post("/api/patients", json={"riskLevel": "extreme"}, headers=nurse.auth)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["requestId"] == resp.headers["X-Request-ID"]


async def test_a_patient_body_that_is_not_json_is_a_400(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    status, body = await api.call(
        "POST",
        "/api/patients",
        nurse,
        data=b"{firstName: Marguerite",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert body["code"] == "malformed_request"
    assert FIRST not in json.dumps(body)


# --- GET /api/patients -----------------------------------------------------------------------------


async def test_the_patient_list_holds_only_patients_on_the_callers_care_team(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    colleague = await api.person("peer_support", org)
    mine = [await registered(api, nurse), await registered(api, nurse, riskLevel="low")]
    theirs = await registered(api, colleague)

    status, body = await api.call("GET", "/api/patients", nurse)

    assert status == 200
    assert [p["id"] for p in body["items"]] == mine
    assert body["nextCursor"] is None
    assert body["items"][1].keys() == PATIENT_PUBLIC_KEYS
    assert body["items"][1]["riskLevel"] == "low"
    reads = await decisions(db, nurse, "patient.read")
    assert [(r["patient_id"], r["decision"], r["outcome"]) for r in reads] == [
        (pid, "allow", "success") for pid in mine
    ]
    assert theirs not in {r["patient_id"] for r in reads}
    assert all("roles.csv:" in r["matched_rule"] for r in reads)
    [listed] = await decisions(db, nurse, "patient.list")
    assert listed["decision"] == "allow"


async def test_the_patient_list_pages_with_a_cursor(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    first, second = await registered(api, nurse), await registered(api, nurse)

    status, page1 = await api.call("GET", "/api/patients?limit=1", nurse)
    assert status == 200
    assert [p["id"] for p in page1["items"]] == [first]
    assert page1["nextCursor"] == first

    status, page2 = await api.call("GET", f"/api/patients?limit=1&cursor={page1['nextCursor']}", nurse)
    assert status == 200
    assert [p["id"] for p in page2["items"]] == [second]
    assert page2["nextCursor"] is None


async def test_a_patient_whose_consent_was_revoked_drops_off_the_outsiders_list_and_the_denial_is_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    outsider = await covered_outsider(api, org, patient_id)
    status, body = await api.call("GET", "/api/patients", outsider.person)
    assert [p["id"] for p in body["items"]] == [patient_id]
    await revoke(api, outsider)

    status, body = await api.call("GET", "/api/patients", outsider.person)

    assert status == 200
    assert body["items"] == []
    last = (await decisions(db, outsider.person, "patient.read"))[-1]
    assert (last["patient_id"], last["decision"], last["reason"]) == (patient_id, "deny", "no_active_consent")
    assert "care_team_member, patient.read, care_team & covered" in last["matched_rule"]


@pytest.mark.parametrize("role", ["admin", "auditor", "compliance_officer"])
async def test_roles_without_patient_access_cannot_list_patients(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    org = await api.organization()
    who = await api.person(role, org)
    status, body = await api.call("GET", "/api/patients", who)
    assert status == 403
    assert_denied(body, "role_not_permitted")
    assert "items" not in body
    [row] = await decisions(db, who, "patient.list")
    assert (row["decision"], row["reason"]) == ("deny", "role_not_permitted")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("limit=0", "limit", id="limit-zero"),
        pytest.param("limit=many", "limit", id="limit-not-a-number"),
        pytest.param("limit=1001", "limit", id="limit-too-large"),
        pytest.param("cursor=-3", "cursor", id="negative-cursor"),
        pytest.param("sort=lastName", "sort", id="unknown-parameter"),
    ],
)
async def test_an_invalid_list_query_is_a_422_naming_the_parameter(api: Api, query: str, field: str) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    status, body = await api.call("GET", f"/api/patients?{query}", nurse)
    assert status == 422
    assert_validation_problem(body, field)


# --- GET /api/patients/{id} ---------------------------------------------------------------------------


async def test_a_care_team_member_reads_their_patient_and_the_access_is_audited(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse, dateOfBirth="1971-07-04")

    status, body = await api.call("GET", f"/api/patients/{patient_id}", nurse)

    assert status == 200
    assert body.keys() == PATIENT_PUBLIC_KEYS
    assert body["id"] == patient_id
    assert (body["firstName"], body["lastName"], body["dateOfBirth"]) == (FIRST, LAST, "1971-07-04")
    assert body["organizationId"] == org
    assert body["createdBy"] == nurse.id
    [row] = await decisions(db, nurse, "patient.read")
    assert (row["decision"], row["outcome"], row["patient_id"]) == ("allow", "success", patient_id)
    assert row["resource_type"] == "patient"
    assert "roles.csv:" in row["matched_rule"]


async def test_staff_of_another_organization_let_onto_the_care_team_under_consent_read_the_patient(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    outsider = await covered_outsider(api, org, patient_id)

    status, body = await api.call("GET", f"/api/patients/{patient_id}", outsider.person)

    assert status == 200
    assert body["firstName"] == FIRST
    [row] = await decisions(db, outsider.person, "patient.read")
    assert row["decision"] == "allow"
    assert json.loads(row["details"])["consent_id"] == outsider.consent_id


@pytest.mark.parametrize("role", ["admin", "auditor", "compliance_officer"])
async def test_roles_that_never_see_patient_data_cannot_read_a_patient_of_their_own_organization(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    who = await api.person(role, org)

    status, body = await api.call("GET", f"/api/patients/{patient_id}", who)

    assert status == 403
    assert_denied(body, "role_not_permitted")
    [row] = await decisions(db, who, "patient.read")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", "role_not_permitted")
    assert row["patient_id"] == patient_id
    assert row["actor_id"] == who.id


async def test_a_colleague_who_is_not_on_the_care_team_cannot_read_the_patient(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    colleague = await api.person("peer_support", org)

    status, body = await api.call("GET", f"/api/patients/{patient_id}", colleague)

    assert status == 403
    assert_denied(body, "not_on_care_team")
    assert body["rule"].startswith("roles.csv:")
    [row] = await decisions(db, colleague, "patient.read")
    assert (row["decision"], row["reason"], row["patient_id"]) == ("deny", "not_on_care_team", patient_id)
    assert "peer_support, patient.read, care_team & covered" in row["matched_rule"]


@pytest.mark.parametrize(
    "with_consent", [False, True], ids=["without-consent", "with-consent-but-off-the-team"]
)
async def test_staff_of_another_organization_who_are_not_on_the_care_team_cannot_read_the_patient(
    api: Api, db: asyncpg.Connection, with_consent: bool
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    other_org = await api.organization()
    outsider = await api.person("care_team_member", other_org)
    if with_consent:
        officer = await api.person("compliance_officer", org)
        await api.consent(officer, patient_id, organizationId=other_org)

    status, body = await api.call("GET", f"/api/patients/{patient_id}", outsider)

    if with_consent:  # covered: they may know the patient exists, and are told what is missing
        assert status == 403
        assert_denied(body, "not_on_care_team")
    else:  # no relation: exactly what a patient that does not exist answers
        _, nonexistent = await api.call("GET", f"/api/patients/{2**31 - 1}", outsider)
        assert status == 404
        assert _without_request_id(body) == _without_request_id(nonexistent)
    # The audit record keeps the real reason either way, and says when the answer concealed it.
    [row] = await decisions(db, outsider, "patient.read")
    assert json.loads(row["details"]).get("answered") == (None if with_consent else "not_found")
    assert (row["decision"], row["reason"], row["patient_id"]) == ("deny", "not_on_care_team", patient_id)
    assert row["organization_id"] == other_org


async def test_an_outsider_on_the_care_team_whose_consent_was_revoked_is_refused_for_want_of_consent(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    outsider = await covered_outsider(api, org, patient_id)
    await revoke(api, outsider)

    status, body = await api.call("GET", f"/api/patients/{patient_id}", outsider.person)

    assert status == 403
    assert_denied(body, "no_active_consent")
    [row] = await decisions(db, outsider.person, "patient.read")
    assert (row["decision"], row["reason"]) == ("deny", "no_active_consent")


async def test_reading_a_patient_that_does_not_exist_is_a_404_on_record(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    missing = 2**31 - 1

    status, body = await api.call("GET", f"/api/patients/{missing}", nurse)

    assert status == 404
    assert body["code"] == "not_found"
    assert body["status"] == 404
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = 'patient.read'", nurse.id
    )
    assert (row["event"], row["outcome"], row["reason"]) == ("lookup", "failure", "not_found")
    assert row["resource_id"] == str(missing)


async def test_an_auditor_asking_for_a_patient_that_does_not_exist_is_refused_before_the_lookup(
    api: Api,
) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    status, body = await api.call("GET", f"/api/patients/{2**31 - 1}", auditor)
    assert status == 403
    assert body["reason"] == "role_not_permitted"


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param("abc", id="letters"),
        pytest.param("0", id="zero"),
        pytest.param("-5", id="negative"),
        pytest.param("1.5", id="decimal"),
        pytest.param("99999999999", id="beyond-int32"),
    ],
)
async def test_a_patient_path_that_is_not_an_id_is_a_422_naming_id(
    api: Api, method: str, bad_id: str
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    status, body = await api.call(method, f"/api/patients/{bad_id}", nurse, json={"riskLevel": "low"})
    assert status == 422
    assert_validation_problem(body, "id")


# --- PUT /api/patients/{id} -----------------------------------------------------------------------------


async def test_a_care_team_member_changes_the_risk_level_and_only_that(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse, dateOfBirth="1971-07-04")

    status, body = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"riskLevel": "critical"})

    assert status == 200
    assert body.keys() == PATIENT_PUBLIC_KEYS
    assert body["riskLevel"] == "critical"
    assert (body["firstName"], body["lastName"], body["dateOfBirth"]) == (FIRST, LAST, "1971-07-04")
    assert datetime.fromisoformat(body["updatedAt"]) > datetime.fromisoformat(body["createdAt"])
    stored = await db.fetchrow("SELECT * FROM patients WHERE id = $1", patient_id)
    assert (stored["risk_level"], stored["first_name"]) == ("critical", FIRST)
    [row] = await decisions(db, nurse, "patient.update")
    assert (row["decision"], row["outcome"], row["patient_id"]) == ("allow", "success", patient_id)
    assert json.loads(row["details"])["fields"] == "risk_level"
    assert "roles.csv:" in row["matched_rule"]


async def test_a_date_of_birth_can_be_cleared(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("peer_support", org)
    patient_id = await registered(api, nurse, dateOfBirth="1971-07-04")
    status, body = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json={"dateOfBirth": None})
    assert status == 200
    assert body["dateOfBirth"] is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({}, "body", id="empty-body"),
        pytest.param({"riskLevel": "extreme"}, "riskLevel", id="unknown-risk-level"),
        pytest.param({"riskLevel": 3}, "riskLevel", id="risk-level-not-a-string"),
        pytest.param({"firstName": "Z" * 101}, "firstName", id="oversized-first-name"),
        pytest.param({"firstName": None}, "firstName", id="null-first-name"),
        pytest.param({"riskLevel": None}, "riskLevel", id="null-risk-level"),
        pytest.param({"lastName": LAST, "id": 99}, "id", id="id-not-changeable"),
        pytest.param({"organizationId": 1}, "organizationId", id="organization-not-changeable"),
        pytest.param({"createdBy": 1}, "createdBy", id="creator-not-changeable"),
    ],
)
async def test_an_invalid_patient_change_is_a_422_naming_the_field_and_changes_nothing(
    api: Api, db: asyncpg.Connection, payload: dict[str, Any], field: str
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    before = await db.fetchrow("SELECT * FROM patients WHERE id = $1", patient_id)

    status, body = await api.call("PUT", f"/api/patients/{patient_id}", nurse, json=payload)

    assert status == 422
    assert_validation_problem(body, field)
    text = json.dumps(body)
    for value in payload.values():
        if isinstance(value, str):
            assert value not in text
    assert await db.fetchrow("SELECT * FROM patients WHERE id = $1", patient_id) == before


async def test_a_patient_change_without_a_body_is_a_400(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    status, body = await api.call("PUT", f"/api/patients/{patient_id}", nurse)
    assert status == 400
    assert body["code"] == "malformed_request"


@pytest.mark.parametrize(
    ("role", "organization", "reason"),
    [
        pytest.param("care_team_member", "own", "not_on_care_team", id="colleague-off-the-team"),
        pytest.param("care_team_member", "other", "not_on_care_team", id="care-team-member-of-another-org"),
        pytest.param("admin", "own", "role_not_permitted", id="admin"),
        pytest.param("auditor", "own", "role_not_permitted", id="auditor"),
    ],
)
async def test_people_who_may_not_change_a_patient_are_refused_and_nothing_changes(
    api: Api, db: asyncpg.Connection, role: str, organization: str, reason: str
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    intruder = await api.person(role, org if organization == "own" else await api.organization())
    before = await db.fetchrow("SELECT * FROM patients WHERE id = $1", patient_id)

    status, body = await api.call(
        "PUT", f"/api/patients/{patient_id}", intruder, json={"riskLevel": "low", "lastName": "Changed"}
    )

    if organization == "own":
        assert status == 403
        assert_denied(body, reason)
    else:  # no relation to the patient: answered as for a patient that does not exist
        assert (status, body["code"]) == (404, "not_found")
    assert await db.fetchrow("SELECT * FROM patients WHERE id = $1", patient_id) == before
    [row] = await decisions(db, intruder, "patient.update")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", reason)
    assert row["patient_id"] == patient_id


async def test_changing_a_patient_that_does_not_exist_is_a_404(api: Api, db: asyncpg.Connection) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    status, body = await api.call("PUT", f"/api/patients/{2**31 - 2}", nurse, json={"riskLevel": "low"})
    assert status == 404
    assert body["code"] == "not_found"
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = 'patient.update'", nurse.id
    )
    assert (row["outcome"], row["reason"]) == ("failure", "not_found")


async def test_every_decision_a_request_takes_carries_its_request_id(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await registered(api, nurse)
    stranger = await api.person("care_team_member", await api.organization())
    resp = await api.client.get(
        f"/api/patients/{patient_id}", headers={**stranger.auth, "X-Request-ID": "trace-0123456789"}
    )
    assert resp.status == 404  # no relation to the patient: as if there were none
    assert resp.content_type == "application/problem+json"
    assert (await resp.json(content_type=None))["requestId"] == "trace-0123456789"
    [row] = await decisions(db, stranger, "patient.read")
    assert row["request_id"] == "trace-0123456789"
    assert row["occurred_at"] > datetime.now(UTC) - timedelta(minutes=5)
