"""Registration, login and the profile over HTTP: what a client sees, what is stored, what is audited.

Longer than 400 lines because registration, login and the profile are one endpoint family: their
tests share the registration body, the problem and no-PHI assertions, and the accounts that
registering and then logging in make.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from handlers.app import create_app
from handlers.settings import Settings
from tests.support.api import PASSWORD, Api, new_request_id
from tests.support.audit import request_records

REGISTER = "/api/auth/register"
LOGIN = "/api/auth/login"
PROFILE = "/api/auth/profile"

FIRST_NAME = "Zelda-Quartz"
LAST_NAME = "Okonkwo-Vance"
SECRET = "s3cret-Passw0rd-xyz"
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
ACCEPTED = {"status", "detail"}


def _email() -> str:
    return f"zelda.{secrets.token_hex(4)}@example.org"


def _registration(**changes: Any) -> dict[str, Any]:
    body = {"email": _email(), "password": SECRET, "firstName": FIRST_NAME, "lastName": LAST_NAME}
    body.update(changes)
    return body


async def _register_and_log_in(api: Api, **changes: Any) -> dict[str, Any]:
    """Register (202, the same answer for every email), then log in: the new account's session."""
    body = _registration(**changes)
    status, accepted = await api.call("POST", REGISTER, json=body)
    assert status == 202, accepted
    assert set(accepted) == ACCEPTED
    status, session = await api.call(
        "POST", LOGIN, json={"email": body["email"], "password": body["password"]}
    )
    assert status == 200, session
    return session  # type: ignore[no-any-return]


def _assert_problem(status: int, headers: dict[str, str], body: Any, expected: int, code: str) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == expected
    assert body["code"] == code
    assert body["requestId"] == headers["X-Request-ID"]


def _fields(body: Any) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


def _assert_no_phi(body: Any, *values: str) -> None:
    text = json.dumps(body).lower()
    for value in (FIRST_NAME, LAST_NAME, SECRET, PASSWORD, *values):
        assert value.lower() not in text, f"{value!r} leaked into {text}"


async def _default_organization_id(db: asyncpg.Connection, settings: Settings) -> int:
    org_id = await db.fetchval(
        "SELECT id FROM organizations WHERE name = $1", settings.auth.default_organization
    )
    assert org_id is not None
    return int(org_id)


# --- registration ---------------------------------------------------------------------------------


async def test_a_person_registers_as_peer_support_in_the_default_organization(
    api: Api, db: asyncpg.Connection, settings: Settings
) -> None:
    email = _email()
    status, accepted = await api.call("POST", REGISTER, json=_registration(email=f"  {email.upper()} "))
    assert status == 202, accepted
    assert accepted == {"status": "accepted", "detail": accepted["detail"]}

    status, body = await api.call("POST", LOGIN, json={"email": email, "password": SECRET})
    assert status == 200, body
    assert set(body) == {"token", "tokenType", "expiresIn", "user"}
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == settings.auth.access_token_minutes * 60
    assert body["token"].count(".") == 2
    user = body["user"]
    assert set(user) == USER_FIELDS
    assert user["email"] == email  # trimmed and lower-cased
    assert user["firstName"] == FIRST_NAME
    assert user["lastName"] == LAST_NAME
    assert user["role"] == "peer_support"
    assert user["organizationId"] == await _default_organization_id(db, settings)
    assert user["isActive"] is True
    assert user["pendingApproval"] is False  # development: no approval needed
    assert datetime.fromisoformat(user["createdAt"]).tzinfo is not None


async def test_the_password_is_stored_only_as_an_argon2_hash(api: Api, db: asyncpg.Connection) -> None:
    body = await _register_and_log_in(api)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", body["user"]["id"])
    assert stored.startswith("$argon2id$")
    assert SECRET not in stored


async def test_the_new_accounts_token_opens_its_profile(api: Api) -> None:
    registered = await _register_and_log_in(api)
    headers = {"Authorization": f"Bearer {registered['token']}"}
    status, profile = await api.call("GET", PROFILE, headers=headers)
    assert status == 200, profile
    assert profile == registered["user"]


async def test_a_care_team_member_registers_into_an_organization_that_allows_it(api: Api) -> None:
    org = await api.organization(self_registration=True)
    body = await _register_and_log_in(api, role="care_team_member", organizationId=org)
    assert body["user"]["role"] == "care_team_member"
    assert body["user"]["organizationId"] == org


