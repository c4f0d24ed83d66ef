"""Who may bring an external SMS participant into a new conversation about a patient.

A participant is admitted by a consent that counts for ``conversation.join`` naming their number,
or naming an organization (or one of its compliance groups) whose contact directory lists the
number: never on the caller's word that a number is someone's.

An organization's contact directory is its admins' private list of the numbers it vouches for, so
it admits them only when that organization's own staff bring one in: bringing one of its people
into a conversation is its own disclosure. Named with another organization's ``organizationId``,
the directory is not read at all and the participant is refused the same way whatever the number
(reason ``no_external_consent``; the audit record says ``directory: another_organization``).
Otherwise an organization could record a consent naming another, then learn which numbers that
organization's directory holds from which of them were admitted, and text its contacts on the
strength of a consent it alone recorded. A number the patient's own organization means to text
directly is named in a consent of its own (``externalParty``) and added without an
``organizationId``.
"""

from __future__ import annotations

from engine.model import EXTERNAL_PARTICIPANT
from engine.ports.messaging import NewExternalParticipant
from engine.ports.units import ConversationsUnitOfWork
from engine.services import Guard


async def admit_external(
    guard: Guard[ConversationsUnitOfWork],
    patient_id: int,
    index: int,
    phone_number: str,
    name: str,
    organization_id: int | None,
) -> NewExternalParticipant:
    """Decide (``conversation.join``, recorded) the external member at ``externalMembers[index]``;
    raises Forbidden if no consent admits them."""
    foreign = organization_id not in (None, guard.actor.organization_id)
    # Held until the conversation commits: a revocation of one of them commits before they are read
    # (the participant is refused) or waits, and then finds the participant admitted and removes it.
    candidates = (
        []
        if foreign
        else await guard.uow.facts.external_consents(patient_id, phone_number, organization_id, hold=True)
    )
    facts, details = guard.external_facts("conversation.join", candidates)
    if foreign:
        details = {**details, "directory": "another_organization"}
    guard.require(
        "conversation.join",
        facts,
        resource_type="conversation",
        patient_id=patient_id,
        subject_role=EXTERNAL_PARTICIPANT,
        field=f"externalMembers[{index}]",
        details={"external_index": index, **details},
    )
    consent_id = details["consent_id"]
    assert isinstance(consent_id, int)
    return NewExternalParticipant(phone_number, name, organization_id, consent_id)
