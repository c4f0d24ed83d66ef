"""The cross-tenant matrix: every id-taking endpoint, every role, own and other organization.

Generated from the route table the app serves (``endpoints_key``): every endpoint that takes an id in
its path, body or query must be classified in :data:`PROBES`, so a new endpoint fails
:func:`test_every_id_taking_endpoint_is_classified` until it is covered here.

For each probe (one id of one endpoint), each role, the caller of organization B is given a record
of organization A, to which B has no relation, and then an id nobody has: the two answers must be
the same, status and body (the request id aside), and neither may carry anything of A's. The
caller of organization A given the same record of A must never be told it does not exist (a denial
there is a 403 with its reason) and never get a 5xx. The app and the two organizations are built once
for the module.

Longer than 400 lines because ``PROBES`` is one table, an entry per id-taking endpoint, which
:func:`test_every_id_taking_endpoint_is_classified` checks as a whole against the route table; the
two tenants it probes are built once for the module, beside it.
"""

from __future__ import annotations

import itertools
import json
import secrets
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from handlers.app import create_app
from handlers.keys import endpoints_key
from handlers.routing import Endpoint
from tests.api.conftest import Api, Person
from tests.conftest import app_settings
from tests.support.api import ServedTestServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROLES = ("peer_support", "care_team_member", "admin", "compliance_officer", "auditor")
MISSING = 2**31 - 1  # a valid id nobody has
PHONE = "+12025550167"


@dataclass
class Tenant:
    """One organization's people and records (the people's roles are :data:`ROLES`)."""

    name: str
    people: dict[str, Person]
    ids: dict[str, int]
    secrets: tuple[str, ...]  # strings only this organization's data contains


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)


#: A probe builds the request that puts ``record_id`` (of kind ``kind``) in one id field; the rest of
#: the request uses the caller's own organization's records (``own``).
Build = Callable[[Tenant, int], Request]


CONCEALED = "concealed"
#: Organizations are a directory, not a tenant's record: compliance officers list them all (and name
#: them as consent recipients), so an organization id is not concealed; the probe still checks that
#: no data of the other organization comes back and nothing fails.
DIRECTORY = "directory"
#: A search filter (audit events): the answer holds only the caller's organization's own records
#: whatever the id, which the probe checks item by item.
FILTER = "filter"


@dataclass(frozen=True)
class Probe:
    kind: str  # patient, bg_patient, conversation, message, care_team, consent, group, user, organization,
    # break_glass (a session), policy_proposal, legal_hold, attached_message, attachment,
    # recalled_message and recalled_attachment (a file of a recalled message)
    build: Build
    mode: str = CONCEALED


def _p(method: str, path: str, json_: Any = None, **params: str) -> Request:
    return Request(method, path, json_, dict(params))


def _pdf() -> aiohttp.FormData:
    """A multipart upload of a small PDF (a fresh form each time: a form is sent once)."""
    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.7\n%%EOF\n", filename="matrix.pdf", content_type="application/pdf")
    return form


