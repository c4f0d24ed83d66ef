"""Patient ports: patients, care teams, and the relationship facts policy decisions rest on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from engine.facts import ConsentCandidate
from engine.model import CareTeam, Page, Patient, RiskLevel


@dataclass(frozen=True)
class NewPatient:
    organization_id: int
    first_name: str
    last_name: str
    date_of_birth: date | None
    risk_level: RiskLevel
    created_by: int


class PatientRepository(Protocol):
    async def add(self, patient: NewPatient) -> Patient: ...

    async def get(self, patient_id: int) -> Patient | None: ...

    async def update(self, patient_id: int, changes: Mapping[str, object]) -> Patient: ...

    async def list_on_care_team_of(self, user_id: int, after: int | None, limit: int) -> Page[Patient]:
        """Patients whose care team includes the user, by id; access is still decided per patient."""
        ...


class CareTeamRepository(Protocol):
    async def create(self, patient_id: int, name: str, organization_id: int, created_by: int) -> CareTeam:
        """Insert; raises :class:`engine.errors.Conflict` if the patient has a care team already."""
        ...

    async def get(self, care_team_id: int) -> CareTeam | None: ...

    async def for_patient(self, patient_id: int) -> CareTeam | None: ...

    async def add_member(self, care_team_id: int, user_id: int, added_by: int) -> bool:
        """Add; returns False if the user was a member already."""
        ...


@dataclass(frozen=True)
class PatientRelation:
    """What holds between one person (by user id and organization) and one patient."""

    patient_id: int
    patient_organization_id: int
    on_care_team: bool
    #: The person's emergency session for the patient that is open now, if any (and asked for).
    break_glass_session_id: int | None = None


class RelationshipFacts(Protocol):
    """Relationship facts for policy decisions, read in the workflow's transaction."""

    async def patient_relation(
        self, patient_id: int, *, user_id: int, break_glass_at: datetime | None = None
    ) -> PatientRelation | None:
        """None if the patient does not exist. Whether a consent covers the person's organization is
        answered by the in-memory consent index (:meth:`engine.services.Decider.relation_facts`),
        which, unlike a plain lookup, also weighs the workflow's scope and purposes. With
        ``break_glass_at``, ``break_glass_session_id`` is the person's emergency session for the
        patient open at that moment (as :meth:`BreakGlassRepository.open_session`), read with the
        relation instead of in a round trip of its own."""
        ...

    async def external_consents(
        self, patient_id: int, phone_number: str, organization_id: int | None
    ) -> list[ConsentCandidate]:
        """The consents that could let this external number take part for the patient: those naming
        the number, and (only if the number is in ``organization_id``'s contact directory) those
        naming that organization or a group it belongs to. Which one counts, if any, is decided by
        :func:`engine.facts.choose_consent`."""
        ...
