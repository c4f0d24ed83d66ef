"""Every workflow leaves exactly the audit record it should: after success, after a denial and after
a failure; and if the audit record cannot be written, the action fails and nothing is committed.

A *failure* is produced the same way for every workflow: a test-only trigger refuses the action's
own (``success``) audit row, so the action's transaction cannot commit (fail closed, 503) and the
unit of work records the event again, on its own, with outcome ``failure``.

Longer than 400 lines because ``SCENARIOS`` is one table, a success and (where one exists) a denial
for each declared workflow, with the builders its rows call; the three parametrised tests and the
check that no workflow lacks a scenario each read the whole table.
"""

from __future__ import annotations

import inspect
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy import text

from handlers.keys import sessions_key
from tests.support.api import PASSWORD, Api, Person
from tests.support.database import audit_refuses


@dataclass
class Call:
    method: str
    path: str
    who: Person | None = None
    json: Any = None


@dataclass
class World:
    """Two organizations, their people and a patient with a conversation, made only as needed."""

    api: Api
    people: dict[str, Person] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    async def org(self, name: str = "a") -> int:
        if name not in self.ids:
            self.ids[name] = await self.api.organization()
        return self.ids[name]

    async def person(self, role: str, org: str = "a") -> Person:
        key = f"{role}@{org}"
        if key not in self.people:
            self.people[key] = await self.api.person(role, await self.org(org))
        return self.people[key]

    async def patient(self) -> int:
        """Registered by the care-team member of organization a, who is on its care team."""
        if "patient" not in self.ids:
            self.ids["patient"] = await self.api.patient(await self.person("care_team_member"))
        return self.ids["patient"]

    async def bare_patient(self) -> int:
        """A patient of organization a without a care team (as imported records arrive)."""
        nurse = await self.person("care_team_member")
        async with self.api.app[sessions_key]() as session, session.begin():
            row = await session.execute(
                text(
                    "INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by)"
                    " VALUES (:org, 'Bare', 'Patient', 'low', :by) RETURNING id"
                ),
                {"org": await self.org(), "by": nurse.id},
            )
            return int(row.scalar_one())

    async def team(self) -> int:
        _, team = await self.api.call(
            "GET", f"/api/patients/{await self.patient()}/care-team", await self.person("care_team_member")
        )
        return int(team["id"])

    async def conversation(self) -> int:
        if "conversation" not in self.ids:
            status, body = await self.api.call(
                "POST",
                "/api/conversations",
                await self.person("care_team_member"),
                json={"title": "Plan", "patientId": await self.patient()},
            )
            assert status == 201, body
            self.ids["conversation"] = body["id"]
        return self.ids["conversation"]


def _email() -> str:
    return f"new.{secrets.token_hex(4)}@example.org"


def _new_user(role: str = "care_team_member") -> dict[str, Any]:
    return {"email": _email(), "password": PASSWORD, "firstName": "Ann", "lastName": "Lee", "role": role}


Scenario = Callable[[World], Awaitable[Call]]


async def login_ok(w: World) -> Call:
    nurse = await w.person("care_team_member")
    return Call("POST", "/api/auth/login", json={"email": nurse.email, "password": PASSWORD})


async def login_bad(w: World) -> Call:
    nurse = await w.person("care_team_member")
    return Call("POST", "/api/auth/login", json={"email": nurse.email, "password": "not-" + PASSWORD})


async def register_ok(w: World) -> Call:
    body = {**_new_user(), "organizationId": await w.org()}
    return Call("POST", "/api/auth/register", json=body)


def call(
    role: str, method: str, path: Callable[[World], Awaitable[str]] | str, body: Any = None, org: str = "a"
) -> Scenario:
    async def make(w: World) -> Call:
        where = path if isinstance(path, str) else await path(w)
        payload = body(w) if callable(body) else body
        if inspect.isawaitable(payload):
            payload = await payload
        return Call(method, where, await w.person(role, org), payload)

    return make


async def patient_path(w: World) -> str:
    return f"/api/patients/{await w.patient()}"


