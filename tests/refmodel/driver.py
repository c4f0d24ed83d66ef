"""Drives a scenario through the real service and compares every step with the reference model.

The world is written straight into PostgreSQL (organizations, people, patients, care teams,
compliance groups, opt-outs, ended emergency sessions); everything after that goes through the HTTP
API as the people of the world, each request with its own X-Request-ID. After every action the
driver checks, against the model:

- the answer: status, and for a refusal its reason and the field that caused it;
- the audit: the action's decision (allow/deny), the rule that allowed it or the reason it was
  refused, the consent it was decided under, and the decision about each member it checked;
- the state: what the world holds in PostgreSQL (care teams, consents and their revocation,
  conversations with their members and external participants, messages, emergency sessions,
  risk levels, contact directories, opt-outs, accounts' roles and activity, group shares, recalled
  messages (their text in the legal record only), corrections, attachments, legal holds), read
  back and compared with the model's world — so an allowed action did what it says and a refused
  one changed nothing; after an account's sessions end, its earlier token is refused.

Time passes for a message only: before a recall that says so, the message's time is moved back to
a minute before, or a minute after, the end of the recall window of the policy in force (the app
decides on its own clock, the real time here); nothing sleeps.

Texts from external numbers go in through the real inbound path: the Twilio emulator signs and
posts them to ``POST /api/webhooks/twilio``, and the driver waits for the webhook processor, then
compares where ``sms.reply`` was decided (its audit record, tied to the text), the outbox (the post
into the channel, or the question back with the codes) and the ``sms_reply_held`` records.

Longer than 400 lines because building the world, making each action's request and comparing the
answer, the audit and the state all work from the same ``Ids`` and the model's action types: what is
compared for an action is read next to how it was performed.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from engine.model import Role, User
from handlers.keys import twilio_emulator_key
from tests.refmodel import model as m
from tests.refmodel.scenarios import PHONES, ROSTER, Scenario, WorldSpec, resolve

MISSING_ID = 2_000_000_000
GLASS_REASON = "Unconscious patient in the emergency room"


@dataclass
class Ids:
    """Database ids of the world's records, by the model's indices."""

    orgs: list[int] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    #: The accounts as a token names them (role), to log someone in again after their sessions end.
    people: list[User] = field(default_factory=list)
    #: Contact-directory entries, by (organization, phone).
    contacts: dict[tuple[int, int], int] = field(default_factory=dict)
    services: Any = None
    patients: list[int] = field(default_factory=list)
    teams: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    consents: list[int] = field(default_factory=list)
    conversations: list[int] = field(default_factory=list)
    #: Messages sent, by the order they were sent (the model's message indices).
    messages: list[int] = field(default_factory=list)
    #: On-call shifts, by (patient, day slot).
    shifts: dict[tuple[int, int], int] = field(default_factory=dict)
    #: Legal holds, by the order they were placed.
    holds: list[int] = field(default_factory=list)
    #: The file of each message that carries one, by message.
    attachments: dict[int, int] = field(default_factory=dict)
    #: Emergency sessions, by the order they were opened (the ended ones of the world first).
    sessions: list[int] = field(default_factory=list)

    def user_index(self, user_id: int) -> int:
        return self.users.index(user_id)


def new_phone() -> str:
    """A valid US number, unique per scenario (opt-outs are per number, across the database)."""
    return f"+1617{2_000_000 + secrets.randbelow(7_999_999):07d}"


async def build_world(db: asyncpg.Connection, services: Any, spec: WorldSpec) -> Ids:
    ids = Ids(services=services)
    tag = secrets.token_hex(4)
    async with db.transaction():
        for o in range(spec.orgs):
            ids.orgs.append(
                await db.fetchval(
                    "INSERT INTO organizations (name, self_registration) VALUES ($1, false) RETURNING id",
                    f"refmodel {tag} org {o}",
                )
            )
        for o in range(spec.orgs):
            for slot, role in enumerate(ROSTER):
                email = f"refmodel.{tag}.{o}.{slot}@example.org"
                chat = f"u-{uuid.uuid4().hex}"
                uid = await db.fetchval(
                    "INSERT INTO users (organization_id, email, password_hash, first_name, last_name, role,"
                    " chat_user_id) VALUES ($1, $2, 'not-a-hash', 'Ref', 'Model', $3, $4) RETURNING id",
                    ids.orgs[o],
                    email,
                    role,
                    chat,
                )
                ids.users.append(uid)
                user = User(
                    uid, email, "Ref", "Model", Role(role), ids.orgs[o], True, chat, datetime.now(UTC)
                )
                ids.people.append(user)
                ids.tokens.append(services.tokens.issue(user).token)
        for p, org in enumerate(spec.patients):
            registrar = ids.users[spec.registrar(p)]
            pid = await db.fetchval(
                "INSERT INTO patients (organization_id, first_name, last_name, risk_level, created_by, part2)"
                " VALUES ($1, 'Pat', 'Ient', 'high', $2, $3) RETURNING id",
                ids.orgs[org],
                registrar,
                p in spec.part2,
            )
            team = await db.fetchval(
                "INSERT INTO care_teams (patient_id, name, organization_id, created_by)"
                " VALUES ($1, 'Care team', $2, $3) RETURNING id",
                pid,
                ids.orgs[org],
                registrar,
            )
            await db.execute(
                "INSERT INTO care_team_members (care_team_id, user_id, added_by) VALUES ($1, $2, $2)",
                team,
                registrar,
            )
            ids.patients.append(pid)
            ids.teams.append(team)
        for p, user in spec.care_team:
            await db.execute(
                "INSERT INTO care_team_members (care_team_id, user_id, added_by) VALUES ($1, $2, $2)"
                " ON CONFLICT DO NOTHING",
                ids.teams[p],
                ids.users[user],
            )
        for g, (owner, members) in enumerate(spec.groups):
            gid = await db.fetchval(
                "INSERT INTO compliance_groups (name, organization_id, created_by) VALUES ($1, $2, $3)"
                " RETURNING id",
                f"refmodel {tag} group {g}",
                ids.orgs[owner],
                ids.users[owner * len(ROSTER) + 4],
            )
            for member in members:
                await db.execute(
                    "INSERT INTO compliance_group_members (group_id, organization_id) VALUES ($1, $2)",
                    gid,
                    ids.orgs[member],
                )
            ids.groups.append(gid)
        ids.phones = [new_phone() for _ in range(PHONES)]
        for phone in spec.opted_out:
            await db.execute("INSERT INTO sms_opt_outs (phone_number) VALUES ($1)", ids.phones[phone])
        for org, phone in spec.directory:
            ids.contacts[(org, phone)] = await db.fetchval(
                "INSERT INTO organization_contacts (organization_id, phone_number, name, added_by)"
                " VALUES ($1, $2, 'Listed contact', $3) RETURNING id",
                ids.orgs[org],
                ids.phones[phone],
                ids.users[org * len(ROSTER) + 3],
            )
        for user, patient in spec.expired_break_glass:
            session = await db.fetchval(
                "INSERT INTO break_glass_sessions (user_id, organization_id, patient_id, reason, opened_at,"
                " expires_at) VALUES ($1, $2, $3, $4, now() - interval '2 hours', now() - interval '1 hour')"
                " RETURNING id",
                ids.users[user],
                ids.orgs[user // len(ROSTER)],
                ids.patients[patient],
                GLASS_REASON,
            )
            ids.sessions.append(session)
    return ids


# --- the world as PostgreSQL holds it, in the model's terms --------------------------------------


@dataclass
class Shadow:
    """What the model does not need to decide but the state check compares: risk levels, messages."""

    risk: list[str]
    messages: list[int] = field(default_factory=list)


def expected_state(world: m.World, shadow: Shadow) -> dict[str, Any]:
    return {
        "care_teams": [sorted(team) for team in world.care_teams],
        "risk": list(shadow.risk),
        "part2": sorted(world.part2),
        "consents": [(c.revoked, c.part2) for c in world.consents],
        "conversations": [
            (c.patient, sorted(c.members), [(e.phone, e.removed) for e in c.externals])
            for c in world.conversations
        ],
        "messages": list(shadow.messages),
        "reads": sorted((c, u, message) for (c, u), message in world.reads.items()),
        "break_glass": sorted(world.break_glass),
        "reviews": sorted(world.reviews),
        "directory": sorted(world.directory),
        "opted_out": sorted(world.opted_out),
        "accounts": [(u.active, u.role) for u in world.users],
        "shares": [sorted(g.shared_with) for g in world.groups],
        "shifts": sorted((p, slot, user) for (p, slot), user in world.shifts.items()),
        "away": sorted(world.away.items()),
        "recalled": sorted(world.recalled),
        "corrections": sorted(world.corrections.items()),
        "attached": sorted(world.attached),
        "holds": [(h.patient, h.conversation, h.active) for h in world.holds],
    }


async def actual_state(db: asyncpg.Connection, ids: Ids) -> dict[str, Any]:
    patients = {pid: i for i, pid in enumerate(ids.patients)}
    users = {uid: i for i, uid in enumerate(ids.users)}
    phones = {ph: i for i, ph in enumerate(ids.phones)}
    teams: list[list[int]] = [[] for _ in ids.patients]
    for r in await db.fetch(
        "SELECT t.patient_id, m.user_id FROM care_team_members m JOIN care_teams t ON t.id = m.care_team_id"
        " WHERE t.patient_id = ANY($1::int[]) ORDER BY m.user_id",
        ids.patients,
    ):
        teams[patients[r["patient_id"]]].append(users.get(r["user_id"], -r["user_id"]))
    marks = await db.fetch(
        "SELECT id, risk_level, part2 FROM patients WHERE id = ANY($1::int[])", ids.patients
    )
    risk = {r["id"]: r["risk_level"] for r in marks}
    consents = await db.fetch(
        "SELECT id, revoked_at IS NOT NULL AS revoked, part2 FROM consents WHERE patient_id = ANY($1::int[])"
        " ORDER BY id",
        ids.patients,
    )
    # Every conversation of the world's patients, with its members, external participants and
    # number of messages: four queries whatever the number of conversations (this runs after every
    # action).
    found = await db.fetch(
        "SELECT id, patient_id FROM conversations WHERE patient_id = ANY($1::int[]) ORDER BY id", ids.patients
    )
    found_ids = [c["id"] for c in found]
    members: dict[int, list[int]] = {cid: [] for cid in found_ids}
    for r in await db.fetch(
        "SELECT conversation_id, user_id FROM conversation_members WHERE conversation_id = ANY($1::int[])",
        found_ids,
    ):
        members[r["conversation_id"]].append(users.get(r["user_id"], -r["user_id"]))
    externals: dict[int, list[tuple[int, bool]]] = {cid: [] for cid in found_ids}
    for r in await db.fetch(
        "SELECT conversation_id, phone_number, removed_at IS NOT NULL AS removed FROM external_participants"
        " WHERE conversation_id = ANY($1::int[]) ORDER BY id",
        found_ids,
    ):
        externals[r["conversation_id"]].append((phones.get(r["phone_number"], -1), r["removed"]))
    counts = {
        r["conversation_id"]: r["n"]
        for r in await db.fetch(
            "SELECT conversation_id, count(*) AS n FROM messages WHERE conversation_id = ANY($1::int[])"
            " GROUP BY conversation_id",
            found_ids,
        )
    }
    conversations = [(patients[c["patient_id"]], sorted(members[c["id"]]), externals[c["id"]]) for c in found]
    messages = [counts.get(cid, 0) for cid in found_ids]
    conversation_index = {cid: i for i, cid in enumerate(ids.conversations)}
    message_index = {mid: i for i, mid in enumerate(ids.messages)}
    reads = sorted(
        (
            conversation_index[r["conversation_id"]],
            users.get(r["user_id"], -r["user_id"]),
            message_index.get(r["last_read_message_id"], -1),
        )
        for r in await db.fetch(
            "SELECT conversation_id, user_id, last_read_message_id FROM conversation_reads"
            " WHERE conversation_id = ANY($1::int[])",
            ids.conversations,
        )
    )
    glass = await db.fetch(
        "SELECT DISTINCT user_id, patient_id FROM break_glass_sessions"
        " WHERE patient_id = ANY($1::int[]) AND expires_at > now()",
        ids.patients,
    )
    orgs = {oid: i for i, oid in enumerate(ids.orgs)}
    sessions = {sid: i for i, sid in enumerate(ids.sessions)}
    reviews = await db.fetch(
        "SELECT session_id, organization_id FROM break_glass_reviews WHERE session_id = ANY($1::int[])",
        ids.sessions,
    )
    directory = await db.fetch(
        "SELECT organization_id, phone_number FROM organization_contacts"
        " WHERE organization_id = ANY($1::int[])",
        ids.orgs,
    )
    opted_out = await db.fetch(
        "SELECT phone_number FROM sms_opt_outs WHERE phone_number = ANY($1::text[])", ids.phones
    )
    accounts = {
        r["id"]: (r["is_active"], r["role"])
        for r in await db.fetch("SELECT id, is_active, role FROM users WHERE id = ANY($1::int[])", ids.users)
    }
    shares: list[list[int]] = [[] for _ in ids.groups]
    groups = {gid: i for i, gid in enumerate(ids.groups)}
    for r in await db.fetch(
        "SELECT group_id, organization_id FROM compliance_group_shares WHERE group_id = ANY($1::int[])"
        " ORDER BY organization_id",
        ids.groups,
    ):
        shares[groups[r["group_id"]]].append(orgs.get(r["organization_id"], -1))
    # Shifts of the world's care teams, by (patient, day slot, user); away: who is away now, and the delegate.
    slots = await db.fetch(
        "SELECT t.patient_id, s.starts_at, s.user_id FROM on_call_shifts s"
        " JOIN care_teams t ON t.id = s.care_team_id WHERE t.patient_id = ANY($1::int[])",
        ids.patients,
    )
    away = await db.fetch(
        "SELECT user_id, delegate_id FROM staff_away"
        " WHERE user_id = ANY($1::int[]) AND starts_at <= now() AND (ends_at IS NULL OR ends_at > now())",
        ids.users,
    )
    # The messages' own state: recalled (the text in the legal record only), corrected by which, a file.
    own = await db.fetch(
        "SELECT m.id, m.recalled_at IS NOT NULL AND m.body = ''"
        " AND EXISTS (SELECT 1 FROM message_recalls r WHERE r.message_id = m.id) AS recalled,"
        " (SELECT c.id FROM messages c WHERE c.id = m.corrected_by_message_id"
        " AND c.corrects_message_id = m.id) AS correction,"
        " EXISTS (SELECT 1 FROM message_attachments a WHERE a.message_id = m.id) AS attached"
        " FROM messages m WHERE m.id = ANY($1::int[])",
        ids.messages,
    )
    conversation_of = {cid: i for i, cid in enumerate(ids.conversations)}
    holds = {
        r["id"]: (
            patients.get(r["subject"], -1),
            None if r["conversation_id"] is None else conversation_of.get(r["conversation_id"], -1),
            r["active"],
        )
        for r in await db.fetch(
            "SELECT id, coalesce(patient_id, (SELECT patient_id FROM conversations c"
            " WHERE c.id = h.conversation_id)) AS subject, conversation_id, lifted_at IS NULL AS active"
            " FROM legal_holds h WHERE organization_id = ANY($1::int[])",
            ids.orgs,
        )
    }
    return {
        "recalled": sorted(message_index[r["id"]] for r in own if r["recalled"]),
        "corrections": sorted(
            (message_index[r["id"]], message_index.get(r["correction"], -1))
            for r in own
            if r["correction"] is not None
        ),
        "attached": sorted(message_index[r["id"]] for r in own if r["attached"]),
        "holds": [holds[h] for h in ids.holds] + [v for k, v in holds.items() if k not in ids.holds],
        "shifts": sorted(
            (patients[r["patient_id"]], (r["starts_at"] - SHIFT_DAY_ONE).days, users.get(r["user_id"], -1))
            for r in slots
        ),
        "away": sorted((users[r["user_id"]], users.get(r["delegate_id"], -1)) for r in away),
        "accounts": [accounts[uid] for uid in ids.users],
        "shares": shares,
        "opted_out": sorted(phones[r["phone_number"]] for r in opted_out),
        "directory": sorted(
            (orgs[r["organization_id"]], phones.get(r["phone_number"], -1)) for r in directory
        ),
        "care_teams": teams,
        "risk": [risk[pid] for pid in ids.patients],
        "part2": sorted(patients[r["id"]] for r in marks if r["part2"]),
        "consents": [(r["revoked"], r["part2"]) for r in consents],
        "conversations": conversations,
        "messages": messages,
        "reads": reads,
        "break_glass": sorted((users[r["user_id"]], patients[r["patient_id"]]) for r in glass),
        "reviews": sorted((sessions[r["session_id"]], orgs.get(r["organization_id"], -1)) for r in reviews),
    }


# --- one action over HTTP -------------------------------------------------------------------------


def _consent_body(action: m.RecordConsent, ids: Ids) -> dict[str, Any]:
    body: dict[str, Any] = {
        "patientId": ids.patients[action.patient],
        "purpose": action.purpose,
        "scope": sorted(action.scope),
    }
    if action.kind == "organization":
        body["organizationId"] = ids.orgs[action.target]
    elif action.kind == "compliance_group":
        body["complianceGroupId"] = ids.groups[action.target]
    else:
        body["externalParty"] = {"phoneNumber": ids.phones[action.target], "name": "Sponsor"}
    now = datetime.now(UTC)
    if action.timing == "expired":
        body["effectiveAt"] = (now - timedelta(days=2)).isoformat()
        body["expiresAt"] = (now - timedelta(days=1)).isoformat()
    elif action.timing == "pending":
        body["effectiveAt"] = (now + timedelta(days=1)).isoformat()
    elif action.expires_in_days is not None:
        body["expiresAt"] = (now + timedelta(days=action.expires_in_days)).isoformat()
    if action.part2 is not None:
        body["part2"] = {
            "discloser": "Riverside Recovery Program",
            "information": "Diagnosis, medications and treatment dates",
            "signedBy": "The patient",
            "signedOn": (now - timedelta(days=1)).date().isoformat(),
            "revocationRightStated": True,
        }
        if action.part2 == "event":
            body["part2"]["expiryEvent"] = "End of treatment"
    return body


#: The day of the model's first shift slot (each slot is one hour of its own day, far from now).
SHIFT_DAY_ONE = datetime(2031, 3, 2, 8, tzinfo=UTC)


#: The file attached by ``message.attach``: a small PDF (a type of config.toml's allowlist).
ATTACHED_FILE = b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF\n"


def request_for(action: m.Action, ids: Ids) -> tuple[str, str, dict[str, Any] | aiohttp.FormData | None]:
    wf = action.workflow
    if isinstance(action, m.MessageAction):
        mid = MISSING_ID if action.message is None else ids.messages[action.message]
        if isinstance(action, m.DownloadAttachment):
            file = MISSING_ID if action.message is None else ids.attachments.get(action.message, MISSING_ID)
            return "GET", f"/api/messages/{mid}/attachments/{file}", None
        if wf == "message.recall":
            return "POST", f"/api/messages/{mid}/recall", {"reason": "Sent to the wrong conversation"}
        if wf == "message.correct":
            return "POST", f"/api/messages/{mid}/correct", {"message": "Checking in (corrected)"}
        return "GET", f"/api/messages/{mid}/legal-record", None
    if isinstance(action, m.PlaceHold):
        if action.conversation is not None:
            subject = {"conversationId": ids.conversations[action.conversation]}
        else:
            subject = {"patientId": MISSING_ID if action.patient is None else ids.patients[action.patient]}
        return "POST", "/api/legal-holds", {**subject, "reason": "Litigation hold"}
    if isinstance(action, m.LiftHold):
        hid = MISSING_ID if action.hold is None else ids.holds[action.hold]
        return "POST", f"/api/legal-holds/{hid}/lift", {"reason": "Matter closed"}
    if wf == "legal_hold.list":
        return "GET", "/api/legal-holds", None
    if isinstance(action, m.ReviewSession):
        sid = MISSING_ID if action.session is None else ids.sessions[action.session]
        return "POST", f"/api/break-glass/{sid}/review", {"note": "Reviewed: justified"}
    if isinstance(action, m.ConversationAction):
        cid = MISSING_ID if action.conversation is None else ids.conversations[action.conversation]
        if wf == "message.attach":
            form = aiohttp.FormData()
            form.add_field("file", ATTACHED_FILE, content_type="application/pdf", filename="results.pdf")
            return "POST", f"/api/conversations/{cid}/attachments", form
        if isinstance(action, m.MarkRead):
            mid = MISSING_ID if action.message is None else ids.messages[action.message]
            return "POST", f"/api/conversations/{cid}/read", {"messageId": mid}
        if wf == "conversation.read":
            return "GET", f"/api/conversations/{cid}", None
        body = {"conversationId": cid, "message": "Checking in"}
        if wf == "message.send_urgent":
            body["priority"] = "urgent"
        return "POST", "/api/conversations/send-message", body
    if isinstance(action, m.SetAway):
        return "PUT", "/api/auth/away", {"delegateId": ids.users[action.delegate]}
    if action.workflow == "away.end":
        return "DELETE", "/api/auth/away", None
    if isinstance(action, m.RemoveContact):
        contact = ids.contacts.get((action.org, action.phone), MISSING_ID)
        return "DELETE", f"/api/organizations/{ids.orgs[action.org]}/contacts/{contact}", None
    if isinstance(action, m.ListContacts):
        return "GET", f"/api/organizations/{ids.orgs[action.org]}/contacts", None
    if isinstance(action, m.ChangeRole):
        return "PUT", f"/api/users/{ids.users[action.target]}/role", {"role": action.role}
    if isinstance(action, m.AccountAction):
        verb = {
            "user.approve": "approve",
            "user.deactivate": "deactivate",
            "user.reactivate": "reactivate",
            "user.revoke_sessions": "sessions/revoke",
            "user.unlock": "unlock",
        }[action.workflow]
        return "POST", f"/api/users/{ids.users[action.target]}/{verb}", None
    if isinstance(action, m.ShareGroup):
        body = {"organizationId": ids.orgs[action.org]}
        return "POST", f"/api/compliance-groups/{ids.groups[action.group]}/shares", body
    if action.workflow == "auth.profile":
        return "GET", "/api/auth/profile", None
    if isinstance(action, m.CreateUser):
        body = {
            "email": f"refmodel.{uuid.uuid4().hex}@example.org",
            "password": "a long enough passphrase 7",
            "firstName": "New",
            "lastName": "Person",
            "role": action.role,
            "organizationId": ids.orgs[action.org],
        }
        return "POST", "/api/users", body
    if isinstance(action, m.CreateGroup):
        body = {
            "name": f"Partners {uuid.uuid4().hex}",
            "organizationIds": [ids.orgs[o] for o in sorted(action.members)],
        }
        return "POST", "/api/compliance-groups", body
    simple: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "patient.create": (
            "POST",
            "/api/patients",
            {"firstName": "Pat", "lastName": "Ient", "riskLevel": "high"},
        ),
        "organization.create": ("POST", "/api/organizations", {"name": f"Refmodel {uuid.uuid4().hex}"}),
        "user.list": ("GET", "/api/users?limit=200", None),
        "audit.read": ("GET", "/api/audit-events?limit=1", None),
        "break_glass.list": ("GET", "/api/break-glass?limit=1", None),
        "policy.read": ("GET", "/api/policy", None),
        "policy.reload": ("POST", "/api/policy/reload", None),
    }
    if action.workflow in simple:
        return simple[action.workflow]
    if action.workflow == "auth.logout":
        return "POST", "/api/auth/logout", None
    if isinstance(action, m.AddContact):
        body = {"phoneNumber": ids.phones[action.phone], "name": "Listed contact"}
        return "POST", f"/api/organizations/{ids.orgs[action.org]}/contacts", body
    if isinstance(action, m.RevokeConsent):
        consent = MISSING_ID if action.consent is None else ids.consents[action.consent]
        return "POST", f"/api/consents/{consent}/revoke", {"reason": "Patient withdrew the consent"}
    if action.workflow == "patient.list":
        return "GET", "/api/patients?limit=200", None
    if action.workflow == "conversation.list":
        return "GET", "/api/conversations?limit=200", None
    if action.workflow == "organization.list":
        return "GET", "/api/organizations?limit=200", None
    if action.workflow == "compliance_group.list":
        return "GET", "/api/compliance-groups?limit=200", None
    assert isinstance(action, m.PatientAction)
    pid = ids.patients[action.patient]
    if isinstance(action, m.UpdatePatient):
        part2 = {} if action.part2 is None else {"part2": action.part2}
        return "PUT", f"/api/patients/{pid}", {"riskLevel": action.risk_level, **part2}
    if action.workflow == "patient.unmark_part2":
        return "PUT", f"/api/patients/{pid}", {"part2": False}
    if isinstance(action, m.AddCareTeamMember):
        return (
            "POST",
            f"/api/care-teams/{ids.teams[action.patient]}/members",
            {"userId": ids.users[action.member]},
        )
    if isinstance(action, m.CreateConversation):
        externals = []
        for e in action.externals:
            ext: dict[str, Any] = {"phoneNumber": ids.phones[e.phone], "name": "Outside helper"}
            if e.claimed_org is not None:
                ext["organizationId"] = ids.orgs[e.claimed_org]
            externals.append(ext)
        body = {
            "title": "Care coordination",
            "patientId": pid,
            "memberIds": [ids.users[u] for u in action.members],
            "externalMembers": externals,
        }
        return "POST", "/api/conversations", body
    if isinstance(action, m.RecordConsent):
        return "POST", "/api/consents", _consent_body(action, ids)
    team = ids.teams[action.patient]
    if isinstance(action, m.AddShift):
        start = SHIFT_DAY_ONE + timedelta(days=action.slot)
        body = {
            "userId": ids.users[action.member],
            "startsAt": start.isoformat(),
            "endsAt": (start + timedelta(hours=1)).isoformat(),
        }
        return "POST", f"/api/care-teams/{team}/on-call/shifts", body
    if isinstance(action, m.RemoveShift):
        shift = ids.shifts.get((action.patient, action.slot), MISSING_ID)
        return "DELETE", f"/api/care-teams/{team}/on-call/shifts/{shift}", None
    paths = {
        "on_call.read": ("GET", f"/api/care-teams/{team}/on-call", None),
        "patient.read": ("GET", f"/api/patients/{pid}", None),
        "care_team.read": ("GET", f"/api/patients/{pid}/care-team", None),
        "consent.list": ("GET", f"/api/patients/{pid}/consents", None),
        "patient.disclosures": ("GET", f"/api/patients/{pid}/disclosures", None),
        "care_team.create": ("POST", "/api/care-teams", {"patientId": pid}),
        "break_glass.open": ("POST", f"/api/patients/{pid}/break-glass", {"reason": GLASS_REASON}),
    }
    return paths[wf]


@dataclass(frozen=True)
class Outcome:
    status: int
    body: Any
    audit: list[Mapping[str, Any]]


async def perform(
    client: TestClient[Any, Any], db: asyncpg.Connection, ids: Ids, action: m.Action
) -> Outcome:
    method, path, body = request_for(action, ids)
    rid = f"refmodel-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {ids.tokens[action.actor]}", "X-Request-ID": rid}
    if action.purpose_of_use is not None:
        headers["X-Purpose-Of-Use"] = action.purpose_of_use
    if isinstance(body, aiohttp.FormData):
        resp = await client.request(method, path, data=body, headers=headers)
    else:
        resp = await client.request(method, path, json=body, headers=headers)
    if resp.status == 200 and resp.content_type == "application/pdf":  # a download: the file itself
        payload: Any = {"sha256": hashlib.sha256(await resp.read()).hexdigest()}
    else:
        payload = await resp.json(content_type=None) if resp.content_length != 0 else None
    rows = await db.fetch(
        "SELECT event, workflow, decision, matched_rule, reason, outcome, purpose, break_glass, details"
        " FROM audit_events"
        " WHERE request_id = $1 ORDER BY id",
        rid,
    )
    audit = [
        {**dict(r), "details": json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]}
        for r in rows
    ]
    return Outcome(resp.status, payload, audit)


# --- comparing with the model -----------------------------------------------------------------------


def _rule_requires(matched_rule: str | None) -> frozenset[str] | None:
    """``roles.csv:37: peer_support, patient.read, care_team & covered`` -> {care_team, covered}."""
    if not matched_rule:
        return None
    requires = matched_rule.rsplit(",", 1)[-1].strip()
    return frozenset() if requires == "any" else frozenset(p.strip() for p in requires.split("&"))


Problem = tuple[str, str]  # (what kind of disagreement, how it reads)


def disagreements(v: m.Verdict, out: Outcome, ids: Ids) -> list[Problem]:
    """How the service's answer and audit differ from the model's verdict (empty: they agree)."""

    def db_id(consent: int | None) -> int | None:
        return None if consent is None else ids.consents[consent]

    found: list[Problem] = []
    body = out.body if isinstance(out.body, dict) else {}
    if out.status != v.status:
        reason = f" (reason {body.get('reason')!r})" if out.status >= 400 else ""
        found.append(("status", f"status {out.status}{reason}, model says {v.status}"))
    elif out.status == 403 and v.reason is not None and body.get("reason") != v.reason:
        found.append(("reason", f"reason {body.get('reason')!r}, model says {v.reason!r}"))
    if out.status == v.status in (403, 409) and v.field is not None and body.get("field") != v.field:
        found.append(("field", f"field {body.get('field')!r}, model says {v.field!r}"))
    named = [e.get("field") for e in body.get("errors", [])]
    if out.status == v.status == 422 and v.field is not None and named[:1] != [v.field]:
        # The service names every field at fault; the model, the first.
        found.append(("field", f"fields {named}, model says {v.field!r} first"))
    # A role refusal about a record the actor may not know of also keeps the facts it found, for the
    # record only, beside the refusal its organization sees (details.answered): one decision still.
    decisions = [
        e
        for e in out.audit
        if e["event"] == "decision" and e["details"].get("answered") != "role_not_permitted"
    ]
    own = [e for e in decisions if e["workflow"] == v.workflow]
    if v.undecided and v.requires is None:
        # Refused before any decision (nothing there): no allow may be on record.
        if any(e["decision"] == "allow" for e in own):
            found.append(("audit.decision", f"audit: an allow decision for a refused {v.workflow}"))
        return found
    if len(own) != 1:
        found.append(("audit.count", f"audit: {len(own)} {v.workflow} decisions, model expects 1"))
        return found
    event = own[0]
    if event["break_glass"] != v.break_glass:
        found.append(
            (
                "audit.break_glass",
                f"audit: break_glass flag {event['break_glass']}, model says {v.break_glass}",
            )
        )
    model_decision = "allow" if v.requires is not None else "deny"
    if event["decision"] != model_decision:
        found.append(("audit.decision", f"audit: decision {event['decision']}, model says {model_decision}"))
    elif model_decision == "allow":
        if _rule_requires(event["matched_rule"]) != v.requires:
            found.append(
                (
                    "audit.rule",
                    f"audit: rule {event['matched_rule']!r}, model says requires {sorted(v.requires or ())}",
                )
            )
        recorded = event["details"].get("consent_id")
        if recorded != db_id(v.consent):
            found.append(("audit.consent", f"audit: consent {recorded!r}, model says {db_id(v.consent)!r}"))
        if event["purpose"] != v.purpose:
            found.append(("audit.purpose", f"audit: purpose {event['purpose']!r}, model says {v.purpose!r}"))
        if v.allowed and event["outcome"] != "success":
            found.append(("audit.outcome", f"audit: outcome {event['outcome']!r} for an allowed action"))
    else:
        if event["reason"] != v.reason:
            found.append(("audit.reason", f"audit: reason {event['reason']!r}, model says {v.reason!r}"))
        if event["outcome"] != "denied":
            found.append(("audit.outcome", f"audit: outcome {event['outcome']!r} for a denial"))
        if v.purpose is not None and event["purpose"] != v.purpose:
            found.append(("audit.purpose", f"audit: purpose {event['purpose']!r}, model says {v.purpose!r}"))
    subjects = [e for e in decisions if e["workflow"] in {"care_team.join", "conversation.join"}]
    if len(subjects) != len(v.subjects):
        found.append(
            ("member.count", f"audit: {len(subjects)} member decisions, model expects {len(v.subjects)}")
        )
    else:
        for i, (event, s) in enumerate(zip(subjects, v.subjects, strict=True)):
            decision = "allow" if s.allowed else "deny"
            kind = "external" if s.role == m.EXTERNAL else "member"
            if event["decision"] != decision:
                found.append(
                    (
                        f"{kind}.decision",
                        f"audit: member {i} decision {event['decision']}, model says {decision}",
                    )
                )
            elif s.allowed and event["details"].get("consent_id") != db_id(s.consent):
                recorded = event["details"].get("consent_id")
                found.append(
                    (
                        f"{kind}.consent",
                        f"audit: member {i} consent {recorded!r}, model says {db_id(s.consent)!r}",
                    )
                )
            elif not s.allowed and event["reason"] != s.reason:
                found.append(
                    (
                        f"{kind}.reason",
                        f"audit: member {i} reason {event['reason']!r}, model says {s.reason!r}",
                    )
                )
    if v.allowed:
        for event_name, count in v.effects:
            recorded = sum(1 for e in out.audit if e["event"] == event_name)
            if recorded != count:
                found.append(
                    ("audit.effects", f"audit: {recorded} {event_name} events, model expects {count}")
                )
    if v.visible is not None and out.status == 200 and v.workflow == "organization_contact.list":
        shown = sorted(item["phoneNumber"] for item in body.get("items", []))
        want = sorted(ids.phones[p] for p in v.visible)
        if shown != want:
            found.append(("listing", f"listed {len(shown)} numbers, model shows {len(want)}"))
    elif v.visible is not None and out.status == 200 and v.workflow == "legal_hold.list":
        shown = sorted(item["id"] for item in body.get("holds", []))
        want = sorted(ids.holds[i] for i in v.visible)
        if shown != want:
            found.append(("listing", f"listed holds {shown}, model shows {want}"))
    elif v.visible is not None and out.status == 200:
        records = {
            "patient.list": ids.patients,
            "conversation.list": ids.conversations,
            "organization.list": ids.orgs,
            "compliance_group.list": ids.groups,
            "consent.list": ids.consents,
            "user.list": ids.users,
        }[v.workflow]
        shown = sorted(item["id"] for item in body.get("items", []))
        want = sorted(records[i] for i in v.visible)
        if shown != want:
            found.append(("listing", f"listed {shown}, model shows {want}"))
    downloaded = body.get("sha256") if out.status == 200 else None
    if downloaded is not None and downloaded != hashlib.sha256(ATTACHED_FILE).hexdigest():
        found.append(("download", "the file downloaded is not the file attached"))
    if v.allowed and v.deliveries and out.status == 202:
        sms = [d for d in body.get("deliveries", []) if d.get("channel") == "sms"]
        got = sorted(d.get("reason") or d.get("state") for d in sms)
        want = sorted(state for _, state in v.deliveries)
        if got != want:
            found.append(("deliveries", f"deliveries {got}, model says {want}"))
    if v.allowed and out.status == 202:
        # Each text queued is decided sms.send_full_text: notification only, under its consent.
        texts = [e for e in out.audit if e["event"] == "decision" and e["workflow"] == "sms.send_full_text"]
        got_texts = sorted((e["decision"], e["reason"], e["details"].get("consent_id") or 0) for e in texts)
        want_texts = sorted(("deny", "not_in_sms_full_text_group", db_id(c) or 0) for c in v.full_text)
        if got_texts != want_texts:
            found.append(("full_text", f"sms.send_full_text decisions {got_texts}, model: {want_texts}"))
    return found


# --- SMS replies: through the carrier (the Twilio emulator) and the real webhook ----------------------


REPLY_TEXT = "Yes, she took her dose at 9"


@dataclass(frozen=True)
class ReplyOutcome:
    sid: str
    text: str
    audit: list[Mapping[str, Any]]
    #: Outbox rows the text queued: posts of the reply, and the question back.
    outbox: list[Mapping[str, Any]]
    #: The number's reply codes, by (conversation, position), when it texted.
    codes: dict[tuple[int, int], int]


async def reply_codes(db: asyncpg.Connection, ids: Ids, phone: int) -> dict[tuple[int, int], int]:
    codes: dict[tuple[int, int], int] = {}
    for ci, cid in enumerate(ids.conversations):
        rows = await db.fetch(
            "SELECT phone_number, reply_code FROM external_participants WHERE conversation_id = $1"
            " ORDER BY id",
            cid,
        )
        for xi, r in enumerate(rows):
            if r["phone_number"] == ids.phones[phone]:
                codes[(ci, xi)] = r["reply_code"]
    return codes


async def perform_reply(
    client: TestClient[Any, Any], db: asyncpg.Connection, ids: Ids, action: m.SmsReply
) -> ReplyOutcome:
    """The number texts caremsg: the carrier posts it, signed, to ``POST /api/webhooks/twilio``; the
    webhook processor routes it. Returns once it is processed, with what it left."""
    carrier = client.server.app[twilio_emulator_key]
    carrier.set_webhook_url(str(client.make_url("/api/webhooks/twilio")))
    codes = await reply_codes(db, ids, action.phone)
    if action.word is not None:
        text = action.word
    elif action.names is not None:
        text = f"#{codes[action.names]} {REPLY_TEXT}"
    elif action.unknown_code:
        text = f"#{max(codes.values(), default=0) + 5} {REPLY_TEXT}"
    else:
        text = REPLY_TEXT
    before = await db.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    sid = carrier.receive_sms(ids.phones[action.phone], text)
    await carrier.drain()
    for _ in range(1000):
        event = await db.fetchrow("SELECT id, status FROM webhook_events WHERE dedupe_key = $1", f"sms:{sid}")
        if event is not None and event["status"] != "pending":
            break
        await asyncio.sleep(0.02)
    else:
        raise Disagreement(f"the text was not processed in 20 s: {event and dict(event)}")
    rows = await db.fetch(
        "SELECT event, workflow, decision, matched_rule, reason, outcome, resource_id, details"
        " FROM audit_events WHERE request_id = $1 ORDER BY id",
        f"webhook-{event['id']}",
    )
    audit = [
        {**dict(r), "details": json.loads(r["details"]) if isinstance(r["details"], str) else r["details"]}
        for r in rows
    ]
    outbox = [
        {**dict(r), "payload": json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]}
        for r in await db.fetch(
            "SELECT kind, conversation_id, payload FROM outbox WHERE id > $1"
            " AND conversation_id = ANY($2::int[]) AND kind IN ('post_sms_reply', 'send_sms') ORDER BY id",
            before,
            ids.conversations,
        )
    ]
    outbox = [r for r in outbox if r["kind"] == "post_sms_reply" or "reply_codes" in r["payload"]]
    return ReplyOutcome(sid, text, audit, outbox, codes)


def reply_disagreements(v: m.ReplyVerdict, out: ReplyOutcome, ids: Ids) -> list[Problem]:
    """How the service's handling of a text differs from the model's: where it was decided, under
    which consent, whether it was posted (the outbox), held (records and the question back), or
    changed the number's opt-out."""
    found: list[Problem] = []
    index = {cid: i for i, cid in enumerate(ids.conversations)}

    def conversation(value: Any) -> int:
        return index.get(int(value), -1) if value is not None else -1

    decisions = [e for e in out.audit if e["event"] == "decision" and e["workflow"] == "sms.reply"]
    held = [e for e in out.audit if e["event"] == "sms_reply_held"]
    keywords = [e for e in out.audit if e["event"] in {"sms_opt_out", "sms_opt_in"}]
    posts = [r for r in out.outbox if r["kind"] == "post_sms_reply"]
    questions = [r for r in out.outbox if r["kind"] == "send_sms"]
    allowed_in = dict(v.decided)
    posted_in: int | None = None
    if len(decisions) != (1 if v.decided else 0):
        where = sorted(conversation(e["resource_id"]) for e in decisions)
        found.append(
            (
                "reply.decided",
                f"sms.reply decided in conversations {where}, model: one of {sorted(allowed_in)}",
            )
        )
    elif decisions:
        event = decisions[0]
        ci = conversation(event["resource_id"])
        if ci not in allowed_in:
            found.append(
                ("reply.decided", f"sms.reply decided in conversation {ci}, model: {sorted(allowed_in)}")
            )
        else:
            consent = allowed_in[ci]
            want = "allow" if consent is not None else "deny"
            if event["decision"] != want:
                found.append(("reply.decision", f"sms.reply {event['decision']}, model says {want}"))
            elif consent is not None:
                posted_in = ci
                if _rule_requires(event["matched_rule"]) != frozenset({m.EXTERNAL_CONSENT}):
                    found.append(("reply.rule", f"sms.reply rule {event['matched_rule']!r}"))
                recorded = event["details"].get("consent_id")
                if recorded != ids.consents[consent]:
                    found.append(
                        (
                            "reply.consent",
                            f"sms.reply consent {recorded!r}, model says {ids.consents[consent]}",
                        )
                    )
            elif event["reason"] != "no_external_consent":
                found.append(("reply.reason", f"sms.reply reason {event['reason']!r}"))
    want_posts = [] if posted_in is None else [posted_in]
    got_posts = [conversation(r["conversation_id"]) for r in posts]
    if got_posts != want_posts or any(r["payload"].get("dedup_id") != out.sid for r in posts):
        found.append(("reply.posted", f"reply queued for posting in {got_posts}, model: {want_posts}"))
    got_held = sorted(conversation(e["details"].get("conversation_id")) for e in held)
    if v.held_one_of:
        ok = len(got_held) == 1 and got_held[0] in v.held_one_of
        want_held = f"one of {sorted(v.held_one_of)}"
    else:
        ok = got_held == sorted(v.held)
        want_held = str(sorted(v.held))
    if not ok:
        found.append(("reply.held", f"reply held in {got_held}, model: {want_held}"))
    elif held and any(e["reason"] != v.held_reason for e in held):
        found.append(("reply.held", f"held as {[e['reason'] for e in held]}, model: {v.held_reason}"))
    elif held:
        codes = sorted(code for (ci, _), code in out.codes.items() if ci in got_held)
        asked = [r["payload"]["reply_codes"] for r in questions]
        if asked != ([codes] if v.asks else []):
            want = [codes] if v.asks else "nothing (the number opted out)"
            found.append(("reply.question", f"asked back with codes {asked}, model: {want}"))
    elif questions:
        found.append(("reply.question", f"asked back with {[r['payload'] for r in questions]}, not held"))
    want_keywords = [] if v.opted_out is None else ["sms_opt_out" if v.opted_out else "sms_opt_in"]
    if [e["event"] for e in keywords] != want_keywords:
        found.append(
            ("reply.keyword", f"keyword records {[e['event'] for e in keywords]}, model: {want_keywords}")
        )
    return found


