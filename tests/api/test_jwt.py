"""Access tokens at the API edge: every token that is not exactly what caremsg issues is refused with a
401 problem+json and a ``WWW-Authenticate: Bearer`` challenge, and the refusal never says why."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import OctKey

from handlers.keys import accounts_key
from handlers.settings import Settings
from tests.support.api import Api, Person
from tests.support.audit import request_records

PROFILE = "/api/auth/profile"
DROP = object()  # a claim value meaning "leave this claim out"


def _claims(settings: Settings, person: Person, **changes: Any) -> dict[str, Any]:
    """The claims caremsg itself issues for ``person`` (see integrations/security.py), then ``changes``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(person.id),
        "iss": settings.auth.jwt_issuer,
        "aud": settings.auth.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "role": person.role,
        "org": person.organization_id,
    }
    for name, value in changes.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _sign(claims: dict[str, Any], secret: str, alg: str = "HS256") -> str:
    key = OctKey.import_key(secret.encode())
    return jwt.encode({"alg": alg, "typ": "JWT"}, claims, key, algorithms=[alg])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _profile_with(api: Api, authorization: str | None) -> tuple[int, dict[str, str], Any]:
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await api.client.get(PROFILE, headers=headers)
    return resp.status, dict(resp.headers), await resp.json(content_type=None)


def _assert_refused(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 401, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["status"] == 401
    assert body["code"] == "unauthenticated"
    assert body["requestId"] == headers["X-Request-ID"]


@pytest.fixture
async def nurse(api: Api) -> Person:
    return await api.person("care_team_member", await api.organization())


async def test_a_hand_built_token_with_every_claim_caremsg_issues_is_accepted(
    api: Api, settings: Settings, nurse: Person
) -> None:
    # The control for every refusal below: the helpers build a token the service does accept.
    token = _sign(_claims(settings, nurse), settings.auth.jwt_secret)
    status, _, body = await _profile_with(api, f"Bearer {token}")
    assert status == 200, body
    assert body["id"] == nurse.id
    assert body["role"] == "care_team_member"


async def test_the_bearer_scheme_name_is_case_insensitive(api: Api, nurse: Person) -> None:
    status, _, body = await _profile_with(api, f"bearer {nurse.token}")
    assert status == 200, body
    assert body["id"] == nurse.id


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-authorization-header"),
        pytest.param("", id="empty-authorization-header"),
        pytest.param("Bearer", id="scheme-without-token"),
        pytest.param("Bearer    ", id="scheme-with-blank-token"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
        pytest.param("Token abc.def.ghi", id="unknown-scheme"),
    ],
)
async def test_a_request_without_a_bearer_token_is_refused(api: Api, authorization: str | None) -> None:
    status, headers, body = await _profile_with(api, authorization)
    _assert_refused(status, headers, body)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("abc", id="one-segment"),
        pytest.param("abc.def", id="two-segments"),
        pytest.param("abc.def.ghi", id="three-garbage-segments"),
        pytest.param("a.b.c.d.e", id="five-segments-like-a-jwe"),
        pytest.param("!!!.???.***", id="not-base64url"),
        pytest.param(f"{_b64(b'{not json')}.{_b64(b'{}')}.sig", id="header-not-json"),
    ],
)
async def test_a_malformed_token_is_refused(api: Api, token: str) -> None:
    status, headers, body = await _profile_with(api, f"Bearer {token}")
    _assert_refused(status, headers, body)


async def test_a_signed_payload_that_is_not_a_json_object_is_refused(api: Api, settings: Settings) -> None:
    key = OctKey.import_key(settings.auth.jwt_secret.encode())
    token = jws.serialize_compact({"alg": "HS256"}, b'["not", "claims"]', key)
    status, headers, body = await _profile_with(api, f"Bearer {token}")
    _assert_refused(status, headers, body)


