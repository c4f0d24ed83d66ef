"""Care teams over HTTP: POST /api/care-teams, GET /api/patients/{patientId}/care-team and
POST /api/care-teams/{id}/members.

The rule under test: whoever is added to a care team must belong to the patient's organization or be
covered by an active consent of that organization (directly or through a compliance group), decided
as ``care_team.join`` about the person added; the person adding must be the patient's admin or on the
care team. Every decision is on record in ``audit_events``; a refused addition stores no member.

Longer than 400 lines because the three endpoints apply one rule (who may join a care team) and
share the Clinic setup and the denial and audit assertions; the consent cases (direct, through a
group, for payment only, revoked, not active yet) are that rule's table and are read together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.support.api import Api, Person

FIRST, LAST = "Marguerite", "Okonkwo"
PATIENT_FIELDS = {"firstName", "lastName", "dateOfBirth", "riskLevel"}
CARE_TEAM_KEYS = {"id", "patientId", "name", "organizationId", "createdAt", "members"}
MEMBER_KEYS = {"userId", "role", "organizationId", "addedAt"}


def assert_denied(body: dict[str, Any], reason: str) -> None:
    assert body["status"] == 403
    assert body["code"] == "forbidden"
    assert body["reason"] == reason
    assert not PATIENT_FIELDS & body.keys()
    assert "members" not in body
    assert FIRST not in json.dumps(body)


def assert_validation_problem(body: dict[str, Any], field: str) -> None:
    assert body["status"] == 422
    assert body["code"] == "validation_error"
    assert field in [e["field"] for e in body["errors"]], body


def assert_no_such_user(status: int, body: dict[str, Any]) -> None:
    """The answer for a user id nobody has, word for word: nothing about who the person is."""
    assert status == 422, body
    assert body["errors"] == [{"field": "userId", "message": "No such active user.", "type": "not_found"}]
    assert "reason" not in body
    assert "rule" not in body


async def decisions(db: asyncpg.Connection, actor: Person, workflow: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = $2 AND event = 'decision' ORDER BY id",
        actor.id,
        workflow,
    )


async def member_ids(db: asyncpg.Connection, team_id: int) -> set[int]:
    rows = await db.fetch("SELECT user_id FROM care_team_members WHERE care_team_id = $1", team_id)
    return {r["user_id"] for r in rows}


def iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class Clinic:
    """A patient's organization: the nurse who registered the patient, its admin and officer."""

    org: int
    nurse: Person
    admin: Person
    officer: Person
    patient_id: int
    team_id: int


async def clinic(api: Api) -> Clinic:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    admin = await api.person("admin", org)
    officer = await api.person("compliance_officer", org)
    patient_id = await api.patient(nurse, firstName=FIRST, lastName=LAST)
    status, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", admin)
    assert status == 200, team
    return Clinic(org, nurse, admin, officer, patient_id, team["id"])


async def patient_without_care_team(db: asyncpg.Connection, org: int, created_by: int) -> int:
    """Every patient registered over the API gets a care team; an older record may have none."""
    return await db.fetchval(
        "INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)"
        " VALUES ($1, $2, $3, 'medium', $4) RETURNING id",
        org,
        FIRST,
        LAST,
        created_by,
    )


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        pytest.param("POST", "/api/care-teams", {"patientId": 1}, id="create"),
        pytest.param("GET", "/api/patients/1/care-team", None, id="read"),
        pytest.param("POST", "/api/care-teams/1/members", {"userId": 1}, id="add-member"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="no-token"), pytest.param({"Authorization": "Bearer forged"}, id="garbage-token")],
)
async def test_care_team_endpoints_require_a_valid_bearer_token(
    api: Api, method: str, path: str, payload: Any, headers: dict[str, str]
) -> None:
    status, body = await api.call(method, path, json=payload, headers=headers)
    assert status == 401
    assert body["code"] == "unauthenticated"


# --- GET /api/patients/{patientId}/care-team ---------------------------------------------------------