async def consents_path(w: World) -> str:
    return f"/api/patients/{await w.patient()}/consents"


async def care_team_path(w: World) -> str:
    return f"/api/patients/{await w.patient()}/care-team"


async def members_path(w: World) -> str:
    return f"/api/care-teams/{await w.team()}/members"


async def conversation_path(w: World) -> str:
    return f"/api/conversations/{await w.conversation()}"


async def read_mark_path(w: World) -> str:
    return f"/api/conversations/{await w.conversation()}/read"


async def read_mark_body(w: World) -> dict[str, Any]:
    """A message of the conversation (sent by its member, organization a's care-team member)."""
    status, sent = await w.api.call(
        "POST",
        "/api/conversations/send-message",
        await w.person("care_team_member"),
        json={"conversationId": await w.conversation(), "message": "Read me"},
    )
    assert status == 202, sent
    return {"messageId": sent["id"]}


async def contacts_path(w: World) -> str:
    return f"/api/organizations/{await w.org()}/contacts"


def contact_body(_: World) -> dict[str, Any]:
    return {"phoneNumber": f"+120255501{secrets.randbelow(100):02d}", "name": "Dr. Partner"}


async def disclosures_path(w: World) -> str:
    return f"/api/patients/{await w.patient()}/disclosures"


async def consent_body(w: World) -> dict[str, Any]:
    return {"patientId": await w.patient(), "purpose": "treatment", "organizationId": await w.org("b")}


async def group_body(w: World) -> dict[str, Any]:
    return {"name": f"Group {secrets.token_hex(3)}", "organizationIds": [await w.org("b")]}


async def own_group(w: World, org: str = "a") -> int:
    status, body = await w.api.call(
        "POST", "/api/compliance-groups", await w.person("compliance_officer", org), json=await group_body(w)
    )
    assert status == 201, body
    return int(body["id"])


async def consent_for_own_group(w: World) -> dict[str, Any]:
    return {"patientId": await w.patient(), "purpose": "treatment", "complianceGroupId": await own_group(w)}


async def consent_for_foreign_group(w: World) -> dict[str, Any]:
    group = await own_group(w, "b")
    return {"patientId": await w.patient(), "purpose": "treatment", "complianceGroupId": group}


async def share_path(w: World) -> str:
    return f"/api/compliance-groups/{await own_group(w)}/shares"


async def share_body(w: World) -> dict[str, Any]:
    return {"organizationId": await w.org("b")}


async def on_call_path(w: World) -> str:
    return f"/api/care-teams/{await w.team()}/on-call"


async def shifts_path(w: World) -> str:
    return f"/api/care-teams/{await w.team()}/on-call/shifts"


async def shift_body(w: World) -> dict[str, Any]:
    nurse = await w.person("care_team_member")
    return {
        "userId": nurse.id,
        "startsAt": "2031-03-01T08:00:00+01:00",
        "endsAt": "2031-03-01T20:00:00+01:00",
    }


async def shift_path(w: World) -> str:
    status, body = await w.api.call(
        "POST", await shifts_path(w), await w.person("care_team_member"), json=await shift_body(w)
    )
    assert status == 201, body
    return f"{await shifts_path(w)}/{body['shift']['id']}"


async def away_body(w: World) -> dict[str, Any]:
    return {"delegateId": (await w.person("peer_support")).id}


async def away_path(w: World) -> str:
    nurse = await w.person("care_team_member")
    status, body = await w.api.call("PUT", "/api/auth/away", nurse, json=await away_body(w))
    assert status == 200, body
    return "/api/auth/away"


async def bare_team_body(w: World) -> dict[str, Any]:
    return {"patientId": await w.bare_patient(), "name": "Care team"}


async def add_peer(w: World) -> dict[str, Any]:
    return {"userId": (await w.person("peer_support")).id}


async def add_outsider(w: World) -> dict[str, Any]:
    return {"userId": (await w.person("care_team_member", "b")).id}


