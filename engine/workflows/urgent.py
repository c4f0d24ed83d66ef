"""Urgent messages: acknowledging one, and deciding whom each escalation step alerts.

Sending an urgent message is the send workflow with one more decision (``message.send_urgent``,
engine/workflows/conversations.py). Until a member of the patient's care team acknowledges it, the
escalation scheduler (integrations/escalation.py) takes the steps engine/escalation.py says are
due; whom a step may alert is decided here, per person, as ``message.escalate`` (the person is the
subject of the decision, the service the actor), and each decision is audited with the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.audit import AuditEvent, DetailValue
from engine.decisions import Fact
from engine.errors import Conflict, NotFound
from engine.escalation import ACKNOWLEDGE, ESCALATE, URGENT, Step
from engine.model import Actor
from engine.policy import Policy
from engine.ports.units import MessagingUnitOfWork
from engine.services import Guard, Services
from engine.workflows.conversation_access import conversation_facts


def _unit_of_work(services: Services) -> MessagingUnitOfWork:
    """This family's view of the unit of work: the messaging family's repositories."""
    return services.uow()


@dataclass(frozen=True)
class Acknowledgement:
    """The acknowledgement that stands for an urgent message (the first), and whether it was earlier."""

    message_id: int
    user_id: int
    acknowledged_at: datetime
    already_acknowledged: bool


async def acknowledge(services: Services, actor: Actor, message_id: int) -> Acknowledgement:
    """Acknowledge an urgent message: decided as ``message.acknowledge`` (a member of the patient's
    care team, the patient covered), audited, and idempotent: the first acknowledgement wins and
    stops the escalation; a later one changes nothing and is answered with the first.

    A routine message is refused (409): there is nothing to acknowledge. A message the actor has no
    relation to answers as one that does not exist (404).
    """
    async with _unit_of_work(services) as messaging_uow:
        guard = Guard(services, messaging_uow, actor)

        async def facts_of() -> frozenset[str] | None:
            # For the record of a refused role only (`policy diff` replays it): the answer is the same.
            found = await messaging_uow.messages.get(message_id)
            conversation = (
                None if found is None else await messaging_uow.conversations.get(found.conversation_id)
            )
            if conversation is None:
                return None
            return (await conversation_facts(guard, ACKNOWLEDGE, conversation, unknown_as="message"))[0]

        await guard.require_role_recording_facts(
            ACKNOWLEDGE, facts_of, resource_type="message", resource_id=message_id
        )
        message = await messaging_uow.messages.get(message_id)
        conversation = (
            None if message is None else await messaging_uow.conversations.get(message.conversation_id)
        )
        if message is None or conversation is None:
            guard.record_missing(ACKNOWLEDGE, "message", message_id)
            raise NotFound("message")
        facts, details = await conversation_facts(guard, ACKNOWLEDGE, conversation, unknown_as="message")
        guard.require(
            ACKNOWLEDGE,
            facts,
            resource_type="message",
            resource_id=message_id,
            patient_id=conversation.patient_id,
            details={**details, "conversation_id": conversation.id},
        )
        if message.priority != URGENT:
            await messaging_uow.commit()  # the decision stays on record
            raise Conflict("This message is routine: only an urgent message is acknowledged.")
        stood = await messaging_uow.messages.acknowledge(message_id, actor.user_id, guard.now)
        # On the decision's own record: whether this was the first acknowledgement, and whose stands.
        guard.annotate(first=int(stood.first), acknowledged_by=stood.user_id)
        await messaging_uow.commit()
    return Acknowledgement(message_id, stood.user_id, stood.at, already_acknowledged=not stood.first)


# --- whom an escalation step alerts ----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """Someone an escalation step would alert, with what is known of them and the patient."""

    user_id: int
    role: str
    organization_id: int
    is_member: bool
    on_care_team: bool
    #: The patient is of this person's organization, or a consent covers it for them (the scheduler
    #: reads this from the consent index, as every decision does).
    covered: bool
    #: For whom they stand in: the member who is away and named them their delegate.
    delegate_for: int | None = None


def escalation_facts(candidate: Candidate, patient_organization_id: int) -> frozenset[str]:
    """The facts between the person a step would alert and the message's patient."""
    facts = set()
    if candidate.is_member:
        facts.add(Fact.MEMBER)
    if candidate.on_care_team:
        facts.add(Fact.CARE_TEAM)
    if candidate.covered:
        facts.add(Fact.COVERED)
    if candidate.organization_id == patient_organization_id:
        facts.add(Fact.OWN_ORG)
    return frozenset(facts)


def decide_targets(
    policy: Policy,
    step: Step,
    candidates: list[Candidate],
    *,
    message_id: int,
    conversation_id: int,
    patient_id: int,
    patient_organization_id: int,
    round_: int,
    at: datetime,
) -> tuple[list[int], list[AuditEvent]]:
    """Whom the step alerts: each candidate the policy allows ``message.escalate`` for; and the audit
    record of every decision (allowed or denied), naming the step, its round, and the schedule."""
    allowed: list[int] = []
    events: list[AuditEvent] = []
    for c in candidates:
        facts = escalation_facts(c, patient_organization_id)
        decision = policy.decide(c.role, ESCALATE, facts)
        details: dict[str, DetailValue] = {
            "step": step.value,
            "round": round_,
            "message_id": message_id,
            "conversation_id": conversation_id,
            "subject_user_id": c.user_id,
            "subject_role": c.role,
            "escalation_policy_version": policy.escalation_version,
        }
        if c.delegate_for is not None:
            details["delegate_for"] = c.delegate_for
        events.append(
            AuditEvent.for_decision(
                decision,
                actor=None,
                occurred_at=at,
                resource_type="message",
                resource_id=message_id,
                patient_id=patient_id,
                details=details,
            )
        )
        if decision.allowed:
            allowed.append(c.user_id)
    return allowed, events
