"""Patients and their care teams."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from engine.decisions import Fact
from engine.errors import ConsentsNotPart2, FieldError, Forbidden, InvalidInput, NotFound
from engine.model import Actor, CareTeam, Page, Patient, RiskLevel
from engine.ports.patients import NewPatient
from engine.ports.units import PatientsUnitOfWork
from engine.services import Decider, Guard, Services


def _unit_of_work(services: Services) -> PatientsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class RegisterPatient:
    first_name: str
    last_name: str
    risk_level: RiskLevel
    date_of_birth: date | None = None
    part2: bool = False


async def register_patient(services: Services, actor: Actor, cmd: RegisterPatient) -> Patient:
    """Register a patient in the actor's organization; the actor becomes the first care-team member."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("patient.create", resource_type="patient")
        patient = await uow.patients.add(
            NewPatient(
                actor.organization_id,
                cmd.first_name,
                cmd.last_name,
                cmd.date_of_birth,
                cmd.risk_level,
                actor.user_id,
                cmd.part2,
            )
        )
        team = await uow.care_teams.create(patient.id, "Care team", actor.organization_id, actor.user_id)
        await uow.care_teams.add_member(team.id, actor.user_id, actor.user_id)
        guard.identify(resource_id=patient.id, patient_id=patient.id)
        await uow.commit()
    return patient


async def get_patient(services: Services, actor: Actor, patient_id: int) -> Patient:
    """One patient's record, decided as ``patient.read`` (care team and covered, or break-glass) and
    audited with the read; a patient the actor has no relation to answers as one that does not exist.

    Through :class:`~engine.ports.PatientReadUnitOfWork` when the composition root provides one (one
    read, one atomic write: this is the busiest read), else through the general unit of work. Both
    take the same decision from the same facts and record the same events.
    """
    if services.patient_reads is not None:
        return await _read_patient(services, actor, patient_id)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await guard.require_role_for_patient(
            "patient.read", patient_id, resource_type="patient", resource_id=patient_id
        )
        facts, details = await guard.patient_facts("patient.read", patient_id)
        guard.require(
            "patient.read",
            facts,
            resource_type="patient",
            resource_id=patient_id,
            patient_id=patient_id,
            details=details,
        )
        patient = await uow.patients.get(patient_id)
        assert patient is not None  # the facts query found it in this transaction
        await uow.commit()
    return patient


async def _read_patient(services: Services, actor: Actor, patient_id: int) -> Patient:
    """:func:`get_patient` on the patient read's unit of work: the relation and the record in one
    statement, then the decision, then the audit record in one statement."""
    assert services.patient_reads is not None
    workflow = "patient.read"
    async with services.patient_reads() as uow:
        decider = Decider(services, uow.audit, actor)
        read = await uow.read(patient_id, user_id=actor.user_id, at=decider.now)
        relation = read.relation if read is not None else None
        if not decider.policy.role_may(actor.role.value, workflow):
            # As Guard.require_role_for_patient: refused alike whether or not the patient exists; the
            # facts it would have had are on record, so `policy diff` can replay the refusal.
            with decider.gathering_for_refusal():
                try:
                    known: frozenset[str] | None = decider.patient_facts_of(workflow, patient_id, relation)[0]
                except NotFound:
                    known = None
            decider.refuse_role(
                workflow,
                known,
                resource_type="patient",
                resource_id=patient_id,
                patient_id=patient_id,
                sent_patient_id=patient_id,
            )
        facts, details = decider.patient_facts_of(workflow, patient_id, relation)
        decider.require(
            workflow,
            facts,
            resource_type="patient",
            resource_id=patient_id,
            patient_id=patient_id,
            details=details,
        )
        assert read is not None  # the facts say the patient exists
        await uow.commit()
    return read.patient


@dataclass(frozen=True)
class UpdatePatient:
    patient_id: int
    changes: Mapping[str, object]