async def conversation_with_peer(w: World) -> dict[str, Any]:
    return {
        "title": "Plan",
        "patientId": await w.patient(),
        "memberIds": [(await w.person("peer_support")).id],
    }


async def conversation_with_outsider(w: World) -> dict[str, Any]:
    outsider = await w.person("care_team_member", "b")
    return {"title": "Plan", "patientId": await w.patient(), "memberIds": [outsider.id]}


async def conversation_body(w: World) -> dict[str, Any]:
    return {"title": "Plan", "patientId": await w.patient()}


def account_path(action: str) -> Callable[[World], Awaitable[str]]:
    """An account administration path about the peer support of organization a."""

    async def path(w: World) -> str:
        return f"/api/users/{(await w.person('peer_support')).id}/{action}"

    return path


def account(method: str, action: str, body: Any = None) -> tuple[Scenario, Scenario]:
    return (
        call("admin", method, account_path(action), body),
        call("care_team_member", method, account_path(action), body),
    )


async def message_body(w: World) -> dict[str, Any]:
    return {"conversationId": await w.conversation(), "message": "See you at 3"}


async def urgent_body(w: World) -> dict[str, Any]:
    return {"conversationId": await w.conversation(), "message": "Call me now", "priority": "urgent"}


async def acknowledge_path(w: World) -> str:
    """An urgent message the care-team member of "a" sent (they are on the patient's care team)."""
    status, sent = await w.api.call(
        "POST",
        "/api/conversations/send-message",
        await w.person("care_team_member"),
        json=await urgent_body(w),
    )
    assert status == 202, sent
    return f"/api/messages/{sent['id']}/acknowledge"


async def sent_message(w: World) -> int:
    """A message the care-team member of organization a sent just now."""
    status, sent = await w.api.call(
        "POST",
        "/api/conversations/send-message",
        await w.person("care_team_member"),
        json=await message_body(w),
    )
    assert status == 202, sent
    return int(sent["id"])


async def correct_path(w: World) -> str:
    return f"/api/messages/{await sent_message(w)}/correct"


async def recall_path(w: World) -> str:
    return f"/api/messages/{await sent_message(w)}/recall"


async def attachments_path(w: World) -> str:
    return f"/api/conversations/{await w.conversation()}/attachments"


def pdf_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7\n%%EOF\n", filename="a.pdf", content_type="application/pdf")
    return form


async def legal_record_path(w: World) -> str:
    """The legal record of a message its sender recalled."""
    message_id = await sent_message(w)
    status, body = await w.api.call(
        "POST",
        f"/api/messages/{message_id}/recall",
        await w.person("care_team_member"),
        json={"reason": "wrong patient"},
    )
    assert status == 200, body
    return f"/api/messages/{message_id}/legal-record"


async def hold_body(w: World) -> dict[str, Any]:
    return {"patientId": await w.patient(), "reason": "matter 2026-117"}


async def lift_path(w: World) -> str:
    """A hold compliance officer "a" placed on the patient, to be lifted."""
    status, hold = await w.api.call(
        "POST", "/api/legal-holds", await w.person("compliance_officer"), json=await hold_body(w)
    )
    assert status == 201, hold
    return f"/api/legal-holds/{hold['id']}/lift"


async def contact_path(w: World) -> str:
    """A contact admin "a" listed, to be taken out again."""
    status, contact = await w.api.call(
        "POST", await contacts_path(w), await w.person("admin"), json=contact_body(w)
    )
    assert status == 201, contact
    return f"{await contacts_path(w)}/{contact['id']}"


def new_org(_: World) -> dict[str, Any]:
    return {"name": f"Org {secrets.token_hex(3)}"}


def new_user(_: World) -> dict[str, Any]:
    return _new_user()


