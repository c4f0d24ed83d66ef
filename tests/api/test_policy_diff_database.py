"""`caremsg policy diff` on the real database: every audited decision is decided again under the
edit, denials included, from the facts recorded with it; a record whose facts were never computed
is reported as "cannot replay", never silently skipped or replayed as if no fact held."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from handlers.cli import main
from tests.api.conftest import Api

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
#: The README's worked example: peer support may add people to care teams.
PEER_ADDS_MEMBERS = "p, peer_support, care_team.add_member, care_team & covered"


@pytest.fixture
def database_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)


@pytest.fixture
def since() -> str:
    """``--since`` for this test's own decisions (a second early, for the clocks): the session's
    database holds every earlier test's too, and replaying them all made each diff cost as much as
    the suite had run before it."""
    return (datetime.now(UTC) - timedelta(seconds=1)).isoformat()


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, target)
    rules = target / "roles.csv"
    rules.write_text(rules.read_text() + PEER_ADDS_MEMBERS + "\n")
    return target


async def _diff(*args: str) -> int:
    # The command runs its own event loop, as it does from a shell: give it a thread without one.
    return await asyncio.to_thread(main, ["policy", "diff", *args])


async def _recorded(db: asyncpg.Connection, actor_id: int, workflow: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT id, occurred_at, decision, reason, details FROM audit_events"
        " WHERE actor_id = $1 AND workflow = $2 AND event = 'decision' ORDER BY id DESC LIMIT 1",
        actor_id,
        workflow,
    )
    assert row is not None
    return row


async def _refused_addition(api: Api, db: asyncpg.Connection) -> asyncpg.Record:
    """A peer support refused adding a nurse to the care team of a patient they registered (the
    edit in ``edited`` allows it): the refusal's audit record."""
    org = await api.organization()
    peer = await api.person("peer_support", org)
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(peer)  # whoever registers a patient joins its care team
    team_id = await db.fetchval("SELECT id FROM care_teams WHERE patient_id = $1", patient_id)
    status, body = await api.call(
        "POST", f"/api/care-teams/{team_id}/members", peer, json={"userId": nurse.id}
    )
    assert (status, body["reason"]) == (403, "role_not_permitted")
    return await _recorded(db, peer.id, "care_team.add_member")


@pytest.mark.usefixtures("database_env")
async def test_diff_shows_the_denied_care_team_addition_that_the_readme_edit_would_allow(
    api: Api, edited: Path, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    record = await _refused_addition(api, db)
    assert json.loads(record["details"])["facts"] == "care_team&covered&own_org"

    assert await _diff(str(POLICY_DIR), str(edited), "--since-hours", "1") == 0

    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith(f"audit {record['id']} "))
    assert line.endswith("peer_support care_team.add_member [care_team & covered & own_org]: deny -> allow")
    assert not next(t for t in out.splitlines() if "audited decisions" in t).startswith("0 of ")