async def update_patient(services: Services, actor: Actor, cmd: UpdatePatient) -> Patient:
    """Change a patient's record (``patient.update``). Taking its 42 CFR Part 2 mark off (``part2``
    from true to false) is ``patient.unmark_part2`` besides (alone when it is the only change): a
    compliance officer's decision, not the care team's. Marking it as including 42 CFR Part 2 records
    (``part2`` from false to true) is refused (409 naming ``part2``) while a consent recorded without
    the elements of 42 CFR 2.31 is in force or pending: those consents would go on disclosing Part 2
    records without them and without the 2.32 notice. They must be revoked (and recorded again as
    Part 2 consents) first."""
    unmark_only = cmd.changes == {"part2": False}
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        pid = cmd.patient_id
        if not unmark_only:
            await guard.require_role_for_patient(
                "patient.update", pid, resource_type="patient", resource_id=pid
            )
            facts, details = await guard.patient_facts("patient.update", pid)
            guard.require(
                "patient.update",
                facts,
                resource_type="patient",
                resource_id=pid,
                patient_id=pid,
                details={**details, "fields": ",".join(sorted(cmd.changes))},
            )
        # Locked as read: a mark set meanwhile by another request commits first, and is seen here.
        before = await uow.patients.get(pid, for_update=True)
        # Taking the mark off is decided by the request alone when it is the only change (so the
        # answer says nothing of the mark to whoever may not read the patient), and otherwise once
        # ``patient.update`` has found the actor may read it: only when the patient is marked.
        if unmark_only or (cmd.changes.get("part2") is False and before is not None and before.part2):
            await _require_unmark(guard, pid)
        # The update locks the patient's row before the consents are read: a consent being recorded
        # holds that row while it reads the mark (record_consent), so it commits before the read
        # below, or it waits and then sees the mark and must carry the Part 2 elements.
        patient = await uow.patients.update(pid, cmd.changes)
        if patient.part2 and before is not None and not before.part2:
            await _refuse_part2_over_consents_without_it(uow, guard, pid)
        await uow.commit()
    return patient


async def _require_unmark(guard: Guard[PatientsUnitOfWork], pid: int) -> None:
    """``patient.unmark_part2``: ordinary consents could disclose the records again once the mark is
    off, so the policy gives it to the patient's own organization's compliance officers alone."""
    await guard.require_role_for_patient(
        "patient.unmark_part2", pid, resource_type="patient", resource_id=pid
    )
    facts, details = await guard.patient_facts("patient.unmark_part2", pid)
    guard.require(
        "patient.unmark_part2",
        facts,
        resource_type="patient",
        resource_id=pid,
        patient_id=pid,
        details={**details, "fields": "part2"},
    )


async def _refuse_part2_over_consents_without_it(
    uow: PatientsUnitOfWork, guard: Guard[PatientsUnitOfWork], pid: int
) -> None:
    """Raise :class:`ConsentsNotPart2` if a consent without the Part 2 elements is in force or
    pending for the patient; the decision's record names them (ids) and ends with the refusal."""
    lacking = [
        c.id
        for c in await uow.consents.list_for_patient(pid)
        if c.part2 is None and c.revoked_at is None and (c.expires_at is None or c.expires_at > guard.now)
    ]
    if not lacking:
        return
    ids = ", ".join(str(i) for i in lacking)
    guard.annotate(consents_not_part2=ids)
    raise ConsentsNotPart2(
        f"Consents {ids} were recorded without the elements of 42 CFR 2.31 and are in force: revoke them"
        " (and record them again as Part 2 consents) before marking the patient's records as Part 2.",
        field="part2",
    )


async def list_patients(
    services: Services, actor: Actor, after: int | None, limit: int | None
) -> Page[Patient]:
    """The patients on whose care team the actor is, each decided (and audited) as ``patient.read``.

    A patient the policy no longer lets the actor read (a revoked consent) is left out; the denial
    is on record like any other.
    """
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("patient.list", resource_type="patient")
        page = await uow.patients.list_on_care_team_of(actor.user_id, after, services.page_size(limit))
        visible: list[Patient] = []
        for patient in page.items:
            facts, details = await guard.patient_facts("patient.read", patient.id)
            if guard.permits(
                "patient.read",
                facts,
                resource_type="patient",
                resource_id=patient.id,
                patient_id=patient.id,
                details=details,
            ):
                visible.append(patient)
        await uow.commit()
    return Page(tuple(visible), page.next_cursor)


# --- care teams ----------------------------------------------------------------------------------


