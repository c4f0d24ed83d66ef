"""Account administration over HTTP: approval of self-registered accounts, deactivation (with its
Sendbird channel removals), reactivation, role changes, ending sessions, logout."""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from handlers.app import create_app
from handlers.settings import Settings
from tests.api.conftest import PASSWORD, Api, Person, new_request_id

PROFILE = "/api/auth/profile"


@pytest.fixture
async def org(api: Api) -> int:
    return await api.organization()


@pytest.fixture
async def admin(api: Api, org: int) -> Person:
    return await api.person("admin", org)


async def _login(api: Api, email: str) -> tuple[int, Any]:
    return await api.call("POST", "/api/auth/login", json={"email": email, "password": PASSWORD})


async def _decision(db: asyncpg.Connection, rid: str, workflow: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT * FROM audit_events WHERE request_id = $1 AND workflow = $2 AND event = 'decision'",
        rid,
        workflow,
    )
    assert row is not None, (rid, workflow)
    return row


async def test_a_deactivated_member_loses_access_and_leaves_its_chat_channels(
    api: Api, db: asyncpg.Connection, org: int, admin: Person
) -> None:
    nurse = await api.person("care_team_member", org)
    peer = await api.person("peer_support", org)
    patient = await api.patient(nurse)
    conversation = await api.conversation(nurse, patient, peer.id)

    rid = new_request_id()
    status, body = await api.call(
        "POST", f"/api/users/{peer.id}/deactivate", admin, headers={"X-Request-ID": rid}
    )

    assert status == 200, body
    assert body["isActive"] is False
    status, _ = await api.call("GET", PROFILE, peer)
    assert status == 401  # the token stopped working
    status, _ = await _login(api, peer.email)
    assert status == 401
    chat_id = await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", peer.id)
    [entry] = await db.fetch(
        "SELECT * FROM outbox WHERE kind = 'remove_members' AND conversation_id = $1", conversation["id"]
    )
    assert json.loads(entry["payload"]) == {"conversation_id": conversation["id"], "user_ids": [chat_id]}
    decision = await _decision(db, rid, "user.deactivate")
    assert (decision["outcome"], decision["actor_id"], decision["resource_id"]) == (
        "success",
        admin.id,
        str(peer.id),
    )
    effects = await db.fetch(
        "SELECT * FROM audit_events WHERE request_id = $1 AND event = 'conversation.member_left_channel'", rid
    )
    assert [e["resource_id"] for e in effects] == [str(conversation["id"])]


async def test_a_reactivated_account_logs_in_again_but_its_old_tokens_stay_dead(
    api: Api, org: int, admin: Person
) -> None:
    peer = await api.person("peer_support", org)
    assert (await api.call("POST", f"/api/users/{peer.id}/deactivate", admin))[0] == 200

    status, body = await api.call("POST", f"/api/users/{peer.id}/reactivate", admin)

    assert (status, body["isActive"]) == (200, True)
    assert (await api.call("GET", PROFILE, peer))[0] == 401
    status, session = await _login(api, peer.email)
    assert status == 200, session
    status, _ = await api.call("GET", PROFILE, headers={"Authorization": f"Bearer {session['token']}"})
    assert status == 200


async def test_an_admin_changes_a_role_and_the_old_token_stops_working(
    api: Api, db: asyncpg.Connection, org: int, admin: Person
) -> None:
    peer = await api.person("peer_support", org)
    rid = new_request_id()
    status, body = await api.call(
        "PUT",
        f"/api/users/{peer.id}/role",
        admin,
        json={"role": "care_team_member"},
        headers={"X-Request-ID": rid},
    )

    assert (status, body["role"]) == (200, "care_team_member")
    assert (await api.call("GET", PROFILE, peer))[0] == 401
    status, session = await _login(api, peer.email)
    assert (status, session["user"]["role"]) == (200, "care_team_member")
    decision = await _decision(db, rid, "user.change_role")
    assert '"role": "care_team_member"' in decision["details"]
    assert '"previous_role": "peer_support"' in decision["details"]


async def test_an_unknown_role_is_refused_naming_the_field(api: Api, org: int, admin: Person) -> None:
    peer = await api.person("peer_support", org)
    status, body = await api.call("PUT", f"/api/users/{peer.id}/role", admin, json={"role": "root"})
    assert status == 422
    assert [e["field"] for e in body["errors"]] == ["role"]


@pytest.mark.parametrize(
    ("method", "action", "body"), [("POST", "deactivate", None), ("PUT", "role", {"role": "auditor"})]
)
async def test_an_admin_cannot_deactivate_or_re_role_themself(
    api: Api, admin: Person, method: str, action: str, body: Any
) -> None:
    status, problem = await api.call(method, f"/api/users/{admin.id}/{action}", admin, json=body)
    assert (status, problem["code"]) == (409, "conflict")
    assert (await api.call("GET", PROFILE, admin))[0] == 200