async def test_a_registration_is_audited_without_names_or_email(api: Api, db: asyncpg.Connection) -> None:
    org = await api.organization()
    rid = new_request_id()
    email = _email()
    status, body = await api.call(
        "POST", REGISTER, json=_registration(email=email, organizationId=org), headers={"X-Request-ID": rid}
    )
    assert status == 202, body
    user_id = await db.fetchval("SELECT id FROM users WHERE email = $1", email)

    [row] = await request_records(db, rid)
    assert row["event"] == "auth.register"
    assert row["workflow"] == "auth.register"
    assert row["outcome"] == "success"
    assert row["reason"] == "registered"
    assert row["actor_id"] == user_id
    assert row["actor_role"] == "peer_support"
    assert row["organization_id"] == org
    assert row["resource_type"] == "user"
    assert row["resource_id"] == str(user_id)
    stored = json.dumps({k: str(v) for k, v in dict(row).items()}).lower()
    for value in (email, FIRST_NAME, LAST_NAME, SECRET):
        assert value.lower() not in stored


@pytest.mark.parametrize("role", ["admin", "compliance_officer", "auditor"])
async def test_self_registration_refuses_a_privileged_role(
    api: Api, db: asyncpg.Connection, role: str
) -> None:
    email = _email()
    status, headers, body = await api.send("POST", REGISTER, json=_registration(email=email, role=role))

    _assert_problem(status, headers, body, 422, "validation_error")
    [error] = body["errors"]
    assert error["field"] == "role"
    assert error["type"] == "forbidden_value"
    _assert_no_phi(body, email)
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0


async def test_self_registration_refuses_an_organization_that_does_not_allow_it(
    api: Api, db: asyncpg.Connection
) -> None:
    closed = await api.organization(self_registration=False)
    email = _email()
    status, headers, body = await api.send(
        "POST", REGISTER, json=_registration(email=email, organizationId=closed)
    )

    _assert_problem(status, headers, body, 422, "validation_error")
    assert _fields(body) == {"organizationId"}
    _assert_no_phi(body, email)
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0


async def test_a_missing_organization_gets_the_same_answer_as_a_closed_one(api: Api) -> None:
    closed = await api.organization(self_registration=False)
    _, closed_body = await api.call("POST", REGISTER, json=_registration(organizationId=closed))
    status, missing_body = await api.call("POST", REGISTER, json=_registration(organizationId=2**31 - 1))

    assert status == 422
    # Organization ids are not an oracle: "closed" and "does not exist" read the same.
    strip = {"requestId"}
    assert {k: v for k, v in missing_body.items() if k not in strip} == {
        k: v for k, v in closed_body.items() if k not in strip
    }


@pytest.mark.parametrize("same_email", [str.lower, str.upper], ids=["same-case", "other-case"])
async def test_registering_a_taken_email_answers_like_a_new_one_and_changes_nothing(
    api: Api, db: asyncpg.Connection, same_email: Any
) -> None:
    email = _email()
    status, first = await api.call("POST", REGISTER, json=_registration(email=email))
    assert status == 202, first
    before = await db.fetchrow("SELECT * FROM users WHERE email = $1", email)

    rid = new_request_id()
    with capture_logs() as logs:
        status, again = await api.call(
            "POST",
            REGISTER,
            json=_registration(
                email=same_email(email), firstName="Other", lastName="Name", role="peer_support"
            ),
            headers={"X-Request-ID": rid},
        )
    # No enumeration: the same status and the same body as for an address nobody has.
    assert (status, again) == (202, first)
    assert await db.fetchrow("SELECT * FROM users WHERE email = $1", email) == before
    # The owner is told (by id: the log never carries the address), and the attempt is on record.
    assert {"notice": "registration_attempted", "user_id": before["id"]}.items() <= next(
        e for e in logs if e["event"] == "account.notice"
    ).items()
    assert email not in json.dumps(logs, default=str)
    [row] = await request_records(db, rid)
    assert (row["outcome"], row["reason"], row["actor_id"]) == ("denied", "email_taken", None)
    assert (row["organization_id"], row["resource_id"]) == (before["organization_id"], str(before["id"]))


@pytest.fixture
async def closed_api(aiohttp_client: Any, settings: Settings) -> Api:
    """The service with self-registration switched off for everyone."""
    closed = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"self_registration": False})}
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(closed))
    return Api(client)