#: workflow -> (a request it allows, a request it denies or None where no denial exists).
#: auth.register's denial (self-registration switched off) is in test_auth.py, on its own app;
#: auth.profile is always one's own.
SCENARIOS: dict[str, tuple[Scenario, Scenario | None]] = {
    "auth.login": (login_ok, login_bad),
    "auth.register": (register_ok, None),
    "auth.profile": (call("care_team_member", "GET", "/api/auth/profile"), None),
    "user.create": (
        call("admin", "POST", "/api/users", new_user),
        call("care_team_member", "POST", "/api/users", new_user),
    ),
    "user.list": (call("admin", "GET", "/api/users"), call("care_team_member", "GET", "/api/users")),
    "user.approve": account("POST", "approve"),
    "user.deactivate": account("POST", "deactivate"),
    "user.reactivate": account("POST", "reactivate"),
    "user.change_role": account("PUT", "role", {"role": "care_team_member"}),
    "user.revoke_sessions": account("POST", "sessions/revoke"),
    "user.unlock": account("POST", "unlock"),
    "auth.logout": (call("care_team_member", "POST", "/api/auth/logout"), None),
    "organization.create": (
        call("admin", "POST", "/api/organizations", new_org),
        call("care_team_member", "POST", "/api/organizations", new_org),
    ),
    "organization.list": (
        call("care_team_member", "GET", "/api/organizations"),
        call("auditor", "GET", "/api/organizations"),
    ),
    "compliance_group.create": (
        call("compliance_officer", "POST", "/api/compliance-groups", group_body),
        call("care_team_member", "POST", "/api/compliance-groups", group_body),
    ),
    "compliance_group.list": (
        call("compliance_officer", "GET", "/api/compliance-groups"),
        call("care_team_member", "GET", "/api/compliance-groups"),
    ),
    "compliance_group.share": (
        call("compliance_officer", "POST", share_path, share_body),
        call("admin", "POST", share_path, share_body),
    ),
    "compliance_group.use": (
        call("compliance_officer", "POST", "/api/consents", consent_for_own_group),
        call("compliance_officer", "POST", "/api/consents", consent_for_foreign_group),
    ),
    "consent.create": (
        call("compliance_officer", "POST", "/api/consents", consent_body),
        call("compliance_officer", "POST", "/api/consents", consent_body, org="b"),
    ),
    "consent.list": (call("compliance_officer", "GET", consents_path), call("auditor", "GET", consents_path)),
    "patient.create": (
        call(
            "care_team_member",
            "POST",
            "/api/patients",
            {"firstName": "Jo", "lastName": "Ray", "riskLevel": "low"},
        ),
        call("admin", "POST", "/api/patients", {"firstName": "Jo", "lastName": "Ray", "riskLevel": "low"}),
    ),
    "patient.list": (
        call("care_team_member", "GET", "/api/patients"),
        call("auditor", "GET", "/api/patients"),
    ),
    "patient.read": (
        call("care_team_member", "GET", patient_path),
        call("peer_support", "GET", patient_path),
    ),
    "patient.update": (
        call("care_team_member", "PUT", patient_path, {"riskLevel": "low"}),
        call("peer_support", "PUT", patient_path, {"riskLevel": "low"}),
    ),
    "patient.unmark_part2": (
        call("compliance_officer", "PUT", patient_path, {"part2": False}),
        call("care_team_member", "PUT", patient_path, {"part2": False}),
    ),
    "care_team.create": (
        call("admin", "POST", "/api/care-teams", bare_team_body),
        call("care_team_member", "POST", "/api/care-teams", bare_team_body),
    ),
    "care_team.read": (
        call("care_team_member", "GET", care_team_path),
        call("peer_support", "GET", care_team_path),
    ),
    "care_team.add_member": (
        call("admin", "POST", members_path, add_peer),
        call("peer_support", "POST", members_path, add_peer),
    ),
    "care_team.join": (
        call("admin", "POST", members_path, add_peer),
        call("admin", "POST", members_path, add_outsider),
    ),
    "conversation.create": (
        call("care_team_member", "POST", "/api/conversations", conversation_body),
        call("peer_support", "POST", "/api/conversations", conversation_body),
    ),
    "conversation.join": (
        call("care_team_member", "POST", "/api/conversations", conversation_with_peer),
        call("care_team_member", "POST", "/api/conversations", conversation_with_outsider),
    ),
    "conversation.list": (
        call("care_team_member", "GET", "/api/conversations"),
        call("auditor", "GET", "/api/conversations"),
    ),
    "conversation.read": (
        call("care_team_member", "GET", conversation_path),
        call("peer_support", "GET", conversation_path),
    ),
    # Marking a conversation read is decided as conversation.read too (the part after # names the case).
    "conversation.read#mark": (
        call("care_team_member", "POST", read_mark_path, read_mark_body),
        call("peer_support", "POST", read_mark_path, read_mark_body),
    ),
    "message.send": (
        call("care_team_member", "POST", "/api/conversations/send-message", message_body),
        call("peer_support", "POST", "/api/conversations/send-message", message_body),
    ),
    # Its denial needs a member who is not on the care team: tests/api/test_urgent_messages.py.
    "message.send_urgent": (
        call("care_team_member", "POST", "/api/conversations/send-message", urgent_body),
        None,
    ),
    "message.acknowledge": (
        call("care_team_member", "POST", acknowledge_path),
        call("peer_support", "POST", acknowledge_path),
    ),
    "message.recall": (
        call("care_team_member", "POST", recall_path, {"reason": "wrong patient"}),
        call("compliance_officer", "POST", recall_path, {"reason": "not yours"}, org="b"),
    ),
    "message.correct": (
        call("care_team_member", "POST", correct_path, {"message": "See you at 4"}),
        call("compliance_officer", "POST", correct_path, {"message": "See you at 4"}),
    ),
    # The form is passed as a callable (call() would build it once; a request consumes it).
    "message.attach": (
        call("care_team_member", "POST", attachments_path, lambda w: pdf_form),
        call("auditor", "POST", attachments_path, lambda w: pdf_form),
    ),
    "message.read_recalled": (
        call("compliance_officer", "GET", legal_record_path),
        call("care_team_member", "GET", legal_record_path),
    ),
    "legal_hold.place": (
        call("compliance_officer", "POST", "/api/legal-holds", hold_body),
        call("compliance_officer", "POST", "/api/legal-holds", hold_body, org="b"),
    ),
    "legal_hold.lift": (
        call("compliance_officer", "POST", lift_path, {"reason": "matter closed"}),
        call("care_team_member", "POST", lift_path, {"reason": "matter closed"}),
    ),
    "legal_hold.list": (
        call("compliance_officer", "GET", "/api/legal-holds"),
        call("care_team_member", "GET", "/api/legal-holds"),
    ),
    "audit.read": (
        call("auditor", "GET", "/api/audit-events"),
        call("care_team_member", "GET", "/api/audit-events"),
    ),
    "organization_contact.add": (
        call("admin", "POST", contacts_path, contact_body),
        call("care_team_member", "POST", contacts_path, contact_body),
    ),
    "organization_contact.list": (
        call("admin", "GET", contacts_path),
        call("auditor", "GET", contacts_path),
    ),
    "patient.disclosures": (
        call("compliance_officer", "GET", disclosures_path),
        call("compliance_officer", "GET", disclosures_path, org="b"),
    ),
    "organization_contact.remove": (
        call("admin", "DELETE", contact_path),
        call("admin", "DELETE", contact_path, org="b"),
    ),
    "on_call.read": (
        call("care_team_member", "GET", on_call_path),
        call("auditor", "GET", on_call_path),
    ),
    "on_call.add": (
        call("care_team_member", "POST", shifts_path, shift_body),
        call("admin", "POST", shifts_path, shift_body, org="b"),
    ),
    "on_call.remove": (
        call("admin", "DELETE", shift_path),
        call("admin", "DELETE", shift_path, org="b"),
    ),
    "away.set": (
        call("care_team_member", "PUT", "/api/auth/away", away_body),
        call("auditor", "PUT", "/api/auth/away", away_body),
    ),
    "away.end": (
        call("care_team_member", "DELETE", away_path),
        call("compliance_officer", "DELETE", away_path),
    ),
    "alert_phone.set": (
        call("care_team_member", "PUT", "/api/auth/alert-phone", {"phoneNumber": "+14155550142"}),
        call("auditor", "PUT", "/api/auth/alert-phone", {"phoneNumber": "+14155550142"}),
    ),
}