def describe(spec: WorldSpec, actions: tuple[m.Action, ...] | list[m.Action]) -> str:
    """The world and the actions, readable: who is who, what each action is."""

    def who(u: int) -> str:
        return f"u{u}({ROSTER[u % len(ROSTER)]}@org{u // len(ROSTER)})"

    lines = [
        f"world: {spec.orgs} organizations; people u0.. in roster order {', '.join(ROSTER)} per organization"
    ]
    for p, org in enumerate(spec.patients):
        team = sorted({spec.registrar(p), *(u for q, u in spec.care_team if q == p)})
        lines.append(f"  patient {p} of org{org}; care team {', '.join(who(u) for u in team)}")
    for g, (owner, members) in enumerate(spec.groups):
        lines.append(f"  group {g} owned by org{owner}: {sorted(members)}")
    if spec.opted_out:
        lines.append(f"  opted out phones: {sorted(spec.opted_out)}")
    if spec.part2:
        lines.append(f"  patients with 42 CFR Part 2 records: {sorted(spec.part2)}")
    for u, p in spec.expired_break_glass:
        lines.append(f"  ended break-glass session: {who(u)} for patient {p}")
    for o, ph in sorted(spec.directory):
        lines.append(f"  org{o}'s contact directory lists phone {ph}")
    lines.append("actions:")
    for i, a in enumerate(actions):
        fields = {k: v for k, v in vars(a).items() if k not in {"workflow", "actor"} and v is not None}
        if isinstance(a, m.SmsReply):
            lines.append(f"  {i}. phone {a.phone} texts caremsg ({a.workflow}) {fields}")
            continue
        lines.append(f"  {i}. {who(a.actor)} {a.workflow} {fields}")
    return "\n".join(lines)