async def test_whoever_registers_a_patient_joins_its_care_team(api: Api, db: asyncpg.Connection) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer)

    status, body = await api.call("GET", f"/api/patients/{patient_id}/care-team", peer)

    assert status == 200
    assert body.keys() == CARE_TEAM_KEYS
    assert body["patientId"] == patient_id
    assert body["organizationId"] == org
    assert body["name"] == "Care team"
    [member] = body["members"]
    assert member.keys() == MEMBER_KEYS
    assert (member["userId"], member["role"], member["organizationId"]) == (peer.id, "peer_support", org)
    assert await member_ids(db, body["id"]) == {peer.id}
    [row] = await decisions(db, peer, "care_team.read")
    assert (row["decision"], row["patient_id"], row["resource_id"]) == ("allow", patient_id, str(body["id"]))
    assert "roles.csv:" in row["matched_rule"]


async def test_the_patients_admin_reads_the_care_team_without_being_on_it(api: Api) -> None:
    c = await clinic(api)
    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/care-team", c.admin)
    assert status == 200
    assert body["id"] == c.team_id
    assert [m["userId"] for m in body["members"]] == [c.nurse.id]


@pytest.mark.parametrize(
    ("role", "organization", "reason"),
    [
        pytest.param("care_team_member", "own", "not_on_care_team", id="colleague-off-the-team"),
        pytest.param("care_team_member", "other", "not_on_care_team", id="care-team-member-of-another-org"),
        pytest.param("admin", "other", "other_organization", id="admin-of-another-organization"),
        pytest.param("auditor", "own", "role_not_permitted", id="auditor"),
        pytest.param("compliance_officer", "own", "role_not_permitted", id="compliance-officer"),
    ],
)
async def test_people_who_may_not_see_a_care_team_are_refused_and_audited(
    api: Api, db: asyncpg.Connection, role: str, organization: str, reason: str
) -> None:
    c = await clinic(api)
    intruder = await api.person(role, c.org if organization == "own" else await api.organization())

    status, body = await api.call("GET", f"/api/patients/{c.patient_id}/care-team", intruder)

    if organization == "own":
        assert status == 403
        assert_denied(body, reason)
    else:  # no relation to the patient: answered as for a patient that does not exist
        assert (status, body["code"], body["detail"]) == (404, "not_found", "No such patient.")
    # The audit record keeps the real reason either way.
    [row] = await decisions(db, intruder, "care_team.read")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", reason)
    assert row["patient_id"] == c.patient_id


async def test_the_care_team_of_a_patient_that_does_not_exist_is_a_404(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    status, body = await api.call("GET", f"/api/patients/{2**31 - 1}/care-team", admin)
    assert status == 404
    assert body["code"] == "not_found"
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = 'care_team.read'", admin.id
    )
    assert (row["event"], row["outcome"], row["reason"]) == ("lookup", "failure", "not_found")


async def test_the_care_team_of_a_patient_without_one_is_a_404(api: Api, db: asyncpg.Connection) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    patient_id = await patient_without_care_team(db, org, admin.id)
    status, body = await api.call("GET", f"/api/patients/{patient_id}/care-team", admin)
    assert status == 404
    assert body["detail"] == "No such care team."