async def create_care_team(
    services: Services, actor: Actor, patient_id: int, name: str
) -> tuple[CareTeam, bool]:
    """Make sure the patient has a care team; returns it, and whether it was created now.

    Every patient registered through the API gets a team at once, so this is idempotent: a patient
    that has a team already gets that team back (unchanged, ``name`` ignored), the decision audited
    with ``existing: true``. Only a patient that came without one (an import) gets a new team.
    """
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await guard.require_role_for_patient("care_team.create", patient_id, resource_type="care_team")
        facts, details = await guard.patient_facts("care_team.create", patient_id)
        guard.require(
            "care_team.create",
            facts,
            resource_type="care_team",
            patient_id=patient_id,
            details=details,
            field="patientId",
        )
        existing = await uow.care_teams.for_patient(patient_id)
        if existing is not None:
            guard.identify(resource_id=existing.id, patient_id=patient_id)
            guard.annotate(existing=True)
            await uow.commit()
            return existing, False
        team = await uow.care_teams.create(patient_id, name, actor.organization_id, actor.user_id)
        guard.identify(resource_id=team.id, patient_id=patient_id)
        await uow.commit()
    return team, True


async def get_care_team(services: Services, actor: Actor, patient_id: int) -> CareTeam:
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        await guard.require_role_for_patient("care_team.read", patient_id, resource_type="care_team")
        facts, details = await guard.patient_facts("care_team.read", patient_id)
        team = await uow.care_teams.for_patient(patient_id)
        guard.require(
            "care_team.read",
            facts,
            resource_type="care_team",
            resource_id=team.id if team else None,
            patient_id=patient_id,
            details=details,
        )
        await uow.commit()
    if team is None:
        raise NotFound("care_team")
    return team


async def add_care_team_member(
    services: Services, actor: Actor, care_team_id: int, user_id: int
) -> tuple[CareTeam, bool]:
    """Add a person to a care team: the actor must be allowed to manage it, and the person must be
    covered for the patient (same organization, or a consent), decided as ``care_team.join``.

    Returns the team and whether the person was added now (False: a member already, nothing changed;
    decided and audited the same, with ``already_member: true``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)

        async def facts_of() -> frozenset[str] | None:
            team = await uow.care_teams.get(care_team_id)
            if team is None:
                return None
            return (await guard.patient_facts("care_team.add_member", team.patient_id))[0]

        await guard.require_role_recording_facts(
            "care_team.add_member", facts_of, resource_type="care_team", resource_id=care_team_id
        )
        team = await uow.care_teams.get(care_team_id)
        if team is None:
            guard.record_missing("care_team.add_member", "care_team", care_team_id)
            raise NotFound("care_team")
        pid = team.patient_id
        facts, details = await guard.patient_facts("care_team.add_member", pid, unknown_as="care_team")
        guard.require(
            "care_team.add_member",
            facts,
            resource_type="care_team",
            resource_id=team.id,
            patient_id=pid,
            details=details,
        )
        member = await uow.users.get(user_id)
        no_such_user = InvalidInput([FieldError("userId", "No such active user.", "not_found")])
        if member is None or not member.is_active:
            raise no_such_user
        member_facts, member_details = await guard.patient_facts(
            "care_team.join", pid, user_id=member.id, organization_id=member.organization_id
        )
        try:
            guard.require(
                "care_team.join",
                member_facts - {Fact.CARE_TEAM},
                resource_type="care_team",
                resource_id=team.id,
                patient_id=pid,
                subject_role=member.role.value,
                field="userId",
                details={**member_details, "subject_user_id": member.id},
            )
        except Forbidden as denied:
            # Someone of an organization the actor has no relation to: answered as no such user
            # (neither their existence nor their role shows); the record keeps the real reason.
            if not guard.knows_organization(pid, member.organization_id):
                guard.hide_last("care_team.join")
                raise no_such_user.concealing(denied.decision) from None
            raise
        added = await uow.care_teams.add_member(team.id, member.id, actor.user_id)
        if not added:
            guard.annotate(already_member=True)
        updated = await uow.care_teams.get(team.id)
        assert updated is not None
        await uow.commit()
    return updated, added