@dataclass
class Tally:
    scenarios: int = 0
    actions: int = 0
    allowed: int = 0
    known: dict[str, int] = field(default_factory=dict)
    #: workflow -> [allowed, refused] as the service answered (and the model agreed, or a known defect)
    by_workflow: dict[str, list[int]] = field(default_factory=dict)


#: Figures per test, printed at the end of the run (tests/refmodel/conftest.py).
TALLIES: dict[str, Tally] = {}


class Disagreement(AssertionError):
    pass


async def run_scenario(
    client: TestClient[Any, Any],
    db: asyncpg.Connection,
    services: Any,
    scenario: Scenario,
    exempt: frozenset[str],
    tally: Tally,
) -> None:
    """Run every action of the scenario; raise :class:`Disagreement` at the first one the model
    disagrees with, unless a known defect in ``exempt`` explains it (tallied; the model then takes
    the world the service made: an action it refused but the service did is applied as done)."""
    from tests.refmodel.known_defects import covered_by, explain, explain_reply

    spec = scenario.world
    tally.scenarios += 1
    world = spec.model()
    ids = await build_world(db, services, spec)
    shadow = Shadow(risk=["high"] * len(spec.patients))
    done: list[m.Action] = []
    for drawn in scenario.actions:
        action = resolve(world, drawn)
        done.append(action)
        if isinstance(action, m.SmsReply):
            rv = m.reply_verdict(world, action)
            replied = await perform_reply(client, db, ids, action)
            tally.actions += 1
            problems = reply_disagreements(rv, replied, ids)
            answer = f"text {replied.text!r}: {json.dumps(replied.audit, default=str)[:600]}"
            if problems:
                defect = explain_reply(rv, problems)
                if defect is None or not covered_by(defect, exempt):
                    _fail(spec, done, problems, answer, defect)
                tally.known[defect] = tally.known.get(defect, 0) + 1
            posted = any(r["kind"] == "post_sms_reply" for r in replied.outbox)
            shape = "keyword" if action.word else "held" if rv.held or rv.held_one_of else "decided"
            counts = tally.by_workflow.setdefault(f"{action.workflow} ({shape})", [0, 0])
            counts[0 if posted else 1] += 1
            tally.allowed += posted
            m.apply_reply(world, action)
            await _check_state(db, ids, world, shadow, spec, done, answer)
            continue
        if (
            isinstance(action, m.RecallMessage)
            and action.message is not None
            and action.age > world.ages.get(action.message, m.FRESH)
        ):
            await _age_message(db, ids, action)
        m.let_time_pass(world, action)
        v = m.verdict(world, action)
        out = await perform(client, db, ids, action)
        tally.actions += 1
        problems = disagreements(v, out, ids)
        if problems:
            defect = explain(world, action, v, out, problems, functools.partial(_recheck, out=out, ids=ids))
            if defect is None or not covered_by(defect, exempt):
                _fail(spec, done, problems, _answer(out), defect)
            # A known defect: carry on in the world the service now has (what it did, it did).
            tally.known[defect] = tally.known.get(defect, 0) + 1
        shown_as = (
            f"{action.workflow} (mark)"
            if isinstance(action, m.MarkRead)
            else f"{action.workflow} (download)"
            if isinstance(action, m.DownloadAttachment)
            else action.workflow
        )
        counts = tally.by_workflow.setdefault(shown_as, [0, 0])
        counts[0 if 200 <= out.status < 300 else 1] += 1
        account = action.target if isinstance(action, m.AccountAction) else action.actor
        was_active = world.users[account].active
        if 200 <= out.status < 300:
            tally.allowed += v.allowed
            m.apply(world, action, v if v.allowed else replace(v, allowed=True))
            if isinstance(action, m.UpdatePatient):
                shadow.risk[action.patient] = action.risk_level
            elif isinstance(action, m.CreateConversation):
                ids.conversations.append(int(out.body["id"]))
                shadow.messages.append(0)
            elif isinstance(action, m.ConversationAction) and action.workflow in {
                "message.send",
                "message.send_urgent",
                "message.attach",
            }:
                assert action.conversation is not None
                shadow.messages[action.conversation] += 1
                ids.messages.append(int(out.body["id"]))
                if action.workflow == "message.attach":
                    ids.attachments[len(ids.messages) - 1] = int(out.body["attachments"][0]["id"])
            elif isinstance(action, m.MessageAction) and action.workflow == "message.correct":
                shadow.messages[world.messages[-1]] += 1
                ids.messages.append(int(out.body["id"]))
            elif isinstance(action, m.PlaceHold):
                ids.holds.append(int(out.body["id"]))
            elif action.workflow == "break_glass.open":
                ids.sessions.append(int(out.body["id"]))
            elif isinstance(action, m.RecordConsent):
                ids.consents.append(int(out.body["id"]))
            elif isinstance(action, m.RemoveContact):
                ids.contacts.pop((action.org, action.phone), None)
            elif isinstance(action, m.CreateGroup):
                ids.groups.append(int(out.body["id"]))
            elif isinstance(action, m.CreateUser):
                person = User(
                    int(out.body["id"]),
                    out.body["email"],
                    "New",
                    "Person",
                    Role(action.role),
                    ids.orgs[action.org],
                    True,
                    out.body.get("chatUserId") or "",
                    datetime.now(UTC),
                )
                ids.users.append(person.id)
                ids.people.append(person)
                ids.tokens.append(services.tokens.issue(person).token)
            elif action.workflow == "organization.create":
                ids.orgs.append(int(out.body["id"]))
            elif action.workflow == "patient.create":
                ids.patients.append(int(out.body["id"]))
                team = await db.fetchval("SELECT id FROM care_teams WHERE patient_id = $1", ids.patients[-1])
                ids.teams.append(team)
                shadow.risk.append("high")
            elif isinstance(action, m.AddContact):
                ids.contacts[(action.org, action.phone)] = int(out.body["id"])
            elif isinstance(action, m.AddShift):
                ids.shifts[(action.patient, action.slot)] = int(out.body["shift"]["id"])
            elif isinstance(action, m.RemoveShift):
                ids.shifts.pop((action.patient, action.slot), None)
            if action.workflow in ENDING_SESSIONS:
                # A reactivation ends no session: only the ones from before a deactivation stay ended.
                probe = action.workflow != "user.reactivate" or not was_active
                await _sessions_ended(client, ids, world, account, probe, spec, done)
        await _check_state(db, ids, world, shadow, spec, done, _answer(out))


