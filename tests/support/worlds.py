"""Worlds several test modules start from: on the fakes of tests/support/fakes.py, built through the
real workflows (so they hold only what the service itself would have written), and in PostgreSQL,
built through the repositories."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import date
from typing import Any, NamedTuple

from engine.model import Actor, Organization, Patient, Purpose, RecipientType, RiskLevel, Role, User
from engine.ports.identity import NewUser
from engine.workflows.consents import RecordConsent
from engine.workflows.conversations import StartConversation, start_conversation
from engine.workflows.patients import RegisterPatient, add_care_team_member, register_patient
from integrations.db.uow import SqlUnitOfWork
from tests.support.fakes import FakeWorld


class Ward(NamedTuple):
    """Two care-team members of one organization in a conversation about their patient."""

    nurse: Actor
    colleague: Actor
    conversation_id: int
    channel_url: str


async def ward(world: FakeWorld) -> Ward:
    """A new organization's nurse registers a patient (so leads its care team), adds a colleague to
    the care team and starts a conversation with them about the patient."""
    org = world.organization().id
    nurse, colleague = world.actor(Role.CARE_TEAM_MEMBER, org), world.actor(Role.CARE_TEAM_MEMBER, org)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    [team] = [t for t in world.db.care_teams.values() if t.patient_id == patient.id]
    await add_care_team_member(world.services, nurse, team.id, colleague.user_id)
    conversation = await start_conversation(
        world.services, nurse, StartConversation(patient.id, "Ward", [nurse.user_id, colleague.user_id])
    )
    return Ward(nurse, colleague, conversation.id, conversation.channel_url)


async def officer_and_patient(world: FakeWorld) -> tuple[Actor, Actor, Patient]:
    """A compliance officer and a nurse of a new organization, and the patient the nurse registered
    (so leads the care team of)."""
    org = world.organization().id
    officer, nurse = world.actor(Role.COMPLIANCE_OFFICER, org), world.actor(Role.CARE_TEAM_MEMBER, org)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    return officer, nurse, patient


def consent_to(patient: Patient, partner_id: int, **fields: Any) -> RecordConsent:
    """A consent of ``patient`` to organization ``partner_id`` for treatment, with ``fields`` changed."""
    cmd = RecordConsent(patient.id, RecipientType.ORGANIZATION, Purpose.TREATMENT, organization_id=partner_id)
    return dataclasses.replace(cmd, **fields)


async def outsider_on_the_team(world: FakeWorld, nurse: Actor, patient: Patient, partner_id: int) -> Actor:
    """A care-team member of organization ``partner_id`` whom ``nurse`` adds to the patient's care team."""
    outsider = world.actor(Role.CARE_TEAM_MEMBER, partner_id)
    [team] = [t for t in world.db.care_teams.values() if t.patient_id == patient.id]
    await add_care_team_member(world.services, nurse, team.id, outsider.user_id)
    return outsider


async def clinic(u: SqlUnitOfWork, staff: int) -> tuple[Organization, list[User]]:
    """A new organization and ``staff`` care-team members of it, in the unit of work (not committed)."""
    org = await u.organizations.add(f"Clinic {secrets.token_hex(4)}", self_registration=True)
    people = [
        await u.users.add(
            NewUser(f"staff.{secrets.token_hex(4)}@example.org", "h", "A", "B", Role.CARE_TEAM_MEMBER, org.id)
        )
        for _ in range(staff)
    ]
    return org, people