@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "99999999999"])
async def test_a_care_team_path_whose_patient_id_is_not_an_id_is_a_422_naming_it(
    api: Api, bad_id: str
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    status, body = await api.call("GET", f"/api/patients/{bad_id}/care-team", admin)
    assert status == 422
    assert_validation_problem(body, "patientId")


# --- POST /api/care-teams ------------------------------------------------------------------------------


async def test_an_admin_creates_the_care_team_of_a_patient_that_has_none(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    patient_id = await patient_without_care_team(db, org, admin.id)

    status, body = await api.call(
        "POST", "/api/care-teams", admin, json={"patientId": patient_id, "name": "Night shift"}
    )

    assert status == 201
    assert body.keys() == CARE_TEAM_KEYS
    assert (body["patientId"], body["name"], body["organizationId"]) == (patient_id, "Night shift", org)
    assert body["members"] == []
    stored = await db.fetchrow("SELECT * FROM care_teams WHERE patient_id = $1", patient_id)
    assert (stored["id"], stored["created_by"]) == (body["id"], admin.id)
    [row] = await decisions(db, admin, "care_team.create")
    assert (row["decision"], row["outcome"], row["patient_id"]) == ("allow", "success", patient_id)
    assert "admin, care_team.create, own_org" in row["matched_rule"]


async def test_creating_a_care_team_records_which_team_was_created(api: Api, db: asyncpg.Connection) -> None:
    """Like patient.create and consent.create, the allowed decision names the record it created."""
    org = await api.organization()
    admin = await api.person("admin", org)
    patient_id = await patient_without_care_team(db, org, admin.id)
    status, body = await api.call("POST", "/api/care-teams", admin, json={"patientId": patient_id})
    assert status == 201
    assert body["name"] == "Care team"
    [row] = await decisions(db, admin, "care_team.create")
    assert row["resource_id"] == str(body["id"])


async def test_creating_the_care_team_of_a_patient_that_has_one_answers_200_with_that_team(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)

    status, body = await api.call(
        "POST", "/api/care-teams", c.admin, json={"patientId": c.patient_id, "name": "Another"}
    )

    assert status == 200, body
    assert body["id"] == c.team_id
    assert body["name"] != "Another"
    assert await db.fetchval("SELECT count(*) FROM care_teams WHERE patient_id = $1", c.patient_id) == 1
    [row] = await decisions(db, c.admin, "care_team.create")
    assert (row["decision"], row["outcome"], row["resource_id"]) == ("allow", "success", str(c.team_id))
    assert json.loads(row["details"])["existing"] is True


async def test_an_admin_of_another_organization_cannot_create_a_care_team_and_learns_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    patient_id = await patient_without_care_team(db, org, admin.id)
    outside_admin = await api.person("admin", await api.organization())

    status, body = await api.call("POST", "/api/care-teams", outside_admin, json={"patientId": patient_id})

    assert (status, body["code"], body["detail"]) == (404, "not_found", "No such patient.")
    assert await db.fetchval("SELECT count(*) FROM care_teams WHERE patient_id = $1", patient_id) == 0
    [row] = await decisions(db, outside_admin, "care_team.create")
    assert (row["decision"], row["reason"], row["patient_id"]) == ("deny", "other_organization", patient_id)


@pytest.mark.parametrize("role", ["care_team_member", "peer_support", "compliance_officer", "auditor"])
async def test_only_admins_create_care_teams(api: Api, db: asyncpg.Connection, role: str) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    patient_id = await patient_without_care_team(db, org, admin.id)
    who = await api.person(role, org)

    status, body = await api.call("POST", "/api/care-teams", who, json={"patientId": patient_id})

    assert status == 403
    assert_denied(body, "role_not_permitted")
    assert await db.fetchval("SELECT count(*) FROM care_teams WHERE patient_id = $1", patient_id) == 0
    [row] = await decisions(db, who, "care_team.create")
    assert (row["decision"], row["reason"]) == ("deny", "role_not_permitted")


async def test_creating_a_care_team_for_a_patient_that_does_not_exist_is_a_404(api: Api) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    status, body = await api.call("POST", "/api/care-teams", admin, json={"patientId": 2**31 - 1})
    assert status == 404
    assert body["code"] == "not_found"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({}, "patientId", id="missing-patient-id"),
        pytest.param({"patientId": "7"}, "patientId", id="patient-id-as-string"),
        pytest.param({"patientId": 0}, "patientId", id="patient-id-zero"),
        pytest.param({"patientId": True}, "patientId", id="patient-id-boolean"),
        pytest.param({"patientId": 7, "name": "N" * 201}, "name", id="oversized-name"),
        pytest.param({"patientId": 7, "name": "  "}, "name", id="blank-name"),
        pytest.param({"patientId": 7, "organizationId": 1}, "organizationId", id="unknown-field"),
    ],
)
async def test_an_invalid_care_team_is_a_422_naming_the_field(
    api: Api, payload: dict[str, Any], field: str
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    status, body = await api.call("POST", "/api/care-teams", admin, json=payload)
    assert status == 422
    assert_validation_problem(body, field)
    assert "N" * 201 not in json.dumps(body)


# --- POST /api/care-teams/{id}/members: within the patient's organization ---------------------------


@pytest.mark.parametrize("adder", ["admin", "nurse"], ids=["patients-admin", "care-team-member"])
async def test_a_colleague_of_the_patients_organization_is_added_to_the_care_team(
    api: Api, db: asyncpg.Connection, adder: str
) -> None:
    c = await clinic(api)
    who = c.admin if adder == "admin" else c.nurse
    colleague = await api.person("peer_support", c.org)

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", who, json={"userId": colleague.id}
    )

    assert status == 201
    assert body.keys() == CARE_TEAM_KEYS
    assert [m["userId"] for m in body["members"]] == [c.nurse.id, colleague.id]
    added = body["members"][1]
    assert added.keys() == MEMBER_KEYS
    assert (added["role"], added["organizationId"]) == ("peer_support", c.org)
    stored = await db.fetchrow(
        "SELECT * FROM care_team_members WHERE care_team_id = $1 AND user_id = $2", c.team_id, colleague.id
    )
    assert stored["added_by"] == who.id
    [add] = await decisions(db, who, "care_team.add_member")
    [join] = await decisions(db, who, "care_team.join")
    assert (add["decision"], add["patient_id"], add["resource_id"]) == ("allow", c.patient_id, str(c.team_id))
    assert (join["decision"], join["patient_id"]) == ("allow", c.patient_id)
    assert json.loads(join["details"])["subject_user_id"] == colleague.id
    assert "peer_support, care_team.join, covered" in join["matched_rule"]
    # the colleague can now read the patient
    status, patient = await api.call("GET", f"/api/patients/{c.patient_id}", colleague)
    assert (status, patient["id"]) == (200, c.patient_id)