async def test_an_expired_token_is_refused(api: Api, settings: Settings, nurse: Person) -> None:
    an_hour_ago = int(time.time()) - 3600
    claims = _claims(settings, nurse, iat=an_hour_ago - 60, nbf=an_hour_ago - 60, exp=an_hour_ago)
    status, headers, body = await _profile_with(api, f"Bearer {_sign(claims, settings.auth.jwt_secret)}")
    _assert_refused(status, headers, body)


async def test_a_token_signed_with_another_secret_is_refused(
    api: Api, settings: Settings, nurse: Person
) -> None:
    token = _sign(_claims(settings, nurse), "another-secret-that-is-long-enough-for-hs256-0123456789")
    status, headers, body = await _profile_with(api, f"Bearer {token}")
    _assert_refused(status, headers, body)


async def test_a_token_whose_signature_was_tampered_with_is_refused(api: Api, nurse: Person) -> None:
    header, payload, signature = nurse.token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    status, headers, body = await _profile_with(api, f"Bearer {header}.{payload}.{flipped}")
    _assert_refused(status, headers, body)


async def test_a_token_whose_claims_were_changed_after_signing_is_refused(
    api: Api, settings: Settings, nurse: Person
) -> None:
    header, _, signature = nurse.token.split(".")
    promoted = _b64(json.dumps(_claims(settings, nurse, role="admin")).encode())
    status, headers, body = await _profile_with(api, f"Bearer {header}.{promoted}.{signature}")
    _assert_refused(status, headers, body)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_an_unsigned_alg_none_token_is_refused(
    api: Api, settings: Settings, nurse: Person, alg: str
) -> None:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(settings, nurse)).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        status, headers, body = await _profile_with(api, f"Bearer {token}")
        _assert_refused(status, headers, body)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
async def test_a_token_signed_with_another_hmac_algorithm_is_refused(
    api: Api, settings: Settings, nurse: Person, alg: str
) -> None:
    token = _sign(_claims(settings, nurse), settings.auth.jwt_secret, alg)
    status, headers, body = await _profile_with(api, f"Bearer {token}")
    _assert_refused(status, headers, body)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"aud": "another-api"}, id="wrong-audience"),
        pytest.param({"aud": ["another-api"]}, id="wrong-audience-list"),
        pytest.param({"aud": DROP}, id="no-audience"),
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"iss": DROP}, id="no-issuer"),
        pytest.param({"typ": DROP}, id="no-token-type"),
        pytest.param({"typ": "refresh"}, id="refresh-token-type"),
        pytest.param({"typ": ""}, id="blank-token-type"),
        pytest.param({"role": DROP}, id="no-role"),
        pytest.param({"role": "superuser"}, id="unknown-role"),
        pytest.param({"role": "external"}, id="external-participant-role"),
        pytest.param({"role": ["admin"]}, id="role-as-list"),
        pytest.param({"org": DROP}, id="no-organization"),
        pytest.param({"org": "not-a-number"}, id="organization-not-a-number"),
        pytest.param({"sub": DROP}, id="no-subject"),
        pytest.param({"sub": "not-a-number"}, id="subject-not-a-number"),
        pytest.param({"sub": 1}, id="subject-not-a-string"),
        pytest.param({"exp": DROP}, id="no-expiry"),
        pytest.param({"exp": "tomorrow"}, id="expiry-not-a-number"),
        pytest.param({"iat": DROP}, id="no-issued-at"),
        pytest.param({"iat": int(time.time()) + 3600}, id="issued-in-the-future"),
        pytest.param({"nbf": int(time.time()) + 3600}, id="not-valid-yet"),
    ],
)
async def test_a_token_with_a_missing_or_wrong_claim_is_refused(
    api: Api, settings: Settings, nurse: Person, changes: dict[str, Any]
) -> None:
    token = _sign(_claims(settings, nurse, **changes), settings.auth.jwt_secret)
    status, headers, body = await _profile_with(api, f"Bearer {token}")
    _assert_refused(status, headers, body)