async def test_ending_an_accounts_sessions_kills_its_tokens_but_not_a_new_login(
    api: Api, org: int, admin: Person
) -> None:
    peer = await api.person("peer_support", org)
    status, _ = await api.call("POST", f"/api/users/{peer.id}/sessions/revoke", admin)
    assert status == 200
    assert (await api.call("GET", PROFILE, peer))[0] == 401
    status, session = await _login(api, peer.email)
    assert status == 200
    assert (await api.call("GET", PROFILE, headers={"Authorization": f"Bearer {session['token']}"}))[0] == 200


async def test_logout_ends_the_token_and_a_new_login_works_at_once(
    api: Api, db: asyncpg.Connection, org: int
) -> None:
    peer = await api.person("peer_support", org)
    rid = new_request_id()
    resp = await api.client.post("/api/auth/logout", headers={**peer.auth, "X-Request-ID": rid})
    assert resp.status == 204
    assert (await api.call("GET", PROFILE, peer))[0] == 401
    status, session = await _login(api, peer.email)
    assert status == 200
    assert (await api.call("GET", PROFILE, headers={"Authorization": f"Bearer {session['token']}"}))[0] == 200
    assert (await _decision(db, rid, "auth.logout"))["outcome"] == "success"


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("POST", "deactivate", None),
        ("PUT", "role", {"role": "care_team_member"}),
        ("POST", "sessions/revoke", None),
    ],
)
async def test_a_token_this_instance_remembers_as_current_stops_at_once_when_its_sessions_end(
    api: Api, org: int, admin: Person, method: str, action: str, body: Any
) -> None:
    peer = await api.person("peer_support", org)
    assert (await api.call("GET", PROFILE, peer))[0] == 200  # checked, and remembered for 2 s
    status, _ = await api.call(method, f"/api/users/{peer.id}/{action}", admin, json=body)
    assert status == 200
    assert (await api.call("GET", PROFILE, peer))[0] == 401


@pytest.mark.parametrize("action", ["approve", "deactivate", "reactivate", "sessions/revoke", "unlock"])
async def test_an_account_of_another_organization_answers_like_one_that_does_not_exist(
    api: Api, admin: Person, action: str
) -> None:
    outsider = await api.person("peer_support", await api.organization())
    status, other = await api.call("POST", f"/api/users/{outsider.id}/{action}", admin)
    _, missing = await api.call("POST", f"/api/users/{2**31 - 1}/{action}", admin)
    assert status == 404
    assert {k: v for k, v in other.items() if k != "requestId"} == {
        k: v for k, v in missing.items() if k != "requestId"
    }
    assert (await api.call("GET", PROFILE, outsider))[0] == 200


@pytest.mark.parametrize("role", ["peer_support", "care_team_member", "compliance_officer", "auditor"])
async def test_only_admins_administer_accounts(api: Api, org: int, role: str) -> None:
    actor = await api.person(role, org)
    peer = await api.person("peer_support", org)
    status, body = await api.call("POST", f"/api/users/{peer.id}/deactivate", actor)
    assert (status, body["reason"]) == (403, "role_not_permitted")


# --- approval of self-registered accounts ------------------------------------------------------------


@pytest.fixture
async def approving(aiohttp_client: Any, settings: Settings) -> Api:
    """The service as production runs it: self-registered accounts wait for an admin's approval."""
    auth = settings.auth.model_copy(update={"require_approval": True})
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(settings.model_copy(update={"auth": auth}))
    )
    return Api(client)


async def test_a_self_registered_account_logs_in_only_after_an_admin_approves_it(
    approving: Api, db: asyncpg.Connection
) -> None:
    org = await approving.organization(self_registration=True)
    admin = await approving.person("admin", org)
    email = f"new.{secrets.token_hex(4)}@example.org"
    registration = {
        "email": email,
        "password": PASSWORD,
        "firstName": "Ann",
        "lastName": "Lee",
        "organizationId": org,
    }
    status, _ = await approving.call("POST", "/api/auth/register", json=registration)
    assert status == 202

    status, problem = await _login(approving, email)
    assert (status, problem["reason"]) == (403, "pending_approval")
    status, users = await approving.call("GET", "/api/users", admin)
    [pending] = [u for u in users["items"] if u["email"] == email]
    assert pending["pendingApproval"] is True

    status, approved = await approving.call("POST", f"/api/users/{pending['id']}/approve", admin)
    assert (status, approved["pendingApproval"]) == (200, False)
    status, session = await _login(approving, email)
    assert status == 200, session
    status, _ = await approving.call(
        "GET", "/api/patients", headers={"Authorization": f"Bearer {session['token']}"}
    )
    assert status == 200


def test_approval_is_required_by_default_in_production_only(settings: Settings) -> None:
    assert settings.auth.require_approval is None
    assert settings.auth.approval_required("production") is True
    assert settings.auth.approval_required("development") is False