async def test_adding_someone_already_on_the_care_team_changes_nothing(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": c.nurse.id}
    )
    assert status == 200  # not 201: nothing was created
    assert [m["userId"] for m in body["members"]] == [c.nurse.id]
    assert await member_ids(db, c.team_id) == {c.nurse.id}


@pytest.mark.parametrize(
    ("role", "organization", "reason"),
    [
        pytest.param("care_team_member", "own", "not_on_care_team", id="care-team-member-off-the-team"),
        pytest.param("admin", "other", "other_organization", id="admin-of-another-organization"),
        pytest.param("compliance_officer", "own", "role_not_permitted", id="compliance-officer"),
        pytest.param("auditor", "own", "role_not_permitted", id="auditor"),
    ],
)
async def test_people_who_may_not_manage_a_care_team_cannot_add_members(
    api: Api, db: asyncpg.Connection, role: str, organization: str, reason: str
) -> None:
    c = await clinic(api)
    newcomer = await api.person("care_team_member", c.org)
    actor = await api.person(role, c.org if organization == "own" else await api.organization())

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", actor, json={"userId": newcomer.id}
    )

    if organization == "own":
        assert status == 403
        assert_denied(body, reason)
    else:  # no relation to the patient: answered as for a care team that does not exist
        assert (status, body["code"], body["detail"]) == (404, "not_found", "No such care team.")
    assert await member_ids(db, c.team_id) == {c.nurse.id}
    [row] = await decisions(db, actor, "care_team.add_member")
    assert (row["decision"], row["outcome"], row["reason"]) == ("deny", "denied", reason)
    assert row["resource_id"] == str(c.team_id)
    assert await decisions(db, actor, "care_team.join") == []