DENIALS = [w for w, (_, denial) in SCENARIOS.items() if denial is not None]


async def _send(api: Api, c: Call) -> tuple[int, str, Any]:
    rid = f"test-{uuid.uuid4().hex}"
    headers = {"X-Request-ID": rid, **(c.who.auth if c.who else {})}
    if callable(c.json):  # a multipart form, built fresh for each request (a form is sent once)
        resp = await api.client.request(c.method, c.path, data=c.json(), headers=headers)
    else:
        resp = await api.client.request(c.method, c.path, json=c.json, headers=headers)
    return resp.status, rid, await resp.json(content_type=None)


async def _rows(db: asyncpg.Connection, rid: str, workflow: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM audit_events WHERE request_id = $1 AND workflow = $2 ORDER BY id", rid, workflow
    )


def test_every_declared_workflow_has_an_audit_scenario(api_workflows: set[str]) -> None:
    assert api_workflows - set(SCENARIOS) - OTHER_CAPABILITIES == set()


#: Workflows of the capabilities built alongside this one (consent lifecycle, live policy,
#: break-the-glass, SMS): their own test suites drive their endpoints; this table covers the rest.
OTHER_CAPABILITIES = {
    "consent.revoke",
    "policy.read",
    "policy.reload",
    "break_glass.open",
    "break_glass.list",
    "sms.send_full_text",
    "sms.reply",
    # Decided per slice of a listing (own organization's, shared, any); the list's own record names
    # the slices shown (details.shown).
    "organization.read",
    "compliance_group.read",
    # The web console's own workflows: tests/console checks their audit records (allowed and refused).
    "console.sign_in",
    "console.policy.read",
    # The console's test tables and what-if pages (tests/console/test_console_policy_what_if.py).
    "console.policy.tests",
    "console.policy.what_if",
    # The console's audit exports and hash chain (tests/console/test_console_audit_chain.py).
    "audit.export",
    "audit.chain.read",
    "audit.verify",
    "audit.anchor",
    # The console's break-glass review (tests/console/test_console_break_glass.py).
    "break_glass.read",
    "break_glass.review",
    # Four-eyes policy changes (tests/unit/test_workflows_policy_changes.py,
    # tests/integration/test_policy_changes.py, tests/console/test_console_policy_changes.py).
    "policy.change.list",
    "policy.change.read",
    "policy.propose",
    "policy.restore",
    "policy.approve",
    "policy.reject",
    "policy.withdraw",
    # Decided by the escalation scheduler for each person a step alerts, with no request (the service
    # acts): tests/api/test_urgent_messages.py checks each decision's record and the step's own.
    "message.escalate",
}


