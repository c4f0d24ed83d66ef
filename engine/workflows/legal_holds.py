"""Legal holds: a compliance officer places and lifts a hold on a patient's messages or one
conversation's, with a reason; while it lasts the retention sweep (engine/workflows/retention.py)
leaves their content alone.

``legal_hold.place`` and ``legal_hold.lift`` are decided on the facts between the officer and the
patient (by default ``own_org``: the patient's organization is the officer's); a patient or a
conversation of another organization answers 404, as one that does not exist. ``legal_hold.list``
shows the officer's own organization's holds. The reason is free text that may name people, so,
like a recall's, it is kept with the hold, not in the audit trail; the audit trail records each
decision (who, which hold, which patient, under which rule).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.errors import Conflict, FieldError, InvalidInput, NotFound
from engine.model import Actor
from engine.ports.retention import NewLegalHold
from engine.ports.units import LegalHoldsUnitOfWork
from engine.retention import LegalHold
from engine.services import Guard, Services

PLACE = "legal_hold.place"
LIFT = "legal_hold.lift"
LIST = "legal_hold.list"
MAX_REASON = 500


def _unit_of_work(services: Services) -> LegalHoldsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


def _reason(reason: str, field: str = "reason") -> str:
    if not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidInput([FieldError(field, f"Say why, in 1 to {MAX_REASON} characters.")])
    return reason.strip()


@dataclass(frozen=True)
class PlaceLegalHold:
    """A hold on exactly one of a patient or a conversation."""

    reason: str
    patient_id: int | None = None
    conversation_id: int | None = None


async def _require(
    guard: Guard[LegalHoldsUnitOfWork],
    workflow: str,
    patient_id: int,
    kind: str,
    record_id: int,
    **details: int,
) -> int:
    """Decide ``workflow`` on the patient the record (``kind`` ``record_id``) concerns; returns the
    patient's organization. A record the actor may not know of answers 404 as one of ``kind``."""
    facts, recorded = await guard.patient_facts(workflow, patient_id, unknown_as=kind)
    guard.require(
        workflow,
        facts,
        resource_type=kind,
        resource_id=record_id,
        patient_id=patient_id,
        details={**recorded, **details},
    )
    patient = await guard.uow.patients.get(patient_id)
    if patient is None:  # pragma: no cover - the facts were just read from it
        raise NotFound("patient")
    return patient.organization_id


async def _deny_by_role_first(
    guard: Guard[LegalHoldsUnitOfWork],
    workflow: str,
    kind: str,
    record_id: int,
    patient_of: Callable[[], Awaitable[int | None]],
) -> None:
    """A role that may never run ``workflow`` is refused (403) before the record is looked up, so the
    answer is the same whether it exists or not."""

    async def facts_of() -> frozenset[str] | None:
        patient_id = await patient_of()
        if patient_id is None:
            return None
        return (await guard.patient_facts(workflow, patient_id, unknown_as=kind))[0]

    await guard.require_role_recording_facts(workflow, facts_of, resource_type=kind, resource_id=record_id)


async def place_legal_hold(services: Services, actor: Actor, cmd: PlaceLegalHold) -> LegalHold:
    """Place a hold (``legal_hold.place``). 422 naming the field for a missing or double subject or a
    blank reason; 404 for a patient or conversation the actor may not know of."""
    reason = _reason(cmd.reason)
    if (cmd.patient_id is None) == (cmd.conversation_id is None):
        raise InvalidInput([FieldError("patientId", "Name exactly one of patientId or conversationId.")])
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        kind = "patient" if cmd.conversation_id is None else "conversation"
        record_id = cmd.conversation_id or cmd.patient_id
        assert record_id is not None

        async def patient_of() -> int | None:
            if cmd.conversation_id is None:
                return cmd.patient_id
            conversation = await uow.conversations.get(cmd.conversation_id)
            return None if conversation is None else conversation.patient_id

        await _deny_by_role_first(guard, PLACE, kind, record_id, patient_of)
        patient_id = await patient_of()
        if patient_id is None:
            guard.record_missing(PLACE, kind, record_id)
            raise NotFound(kind)
        details = {} if cmd.conversation_id is None else {"conversation_id": cmd.conversation_id}
        organization_id = await _require(guard, PLACE, patient_id, kind, record_id, **details)
        hold = await uow.legal_holds.add(
            NewLegalHold(
                organization_id,
                cmd.patient_id,
                cmd.conversation_id,
                patient_id,
                reason,
                actor.user_id,
                guard.now,
            )
        )
        guard.annotate(legal_hold_id=hold.id)
        await uow.commit()
    return hold


async def _own_hold(guard: Guard[LegalHoldsUnitOfWork], actor: Actor, hold_id: int) -> LegalHold:
    """The hold if it is the actor's organization's. Another organization's answers as none at all,
    even to an officer whose organization may know the patient (a consent): a hold is its
    organization's own legal matter, and the policy lets no one else lift it."""
    hold = await guard.uow.legal_holds.get(hold_id)
    if hold is None or hold.organization_id != actor.organization_id:
        guard.record_missing(LIFT, "legal_hold", hold_id)
        raise NotFound("legal_hold")
    return hold


async def lift_legal_hold(services: Services, actor: Actor, hold_id: int, reason: str) -> LegalHold:
    """Lift a hold (``legal_hold.lift``): the sweep may then delete what it kept. 404 for a hold the
    actor may not know of, 409 for one lifted already, 422 for a blank reason."""
    lift_reason = _reason(reason)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)

        async def patient_of() -> int | None:
            found = await uow.legal_holds.get(hold_id)
            return None if found is None else found.subject_patient_id

        await _deny_by_role_first(guard, LIFT, "legal_hold", hold_id, patient_of)
        hold = await _own_hold(guard, actor, hold_id)
        await _require(guard, LIFT, hold.subject_patient_id, "legal_hold", hold.id)
        if not await uow.legal_holds.lift(hold.id, by=actor.user_id, at=guard.now, reason=lift_reason):
            raise Conflict("This legal hold was lifted already.")
        lifted = await uow.legal_holds.get(hold.id)
        assert lifted is not None
        await uow.commit()
    return lifted


async def list_legal_holds(services: Services, actor: Actor, *, active_only: bool = False) -> list[LegalHold]:
    """The holds of the actor's organization, newest first (``legal_hold.list``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(LIST, (), resource_type="legal_hold")
        holds = await uow.legal_holds.of_organization(actor.organization_id, active_only=active_only)
        guard.annotate(count=len(holds))
        await uow.commit()
    return holds