async def _age_message(db: asyncpg.Connection, ids: Ids, action: m.RecallMessage) -> None:
    """Time passes for the message: it was sent a minute before the policy's recall window ends
    (``INSIDE``) or a minute after (``PAST``), by the app's clock (the real time, in the reference
    model's app). The message's time is moved back rather than the clock forward: the clock also
    decides consents, emergency sessions and absences, which the scenario keeps on the real time."""
    assert action.message is not None
    spec = ids.services.policy.current.workflows.get("message.recall")
    minutes = spec.window_minutes + (1 if action.age == m.PAST else -1)
    await db.execute(
        "UPDATE messages SET created_at = $2 WHERE id = $1",
        ids.messages[action.message],
        ids.services.clock() - timedelta(minutes=minutes),
    )


async def _check_state(
    db: asyncpg.Connection,
    ids: Ids,
    world: m.World,
    shadow: Shadow,
    spec: WorldSpec,
    done: list[m.Action],
    answer: str,
) -> None:
    """What PostgreSQL holds is what the model's world says: an allowed action did what it says, a
    refused one changed nothing."""
    state = await actual_state(db, ids)
    want = expected_state(world, shadow)
    mismatched = [
        ("state", f"state {k}: {state[k]} in PostgreSQL, model says {want[k]}")
        for k in want
        if state[k] != want[k]
    ]
    if mismatched:
        _fail(spec, done, mismatched, answer, None)