async def test_a_peer_support_specialist_on_the_care_team_cannot_add_members(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    patient_id = await api.patient(peer, firstName=FIRST, lastName=LAST)
    _, team = await api.call("GET", f"/api/patients/{patient_id}/care-team", peer)
    newcomer = await api.person("peer_support", org)

    status, body = await api.call(
        "POST", f"/api/care-teams/{team['id']}/members", peer, json={"userId": newcomer.id}
    )

    assert status == 403
    assert_denied(body, "role_not_permitted")
    assert await member_ids(db, team["id"]) == {peer.id}
    [row] = await decisions(db, peer, "care_team.add_member")
    assert (row["decision"], row["reason"]) == ("deny", "role_not_permitted")


@pytest.mark.parametrize("role", ["admin", "auditor", "compliance_officer"])
async def test_people_whose_role_never_sees_patients_cannot_join_a_care_team(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    c = await clinic(api)
    newcomer = await api.person(role, c.org)
    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": newcomer.id}
    )
    assert status == 403
    assert_denied(body, "role_not_permitted")
    assert body["field"] == "userId"
    assert await member_ids(db, c.team_id) == {c.nurse.id}


# --- POST /api/care-teams/{id}/members: staff of another organization --------------------------------


@pytest.mark.parametrize("adder", ["admin", "nurse"], ids=["patients-admin", "care-team-member"])
async def test_a_care_team_member_of_another_organization_cannot_join_without_consent(
    api: Api, db: asyncpg.Connection, adder: str
) -> None:
    c = await clinic(api)
    who = c.admin if adder == "admin" else c.nurse
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", who, json={"userId": outsider.id}
    )

    # An organization nobody here has a relation to: neither the person's existence nor role shows.
    assert_no_such_user(status, body)
    assert await member_ids(db, c.team_id) == {c.nurse.id}
    [add] = await decisions(db, who, "care_team.add_member")
    assert (add["decision"], add["outcome"]) == ("allow", "failure")  # ended as its answer, as for nobody
    [join] = await decisions(db, who, "care_team.join")
    assert (join["decision"], join["outcome"], join["reason"]) == ("deny", "denied", "no_active_consent")
    assert json.loads(join["details"])["answered"] == "not_found"  # not in the adder's organization's view
    assert (join["actor_id"], join["patient_id"], join["resource_id"]) == (
        who.id,
        c.patient_id,
        str(c.team_id),
    )
    assert json.loads(join["details"])["subject_user_id"] == outsider.id
    assert "roles.csv:" in join["matched_rule"]
    # and the outsider still cannot read the patient (nor learn that it exists)
    status, body = await api.call("GET", f"/api/patients/{c.patient_id}", outsider)
    assert (status, body["code"]) == (404, "not_found")


@pytest.mark.parametrize("adder", ["admin", "nurse"], ids=["patients-admin", "care-team-member"])
async def test_a_consent_for_their_organization_lets_staff_of_another_organization_join_and_read(
    api: Api, db: asyncpg.Connection, adder: str
) -> None:
    c = await clinic(api)
    who = c.admin if adder == "admin" else c.nurse
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)
    consent = await api.consent(c.officer, c.patient_id, organizationId=outside_org)

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", who, json={"userId": outsider.id}
    )

    assert status == 201
    assert {m["userId"]: m["organizationId"] for m in body["members"]} == {
        c.nurse.id: c.org,
        outsider.id: outside_org,
    }
    assert await member_ids(db, c.team_id) == {c.nurse.id, outsider.id}
    [join] = await decisions(db, who, "care_team.join")
    assert join["decision"] == "allow"
    assert json.loads(join["details"])["consent_id"] == consent["id"]
    status, patient = await api.call("GET", f"/api/patients/{c.patient_id}", outsider)
    assert status == 200
    assert patient["firstName"] == FIRST
    status, team = await api.call("GET", f"/api/patients/{c.patient_id}/care-team", outsider)
    assert status == 200
    assert team["id"] == c.team_id


