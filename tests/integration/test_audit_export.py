"""``caremsg audit export``: JSON Lines and a FHIR R4 Bundle of AuditEvents, for a time range.

The FHIR output is validated with fhir.resources' R4B models (R4B did not change AuditEvent or
Bundle from R4 4.0.1, and the library's R4-only releases need pydantic 1).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from engine.audit import AuditEvent
from integrations.audit_export import Progress
from integrations.db.uow import SqlUnitOfWork
from tests.support.cli import caremsg_in_process

#: A day nobody else's events fall on, so the export holds exactly this test's records.
DAY = datetime(2001, 3, 4, tzinfo=UTC)
#: People, an organization and a patient no sequence of the session's database reaches: these
#: records stay in that database, where a small id is some other test's nurse or patient, whose
#: records a later test finds by actor or patient.
NURSE, COLLEAGUE, PEER = 2_000_000_007, 2_000_000_008, 2_000_000_009
ORG, PATIENT = 2_000_000_003, 2_000_000_042


@pytest.fixture(scope="module")
def written() -> dict[str, bool]:
    return {}


async def _write_day(engine: AsyncEngine, written: dict[str, bool]) -> None:
    if written:
        return
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    events = [
        AuditEvent(
            event="decision",
            workflow="patient.read",
            outcome="success",
            occurred_at=DAY + timedelta(hours=1),
            actor_id=NURSE,
            actor_role="care_team_member",
            organization_id=ORG,
            request_id="exp-1",
            source_address="10.1.2.3",
            resource_type="patient",
            resource_id=str(PATIENT),
            patient_id=PATIENT,
            decision="allow",
            matched_rule="roles.csv:31: care_team_member, patient.read, care_team & covered",
            reason="allowed",
            policy_version="0123abcd",
            purpose="treatment",
            details={"consent_id": 5},
        ),
        AuditEvent(
            event="decision",
            workflow="patient.read",
            outcome="success",
            occurred_at=DAY + timedelta(hours=2),
            actor_id=COLLEAGUE,
            actor_role="care_team_member",
            organization_id=ORG,
            patient_id=PATIENT,
            resource_type="patient",
            resource_id=str(PATIENT),
            decision="allow",
            reason="allowed",
            break_glass=True,
            purpose="treatment",
        ),
        AuditEvent(
            event="decision",
            workflow="patient.update",
            outcome="denied",
            occurred_at=DAY + timedelta(hours=3),
            actor_id=PEER,
            actor_role="peer_support",
            organization_id=ORG,
            patient_id=PATIENT,
            resource_type="patient",
            resource_id=str(PATIENT),
            decision="deny",
            reason="not_on_care_team",
        ),
        AuditEvent(
            event="auth.login",
            workflow="auth.login",
            outcome="denied",
            occurred_at=DAY + timedelta(hours=4),
            request_id="exp-4",
            source_address="10.9.9.9",
            resource_type="user",
            reason="unknown_email",
            subject_hash="ab" * 32,
        ),
        AuditEvent(
            event="decision",
            workflow="conversation.create",
            outcome="failure",
            occurred_at=DAY + timedelta(hours=5),
            actor_id=NURSE,
            actor_role="care_team_member",
            organization_id=ORG,
            patient_id=PATIENT,
            resource_type="conversation",
            decision="allow",
            reason="allowed",
            details={"ended_by": "service_unavailable"},
        ),
    ]
    for event in events:
        async with SqlUnitOfWork(sessions) as uow:
            uow.audit.record(event)
            await uow.commit()
    written["yes"] = True


async def test_the_fhir_export_is_a_valid_r4_bundle_of_audit_events(
    database_url: str, engine: AsyncEngine, written: dict[str, bool], tmp_path: Path
) -> None:
    await _write_day(engine, written)
    out = tmp_path / "audit.json"

    code, log = await caremsg_in_process(
        database_url,
        "audit",
        "export",
        "--since",
        "2001-03-04",
        "--until",
        "2001-03-05",
        "--format",
        "fhir",
        "--output",
        str(out),
    )

    assert code == 0, log
    assert "exported 5 record(s) as fhir" in log
    document = json.loads(out.read_text())
    bundle = Bundle.model_validate(document)
    assert bundle.type == "collection"
    resources = [FhirAuditEvent.model_validate(entry["resource"]) for entry in document["entry"]]
    assert len(resources) == 5
    read, glass, denied, login, failed = resources
    assert read.action == "R"
    assert read.outcome == "0"
    assert read.type.code == "rest"
    assert read.subtype[0].code == "patient.read"
    assert read.agent[0].who.identifier.value == str(NURSE)
    assert read.agent[0].network.address == "10.1.2.3"
    assert read.entity[0].what.reference == f"Patient/{PATIENT}"
    assert {d.type: d.valueString for d in read.entity[1].detail}["requestId"] == "exp-1"
    assert read.entity[2].what.reference == "Consent/5"  # the consent the read rested on
    assert [len(r.entity) for r in (glass, denied, failed)] == [2, 2, 2]  # no consent: none referenced
    assert read.purposeOfEvent[0].coding[0].code == "TREAT"
    assert [c.coding[0].code for c in glass.purposeOfEvent] == ["TREAT", "BTG"]
    assert (denied.action, denied.outcome, denied.outcomeDesc) == ("U", "4", "not_on_care_team")
    assert (login.type.code, login.outcome) == ("110114", "4")
    assert login.agent[0].who.display == "unauthenticated"
    assert failed.outcome == "8"


async def test_the_jsonl_export_has_one_record_per_line_in_id_order(
    database_url: str, engine: AsyncEngine, written: dict[str, bool], tmp_path: Path
) -> None:
    await _write_day(engine, written)
    out = tmp_path / "audit.jsonl"

    code, log = await caremsg_in_process(
        database_url,
        "audit",
        "export",
        "--since",
        "2001-03-04T00:00:00Z",
        "--until",
        "2001-03-04T03:30:00Z",
        "--output",
        str(out),
    )

    assert code == 0, log
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["workflow"] for x in lines] == ["patient.read", "patient.read", "patient.update"]
    assert [x["id"] for x in lines] == sorted(x["id"] for x in lines)
    assert lines[0]["details"] == {"consent_id": 5}
    assert lines[1]["breakGlass"] is True
    assert set(lines[0]) >= {"occurredAt", "actorId", "organizationId", "decision", "matchedRule", "chain"}


async def test_an_export_with_since_after_until_is_refused(database_url: str) -> None:
    code, log = await caremsg_in_process(
        database_url, "audit", "export", "--since", "2001-03-05", "--until", "2001-03-04"
    )
    assert code == 2
    assert "--since must be earlier than --until" in log


def test_the_progress_bar_counts_up_to_the_total_on_a_terminal() -> None:
    screen = io.StringIO()
    progress = Progress(400, screen, force=True)
    for _ in range(400):
        progress.step()
    progress.finish()
    assert "[##############################] 400/400" in screen.getvalue()
    assert screen.getvalue().count("\r") >= 2


def test_the_progress_bar_stays_silent_off_a_terminal() -> None:
    screen = io.StringIO()
    progress = Progress(10, screen)
    for _ in range(10):
        progress.step()
    progress.finish()
    assert screen.getvalue() == ""