@pytest.fixture
def api_workflows() -> set[str]:
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "policies" / "workflows.toml").read_text())
    return set(data["workflows"]) | {"auth.login", "auth.register"}


@pytest.mark.parametrize("workflow", list(SCENARIOS))
async def test_a_successful_action_leaves_one_success_record(
    api: Api, db: asyncpg.Connection, workflow: str
) -> None:
    c = await SCENARIOS[workflow][0](World(api))

    status, rid, body = await _send(api, c)

    assert status in (200, 201, 202, 204), body
    [row] = await _rows(db, rid, workflow.split("#")[0])
    assert row["outcome"] == "success"
    assert row["decision"] in ("allow", None)
    assert row["occurred_at"].utcoffset().total_seconds() == 0
    if c.who is not None:
        assert (row["actor_id"], row["actor_role"]) == (c.who.id, c.who.role)
        assert row["organization_id"] == c.who.organization_id
        assert row["matched_rule"].startswith("roles.csv:")
        assert row["policy_version"]
    assert row["source_address"] == "127.0.0.1"


@pytest.mark.parametrize("workflow", DENIALS)
async def test_a_denied_action_leaves_one_denied_record(
    api: Api, db: asyncpg.Connection, workflow: str
) -> None:
    denial = SCENARIOS[workflow][1]
    assert denial is not None
    c = await denial(World(api))

    status, rid, body = await _send(api, c)

    # 404/422: a record (or member) of an organization the caller has no relation to is answered as
    # one that does not exist; the record keeps the real decision and reason.
    assert status in (401, 403, 404, 422), body
    rows = await _rows(db, rid, workflow.split("#")[0])
    [row] = [r for r in rows if r["event"] != "lookup"]
    # Beside a denial answered as not found, the lookup its organization sees (as for a missing id).
    assert [r["reason"] for r in rows if r["event"] == "lookup"] in ([], ["not_found"])
    assert row["outcome"] == "denied"
    if status != 401:
        assert row["decision"] == "deny"
        assert row["reason"] == body.get("reason", row["reason"])
        assert row["reason"] not in (None, "not_found")
        assert row["policy_version"]