@pytest.mark.usefixtures("database_env")
async def test_since_replays_the_decisions_from_that_moment_on_and_wants_its_offset(
    api: Api, edited: Path, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    record = await _refused_addition(api, db)
    after = (record["occurred_at"] + timedelta(milliseconds=1)).isoformat()
    capsys.readouterr()

    assert await _diff(str(POLICY_DIR), str(edited), "--since", since) == 0
    listed = capsys.readouterr().out
    assert await _diff(str(POLICY_DIR), str(edited), "--since", after) == 0
    not_listed = capsys.readouterr().out

    assert f"audit {record['id']} " in listed
    assert f"audited decisions since {datetime.fromisoformat(since).isoformat()} change outcome" in listed
    assert f"audit {record['id']} " not in not_listed
    with pytest.raises(SystemExit) as refused:
        await _diff(str(POLICY_DIR), str(edited), "--since", "2026-12-01T09:00:00")
    assert refused.value.code == 2
    assert "give the offset from UTC too" in capsys.readouterr().err


@pytest.mark.usefixtures("database_env")
async def test_a_refusal_whose_facts_were_not_computed_is_reported_as_cannot_replay(
    api: Api, edited: Path, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    nurse = await api.person("care_team_member", org)

    # No such care team: the same answer as for one that exists, and nothing to compute facts from.
    status, body = await api.call("POST", "/api/care-teams/987654/members", peer, json={"userId": nurse.id})
    assert (status, body["reason"]) == (403, "role_not_permitted")
    record = await _recorded(db, peer.id, "care_team.add_member")
    assert json.loads(record["details"])["facts"] is None

    assert await _diff(str(POLICY_DIR), str(edited), "--since", since) == 0

    out = capsys.readouterr().out
    assert f"audit {record['id']} " in out
    assert "peer_support care_team.add_member [facts not recorded]: deny -> cannot replay" in out
    assert "audited decisions cannot be replayed: their facts were not recorded" in out


@pytest.mark.usefixtures("database_env")
async def test_a_denial_decided_on_no_facts_records_an_explicit_empty_set_and_is_replayed(
    api: Api, tmp_path: Path, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    admin = await api.person("admin", await api.organization())
    status, _ = await api.call("GET", "/api/patients", admin)  # admins never list patient records
    assert status == 403
    record = await _recorded(db, admin.id, "patient.list")
    assert json.loads(record["details"])["facts"] == ""
    edited = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, edited)
    (edited / "roles.csv").write_text((edited / "roles.csv").read_text() + "p, admin, patient.list, any\n")

    assert await _diff(str(POLICY_DIR), str(edited), "--since", since) == 0

    assert f"audit {record['id']} " in capsys.readouterr().out


async def test_a_role_refused_before_any_lookup_still_records_the_facts_it_would_have_had(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    auditor = await api.person("auditor", org)
    patient_id = await api.patient(await api.person("peer_support", org))

    status, body = await api.call("GET", f"/api/patients/{patient_id}", auditor)
    missing_status, missing = await api.call("GET", "/api/patients/987654", auditor)

    # The answers tell nothing about which patient exists ...
    assert (status, body["reason"]) == (missing_status, missing["reason"]) == (403, "role_not_permitted")
    # ... while the records keep the facts for `policy diff` (none to compute for a missing patient).
    recorded = await db.fetch(
        "SELECT resource_id, details->>'facts' AS facts FROM audit_events"
        " WHERE actor_id = $1 AND workflow = 'patient.read' AND event = 'decision' ORDER BY id",
        auditor.id,
    )
    assert [r["resource_id"] for r in recorded] == [str(patient_id), "987654"]
    assert {"covered", "own_org"} <= set(recorded[0]["facts"].split("&"))
    assert recorded[1]["facts"] is None


async def test_a_role_refused_on_a_conversation_records_the_facts_of_its_patient(
    api: Api, db: asyncpg.Connection
) -> None:
    org = await api.organization()
    peer = await api.person("peer_support", org)
    auditor = await api.person("auditor", org)
    patient_id = await api.patient(peer)
    status, created = await api.call(
        "POST", "/api/conversations", peer, json={"title": "t", "patientId": patient_id, "memberIds": []}
    )
    assert status == 201, created

    status, body = await api.call("GET", f"/api/conversations/{created['id']}", auditor)

    assert (status, body["reason"]) == (403, "role_not_permitted")
    record = await _recorded(db, auditor.id, "conversation.read")
    assert {"covered", "own_org"} <= set(json.loads(record["details"])["facts"].split("&"))


@pytest.mark.usefixtures("database_env")
async def test_a_refusal_for_the_stated_purpose_of_use_is_replayed_only_while_the_purposes_stay(
    api: Api, tmp_path: Path, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    peer = await api.person("peer_support", await api.organization())
    patient_id = await api.patient(peer)
    status, body = await api.call(
        "GET", f"/api/patients/{patient_id}", peer, headers={"X-Purpose-Of-Use": "payment"}
    )
    assert (status, body["reason"]) == (403, "purpose_not_permitted")
    record = await _recorded(db, peer.id, "patient.read")
    edited = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, edited)
    rules = edited / "roles.csv"
    rules.write_text(rules.read_text().replace("p, peer_support,     patient.read,", "# removed:", 1))

    # The rules alone change: the refusal stays a refusal, not a change "allow -> deny".
    assert await _diff(str(POLICY_DIR), str(edited), "--since", since) == 0
    assert f"audit {record['id']} " not in capsys.readouterr().out

    workflows = edited / "workflows.toml"
    workflows.write_text(
        workflows.read_text().replace(
            'purposes = ["treatment", "care_coordination", "healthcare_operations"]',
            'purposes = ["treatment", "care_coordination", "healthcare_operations", "payment"]',
            1,
        )
    )
    assert await _diff(str(POLICY_DIR), str(edited), "--since", since) == 0
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith(f"audit {record['id']} "))
    assert line.endswith(
        "deny -> cannot replay (refused for the stated purpose of use, and the edit may change that)"
    )


@pytest.mark.usefixtures("database_env")
async def test_refusals_of_a_role_on_consents_messages_sends_accounts_and_groups_are_replayed(
    api: Api, tmp_path: Path, db: asyncpg.Connection, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """Each of these refusals used to record ``facts: null`` ("cannot replay"): a role that may never
    run the workflow was refused before the record was looked up. The answer stays the same; the
    record now keeps the facts the fact builder gives, and `policy diff` decides it again."""
    org = await api.organization()
    peer = await api.person("peer_support", org)
    officer = await api.person("compliance_officer", org)
    admin = await api.person("admin", org)
    auditor = await api.person("auditor", org)
    patient_id = await api.patient(peer)
    consent = await api.consent(officer, patient_id, organizationId=await api.organization())
    status, conversation = await api.call(
        "POST", "/api/conversations", peer, json={"title": "t", "patientId": patient_id, "memberIds": []}
    )
    assert status == 201, conversation
    status, sent = await api.call(
        "POST",
        "/api/conversations/send-message",
        peer,
        json={"conversationId": conversation["id"], "message": "hi"},
    )
    assert status == 202, sent
    status, group = await api.call(
        "POST", "/api/compliance-groups", officer, json={"name": "Partners", "organizationIds": [org]}
    )
    assert status == 201, group

    refusals = [
        (peer, "consent.revoke", "POST", f"/api/consents/{consent['id']}/revoke", {"reason": "withdrawn"}),
        (auditor, "conversation.read", "GET", f"/api/messages/{sent['id']}", None),
        (auditor, "message.send", "POST", "/api/conversations/send-message",
         {"conversationId": conversation["id"], "message": "hi"}),
        (peer, "user.deactivate", "POST", f"/api/users/{admin.id}/deactivate", None),
        (admin, "compliance_group.share", "POST", f"/api/compliance-groups/{group['id']}/shares",
         {"organizationId": org}),
        (peer, "audit.read", "GET", "/api/audit-events", None),
    ]  # fmt: skip
    records = []
    for who, workflow, method, path, body in refusals:
        status, answer = await api.call(method, path, who, json=body)
        assert (status, answer["reason"]) == (403, "role_not_permitted"), (workflow, answer)
        record = await _recorded(db, who.id, workflow)
        assert record["decision"] == "deny"
        assert json.loads(record["details"])["facts"] is not None, workflow
        records.append(record)
    # The facts are the fact builder's: the patient's organization's, and the group's owner.
    facts = [set(json.loads(r["details"])["facts"].split("&")) for r in records]
    assert {"own_org", "covered"} <= facts[0]
    assert {"own_org", "covered"} <= facts[1] <= facts[2] | {"member"}
    assert facts[3] == facts[4] == facts[5] == {"own_org"}

    edited = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, edited)
    rules = edited / "roles.csv"
    # Each role now allowed on a fact the record shows held, so the replay must turn deny into allow.
    needs = {"conversation.read": "covered", "message.send": "covered"}
    added = "".join(f"p, {who.role}, {wf}, {needs.get(wf, 'own_org')}\n" for who, wf, *_ in refusals)
    rules.write_text(rules.read_text() + added)

    assert await _diff(str(POLICY_DIR), str(edited), "--since", since) == 0
    out = capsys.readouterr().out
    for record in records:
        line = next(text for text in out.splitlines() if text.startswith(f"audit {record['id']} "))
        assert line.endswith("deny -> allow") or "deny -> allow (" in line, line