async def test_every_token_refusal_gives_the_same_generic_answer(
    api: Api, settings: Settings, nurse: Person
) -> None:
    secret = settings.auth.jwt_secret
    tokens = [
        "abc.def.ghi",
        _sign(_claims(settings, nurse, exp=int(time.time()) - 3600), secret),
        _sign(_claims(settings, nurse, aud="another-api"), secret),
        _sign(_claims(settings, nurse), "another-secret-that-is-long-enough-for-hs256-0123456789"),
    ]
    answers = []
    for token in tokens:
        status, headers, body = await _profile_with(api, f"Bearer {token}")
        _assert_refused(status, headers, body)
        answers.append({k: v for k, v in body.items() if k != "requestId"})
    # Nothing in the answer tells an attacker which check failed.
    assert all(answer == answers[0] for answer in answers)
    assert "expired" not in json.dumps(answers[0]).lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/auth/profile"),
        ("POST", "/api/users"),
        ("GET", "/api/users"),
        ("POST", "/api/organizations"),
        ("GET", "/api/organizations"),
        ("POST", "/api/compliance-groups"),
        ("GET", "/api/compliance-groups"),
    ],
)
async def test_every_protected_endpoint_refuses_a_token_with_a_wrong_signature(
    api: Api, settings: Settings, nurse: Person, method: str, path: str
) -> None:
    token = _sign(_claims(settings, nurse), "another-secret-that-is-long-enough-for-hs256-0123456789")
    resp = await api.client.request(method, path, json={}, headers={"Authorization": f"Bearer {token}"})
    _assert_refused(resp.status, dict(resp.headers), await resp.json(content_type=None))


async def test_a_refused_token_is_on_record_without_trusting_its_claims(
    api: Api, settings: Settings, nurse: Person, db: Any
) -> None:
    rid = f"jwt-{uuid.uuid4().hex}"
    token = _sign(_claims(settings, nurse, iss="someone-else"), settings.auth.jwt_secret)
    resp = await api.client.get(PROFILE, headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid})
    assert resp.status == 401
    await api.flush_rejections()

    # One refusal row and no decision: nothing ran in the nurse's name, and the unverified
    # claims are not taken as the actor.
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"]) == ("auth.token", "denied", "token_invalid")
    assert row["actor_id"] is None
    assert row["decision"] is None


async def test_a_request_without_a_token_is_on_record(api: Api, db: Any) -> None:
    rid = f"jwt-{uuid.uuid4().hex}"
    resp = await api.client.get(PROFILE, headers={"X-Request-ID": rid})
    assert resp.status == 401
    await api.flush_rejections()

    [row] = await request_records(db, rid)
    assert (row["workflow"], row["outcome"], row["reason"]) == ("auth.token", "denied", "token_missing")
    assert row["actor_id"] is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("UPDATE users SET is_active = false WHERE id = $1", id="deactivated"),
        pytest.param("UPDATE users SET role = 'peer_support' WHERE id = $1", id="role-changed"),
    ],
)
async def test_a_still_unexpired_token_of_an_account_that_changed_is_refused(
    api: Api, nurse: Person, db: Any, change: str
) -> None:
    status, _ = await api.call("GET", PROFILE, nurse)
    assert status == 200
    await db.execute(change, nurse.id)  # elsewhere: another instance, the command line
    # This instance checks again once ``auth.account_recheck_seconds`` have passed since the last
    # check (tests/unit/test_account_cache.py times it): here, at once.
    api.app[accounts_key].forget(nurse.id)

    rid = f"jwt-{uuid.uuid4().hex}"
    resp = await api.client.get(PROFILE, headers={**nurse.auth, "X-Request-ID": rid})
    _assert_refused(resp.status, dict(resp.headers), await resp.json(content_type=None))
    await api.flush_rejections()
    [row] = await request_records(db, rid)
    assert (row["workflow"], row["reason"], row["actor_id"]) == (
        "auth.token",
        "account_not_current",
        nurse.id,
    )
