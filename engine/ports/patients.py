"""Patient ports: patients, care teams, the relationship facts policy decisions rest on, and the
patient read's own unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from engine.facts import ConsentCandidate
from engine.model import CareTeam, Page, Patient, RiskLevel
from engine.ports.audit import AuditLog


@dataclass(frozen=True)
class NewPatient:
    organization_id: int
    first_name: str
    last_name: str
    date_of_birth: date | None
    risk_level: RiskLevel
    created_by: int
    part2: bool = False


class PatientRepository(Protocol):
    async def add(self, patient: NewPatient) -> Patient: ...

    async def get(self, patient_id: int, *, hold: bool = False, for_update: bool = False) -> Patient | None:
        """The patient; with ``hold``, share-locked until the transaction ends, read after any
        change of the record in flight has committed (a consent recorded on its Part 2 mark then
        commits before the mark can change, or sees the change); with ``for_update``, locked for
        the caller's own change of it (what it read stays so until it commits)."""
        ...

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
        self, patient_id: int, phone_number: str, organization_id: int | None, *, hold: bool = False
    ) -> list[ConsentCandidate]:
        """The consents that could let this external number take part for the patient: those naming
        the number, and (only if the number is in ``organization_id``'s contact directory) those
        naming that organization or a group it belongs to. Which one counts, if any, is decided by
        :func:`engine.facts.choose_consent`.

        With ``hold``, they are held (share-locked) until the transaction ends, read after any
        revocation of one of them in flight has committed: what the caller does on them before its
        commit (text the number, post its reply) happens wholly before a revocation's commit or not
        at all. Not for the revocation or the expiry sweep themselves (two of them would wait for
        each other)."""
        ...


@dataclass(frozen=True)
class PatientRead:
    """One patient as a read of it is decided and answered: the reader's relation and the record."""

    relation: PatientRelation
    patient: Patient


class PatientReadUnitOfWork(Protocol):
    """The ``patient.read`` workflow's unit of work: one read and one atomic write.

    Reading a patient is the busiest read, and through the general unit of work it took five round
    trips (BEGIN, relation, row, audit, COMMIT). Here :meth:`read` returns the reader's relation to
    the patient (with their emergency session open at ``at``) and the record in one statement, and
    :meth:`commit` stores the buffered audit events in one statement (which concurrent reads may
    share), which is its own transaction: the record is written whole or not at all, the read
    returns only once its own record is written, and a read whose record cannot be written fails
    (fail closed). Leaving the ``async with`` block without committing writes the buffered events on
    their own, marked ``denied`` or ``failure``, as the general unit of work does.
    """

    @property
    def audit(self) -> AuditLog: ...

    async def read(self, patient_id: int, *, user_id: int, at: datetime) -> PatientRead | None:
        """None if there is no such patient; otherwise the relation of ``user_id`` to it (care team,
        the patient's organization, the person's latest emergency session open at ``at``) and the
        record. The record is only handed on once the decision allows it."""
        ...

    async def commit(self) -> None:
        """Store the buffered audit events; raises :class:`engine.errors.ServiceUnavailable` if they
        cannot be stored (then nothing may be disclosed)."""
        ...

    async def __aenter__(self) -> PatientReadUnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None: ...


class PatientReadUnitOfWorkFactory(Protocol):
    def __call__(self) -> PatientReadUnitOfWork: ...