@pytest.mark.parametrize("workflow", list(SCENARIOS))
async def test_a_failed_action_leaves_one_failure_record(
    api: Api, db: asyncpg.Connection, workflow: str
) -> None:
    c = await SCENARIOS[workflow][0](World(api))

    name = workflow.split("#")[0]
    async with audit_refuses(db, f"NEW.outcome = 'success' AND NEW.workflow = '{name}'"):
        status, rid, body = await _send(api, c)

    assert status == 503, body
    assert body["code"] == "service_unavailable"
    [row] = await _rows(db, rid, name)
    assert row["outcome"] == "failure"
    assert json.loads(row["details"])["ended_by"] == "service_unavailable"


# --- fail closed ------------------------------------------------------------------------------------


async def test_when_no_audit_record_can_be_written_a_new_patient_is_not_stored(
    api: Api, db: asyncpg.Connection
) -> None:
    nurse = await World(api).person("care_team_member")
    last_name = f"Unaudited{secrets.token_hex(3)}"

    async with audit_refuses(db, "true"):
        status, _, body = await _send(
            api,
            Call(
                "POST", "/api/patients", nurse, {"firstName": "No", "lastName": last_name, "riskLevel": "low"}
            ),
        )

    assert status == 503
    assert body["code"] == "service_unavailable"
    assert last_name not in json.dumps(body)
    assert await db.fetchval("SELECT count(*) FROM patients WHERE last_name = $1", last_name) == 0
    assert await db.fetchval("SELECT count(*) FROM care_teams t JOIN patients p ON p.id = t.patient_id"
                             " WHERE p.last_name = $1", last_name) == 0  # fmt: skip


async def test_when_no_audit_record_can_be_written_no_patient_data_is_returned(
    api: Api, db: asyncpg.Connection
) -> None:
    w = World(api)
    patient = await w.patient()
    nurse = await w.person("care_team_member")

    async with audit_refuses(db, "NEW.workflow = 'patient.read'"):
        status, rid, body = await _send(api, Call("GET", f"/api/patients/{patient}", nurse))

    assert status == 503
    assert "Smith" not in json.dumps(body)
    assert "firstName" not in body
    assert await _rows(db, rid, "patient.read") == []


async def test_when_no_audit_record_can_be_written_a_message_is_neither_stored_nor_queued(
    api: Api, db: asyncpg.Connection
) -> None:
    w = World(api)
    conversation = await w.conversation()
    nurse = await w.person("care_team_member")
    text_ = f"unaudited {secrets.token_hex(4)}"

    async with audit_refuses(db, "NEW.workflow = 'message.send'"):
        status, _, _ = await _send(
            api,
            Call(
                "POST",
                "/api/conversations/send-message",
                nurse,
                {"conversationId": conversation, "message": text_},
            ),
        )

    assert status == 503
    assert await db.fetchval("SELECT count(*) FROM messages WHERE body = $1", text_) == 0
    assert await db.fetchval(
        "SELECT count(*) FROM outbox WHERE conversation_id = $1 AND kind = 'send_message'", conversation
    ) == 0  # fmt: skip