PROBES: dict[tuple[str, str], dict[str, Probe]] = {
    ("POST", "/api/users"): {
        "organizationId": Probe(
            "organization", lambda own, i: _p("POST", "/api/users", _new_user(i)), mode=DIRECTORY
        ),
    },
    ("POST", "/api/compliance-groups"): {
        "organizationIds[0]": Probe(
            "organization",
            lambda own, i: _p(
                "POST", "/api/compliance-groups", {"name": _unique("G"), "organizationIds": [i]}
            ),
            mode=DIRECTORY,
        ),
    },
    ("POST", "/api/compliance-groups/{id}/shares"): {
        "id": Probe(
            "group",
            lambda own, i: _p(
                "POST", f"/api/compliance-groups/{i}/shares", {"organizationId": own.ids["neutral"]}
            ),
        ),
        "organizationId": Probe(
            "organization",
            lambda own, i: _p(
                "POST", f"/api/compliance-groups/{own.ids['group']}/shares", {"organizationId": i}
            ),
            mode=DIRECTORY,
        ),
    },
    ("POST", "/api/consents"): {
        "patientId": Probe(
            "patient",
            lambda own, i: _p(
                "POST",
                "/api/consents",
                {"patientId": i, "purpose": "treatment", "organizationId": own.ids["neutral"]},
            ),
        ),
        "complianceGroupId": Probe(
            "group",
            lambda own, i: _p(
                "POST",
                "/api/consents",
                {"patientId": own.ids["patient"], "purpose": "treatment", "complianceGroupId": i},
            ),
        ),
        "organizationId": Probe(
            "organization",
            # A patient no other probe uses: this consent relates the named organization to it.
            lambda own, i: _p(
                "POST",
                "/api/consents",
                {"patientId": own.ids["spare_patient"], "purpose": "treatment", "organizationId": i},
            ),
            mode=DIRECTORY,
        ),
    },
    ("GET", "/api/patients/{patientId}/consents"): {
        "patientId": Probe("patient", lambda own, i: _p("GET", f"/api/patients/{i}/consents")),
    },
    ("GET", "/api/patients/{id}"): {
        "id": Probe("patient", lambda own, i: _p("GET", f"/api/patients/{i}")),
    },
    ("PUT", "/api/patients/{id}"): {
        "id": Probe("patient", lambda own, i: _p("PUT", f"/api/patients/{i}", {"riskLevel": "medium"})),
    },
    ("POST", "/api/care-teams"): {
        "patientId": Probe("patient", lambda own, i: _p("POST", "/api/care-teams", {"patientId": i})),
    },
    ("GET", "/api/patients/{patientId}/care-team"): {
        "patientId": Probe("patient", lambda own, i: _p("GET", f"/api/patients/{i}/care-team")),
    },
    ("POST", "/api/care-teams/{id}/members"): {
        "id": Probe(
            "care_team",
            lambda own, i: _p("POST", f"/api/care-teams/{i}/members", {"userId": own.ids["user"]}),
        ),
        "userId": Probe(
            "user",
            lambda own, i: _p("POST", f"/api/care-teams/{own.ids['care_team']}/members", {"userId": i}),
        ),
    },
    ("POST", "/api/conversations"): {
        "patientId": Probe(
            "patient", lambda own, i: _p("POST", "/api/conversations", {"title": "Matrix", "patientId": i})
        ),
        "memberIds[0]": Probe(
            "user",
            lambda own, i: _p(
                "POST",
                "/api/conversations",
                {"title": "Matrix", "patientId": own.ids["patient"], "memberIds": [i]},
            ),
        ),
        # The on-call role of a care team: only the conversation's patient's team is accepted.
        "onCallOf": Probe(
            "care_team",
            lambda own, i: _p(
                "POST",
                "/api/conversations",
                {"title": "Matrix", "patientId": own.ids["patient"], "onCallOf": i},
            ),
        ),
        "externalMembers[0].organizationId": Probe(
            "organization",
            lambda own, i: _p(
                "POST",
                "/api/conversations",
                {
                    "title": "Matrix",
                    "patientId": own.ids["patient"],
                    "externalMembers": [{"phoneNumber": PHONE, "name": "Dr. External", "organizationId": i}],
                },
            ),
            mode=DIRECTORY,
        ),
    },
    # The on-call roster of a care team: another organization's team (or shift) answers as none.
    ("GET", "/api/care-teams/{id}/on-call"): {
        "id": Probe("care_team", lambda own, i: _p("GET", f"/api/care-teams/{i}/on-call")),
    },
    ("POST", "/api/care-teams/{id}/on-call/shifts"): {
        "id": Probe(
            "care_team",
            lambda own, i: _p("POST", f"/api/care-teams/{i}/on-call/shifts", _shift_body(own.ids["user"])),
        ),
        "userId": Probe(
            "user",
            lambda own, i: _p(
                "POST", f"/api/care-teams/{own.ids['care_team']}/on-call/shifts", _shift_body(i)
            ),
        ),
    },
    ("DELETE", "/api/care-teams/{id}/on-call/shifts/{shiftId}"): {
        "id": Probe(
            "care_team",
            lambda own, i: _p("DELETE", f"/api/care-teams/{i}/on-call/shifts/{own.ids['shift']}"),
        ),
        "shiftId": Probe(
            "shift",
            lambda own, i: _p("DELETE", f"/api/care-teams/{own.ids['care_team']}/on-call/shifts/{i}"),
        ),
    },
    ("PUT", "/api/auth/away"): {
        "delegateId": Probe("user", lambda own, i: _p("PUT", "/api/auth/away", {"delegateId": i})),
    },
    ("POST", "/api/conversations/send-message"): {
        "conversationId": Probe(
            "conversation",
            lambda own, i: _p(
                "POST", "/api/conversations/send-message", {"conversationId": i, "message": "hi"}
            ),
        ),
    },
    ("GET", "/api/conversations/{id}"): {
        "id": Probe("conversation", lambda own, i: _p("GET", f"/api/conversations/{i}")),
    },
    # Marking read: another organization's conversation answers as none; another's message as a
    # message that is not this conversation's (422 naming messageId, the same as for no message).
    ("POST", "/api/conversations/{id}/read"): {
        "id": Probe(
            "conversation",
            lambda own, i: _p("POST", f"/api/conversations/{i}/read", {"messageId": own.ids["message"]}),
        ),
        "messageId": Probe(
            "message",
            lambda own, i: _p("POST", f"/api/conversations/{own.ids['conversation']}/read", {"messageId": i}),
        ),
    },
    ("GET", "/api/messages/{id}"): {
        "id": Probe("message", lambda own, i: _p("GET", f"/api/messages/{i}")),
    },
    # The tenant's message is routine: its own care team is answered 409 (never 404).
    ("POST", "/api/messages/{id}/acknowledge"): {
        "id": Probe("message", lambda own, i: _p("POST", f"/api/messages/{i}/acknowledge")),
    },
    ("POST", "/api/messages/{id}/recall"): {
        "id": Probe("message", lambda own, i: _p("POST", f"/api/messages/{i}/recall", {"reason": "wrong"})),
    },
    ("POST", "/api/messages/{id}/correct"): {
        "id": Probe("message", lambda own, i: _p("POST", f"/api/messages/{i}/correct", {"message": "fixed"})),
    },
    # Attachments: the upload is multipart (its file a one-page PDF); the download answers the bytes.
    ("POST", "/api/conversations/{id}/attachments"): {
        "id": Probe("conversation", lambda own, i: _p("POST", f"/api/conversations/{i}/attachments", _pdf())),
    },
    ("GET", "/api/messages/{id}/attachments/{attachmentId}"): {
        "id": Probe(
            "attached_message",
            lambda own, i: _p("GET", f"/api/messages/{i}/attachments/{own.ids['attachment']}"),
        ),
        "attachmentId": Probe(
            "attachment",
            lambda own, i: _p("GET", f"/api/messages/{own.ids['attached_message']}/attachments/{i}"),
        ),
    },
    # The legal record: of a message recalled when the tenant was built (an unrecalled one answers 404
    # to its own compliance officer too, so it would prove nothing).
    ("GET", "/api/messages/{id}/legal-record"): {
        "id": Probe("recalled_message", lambda own, i: _p("GET", f"/api/messages/{i}/legal-record")),
    },
    # A recalled message's file, read back from the legal record (recalled when the tenant is built).
    ("GET", "/api/messages/{id}/legal-record/attachments/{attachmentId}"): {
        "id": Probe(
            "recalled_message",
            lambda own, i: _p(
                "GET", f"/api/messages/{i}/legal-record/attachments/{own.ids['recalled_attachment']}"
            ),
        ),
        "attachmentId": Probe(
            "recalled_attachment",
            lambda own, i: _p(
                "GET", f"/api/messages/{own.ids['recalled_message']}/legal-record/attachments/{i}"
            ),
        ),
    },
    # Legal holds: on a patient or a conversation of the officer's own organization only.
    ("POST", "/api/legal-holds"): {
        "patientId": Probe(
            "patient", lambda own, i: _p("POST", "/api/legal-holds", {"patientId": i, "reason": "m"})
        ),
        "conversationId": Probe(
            "conversation",
            lambda own, i: _p("POST", "/api/legal-holds", {"conversationId": i, "reason": "m"}),
        ),
    },
    ("POST", "/api/legal-holds/{id}/lift"): {
        "id": Probe(
            "legal_hold", lambda own, i: _p("POST", f"/api/legal-holds/{i}/lift", {"reason": "done"})
        ),
    },
    ("GET", "/api/audit-events"): {
        "patientId": Probe(
            "patient", lambda own, i: _p("GET", "/api/audit-events", patientId=str(i)), mode=FILTER
        ),
        "actorId": Probe("user", lambda own, i: _p("GET", "/api/audit-events", actorId=str(i)), mode=FILTER),
        "organizationId": Probe(
            "organization",
            lambda own, i: _p("GET", "/api/audit-events", organizationId=str(i)),
            mode=DIRECTORY,
        ),
    },
    ("GET", "/api/patients/{patientId}/disclosures"): {
        "patientId": Probe("patient", lambda own, i: _p("GET", f"/api/patients/{i}/disclosures")),
    },
    ("POST", "/api/consents/{consentId}/revoke"): {
        "consentId": Probe(
            "consent", lambda own, i: _p("POST", f"/api/consents/{i}/revoke", {"reason": "Matrix check."})
        ),
    },
    # A contact directory is one organization's own: another's answers as one that does not exist.
    ("POST", "/api/organizations/{organizationId}/contacts"): {
        "organizationId": Probe(
            "organization",
            lambda own, i: _p(
                "POST", f"/api/organizations/{i}/contacts", {"phoneNumber": PHONE, "name": "Dr. External"}
            ),
        ),
    },
    ("GET", "/api/organizations/{organizationId}/contacts"): {
        "organizationId": Probe("organization", lambda own, i: _p("GET", f"/api/organizations/{i}/contacts")),
    },
    # Account administration: another organization's account answers as one that does not exist.
    **{
        ("POST", f"/api/users/{{id}}/{action}"): {
            "id": Probe("account", lambda own, i, action=action: _p("POST", f"/api/users/{i}/{action}")),
        }
        for action in ("approve", "deactivate", "reactivate", "sessions/revoke", "unlock")
    },
    ("PUT", "/api/users/{id}/role"): {
        "id": Probe("account", lambda own, i: _p("PUT", f"/api/users/{i}/role", {"role": "peer_support"})),
    },
    ("DELETE", "/api/organizations/{organizationId}/contacts/{contactId}"): {
        "organizationId": Probe(
            "organization",
            lambda own, i: _p("DELETE", f"/api/organizations/{i}/contacts/{own.ids['contact']}"),
        ),
        "contactId": Probe(
            "contact",
            lambda own, i: _p("DELETE", f"/api/organizations/{own.ids['organization']}/contacts/{i}"),
        ),
    },
    # A break-the-glass session is reviewed by its own organization's officers only.
    ("POST", "/api/break-glass/{sessionId}/review"): {
        "sessionId": Probe(
            "break_glass",
            lambda own, i: _p("POST", f"/api/break-glass/{i}/review", {"note": "Matrix review."}),
        ),
    },
    ("POST", "/api/patients/{patientId}/break-glass"): {
        # Its own patient: a session, once open, relates the person to that patient.
        "patientId": Probe(
            "bg_patient",
            lambda own, i: _p(
                "POST", f"/api/patients/{i}/break-glass", {"reason": "Matrix: unresponsive in ED"}
            ),
        ),
    },
    # Policy proposals are the deployment's, not a tenant's: every compliance officer sees every one,
    # and only the governing organization's decide them (policies/README.md "Four eyes"), so they
    # are not concealed. The matrix's are the governing organization's, withdrawn at once: no probe
    # can apply one (the app reads the repository's policy files).
    **{
        ("POST" if action else "GET", f"/api/policy/proposals/{{proposalId}}{action}"): {
            "proposalId": Probe(
                "policy_proposal",
                lambda own, i, action=action, body=body: _p(
                    "POST" if action else "GET", f"/api/policy/proposals/{i}{action}", body
                ),
                mode=DIRECTORY,
            )
        }
        for action, body in (
            ("", None),
            ("/approve", {"note": ""}),
            ("/reject", {"note": "Matrix"}),
            ("/withdraw", {"note": ""}),
            ("/restore", {"version": "before", "reason": "Matrix"}),
        )
    },
}