def _answer(out: Outcome) -> str:
    return f"{out.status} {json.dumps(out.body)[:400]}"


#: Workflows after which the account's earlier tokens are refused (they log in again, unless deactivated).
ENDING_SESSIONS = frozenset(
    {"auth.logout", "user.revoke_sessions", "user.change_role", "user.deactivate", "user.reactivate"}
)


async def _sessions_ended(
    client: TestClient[Any, Any],
    ids: Ids,
    world: m.World,
    target: int,
    probe: bool,
    spec: WorldSpec,
    done: list[m.Action],
) -> None:
    """The account's token from before the action is refused now (after a reactivation: the one from
    before its deactivation stays refused); then the person logs in again, as the role they have now,
    unless they are deactivated."""
    if probe:
        resp = await client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {ids.tokens[target]}"}
        )
        await resp.read()
        if resp.status != 401:
            problem = ("sessions", f"u{target}'s earlier token still answers {resp.status}, model: 401")
            _fail(spec, done, [problem], "", None)
    person = world.users[target]
    ids.people[target] = replace(ids.people[target], role=Role(person.role), is_active=person.active)
    if person.active:
        await asyncio.sleep(0.002)  # a login after the sessions ended, not in the same millisecond
        ids.tokens[target] = ids.services.tokens.issue(ids.people[target]).token


def _recheck(other: m.Verdict, *, out: Outcome, ids: Ids) -> list[Problem]:
    return disagreements(other, out, ids)


def _fail(
    spec: WorldSpec, done: list[m.Action], problems: list[Problem], answer: str, defect: str | None
) -> None:
    known = f" (looks like known defect {defect}, not exempted)" if defect else ""
    raise Disagreement(
        f"the service disagrees with the reference model on action {len(done) - 1}{known}:\n  "
        + "\n  ".join(text for _, text in problems)
        + f"\nanswer: {answer}\n"
        + describe(spec, done)
    )
