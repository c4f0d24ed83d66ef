"""Account administration, organizations and compliance groups over HTTP: who may do what, what the
answers look like, how lists page, and what the audit log keeps.

Longer than 400 lines because accounts, organizations and compliance groups are the administration
endpoints: they share the fixtures (``org``, ``admin``, ``officer``), the problem and denial
assertions, and one paging test that runs over all three lists.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from handlers.settings import Settings
from tests.support.api import Api, Person, new_request_id
from tests.support.audit import request_records

USERS = "/api/users"
ORGANIZATIONS = "/api/organizations"
GROUPS = "/api/compliance-groups"

FIRST_NAME = "Marisol-Quentin"
LAST_NAME = "Abernathy-Zhou"
SECRET = "n3w-Acc0unt-Passw0rd"
USER_FIELDS = {
    "id",
    "email",
    "firstName",
    "lastName",
    "role",
    "organizationId",
    "isActive",
    "pendingApproval",
    "createdAt",
}
ORGANIZATION_FIELDS = {"id", "name", "selfRegistration", "createdAt"}
GROUP_FIELDS = {"id", "name", "description", "organizationId", "organizationIds", "createdAt", "sharedWith"}
PROBLEM_FIELDS = {
    "type",
    "title",
    "status",
    "detail",
    "code",
    "requestId",
    "errors",
    "reason",
    "hint",
    "field",
    "rule",
    "policyVersion",
}
ROLES = ["peer_support", "care_team_member", "admin", "compliance_officer", "auditor"]


def _email() -> str:
    return f"marisol.{secrets.token_hex(4)}@example.org"


def _new_user(**changes: Any) -> dict[str, Any]:
    body = {
        "email": _email(),
        "password": SECRET,
        "firstName": FIRST_NAME,
        "lastName": LAST_NAME,
        "role": "care_team_member",
    }
    body.update(changes)
    return body


def _name(prefix: str) -> str:
    return f"{prefix} {secrets.token_hex(4)}"


def _assert_problem(status: int, headers: dict[str, str], body: Any, expected: int, code: str) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert set(body) <= PROBLEM_FIELDS
    assert body["status"] == expected
    assert body["code"] == code
    assert body["requestId"] == headers["X-Request-ID"]


def _assert_denied(status: int, headers: dict[str, str], body: Any, reason: str, *secrets_: str) -> None:
    _assert_problem(status, headers, body, 403, "forbidden")
    assert body["reason"] == reason
    assert body["hint"]
    text = json.dumps(body).lower()
    for value in (FIRST_NAME, LAST_NAME, SECRET, *secrets_):
        assert value.lower() not in text


def _fields(body: Any) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


def _details(row: asyncpg.Record) -> dict[str, Any]:
    raw = row["details"]
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def _without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "requestId"}


@pytest.fixture
async def org(api: Api) -> int:
    return await api.organization()


@pytest.fixture
async def other_org(api: Api) -> int:
    return await api.organization()


@pytest.fixture
async def admin(api: Api, org: int) -> Person:
    return await api.person("admin", org)


@pytest.fixture
async def officer(api: Api, org: int) -> Person:
    return await api.person("compliance_officer", org)


# --- POST /api/users ------------------------------------------------------------------------------


async def test_an_admin_creates_an_account_in_their_own_organization(
    api: Api, admin: Person, org: int
) -> None:
    email = _email()
    status, body = await api.call("POST", USERS, admin, json=_new_user(email=email.upper()))

    assert status == 201, body
    assert set(body) == USER_FIELDS
    assert body["email"] == email
    assert body["firstName"] == FIRST_NAME
    assert body["lastName"] == LAST_NAME
    assert body["role"] == "care_team_member"
    assert body["organizationId"] == org
    assert body["isActive"] is True
    assert datetime.fromisoformat(body["createdAt"]).tzinfo is not None


async def test_the_new_account_logs_in_with_the_password_the_admin_set(api: Api, admin: Person) -> None:
    email = _email()
    status, created = await api.call("POST", USERS, admin, json=_new_user(email=email))
    assert status == 201, created

    status, session = await api.call("POST", "/api/auth/login", json={"email": email, "password": SECRET})
    assert status == 200, session
    assert session["user"] == created


@pytest.mark.parametrize("role", ROLES)
async def test_an_admin_may_create_an_account_of_any_role(
    api: Api, admin: Person, org: int, role: str
) -> None:
    status, body = await api.call("POST", USERS, admin, json=_new_user(role=role, organizationId=org))
    assert status == 201, body
    assert body["role"] == role
    assert body["organizationId"] == org


async def test_creating_an_account_is_audited_as_an_allowed_decision(
    api: Api, admin: Person, org: int, db: asyncpg.Connection
) -> None:
    rid = new_request_id()
    status, body = await api.call("POST", USERS, admin, json=_new_user(), headers={"X-Request-ID": rid})
    assert status == 201, body

    [row] = [r for r in await request_records(db, rid) if r["event"] == "decision"]
    assert (row["workflow"], row["outcome"], row["decision"], row["reason"]) == (
        "user.create",
        "success",
        "allow",
        "allowed",
    )
    assert row["actor_id"] == admin.id
    assert row["actor_role"] == "admin"
    assert row["resource_type"] == "organization"
    assert row["resource_id"] == str(org)
    stored = json.dumps({k: str(v) for k, v in dict(row).items()}).lower()
    assert FIRST_NAME.lower() not in stored
    assert body["email"] not in stored


async def test_the_audit_record_of_a_created_account_names_the_new_account(
    api: Api, admin: Person, db: asyncpg.Connection
) -> None:
    # The command line's create-user records the new account's id (and role); an admin's must too,
    # or nobody can tell from the audit log which account an admin created.
    rid = new_request_id()
    status, body = await api.call(
        "POST", USERS, admin, json=_new_user(role="admin"), headers={"X-Request-ID": rid}
    )
    assert status == 201, body

    rows = await request_records(db, rid)
    naming_the_account = [
        r
        for r in rows
        if (r["resource_type"] == "user" and r["resource_id"] == str(body["id"]))
        or _details(r).get("user_id") == body["id"]
    ]
    assert naming_the_account, [dict(r) for r in rows]
    assert any(_details(r).get("role") == "admin" for r in naming_the_account)


async def test_an_admin_cannot_create_a_user_in_another_organization(
    api: Api, admin: Person, other_org: int, db: asyncpg.Connection
) -> None:
    email = _email()
    rid = new_request_id()
    status, headers, body = await api.send(
        "POST",
        USERS,
        admin,
        json=_new_user(email=email, organizationId=other_org),
        headers={"X-Request-ID": rid},
    )

    _assert_denied(status, headers, body, "other_organization", email)
    assert body["field"] == "organizationId"
    assert "user.create" in body["rule"]
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["reason"]) == (
        "user.create",
        "denied",
        "deny",
        "other_organization",
    )
    assert row["actor_id"] == admin.id
    assert row["resource_id"] == str(other_org)


async def test_a_missing_organization_gets_the_same_refusal_as_another_organization(
    api: Api, admin: Person, other_org: int
) -> None:
    _, _, other = await api.send("POST", USERS, admin, json=_new_user(organizationId=other_org))
    status, headers, missing = await api.send("POST", USERS, admin, json=_new_user(organizationId=2**31 - 1))

    _assert_denied(status, headers, missing, "other_organization")
    assert _without_request_id(missing) == _without_request_id(other)


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "compliance_officer", "auditor"])
async def test_only_an_admin_may_create_accounts(
    api: Api, org: int, db: asyncpg.Connection, role: str
) -> None:
    person = await api.person(role, org)
    email = _email()
    rid = new_request_id()
    status, headers, body = await api.send(
        "POST", USERS, person, json=_new_user(email=email), headers={"X-Request-ID": rid}
    )

    _assert_denied(status, headers, body, "role_not_permitted", email)
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["reason"], row["actor_id"]) == (
        "user.create",
        "denied",
        "deny",
        "role_not_permitted",
        person.id,
    )


async def test_creating_an_account_with_a_taken_email_is_a_conflict(
    api: Api, admin: Person, other_org: int, db: asyncpg.Connection
) -> None:
    someone_else = await api.person("peer_support", other_org)
    rid = new_request_id()
    status, headers, body = await api.send(
        "POST",
        USERS,
        admin,
        json=_new_user(email=someone_else.email.upper()),
        headers={"X-Request-ID": rid},
    )

    _assert_problem(status, headers, body, 409, "conflict")
    assert someone_else.email not in json.dumps(body).lower()
    [row] = await request_records(db, rid)
    # Allowed by the policy, then stopped by the conflict: on record as a failure, saying why.
    assert (row["workflow"], row["decision"], row["outcome"]) == ("user.create", "allow", "failure")
    assert _details(row)["ended_by"] == "conflict"


CREATE_USER_ERRORS = [
    pytest.param({"email": None}, "email", id="email-null"),
    pytest.param({"email": "someone"}, "email", id="email-not-an-address"),
    pytest.param({"password": "short"}, "password", id="password-too-short"),
    pytest.param({"firstName": 7}, "firstName", id="first-name-not-a-string"),
    pytest.param({"firstName": "M" * 101}, "firstName", id="first-name-oversized"),
    pytest.param({"lastName": ""}, "lastName", id="last-name-empty"),
    pytest.param({"role": "superuser"}, "role", id="role-unknown"),
    pytest.param({"role": "Admin"}, "role", id="role-wrong-case"),
    pytest.param({"organizationId": "1"}, "organizationId", id="organization-id-as-string-is-strict"),
    pytest.param({"organizationId": -1}, "organizationId", id="organization-id-negative"),
    pytest.param({"isActive": False}, "isActive", id="unknown-field"),
]


@pytest.mark.parametrize(("changes", "field"), CREATE_USER_ERRORS)
async def test_an_invalid_account_is_refused_naming_the_field(
    api: Api, admin: Person, changes: dict[str, Any], field: str
) -> None:
    email = _email()
    status, headers, body = await api.send("POST", USERS, admin, json={**_new_user(email=email), **changes})

    _assert_problem(status, headers, body, 422, "validation_error")
    assert field in _fields(body)
    text = json.dumps(body).lower()
    for value in (email, FIRST_NAME, LAST_NAME, SECRET):
        assert value.lower() not in text


@pytest.mark.parametrize("missing", ["email", "password", "firstName", "lastName", "role"])
async def test_an_account_missing_a_required_field_is_refused_naming_it(
    api: Api, admin: Person, missing: str
) -> None:
    body = _new_user()
    del body[missing]
    status, headers, problem = await api.send("POST", USERS, admin, json=body)

    _assert_problem(status, headers, problem, 422, "validation_error")
    assert problem["errors"] == [{"field": missing, "message": "Field required.", "type": "missing"}]


@pytest.mark.parametrize(
    ("data", "content_type", "error_type"),
    [
        pytest.param(b"{not json", "application/json", "json_invalid", id="not-json"),
        pytest.param(b'{"email": "a@b.org"}', "text/plain", "content_type", id="wrong-content-type"),
    ],
)
async def test_an_account_body_that_is_not_json_is_a_bad_request(
    api: Api, admin: Person, data: bytes, content_type: str, error_type: str
) -> None:
    status, headers, body = await api.send(
        "POST", USERS, admin, data=data, headers={"Content-Type": content_type}
    )
    _assert_problem(status, headers, body, 400, "malformed_request")
    assert [(e["field"], e["type"]) for e in body["errors"]] == [("body", error_type)]


# --- GET /api/users -------------------------------------------------------------------------------


async def test_an_admin_lists_only_the_accounts_of_their_own_organization(
    api: Api, admin: Person, org: int, other_org: int
) -> None:
    colleague = await api.person("peer_support", org)
    outsider = await api.person("peer_support", other_org)

    status, body = await api.call("GET", USERS, admin)
    assert status == 200, body
    assert set(body) == {"items", "nextCursor"}
    assert body["nextCursor"] is None
    assert [u["id"] for u in body["items"]] == sorted([admin.id, colleague.id])
    assert all(set(u) == USER_FIELDS for u in body["items"])
    assert all(u["organizationId"] == org for u in body["items"])
    assert outsider.email not in json.dumps(body)


async def test_the_account_list_pages_with_a_cursor(api: Api, admin: Person) -> None:
    created = []
    for _ in range(3):
        status, user = await api.call("POST", USERS, admin, json=_new_user())
        assert status == 201, user
        created.append(user["id"])
    everyone = [admin.id, *created]

    status, first = await api.call("GET", USERS, admin, params={"limit": "3"})
    assert status == 200, first
    assert [u["id"] for u in first["items"]] == everyone[:3]
    assert first["nextCursor"] == everyone[2]

    status, second = await api.call(
        "GET", USERS, admin, params={"limit": "3", "cursor": str(first["nextCursor"])}
    )
    assert status == 200, second
    assert [u["id"] for u in second["items"]] == everyone[3:]
    assert second["nextCursor"] is None


async def test_a_page_that_ends_exactly_at_the_last_account_has_no_next_cursor(
    api: Api, admin: Person
) -> None:
    status, body = await api.call("GET", USERS, admin, params={"limit": "1"})
    assert status == 200, body
    assert [u["id"] for u in body["items"]] == [admin.id]
    assert body["nextCursor"] is None


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "compliance_officer", "auditor"])
async def test_only_an_admin_may_list_accounts(api: Api, org: int, db: asyncpg.Connection, role: str) -> None:
    person = await api.person(role, org)
    rid = new_request_id()
    status, headers, body = await api.send("GET", USERS, person, headers={"X-Request-ID": rid})

    _assert_denied(status, headers, body, "role_not_permitted", person.email)
    assert "items" not in body
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"], row["actor_id"]) == (
        "user.list",
        "denied",
        "role_not_permitted",
        person.id,
    )


async def test_listing_accounts_is_audited(api: Api, admin: Person, org: int, db: asyncpg.Connection) -> None:
    rid = new_request_id()
    status, _ = await api.call("GET", USERS, admin, headers={"X-Request-ID": rid})
    assert status == 200

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["actor_id"], row["resource_id"]) == (
        "user.list",
        "success",
        "allow",
        admin.id,
        str(org),
    )


PAGING_ERRORS = [
    pytest.param({"limit": "0"}, "limit", id="limit-zero"),
    pytest.param({"limit": "-5"}, "limit", id="limit-negative"),
    pytest.param({"limit": "1001"}, "limit", id="limit-over-the-cap"),
    pytest.param({"limit": "ten"}, "limit", id="limit-not-a-number"),
    pytest.param({"limit": "1.5"}, "limit", id="limit-fractional"),
    pytest.param({"cursor": "0"}, "cursor", id="cursor-zero"),
    pytest.param({"cursor": "abc"}, "cursor", id="cursor-not-a-number"),
    pytest.param({"cursor": str(2**31)}, "cursor", id="cursor-too-large"),
    pytest.param({"page": "2"}, "page", id="unknown-parameter"),
]


@pytest.mark.parametrize("path", [USERS, ORGANIZATIONS, GROUPS])
@pytest.mark.parametrize(("params", "field"), PAGING_ERRORS)
async def test_a_bad_paging_parameter_is_refused_naming_it(
    api: Api, admin: Person, path: str, params: dict[str, str], field: str
) -> None:
    status, headers, body = await api.send("GET", path, admin, params=params)
    _assert_problem(status, headers, body, 422, "validation_error")
    assert _fields(body) == {field}


# --- POST /api/organizations ----------------------------------------------------------------------


async def test_an_admin_creates_an_organization_closed_to_self_registration_by_default(
    api: Api, admin: Person
) -> None:
    name = _name("St Mary's Clinic")
    status, body = await api.call("POST", ORGANIZATIONS, admin, json={"name": f"  {name}  "})

    assert status == 201, body
    assert set(body) == ORGANIZATION_FIELDS
    assert body["name"] == name
    assert body["selfRegistration"] is False
    assert isinstance(body["id"], int)
    assert datetime.fromisoformat(body["createdAt"]).tzinfo is not None


async def test_people_can_register_into_an_organization_created_open_to_self_registration(
    api: Api, admin: Person
) -> None:
    status, created = await api.call(
        "POST", ORGANIZATIONS, admin, json={"name": _name("Open Clinic"), "selfRegistration": True}
    )
    assert status == 201, created
    assert created["selfRegistration"] is True

    registration = {
        "email": _email(),
        "password": SECRET,
        "firstName": FIRST_NAME,
        "lastName": LAST_NAME,
        "organizationId": created["id"],
    }
    status, accepted = await api.call("POST", "/api/auth/register", json=registration)
    assert status == 202, accepted
    credentials = {"email": registration["email"], "password": SECRET}
    status, session = await api.call("POST", "/api/auth/login", json=credentials)
    assert status == 200, session
    assert session["user"]["organizationId"] == created["id"]


async def test_creating_an_organization_is_audited_with_its_id(
    api: Api, admin: Person, db: asyncpg.Connection
) -> None:
    rid = new_request_id()
    status, body = await api.call(
        "POST", ORGANIZATIONS, admin, json={"name": _name("Audited")}, headers={"X-Request-ID": rid}
    )
    assert status == 201, body

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["actor_id"], row["resource_type"]) == (
        "organization.create",
        "success",
        "allow",
        admin.id,
        "organization",
    )
    # Like every other create workflow (patients, consents, conversations), the record names what it made.
    assert row["resource_id"] == str(body["id"])


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "compliance_officer", "auditor"])
async def test_only_an_admin_may_create_an_organization(
    api: Api, org: int, db: asyncpg.Connection, role: str
) -> None:
    person = await api.person(role, org)
    name = _name("Refused")
    rid = new_request_id()
    status, headers, body = await api.send(
        "POST", ORGANIZATIONS, person, json={"name": name}, headers={"X-Request-ID": rid}
    )

    _assert_denied(status, headers, body, "role_not_permitted")
    assert await db.fetchval("SELECT count(*) FROM organizations WHERE name = $1", name) == 0
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"], row["actor_id"]) == (
        "organization.create",
        "denied",
        "role_not_permitted",
        person.id,
    )


async def test_an_organization_name_that_is_taken_is_a_conflict(api: Api, admin: Person) -> None:
    name = _name("Twin")
    status, _ = await api.call("POST", ORGANIZATIONS, admin, json={"name": name})
    assert status == 201

    status, headers, body = await api.send("POST", ORGANIZATIONS, admin, json={"name": name})
    _assert_problem(status, headers, body, 409, "conflict")


ORGANIZATION_ERRORS = [
    pytest.param({}, "name", id="name-missing"),
    pytest.param({"name": None}, "name", id="name-null"),
    pytest.param({"name": 12}, "name", id="name-not-a-string"),
    pytest.param({"name": "   "}, "name", id="name-blank"),
    pytest.param({"name": "N" * 201}, "name", id="name-oversized"),
    pytest.param({"name": "Clinic", "selfRegistration": "true"}, "selfRegistration", id="flag-as-string"),
    pytest.param({"name": "Clinic", "selfRegistration": 1}, "selfRegistration", id="flag-as-number"),
    pytest.param({"name": "Clinic", "id": 1}, "id", id="unknown-field"),
]


@pytest.mark.parametrize(("payload", "field"), ORGANIZATION_ERRORS)
async def test_an_invalid_organization_is_refused_naming_the_field(
    api: Api, admin: Person, payload: dict[str, Any], field: str
) -> None:
    status, headers, body = await api.send("POST", ORGANIZATIONS, admin, json=payload)
    _assert_problem(status, headers, body, 422, "validation_error")
    assert field in _fields(body)


@pytest.mark.parametrize(
    ("data", "content_type", "error_type"),
    [
        pytest.param(b"name=Clinic", "application/json", "json_invalid", id="not-json"),
        pytest.param(b"name=Clinic", "application/x-www-form-urlencoded", "content_type", id="form-data"),
    ],
)
async def test_an_organization_body_that_is_not_json_is_a_bad_request(
    api: Api, admin: Person, data: bytes, content_type: str, error_type: str
) -> None:
    status, headers, body = await api.send(
        "POST", ORGANIZATIONS, admin, data=data, headers={"Content-Type": content_type}
    )
    _assert_problem(status, headers, body, 400, "malformed_request")
    assert [(e["field"], e["type"]) for e in body["errors"]] == [("body", error_type)]


# --- GET /api/organizations -----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "admin", "compliance_officer"])
async def test_staff_list_organizations(api: Api, org: int, role: str) -> None:
    person = await api.person(role, org)
    status, body = await api.call("GET", ORGANIZATIONS, person, params={"cursor": str(org - 1), "limit": "1"})

    assert status == 200, body
    [listed] = body["items"]
    assert set(listed) == ORGANIZATION_FIELDS
    assert listed["id"] == org
    assert listed["selfRegistration"] is True


async def test_an_auditor_may_not_list_organizations(api: Api, org: int, db: asyncpg.Connection) -> None:
    auditor = await api.person("auditor", org)
    rid = new_request_id()
    status, headers, body = await api.send("GET", ORGANIZATIONS, auditor, headers={"X-Request-ID": rid})

    _assert_denied(status, headers, body, "role_not_permitted")
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"]) == (
        "organization.list",
        "denied",
        "role_not_permitted",
    )


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "admin"])
async def test_staff_other_than_compliance_officers_see_only_their_own_organization(
    api: Api, org: int, other_org: int, db: asyncpg.Connection, role: str
) -> None:
    person = await api.person(role, org)
    rid = new_request_id()
    status, body = await api.call(
        "GET", ORGANIZATIONS, person, params={"limit": "200"}, headers={"X-Request-ID": rid}
    )

    assert status == 200, body
    assert [o["id"] for o in body["items"]] == [org]
    assert body["nextCursor"] is None
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["decision"]) == ("organization.list", "allow")
    assert _details(row)["shown"] == "own_org"


async def test_a_compliance_officer_sees_every_organization_to_choose_consent_recipients(
    api: Api, officer: Person, org: int, other_org: int
) -> None:
    status, body = await api.call(
        "GET", ORGANIZATIONS, officer, params={"cursor": str(org - 1), "limit": "2"}
    )

    assert status == 200, body
    assert [o["id"] for o in body["items"]] == [org, other_org]


async def test_the_organization_list_pages_with_a_cursor(api: Api, admin: Person, officer: Person) -> None:
    ids = []
    for _ in range(3):
        status, created = await api.call("POST", ORGANIZATIONS, admin, json={"name": _name("Paged")})
        assert status == 201, created
        ids.append(created["id"])

    status, first = await api.call(
        "GET", ORGANIZATIONS, officer, params={"cursor": str(ids[0] - 1), "limit": "2"}
    )
    assert status == 200, first
    assert [o["id"] for o in first["items"]] == ids[:2]
    assert first["nextCursor"] == ids[1]

    status, second = await api.call(
        "GET", ORGANIZATIONS, officer, params={"cursor": str(first["nextCursor"]), "limit": "2"}
    )
    assert status == 200, second
    assert [o["id"] for o in second["items"]] == ids[2:]
    assert second["nextCursor"] is None


async def test_a_limit_above_the_configured_page_size_is_served_as_a_capped_page(
    api: Api, officer: Person, settings: Settings, db: asyncpg.Connection
) -> None:
    cap = settings.api.max_page_size
    prefix = secrets.token_hex(4)
    ids = [
        r["id"]
        for r in await db.fetch(
            "INSERT INTO organizations (name) SELECT $1 || '-' || n FROM generate_series(1, $2::int) n"
            " RETURNING id",
            prefix,
            cap + 1,
        )
    ]
    ids.sort()

    status, body = await api.call(
        "GET", ORGANIZATIONS, officer, params={"cursor": str(ids[0] - 1), "limit": str(cap + 100)}
    )
    assert status == 200, body
    assert [o["id"] for o in body["items"]] == ids[:cap]
    assert body["nextCursor"] == ids[cap - 1]


# --- POST /api/compliance-groups ------------------------------------------------------------------


async def test_a_compliance_officer_creates_a_compliance_group(
    api: Api, officer: Person, org: int, other_org: int
) -> None:
    payload = {
        "name": _name("Regional behavioural health"),
        "description": "Clinics that share care for our patients",
        "organizationIds": [other_org, org, other_org],
    }
    status, body = await api.call("POST", GROUPS, officer, json=payload)

    assert status == 201, body
    assert set(body) == GROUP_FIELDS
    assert body["name"] == payload["name"]
    assert body["description"] == payload["description"]
    assert body["organizationId"] == org  # owned by the officer's organization
    assert sorted(body["organizationIds"]) == sorted([org, other_org])  # duplicates collapsed
    assert datetime.fromisoformat(body["createdAt"]).tzinfo is not None


async def test_a_compliance_group_needs_no_description(api: Api, officer: Person, other_org: int) -> None:
    status, body = await api.call(
        "POST", GROUPS, officer, json={"name": _name("Bare"), "organizationIds": [other_org]}
    )
    assert status == 201, body
    assert body["description"] is None
    assert body["organizationIds"] == [other_org]


async def test_creating_a_compliance_group_is_audited_with_its_id(
    api: Api, officer: Person, other_org: int, db: asyncpg.Connection
) -> None:
    rid = new_request_id()
    status, body = await api.call(
        "POST",
        GROUPS,
        officer,
        json={"name": _name("Audited group"), "organizationIds": [other_org]},
        headers={"X-Request-ID": rid},
    )
    assert status == 201, body

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["actor_id"], row["resource_type"]) == (
        "compliance_group.create",
        "success",
        "allow",
        officer.id,
        "compliance_group",
    )
    assert row["resource_id"] == str(body["id"])


async def test_a_compliance_group_naming_an_unknown_organization_is_refused(
    api: Api, officer: Person, org: int, db: asyncpg.Connection
) -> None:
    name = _name("Ghost members")
    rid = new_request_id()
    status, headers, body = await api.send(
        "POST",
        GROUPS,
        officer,
        json={"name": name, "organizationIds": [org, 2**31 - 1]},
        headers={"X-Request-ID": rid},
    )

    _assert_problem(status, headers, body, 422, "validation_error")
    assert body["errors"] == [
        {"field": "organizationIds[1]", "message": "No such organization.", "type": "not_found"}
    ]
    assert await db.fetchval("SELECT count(*) FROM compliance_groups WHERE name = $1", name) == 0
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["decision"], row["outcome"]) == (
        "compliance_group.create",
        "allow",
        "failure",
    )
    assert _details(row)["ended_by"] == "validation_error"


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "admin", "auditor"])
async def test_only_a_compliance_officer_may_create_a_compliance_group(
    api: Api, org: int, db: asyncpg.Connection, role: str
) -> None:
    person = await api.person(role, org)
    name = _name("Refused group")
    rid = new_request_id()
    status, headers, body = await api.send(
        "POST",
        GROUPS,
        person,
        json={"name": name, "organizationIds": [org]},
        headers={"X-Request-ID": rid},
    )

    _assert_denied(status, headers, body, "role_not_permitted")
    assert await db.fetchval("SELECT count(*) FROM compliance_groups WHERE name = $1", name) == 0
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["reason"], row["actor_id"]) == (
        "compliance_group.create",
        "denied",
        "deny",
        "role_not_permitted",
        person.id,
    )


async def test_a_compliance_group_name_taken_in_ones_organization_is_a_conflict(
    api: Api, officer: Person, org: int
) -> None:
    payload = {"name": _name("Twin group"), "organizationIds": [org]}
    status, _ = await api.call("POST", GROUPS, officer, json=payload)
    assert status == 201

    status, headers, body = await api.send("POST", GROUPS, officer, json=payload)
    _assert_problem(status, headers, body, 409, "conflict")


async def test_two_organizations_may_each_have_a_compliance_group_of_the_same_name(
    api: Api, officer: Person, other_org: int
) -> None:
    other_officer = await api.person("compliance_officer", other_org)
    payload = {"name": _name("Shared name"), "organizationIds": [other_org]}
    status, first = await api.call("POST", GROUPS, officer, json=payload)
    assert status == 201, first
    status, second = await api.call("POST", GROUPS, other_officer, json=payload)
    assert status == 201, second
    assert first["organizationId"] != second["organizationId"]


GROUP_ERRORS = [
    pytest.param({"name": None}, "name", id="name-missing"),
    pytest.param({"name": "G" * 201}, "name", id="name-oversized"),
    pytest.param({"name": 3}, "name", id="name-not-a-string"),
    pytest.param({"description": "d" * 2001}, "description", id="description-oversized"),
    pytest.param({"description": 5}, "description", id="description-not-a-string"),
    pytest.param({"organizationIds": None}, "organizationIds", id="members-missing"),
    pytest.param({"organizationIds": []}, "organizationIds", id="members-empty"),
    pytest.param({"organizationIds": "1"}, "organizationIds", id="members-not-a-list"),
    pytest.param({"organizationIds": list(range(1, 202))}, "organizationIds", id="members-over-200"),
    pytest.param({"organizationIds": ["1"]}, "organizationIds[0]", id="member-id-as-string-is-strict"),
    pytest.param({"organizationIds": [1, 0]}, "organizationIds[1]", id="member-id-zero"),
    pytest.param({"organizationId": 1}, "organizationId", id="unknown-field-owner"),
]


@pytest.mark.parametrize(("changes", "field"), GROUP_ERRORS)
async def test_an_invalid_compliance_group_is_refused_naming_the_field(
    api: Api, officer: Person, org: int, changes: dict[str, Any], field: str
) -> None:
    payload: dict[str, Any] = {"name": _name("Group"), "organizationIds": [org]}
    for name, value in changes.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    status, headers, body = await api.send("POST", GROUPS, officer, json=payload)

    _assert_problem(status, headers, body, 422, "validation_error")
    assert field in _fields(body)


async def test_a_compliance_group_body_that_is_not_json_is_a_bad_request(api: Api, officer: Person) -> None:
    status, headers, body = await api.send(
        "POST", GROUPS, officer, data=b"<group/>", headers={"Content-Type": "application/xml"}
    )
    _assert_problem(status, headers, body, 400, "malformed_request")
    assert _fields(body) == {"body"}


# --- GET /api/compliance-groups -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["compliance_officer", "admin"])
async def test_compliance_officers_and_admins_list_compliance_groups(
    api: Api, officer: Person, org: int, other_org: int, role: str
) -> None:
    status, created = await api.call(
        "POST", GROUPS, officer, json={"name": _name("Listed"), "organizationIds": [other_org, org]}
    )
    assert status == 201, created
    reader = await api.person(role, org)

    status, body = await api.call(
        "GET", GROUPS, reader, params={"cursor": str(created["id"] - 1), "limit": "1"}
    )
    assert status == 200, body
    [listed] = body["items"]
    assert set(listed) == GROUP_FIELDS
    assert listed["id"] == created["id"]
    assert listed["name"] == created["name"]
    assert sorted(listed["organizationIds"]) == sorted([org, other_org])


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "auditor"])
async def test_other_roles_may_not_list_compliance_groups(
    api: Api, org: int, db: asyncpg.Connection, role: str
) -> None:
    person = await api.person(role, org)
    rid = new_request_id()
    status, headers, body = await api.send("GET", GROUPS, person, headers={"X-Request-ID": rid})

    _assert_denied(status, headers, body, "role_not_permitted")
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"], row["actor_id"]) == (
        "compliance_group.list",
        "denied",
        "role_not_permitted",
        person.id,
    )


async def test_the_compliance_group_list_pages_with_a_cursor(api: Api, officer: Person, org: int) -> None:
    ids = []
    for _ in range(3):
        status, created = await api.call(
            "POST", GROUPS, officer, json={"name": _name("Paged group"), "organizationIds": [org]}
        )
        assert status == 201, created
        ids.append(created["id"])

    status, first = await api.call("GET", GROUPS, officer, params={"cursor": str(ids[0] - 1), "limit": "2"})
    assert status == 200, first
    assert [g["id"] for g in first["items"]] == ids[:2]
    assert first["nextCursor"] == ids[1]

    status, second = await api.call(
        "GET", GROUPS, officer, params={"cursor": str(first["nextCursor"]), "limit": "2"}
    )
    assert status == 200, second
    assert [g["id"] for g in second["items"]] == ids[2:]
    assert second["nextCursor"] is None