async def test_registration_is_refused_when_self_registration_is_switched_off(
    closed_api: Api, db: asyncpg.Connection
) -> None:
    org = await closed_api.organization(self_registration=True)
    email = _email()
    status, headers, body = await closed_api.send(
        "POST", REGISTER, json=_registration(email=email, organizationId=org)
    )

    _assert_problem(status, headers, body, 403, "forbidden")
    assert body["reason"] == "self_registration_disabled"
    assert body["hint"]
    _assert_no_phi(body, email)
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0


async def test_a_refused_self_registration_is_on_the_audit_record(
    closed_api: Api, db: asyncpg.Connection
) -> None:
    # The refusal is a policy Decision (reason self_registration_disabled); every decision is audited.
    rid = new_request_id()
    status, body = await closed_api.call(
        "POST", REGISTER, json=_registration(), headers={"X-Request-ID": rid}
    )
    assert status == 403, body

    rows = await request_records(db, rid)
    assert [(r["workflow"], r["outcome"], r["reason"]) for r in rows] == [
        ("auth.register", "denied", "self_registration_disabled")
    ]


REGISTRATION_ERRORS = [
    pytest.param({"email": None}, "email", id="email-null"),
    pytest.param({"email": 12345}, "email", id="email-not-a-string"),
    pytest.param({"email": "not-an-email"}, "email", id="email-not-an-address"),
    pytest.param({"email": "a" * 250 + "@example.org"}, "email", id="email-oversized"),
    pytest.param({"password": "short"}, "password", id="password-too-short"),
    pytest.param({"password": "fourteen-chars"}, "password", id="password-under-the-minimum-length"),
    pytest.param({"password": "password"}, "password", id="password-common"),
    pytest.param({"password": "secure123"}, "password", id="password-guessable"),
    pytest.param({"password": "passwordpassword"}, "password", id="password-common-repeated"),
    pytest.param({"password": "p" * 129}, "password", id="password-oversized"),
    pytest.param({"password": 12345678}, "password", id="password-not-a-string"),
    pytest.param({"firstName": 42}, "firstName", id="first-name-not-a-string"),
    pytest.param({"firstName": "   "}, "firstName", id="first-name-blank"),
    pytest.param({"firstName": "Z" * 101}, "firstName", id="first-name-oversized"),
    pytest.param({"lastName": None}, "lastName", id="last-name-null"),
    pytest.param({"lastName": ["Okonkwo"]}, "lastName", id="last-name-a-list"),
    pytest.param({"role": "superuser"}, "role", id="role-unknown"),
    pytest.param({"role": "external"}, "role", id="role-external-is-not-a-user-role"),
    pytest.param({"role": 1}, "role", id="role-not-a-string"),
    pytest.param({"organizationId": "1"}, "organizationId", id="organization-id-as-string-is-strict"),
    pytest.param({"organizationId": 1.5}, "organizationId", id="organization-id-fractional"),
    pytest.param({"organizationId": True}, "organizationId", id="organization-id-boolean"),
    pytest.param({"organizationId": 0}, "organizationId", id="organization-id-zero"),
    pytest.param({"organizationId": 2**31}, "organizationId", id="organization-id-too-large"),
    pytest.param({"isActive": False}, "isActive", id="unknown-field"),
    pytest.param({"first_name": FIRST_NAME}, "first_name", id="snake-case-field-is-unknown"),
]


@pytest.mark.parametrize(("changes", "field"), REGISTRATION_ERRORS)
async def test_an_invalid_registration_is_refused_naming_the_field(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    email = _email()
    status, headers, body = await api.send("POST", REGISTER, json={**_registration(email=email), **changes})

    _assert_problem(status, headers, body, 422, "validation_error")
    assert field in _fields(body)
    assert all({"field", "message", "type"} <= set(e) for e in body["errors"])
    _assert_no_phi(body, email)


@pytest.mark.parametrize("missing", ["email", "password", "firstName", "lastName"])
async def test_a_registration_missing_a_required_field_is_refused_naming_it(api: Api, missing: str) -> None:
    body = _registration()
    del body[missing]
    status, headers, problem = await api.send("POST", REGISTER, json=body)

    _assert_problem(status, headers, problem, 422, "validation_error")
    assert problem["errors"] == [{"field": missing, "message": "Field required.", "type": "missing"}]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        pytest.param(b'{"email": "a@b.org", ', "application/json", id="truncated-json"),
        pytest.param(b"email=a@b.org", "application/json", id="form-data-labelled-json"),
        pytest.param(b"\xff\xfe\x00", "application/json", id="not-utf8"),
        pytest.param(b"", "application/json", id="empty-body"),
    ],
)
async def test_a_body_that_is_not_json_is_a_bad_request(api: Api, data: bytes, content_type: str) -> None:
    status, headers, body = await api.send(
        "POST", REGISTER, data=data, headers={"Content-Type": content_type}
    )
    _assert_problem(status, headers, body, 400, "malformed_request")
    assert body["errors"] == [{"field": "body", "message": "Not valid JSON.", "type": "json_invalid"}]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