async def test_a_consent_for_a_compliance_group_lets_staff_of_each_member_organization_join(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outsider = await api.person("peer_support", outside_org)
    status, group = await api.call(
        "POST",
        "/api/compliance-groups",
        c.officer,
        json={"name": "Regional network", "organizationIds": [await api.organization(), outside_org]},
    )
    assert status == 201, group
    refused, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )
    assert_no_such_user(refused, body)
    consent = await api.consent(c.officer, c.patient_id, complianceGroupId=group["id"])

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )

    assert status == 201
    assert outsider.id in [m["userId"] for m in body["members"]]
    join = (await decisions(db, c.admin, "care_team.join"))[-1]
    assert json.loads(join["details"])["consent_id"] == consent["id"]
    status, patient = await api.call("GET", f"/api/patients/{c.patient_id}", outsider)
    assert (status, patient["id"]) == (200, c.patient_id)


async def test_a_compliance_group_without_their_organization_does_not_let_staff_join(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    outsider = await api.person("care_team_member", await api.organization())
    _, group = await api.call(
        "POST",
        "/api/compliance-groups",
        c.officer,
        json={"name": "Someone else's network", "organizationIds": [await api.organization()]},
    )
    await api.consent(c.officer, c.patient_id, complianceGroupId=group["id"])

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )

    assert_no_such_user(status, body)  # no active consent relates the organizations: as if no such user
    assert await member_ids(db, c.team_id) == {c.nurse.id}


@pytest.mark.parametrize(
    "recipient",
    [
        pytest.param("another_organization", id="consent-for-a-different-organization"),
        pytest.param("external_party", id="consent-for-an-external-phone-number"),
    ],
)
async def test_a_consent_naming_someone_else_does_not_let_staff_of_another_organization_join(
    api: Api, db: asyncpg.Connection, recipient: str
) -> None:
    c = await clinic(api)
    outsider = await api.person("care_team_member", await api.organization())
    if recipient == "another_organization":
        await api.consent(c.officer, c.patient_id, organizationId=await api.organization())
    else:
        await api.consent(
            c.officer, c.patient_id, externalParty={"phoneNumber": "+12025550143", "name": "Aunt"}
        )

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )

    assert_no_such_user(status, body)  # no active consent relates the organizations: as if no such user
    assert await member_ids(db, c.team_id) == {c.nurse.id}


async def test_a_consent_only_for_payment_does_not_let_staff_of_another_organization_join(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)
    status, consent = await api.call(
        "POST",
        "/api/consents",
        c.officer,
        json={"patientId": c.patient_id, "purpose": "payment", "organizationId": outside_org},
    )
    assert (status, consent["status"]) == (201, "active")

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )

    assert status == 403
    assert_denied(body, "no_active_consent")
    assert await member_ids(db, c.team_id) == {c.nurse.id}


async def test_a_revoked_consent_no_longer_lets_staff_of_another_organization_join(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)
    consent = await api.consent(c.officer, c.patient_id, organizationId=outside_org)
    status, _ = await api.call(
        "POST",
        f"/api/consents/{consent['id']}/revoke",
        c.officer,
        json={"reason": "Withdrawn by the patient."},
    )
    assert status == 200

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )

    assert_no_such_user(status, body)  # no active consent relates the organizations: as if no such user
    assert await member_ids(db, c.team_id) == {c.nurse.id}


@pytest.mark.parametrize(
    ("effective", "expires"),
    [
        pytest.param(timedelta(days=-30), timedelta(days=-1), id="expired"),
        pytest.param(timedelta(days=1), timedelta(days=30), id="not-yet-effective"),
        pytest.param(timedelta(days=1), None, id="not-yet-effective-open-ended"),
    ],
)
async def test_a_consent_that_is_not_active_now_does_not_let_staff_of_another_organization_join(
    api: Api, db: asyncpg.Connection, effective: timedelta, expires: timedelta | None
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)
    now = datetime.now(UTC)
    window: dict[str, Any] = {"effectiveAt": iso(now + effective)}
    if expires is not None:
        window["expiresAt"] = iso(now + expires)
    await api.consent(c.officer, c.patient_id, organizationId=outside_org, **window)

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )

    assert_no_such_user(status, body)  # a consent not active now relates nobody: as if no such user
    assert await member_ids(db, c.team_id) == {c.nurse.id}
    # The audit record keeps the real reason.
    [join] = await decisions(db, c.admin, "care_team.join")
    assert (join["decision"], join["reason"]) == ("deny", "no_active_consent")