#: Each shift the matrix makes gets a window of its own (a day apart), so none overlaps another.
_SHIFT_DAYS = itertools.count()


def _shift_body(user_id: int) -> dict[str, Any]:
    start = datetime(2031, 1, 1, 8, tzinfo=UTC) + timedelta(days=next(_SHIFT_DAYS))
    return {
        "userId": user_id,
        "startsAt": start.isoformat(),
        "endsAt": (start + timedelta(hours=1)).isoformat(),
    }


async def _new_shift(api: Api, who: Person, care_team_id: int) -> int:
    """A shift of the care team, for ``who`` (on the team), on a day of its own."""
    status, body = await api.call(
        "POST", f"/api/care-teams/{care_team_id}/on-call/shifts", who, json=_shift_body(who.id)
    )
    assert status == 201, body
    return int(body["shift"]["id"])


def _unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(5)}"


def _new_user(organization_id: int) -> dict[str, Any]:
    return {
        "email": f"{_unique('matrix.')}@example.org",
        "password": "correct horse battery",
        "firstName": "Matrix",
        "lastName": "Person",
        "role": "care_team_member",
        "organizationId": organization_id,
    }


# --- which endpoints take ids ---------------------------------------------------------------------


def _id_fields(model: type[BaseModel] | None, prefix: str = "") -> Iterator[str]:
    """The JSON names of a model's id fields (``...Id``/``...Ids``), nested models included."""
    if model is None:
        return
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if name.endswith("_id"):
            yield f"{prefix}{alias}"
        elif name.endswith("_ids"):
            yield f"{prefix}{alias}[0]"
        for arg in _flatten(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _id_fields(arg, f"{prefix}{alias}[0].")


def _flatten(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _flatten(arg)


def id_fields(ep: Endpoint) -> set[str]:
    path = {part[1:-1] for part in ep.path.split("/") if part.startswith("{")}
    return path | set(_id_fields(ep.request)) | set(_id_fields(ep.query))


def _routes() -> list[Endpoint]:
    from handlers.app import default_endpoints

    # The table create_app serves by default; the test below also checks it against the built app.
    return default_endpoints()


def _cells(*, concealed_only: bool = False) -> Iterator[Any]:
    for (method, path), probes in PROBES.items():
        for name, probe in probes.items():
            if concealed_only and probe.mode == DIRECTORY:
                continue
            for role in ROLES:
                yield pytest.param(method, path, name, role, id=f"{method} {path} [{name}] {role}")


# --- the world, built once -------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def matrix(database_url: str) -> AsyncIterator[tuple[Api, dict[str, Tenant]]]:
    async with TestClient(ServedTestServer(create_app(app_settings(database_url)))) as client:
        api = Api(client)
        neutral = await api.organization()  # a third organization, with nobody in it
        tenants = {name: await _tenant(api, name, neutral) for name in ("a", "b")}
        yield api, tenants


async def _tenant(api: Api, name: str, neutral: int) -> Tenant:
    org = await api.organization()
    people = {role: await api.person(role, org) for role in ROLES}
    colleague = await api.person("care_team_member", org)
    peer, officer = people["peer_support"], people["compliance_officer"]
    marks = {k: _unique(k) for k in ("first", "last", "title", "text", "group")}
    patient = await api.patient(peer, firstName=marks["first"], lastName=marks["last"])
    bg_patient = await api.patient(peer, firstName=marks["first"], lastName=marks["last"])
    spare_patient = await api.patient(peer, firstName=marks["first"], lastName=marks["last"])
    _, team = await api.call("GET", f"/api/patients/{patient}/care-team", peer)
    conversation = await api.conversation(peer, patient, people["care_team_member"].id, title=marks["title"])
    status, message = await api.call(
        "POST",
        "/api/conversations/send-message",
        peer,
        json={"conversationId": conversation["id"], "message": marks["text"]},
    )
    assert status == 202, message
    status, attached = await api.call(
        "POST", f"/api/conversations/{conversation['id']}/attachments", peer, data=_pdf()
    )
    assert status == 202, attached
    status, recalled = await api.call(
        "POST", f"/api/conversations/{conversation['id']}/attachments", peer, data=_pdf()
    )
    assert status == 202, recalled
    status, body = await api.call(
        "POST", f"/api/messages/{recalled['id']}/recall", peer, json={"reason": marks["text"]}
    )
    assert status == 200, body
    status, group = await api.call(
        "POST", "/api/compliance-groups", officer, json={"name": marks["group"], "organizationIds": [neutral]}
    )
    assert status == 201, group
    consent = await api.consent(officer, patient, organizationId=neutral)
    contact = await _new_contact(api, people["admin"], org)
    clinician = await api.person("care_team_member", org)  # of no care team: breaks the glass
    status, session = await api.call(
        "POST",
        f"/api/patients/{spare_patient}/break-glass",
        clinician,
        json={"reason": "Matrix: ED emergency"},
    )
    assert status == 201, session
    shift = await _new_shift(api, peer, team["id"])
    # Only the governing organization's officers propose (policies/README.md "Four eyes").
    governor = await api.person("compliance_officer", await api.governing_organization())
    status, proposal = await api.call(
        "POST",
        "/api/policy/proposals",
        governor,
        json={"file": "sms.toml", "content": "", "reason": "Matrix"},
    )
    assert status == 201, proposal
    status, withdrawn = await api.call(
        "POST", f"/api/policy/proposals/{proposal['id']}/withdraw", governor, json={}
    )
    assert status == 200, withdrawn
    status, hold = await api.call(
        "POST", "/api/legal-holds", officer, json={"patientId": patient, "reason": "Matrix matter"}
    )
    assert status == 201, hold
    ids = {
        "organization": org,
        "neutral": neutral,
        "patient": patient,
        "bg_patient": bg_patient,
        "spare_patient": spare_patient,
        "care_team": team["id"],
        "conversation": conversation["id"],
        "message": message["id"],
        "attached_message": attached["id"],
        "attachment": attached["attachments"][0]["id"],
        "recalled_message": recalled["id"],
        "recalled_attachment": recalled["attachments"][0]["id"],
        "group": group["id"],
        "consent": consent["id"],
        "user": colleague.id,
        "contact": contact,
        "break_glass": session["id"],
        "shift": shift,
        "policy_proposal": proposal["id"],
        "legal_hold": hold["id"],
        # An account the administration probes act on (a fresh one for the own organization's check).
        "account": (await api.person("care_team_member", org)).id,
    }
    return Tenant(name, people, ids, tuple(marks.values()))


#: Directory numbers are unique per organization: each new contact takes the next one.
_CONTACT_NUMBERS = itertools.count()


async def _new_contact(api: Api, admin: Person, organization_id: int) -> int:
    """A number in the organization's contact directory (numbers differ: a removal test takes one)."""
    status, contact = await api.call(
        "POST",
        f"/api/organizations/{organization_id}/contacts",
        admin,
        json={"phoneNumber": f"+120255501{next(_CONTACT_NUMBERS) % 100:02d}", "name": "Dr. External"},
    )
    assert status == 201, contact
    return int(contact["id"])


# --- the tests -------------------------------------------------------------------------------------


async def test_every_id_taking_endpoint_is_classified(matrix: tuple[Api, dict[str, Tenant]]) -> None:
    api, _ = matrix
    served = api.app[endpoints_key]
    assert [(e.method, e.path) for e in served] == [(e.method, e.path) for e in _routes()]
    unclassified = {
        f"{ep.method} {ep.path}: {sorted(fields - set(PROBES.get((ep.method, ep.path), {})))}"
        for ep in served
        if not ep.public and (fields := id_fields(ep)) - set(PROBES.get((ep.method, ep.path), {}))
    }
    assert unclassified == set(), "classify these id fields in PROBES"
    stale = set(PROBES) - {(e.method, e.path) for e in served}
    assert stale == set()


async def _answer(api: Api, who: Person, req: Request) -> tuple[int, dict[str, Any]]:
    if isinstance(req.json, aiohttp.FormData):
        status, body = await api.call(req.method, req.path, who, data=req.json, params=req.params)
    elif "/attachments/" in req.path:  # a download answers the file's bytes, a refusal problem+json
        resp = await api.client.request(req.method, req.path, headers=who.auth, params=req.params)
        problem = resp.content_type == "application/problem+json"
        status, body = resp.status, (await resp.json(content_type=None) if problem else {"file": "bytes"})
    else:
        status, body = await api.call(req.method, req.path, who, json=req.json, params=req.params)
    assert status < 500, body
    return status, {k: v for k, v in (body or {}).items() if k != "requestId"}


@pytest.mark.parametrize(("method", "path", "field_", "role"), list(_cells()))
async def test_an_unrelated_record_answers_like_a_nonexistent_one_and_own_records_are_never_hidden(
    matrix: tuple[Api, dict[str, Tenant]], method: str, path: str, field_: str, role: str
) -> None:
    api, tenants = matrix
    a, b = tenants["a"], tenants["b"]
    probe = PROBES[(method, path)][field_]
    outsider = b.people[role]

    # Organization B's person, given organization A's record, and given an id nobody has.
    status, body = await _answer(api, outsider, probe.build(b, a.ids[probe.kind]))
    missing_status, missing_body = await _answer(api, outsider, probe.build(b, MISSING))

    leaked = [s for s in a.secrets if s in json.dumps(body)]
    assert leaked == [], f"organization A's data reached organization B: {body}"
    if probe.mode == CONCEALED:
        assert (status, body) == (missing_status, missing_body)
    if probe.mode == FILTER and status == 200:
        assert {item["organizationId"] for item in body["items"]} <= {b.ids["organization"]}

    # Organization A's person, given A's own record: denied with a reason, never "no such record".
    if probe.kind == "account":  # deactivating or re-roling may succeed: on an account of its own
        fresh = await api.person("care_team_member", a.ids["organization"])
        a = Tenant(a.name, a.people, {**a.ids, "account": fresh.id}, a.secrets)
    if method == "DELETE":  # a removal may succeed: it gets a record of its own, the others stay
        a = Tenant(
            a.name,
            a.people,
            {
                **a.ids,
                "contact": await _new_contact(api, a.people["admin"], a.ids["organization"]),
                "shift": await _new_shift(api, a.people["peer_support"], a.ids["care_team"]),
            },
            a.secrets,
        )
    own_status, own_body = await _answer(api, a.people[role], probe.build(a, a.ids[probe.kind]))
    if probe.mode == CONCEALED:
        assert own_status != 404, own_body
        if own_status == 403:
            assert own_body["reason"], own_body


async def test_a_session_on_another_organizations_patient_is_reviewed_by_each_organization_alone(
    matrix: tuple[Api, dict[str, Tenant]],
) -> None:
    """A session concerns two organizations when B's clinician breaks the glass on A's patient
    (under A's consent for treatment): each reviews it on its own, the clinician's first closing
    nothing for the patient's, and neither's officers read the other's note."""
    api, tenants = matrix
    a, b = tenants["a"], tenants["b"]
    patient = await api.patient(a.people["peer_support"])
    await api.consent(
        a.people["compliance_officer"], patient, organizationId=b.ids["organization"], scope=["read"]
    )
    clinician = await api.person("care_team_member", b.ids["organization"])
    status, session = await api.call(
        "POST", f"/api/patients/{patient}/break-glass", clinician, json={"reason": "Matrix: ED, no history"}
    )
    assert status == 201, session
    notes = {t.name: _unique(f"review by {t.name}") for t in (a, b)}

    reviews = [
        await api.call(
            "POST",
            f"/api/break-glass/{session['id']}/review",
            t.people["compliance_officer"],
            json={"note": notes[t.name]},
        )
        for t in (b, a)
    ]

    assert [status for status, _ in reviews] == [200, 200], reviews
    for t, other in ((a, b), (b, a)):
        status, page = await api.call("GET", "/api/break-glass", t.people["compliance_officer"])
        assert status == 200, page
        [listed] = [s for s in page["items"] if s["id"] == session["id"]]
        assert (listed["reviewedBy"], listed["reviewNote"]) == (
            t.people["compliance_officer"].id,
            notes[t.name],
        )
        assert notes[other.name] not in json.dumps(page)


#: What differs between two records of the same answer whatever the record probed: when, which
#: request, and the chain position.
_PER_REQUEST = ("id", "occurredAt", "requestId", "chainSeq", "chainHash")


async def _trail_of(api: Api, tenant: Tenant, actor: Person, after: int) -> tuple[list[dict[str, Any]], int]:
    """What the actor's organization's own audit search shows of the actor's records after id
    ``after`` (read by a colleague who may search, so the reading adds nothing to it), and the last id."""
    reader = tenant.people["auditor" if actor.role != "auditor" else "compliance_officer"]
    items: list[dict[str, Any]] = []
    while True:
        params = {"actorId": str(actor.id), "limit": "1000", **({"cursor": str(after)} if after else {})}
        status, page = await api.call("GET", "/api/audit-events", reader, params=params)
        assert status == 200, page
        items += page["items"]
        after = items[-1]["id"] if items else after
        if page.get("nextCursor") is None:
            return items, after


def _differences(
    other: list[dict[str, Any]], probed: int | dict[int, int], missing: list[dict[str, Any]]
) -> list[tuple[str, Any, Any]]:
    """How two trails differ, field by field, but for what differs per request and for the ids the
    client sent (``probed`` in the one, :data:`MISSING` in the other; or each key of ``probed`` in
    the one and its value in the other)."""
    swapped = probed if isinstance(probed, dict) else {probed: MISSING}
    sent = {pair for one, two in swapped.items() for pair in ((one, two), (str(one), str(two)))}
    if len(other) != len(missing):
        return [("records", other, missing)]
    found = []
    for one, two in zip(other, missing, strict=True):
        flat = [
            (key, one.get(key), two.get(key))
            for key in sorted(set(one) | set(two))
            if key not in (*_PER_REQUEST, "details")
        ] + [
            (f"details.{key}", one["details"].get(key), two["details"].get(key))
            for key in sorted(set(one["details"]) | set(two["details"]))
        ]
        found += [(key, x, y) for key, x, y in flat if x != y and (x, y) not in sent]
    return found


#: The last record id of each actor's trail the test below has read (each starts at 0).
_TRAIL_READ: dict[int, int] = {}


@pytest.mark.parametrize(("method", "path", "field_", "role"), list(_cells(concealed_only=True)))
async def test_an_unrelated_records_probe_leaves_the_same_trail_as_a_nonexistent_ones(
    matrix: tuple[Api, dict[str, Tenant]], method: str, path: str, field_: str, role: str
) -> None:
    """Organization B's auditors read their own organization's trail: what B's person's probe of A's
    record left there must be what a probe of an id nobody has leaves (as many records, the same
    fields), or the trail tells which of A's ids exist and what they are about."""
    api, tenants = matrix
    a, b = tenants["a"], tenants["b"]
    probe = PROBES[(method, path)][field_]  # a directory's ids are not concealed: not among the cells
    outsider = b.people[role]
    _, last = await _trail_of(api, b, outsider, _TRAIL_READ.get(outsider.id, 0))

    await _answer(api, outsider, probe.build(b, a.ids[probe.kind]))
    other, last = await _trail_of(api, b, outsider, last)
    await _answer(api, outsider, probe.build(b, MISSING))
    missing, _TRAIL_READ[outsider.id] = await _trail_of(api, b, outsider, last)

    assert other, "the probe is on record"
    assert _differences(other, a.ids[probe.kind], missing) == []


@pytest.mark.parametrize("role", ROLES)
async def test_a_conversation_naming_several_of_another_organizations_people_leaves_a_missing_ids_trail(
    matrix: tuple[Api, dict[str, Tenant]], role: str
) -> None:
    """The probe above names one of A's people as a member; a conversation may name several, each
    refused on its own: every one of them must be concealed, in the answer and in B's trail."""
    api, tenants = matrix
    a, b = tenants["a"], tenants["b"]
    theirs = [a.people[r].id for r in ("care_team_member", "admin", "auditor")]
    nobodys = [MISSING - n for n in range(len(theirs))]
    outsider = b.people[role]

    def create(members: list[int]) -> Request:
        body = {"title": "Matrix", "patientId": b.ids["patient"], "memberIds": [b.ids["user"], *members]}
        return _p("POST", "/api/conversations", body)

    _, last = await _trail_of(api, b, outsider, _TRAIL_READ.get(outsider.id, 0))
    other = await _answer(api, outsider, create(theirs))
    other_trail, last = await _trail_of(api, b, outsider, last)
    missing = await _answer(api, outsider, create(nobodys))
    missing_trail, _TRAIL_READ[outsider.id] = await _trail_of(api, b, outsider, last)

    assert other == missing
    assert other_trail, "the refusal is on record"
    assert _differences(other_trail, dict(zip(theirs, nobodys, strict=True)), missing_trail) == []


@pytest.mark.parametrize("role", ROLES)
async def test_another_organizations_hold_on_a_conversation_is_lifted_as_a_nonexistent_one(
    matrix: tuple[Api, dict[str, Tenant]], role: str
) -> None:
    """The lift probe above names a hold on a patient; a hold on a conversation finds its patient
    through the conversation, and must be concealed the same way."""
    api, tenants = matrix
    a, b = tenants["a"], tenants["b"]
    status, hold = await api.call(
        "POST",
        "/api/legal-holds",
        a.people["compliance_officer"],
        json={"conversationId": a.ids["conversation"], "reason": "Matrix conversation matter"},
    )
    assert status == 201, hold
    lift = {"reason": "done"}

    outsider = b.people[role]
    _, last = await _trail_of(api, b, outsider, _TRAIL_READ.get(outsider.id, 0))
    other = await _answer(api, outsider, _p("POST", f"/api/legal-holds/{hold['id']}/lift", lift))
    other_trail, last = await _trail_of(api, b, outsider, last)
    missing = await _answer(api, outsider, _p("POST", f"/api/legal-holds/{MISSING}/lift", lift))
    missing_trail, _TRAIL_READ[outsider.id] = await _trail_of(api, b, outsider, last)

    assert other == missing
    assert _differences(other_trail, hold["id"], missing_trail) == []
    assert "Matrix conversation matter" not in json.dumps(other[1])
    status, listed = await api.call("GET", "/api/legal-holds", b.people["compliance_officer"])
    assert status == 200, listed
    assert hold["id"] not in [h["id"] for h in listed["holds"]]