async def test_a_body_with_another_content_type_is_a_bad_request(api: Api, content_type: str) -> None:
    payload = json.dumps(_registration()).encode()
    status, headers, body = await api.send(
        "POST", REGISTER, data=payload, headers={"Content-Type": content_type}
    )
    _assert_problem(status, headers, body, 400, "malformed_request")
    assert [(e["field"], e["type"]) for e in body["errors"]] == [("body", "content_type")]
    _assert_no_phi(body)


async def test_json_with_a_charset_parameter_is_accepted(api: Api) -> None:
    payload = json.dumps(_registration()).encode()
    status, _, body = await api.send(
        "POST", REGISTER, data=payload, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 202, body


@pytest.mark.parametrize("payload", [[], "a string", None, 42], ids=["array", "string", "null", "number"])
async def test_json_that_is_not_an_object_is_refused(api: Api, payload: Any) -> None:
    status, headers, body = await api.send(
        "POST", REGISTER, data=json.dumps(payload), headers={"Content-Type": "application/json"}
    )
    _assert_problem(status, headers, body, 422, "validation_error")
    assert _fields(body) == {"body"}


async def test_a_body_over_the_size_limit_is_refused(api: Api, settings: Settings) -> None:
    payload = _registration(firstName="x" * (settings.api.max_body_bytes + 1))
    status, headers, body = await api.send("POST", REGISTER, json=payload)
    _assert_problem(status, headers, body, 413, "payload_too_large")
    _assert_no_phi(body)


# --- login ----------------------------------------------------------------------------------------


async def test_a_registered_person_logs_in_with_any_letter_case_of_their_email(api: Api) -> None:
    email = _email()
    registered = await _register_and_log_in(api, email=email)

    status, body = await api.call("POST", LOGIN, json={"email": email.upper(), "password": SECRET})
    assert status == 200, body
    assert set(body) == {"token", "tokenType", "expiresIn", "user"}
    assert body["tokenType"] == "Bearer"
    assert body["user"] == registered["user"]
    status, profile = await api.call("GET", PROFILE, headers={"Authorization": f"Bearer {body['token']}"})
    assert status == 200
    assert profile["id"] == registered["user"]["id"]


async def test_a_successful_login_is_audited(api: Api, db: asyncpg.Connection) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    rid = new_request_id()
    status, _ = await api.call(
        "POST", LOGIN, json={"email": nurse.email, "password": PASSWORD}, headers={"X-Request-ID": rid}
    )
    assert status == 200

    [row] = await request_records(db, rid)
    assert (row["event"], row["workflow"], row["outcome"], row["reason"]) == (
        "auth.login",
        "auth.login",
        "success",
        "authenticated",
    )
    assert row["actor_id"] == nurse.id
    assert row["actor_role"] == "care_team_member"
    assert row["organization_id"] == org
    assert row["source_address"] == "127.0.0.1"


async def test_unknown_email_and_wrong_password_get_the_same_answer(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    unknown = _email()

    answers = []
    for credentials in (
        {"email": unknown, "password": SECRET},
        {"email": nurse.email, "password": SECRET},
    ):
        status, headers, body = await api.send("POST", LOGIN, json=credentials)
        _assert_problem(status, headers, body, 401, "unauthenticated")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        _assert_no_phi(body, unknown, nurse.email)
        answers.append({k: v for k, v in body.items() if k != "requestId"})
    assert answers[0] == answers[1]


async def test_a_login_with_an_unknown_email_is_audited_without_the_email(
    api: Api, db: asyncpg.Connection
) -> None:
    rid = new_request_id()
    email = _email()
    status, _ = await api.call(
        "POST", LOGIN, json={"email": email, "password": SECRET}, headers={"X-Request-ID": rid}
    )
    assert status == 401

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"]) == ("auth.login", "denied", "unknown_email")
    assert row["actor_id"] is None
    stored = json.dumps({k: str(v) for k, v in dict(row).items()}).lower()
    assert email.split("@")[0] not in stored
    assert SECRET.lower() not in stored


async def test_a_login_with_a_wrong_password_is_audited_against_the_account(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("peer_support", org)
    rid = new_request_id()
    status, _ = await api.call(
        "POST", LOGIN, json={"email": nurse.email, "password": SECRET}, headers={"X-Request-ID": rid}
    )
    assert status == 401

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"]) == ("auth.login", "denied", "bad_password")
    assert row["actor_id"] == nurse.id
    assert row["organization_id"] == org
    assert SECRET not in json.dumps({k: str(v) for k, v in dict(row).items()})


async def test_a_deactivated_account_cannot_log_in_even_with_the_right_password(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    await db.execute("UPDATE users SET is_active = false WHERE id = $1", nurse.id)
    _, _, unknown_body = await api.send("POST", LOGIN, json={"email": _email(), "password": PASSWORD})

    rid = new_request_id()
    status, headers, body = await api.send(
        "POST", LOGIN, json={"email": nurse.email, "password": PASSWORD}, headers={"X-Request-ID": rid}
    )
    _assert_problem(status, headers, body, 401, "unauthenticated")
    # The same answer as for an unknown email: a deactivated account is not revealed as existing.
    assert {k: v for k, v in body.items() if k != "requestId"} == {
        k: v for k, v in unknown_body.items() if k != "requestId"
    }
    [row] = await request_records(db, rid)
    assert (row["outcome"], row["reason"], row["actor_id"]) == ("denied", "inactive", nurse.id)


LOGIN_ERRORS = [
    pytest.param({"email": None}, "email", id="email-missing"),
    pytest.param({"password": None}, "password", id="password-missing"),
    pytest.param({"email": 1}, "email", id="email-not-a-string"),
    pytest.param({"email": "nobody"}, "email", id="email-not-an-address"),
    pytest.param({"password": ""}, "password", id="password-empty"),
    pytest.param({"password": "p" * 129}, "password", id="password-oversized"),
    pytest.param({"password": 12345678}, "password", id="password-not-a-string"),
    pytest.param({"rememberMe": True}, "rememberMe", id="unknown-field"),
]


@pytest.mark.parametrize(("changes", "field"), LOGIN_ERRORS)
async def test_an_invalid_login_is_refused_naming_the_field(
    api: Api, changes: dict[str, Any], field: str
) -> None:
    email = _email()
    credentials: dict[str, Any] = {"email": email, "password": SECRET}
    for name, value in changes.items():
        if value is None:
            credentials.pop(name)
        else:
            credentials[name] = value
    status, headers, body = await api.send("POST", LOGIN, json=credentials)

    _assert_problem(status, headers, body, 422, "validation_error")
    assert field in _fields(body)
    _assert_no_phi(body, email)


async def test_a_login_body_that_is_not_json_is_a_bad_request(api: Api) -> None:
    status, headers, body = await api.send(
        "POST", LOGIN, data=b"email=a@b.org&password=x", headers={"Content-Type": "text/plain"}
    )
    _assert_problem(status, headers, body, 400, "malformed_request")
    assert _fields(body) == {"body"}


# --- profile --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role", ["peer_support", "care_team_member", "admin", "compliance_officer", "auditor"]
)
async def test_every_role_reads_its_own_profile(api: Api, role: str) -> None:
    org = await api.organization()
    person = await api.person(role, org, first_name="Ada", last_name="Lovelace")

    status, body = await api.call("GET", PROFILE, person)
    assert status == 200, body
    assert set(body) == USER_FIELDS  # never the password hash or the chat provider's id
    assert body == {
        "id": person.id,
        "email": person.email,
        "firstName": "Ada",
        "lastName": "Lovelace",
        "role": role,
        "organizationId": org,
        "isActive": True,
        "pendingApproval": False,
        "createdAt": body["createdAt"],
    }


async def test_reading_ones_profile_is_audited_as_an_allowed_decision(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    rid = new_request_id()
    status, _ = await api.call("GET", PROFILE, nurse, headers={"X-Request-ID": rid})
    assert status == 200

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["decision"], row["reason"]) == (
        "auth.profile",
        "success",
        "allow",
        "allowed",
    )
    assert row["actor_id"] == nurse.id
    assert row["resource_type"] == "user"
    assert row["resource_id"] == str(nurse.id)
    assert "auth.profile" in row["matched_rule"]


async def test_the_profile_needs_a_token(api: Api) -> None:
    status, headers, body = await api.send("GET", PROFILE)
    _assert_problem(status, headers, body, 401, "unauthenticated")
    assert headers["WWW-Authenticate"].startswith("Bearer")