async def test_a_covered_outsider_on_the_care_team_may_bring_in_a_colleague_of_their_own_organization(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outsider = await api.person("care_team_member", outside_org)
    colleague = await api.person("peer_support", outside_org)
    # Changing the care team is a write: the consent must say so (a read-only one never allows it).
    await api.consent(c.officer, c.patient_id, organizationId=outside_org, scope=["read", "write"])
    status, _ = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": outsider.id}
    )
    assert status == 201

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", outsider, json={"userId": colleague.id}
    )

    assert status == 201
    assert [m["userId"] for m in body["members"]] == [c.nurse.id, outsider.id, colleague.id]
    assert await member_ids(db, c.team_id) == {c.nurse.id, outsider.id, colleague.id}


async def test_an_admin_of_a_covered_organization_still_cannot_manage_the_care_team(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    outside_org = await api.organization()
    outside_admin = await api.person("admin", outside_org)
    outsider = await api.person("care_team_member", outside_org)
    await api.consent(c.officer, c.patient_id, organizationId=outside_org)

    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", outside_admin, json={"userId": outsider.id}
    )

    assert status == 403
    assert_denied(body, "other_organization")
    assert await member_ids(db, c.team_id) == {c.nurse.id}


# --- POST /api/care-teams/{id}/members: input -------------------------------------------------------------


async def test_adding_someone_who_does_not_exist_is_a_422_naming_user_id(
    api: Api, db: asyncpg.Connection
) -> None:
    c = await clinic(api)
    status, body = await api.call(
        "POST", f"/api/care-teams/{c.team_id}/members", c.admin, json={"userId": 2**31 - 1}
    )
    assert status == 422
    assert_validation_problem(body, "userId")
    assert await member_ids(db, c.team_id) == {c.nurse.id}


async def test_adding_to_a_care_team_that_does_not_exist_is_a_404_on_record(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    nurse = await api.person("care_team_member", org)
    status, body = await api.call(
        "POST", f"/api/care-teams/{2**31 - 1}/members", admin, json={"userId": nurse.id}
    )
    assert status == 404
    assert body["code"] == "not_found"
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE actor_id = $1 AND workflow = 'care_team.add_member'", admin.id
    )
    assert (row["event"], row["outcome"], row["reason"]) == ("lookup", "failure", "not_found")
    assert row["resource_id"] == str(2**31 - 1)


@pytest.mark.parametrize("bad_id", ["abc", "0", "99999999999"])
async def test_a_member_path_whose_care_team_id_is_not_an_id_is_a_422_naming_id(
    api: Api, bad_id: str
) -> None:
    org = await api.organization()
    admin = await api.person("admin", org)
    status, body = await api.call("POST", f"/api/care-teams/{bad_id}/members", admin, json={"userId": 1})
    assert status == 422
    assert_validation_problem(body, "id")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({}, "userId", id="missing-user-id"),
        pytest.param({"userId": "12"}, "userId", id="user-id-as-string"),
        pytest.param({"userId": -4}, "userId", id="negative-user-id"),
        pytest.param({"userId": 12, "role": "admin"}, "role", id="unknown-field"),
    ],
)
async def test_an_invalid_member_is_a_422_naming_the_field(
    api: Api, db: asyncpg.Connection, payload: dict[str, Any], field: str
) -> None:
    c = await clinic(api)
    status, body = await api.call("POST", f"/api/care-teams/{c.team_id}/members", c.admin, json=payload)
    assert status == 422
    assert_validation_problem(body, field)
    assert await member_ids(db, c.team_id) == {c.nurse.id}
