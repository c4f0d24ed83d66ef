"""Conversations about a patient, and the messages in them.

Creating a conversation decides about every member, not just the actor: each internal member must
be covered for the patient and each external SMS participant needs a consent naming them. One
uncovered member fails the whole request and nothing is created. Who may bring in an external
participant, and through whose contact directory: :mod:`engine.workflows.external_admission`. The
chat channel and every message are delivered through the outbox, so an acknowledged message
survives a Sendbird outage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from engine.audit import DetailValue
from engine.decisions import Decision, Fact
from engine.effects import CreateChannel, InviteMembers
from engine.errors import FieldError, Forbidden, InvalidInput, NotFound
from engine.escalation import ROUTINE, SEND_URGENT, URGENT, first_due
from engine.model import Actor, Conversation, DeliveryState, Message, Page, User
from engine.ports.messaging import NewExternalParticipant, NewSend, SendContext
from engine.ports.patients import PatientRelation
from engine.ports.units import ConversationsUnitOfWork
from engine.rosters import on_call_at
from engine.services import Decider, Guard, Services
from engine.workflows import messaging
from engine.workflows.conversation_access import (
    readable_conversation,
    with_deliveries,
    with_receipts,
    with_unread_counts,
)
from engine.workflows.external_admission import admit_external

#: A Sendbird group channel holds up to 100 members (sendbird-api.md §4).
MAX_CHANNEL_MEMBERS = 100


def _unit_of_work(services: Services) -> ConversationsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class ExternalMember:
    phone_number: str  # E.164, validated by the caller
    name: str
    organization_id: int | None = None


@dataclass(frozen=True)
class StartConversation:
    patient_id: int
    title: str
    member_ids: Sequence[int]
    external_members: Sequence[ExternalMember] = ()
    #: Include the on-call role of this care team (the patient's) instead of a person.
    on_call_of: int | None = None


async def start_conversation(
    services: Services, actor: Actor, cmd: StartConversation, *, idempotency_claim: int | None = None
) -> Conversation:
    """Create the conversation and its channel's outbox entry; ``idempotency_claim`` (an
    Idempotency-Key row) is bound to the conversation in the same transaction."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        pid = cmd.patient_id
        await guard.require_role_for_patient("conversation.create", pid, resource_type="conversation")
        facts, details = await guard.patient_facts("conversation.create", pid)
        guard.require(
            "conversation.create",
            facts,
            resource_type="conversation",
            patient_id=pid,
            field="patientId",
            details=details,
        )

        member_ids = [m for m in dict.fromkeys(cmd.member_ids) if m != actor.user_id]
        if 1 + len(member_ids) + len(cmd.external_members) > MAX_CHANNEL_MEMBERS:
            raise InvalidInput(
                [
                    FieldError(
                        "memberIds",
                        f"A conversation holds at most {MAX_CHANNEL_MEMBERS} people, the creator and"
                        " external members included.",
                        "too_long",
                    )
                ]
            )
        users = await uow.users.get_many(member_ids)
        # A member of an organization the actor has no relation to is decided (and recorded) first; if
        # denied, the answer is the one for a user that does not exist: neither existence nor role shows.
        unknown: dict[int, Decision] = {}
        decided: set[int] = set()
        for i, uid in enumerate(cmd.member_ids):
            if (
                uid in users
                and uid != actor.user_id
                and not guard.knows_organization(pid, users[uid].organization_id)
            ):
                denial = await _member_may_join(guard, pid, users[uid], i)
                if denial is None:
                    decided.add(i)
                else:
                    guard.hide_last("conversation.join")
                    unknown[i] = denial
        missing = [
            FieldError(f"memberIds[{i}]", "No such active user.", "not_found")
            for i, uid in enumerate(cmd.member_ids)
            if uid != actor.user_id and (uid not in users or not users[uid].is_active or i in unknown)
        ]
        if missing:
            error = InvalidInput(missing)
            raise error.concealing(next(iter(unknown.values()))) if unknown else error
        for i, uid in enumerate(cmd.member_ids):
            if uid != actor.user_id and i not in decided:
                await _member_may_join(guard, pid, users[uid], i, answer=True)

        external: list[NewExternalParticipant] = []
        seen_numbers: set[str] = set()
        for i, ext in enumerate(cmd.external_members):
            if ext.phone_number in seen_numbers:
                raise InvalidInput(
                    [FieldError(f"externalMembers[{i}].phoneNumber", "Listed twice.", "duplicate")]
                )
            seen_numbers.add(ext.phone_number)
            external.append(
                await admit_external(guard, pid, i, ext.phone_number, ext.name, ext.organization_id)
            )

        holder = await _on_call_holder(guard, cmd) if cmd.on_call_of is not None else None

        conversation = await uow.conversations.add(
            patient_id=pid,
            title=cmd.title,
            organization_id=actor.organization_id,
            created_by=actor.user_id,
            member_ids=[actor.user_id, *member_ids],
            external=external,
        )
        guard.identify(resource_id=conversation.id, patient_id=pid)
        await uow.outbox.enqueue(CreateChannel(conversation.id))
        if cmd.on_call_of is not None:
            holder_id = holder.id if holder is not None else None
            await uow.on_call_routes.include(conversation.id, cmd.on_call_of, holder_id, actor.user_id)
            if holder is not None and holder.id not in conversation.member_ids:
                # After the channel exists (its effects wait for it), the holder joins it.
                await uow.outbox.enqueue(InviteMembers(conversation.id, (holder.chat_user_id,)))
            guard.annotate(on_call_of=cmd.on_call_of, on_call_holder_id=holder_id)
            conversation = dataclasses.replace(
                conversation, on_call_care_team_id=cmd.on_call_of, on_call_holder_id=holder_id
            )
        if idempotency_claim is not None:
            await uow.idempotency_keys.bind(idempotency_claim, conversation.id)
        await uow.commit()
    services.delivery.wake()
    return conversation


async def _member_may_join(
    guard: Guard[ConversationsUnitOfWork], pid: int, member: User, index: int, *, answer: bool = False
) -> Decision | None:
    """Decide ``conversation.join`` about one member (recorded either way); the denial, if any. With
    ``answer`` a denial is the 403 naming ``memberIds[index]``; without, it is only returned (a member
    the actor may not know of is then answered as a user that does not exist)."""
    member_facts, member_details = await guard.patient_facts(
        "conversation.join", pid, user_id=member.id, organization_id=member.organization_id
    )
    try:
        guard.require(
            "conversation.join",
            member_facts - {Fact.CARE_TEAM},
            resource_type="conversation",
            patient_id=pid,
            subject_role=member.role.value,
            field=f"memberIds[{index}]",
            details={**member_details, "subject_user_id": member.id},
        )
    except Forbidden as denied:
        if answer:
            raise
        return denied.decision
    return None


async def _on_call_holder(guard: Guard[ConversationsUnitOfWork], cmd: StartConversation) -> User | None:
    """Who holds the care team's on-call role now (None: nobody is on call), once the care team is
    found to be the conversation's patient's and the holder is decided as a member
    (``conversation.join``, field ``onCallOf``)."""
    uow, pid = guard.uow, cmd.patient_id
    assert cmd.on_call_of is not None
    team = await uow.care_teams.get(cmd.on_call_of)
    if team is None or team.patient_id != pid:
        raise InvalidInput(
            [FieldError("onCallOf", "Not the care team of this conversation's patient.", "not_found")]
        )
    now = guard.now
    shift = on_call_at(await uow.rosters.between(team.id, now, now + timedelta(microseconds=1)), now)
    holder = await uow.users.get(shift.user_id) if shift is not None else None
    if holder is None or not holder.is_active:
        return None
    holder_facts, holder_details = await guard.patient_facts(
        "conversation.join", pid, user_id=holder.id, organization_id=holder.organization_id
    )
    guard.require(
        "conversation.join",
        holder_facts - {Fact.CARE_TEAM},
        resource_type="conversation",
        patient_id=pid,
        subject_role=holder.role.value,
        field="onCallOf",
        details={**holder_details, "subject_user_id": holder.id, "on_call_of": team.id},
    )
    return holder


@dataclass(frozen=True)
class ConversationDetail:
    conversation: Conversation
    messages: list[Message]


async def get_conversation(
    services: Services, actor: Actor, conversation_id: int, message_limit: int = 50
) -> ConversationDetail:
    """The conversation with the reader's unread count, and its recent messages with their delivery
    rows and each member's receipt; decided as ``conversation.read``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        conversation = await readable_conversation(guard, "conversation.read", conversation_id)
        (conversation,) = await with_unread_counts(uow, actor.user_id, [conversation])
        recent = await uow.messages.recent(conversation_id, message_limit)
        messages = await with_receipts(uow, conversation, await with_deliveries(uow, recent))
        await uow.commit()
    return ConversationDetail(conversation, messages)


async def list_conversations(
    services: Services, actor: Actor, after: int | None, limit: int | None
) -> Page[Conversation]:
    """The actor's conversations, each decided as ``conversation.read`` (consent may have ended), with
    the actor's unread count of each (one statement for the page)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("conversation.list", resource_type="conversation")
        page = await uow.conversations.list_for_member(actor.user_id, after, services.page_size(limit))
        visible = []
        for conversation in page.items:
            facts, details = await guard.patient_facts("conversation.read", conversation.patient_id)
            if guard.permits(
                "conversation.read",
                facts | {Fact.MEMBER},
                resource_type="conversation",
                resource_id=conversation.id,
                patient_id=conversation.patient_id,
                details=details,
            ):
                visible.append(conversation)
        counted = await with_unread_counts(uow, actor.user_id, visible)
        await uow.commit()
    return Page(tuple(counted), page.next_cursor)


def _send_facts(
    decider: Decider, workflow: str, context: SendContext
) -> tuple[set[str], dict[str, DetailValue]]:
    """The sender's facts from the send path's one read, by the fact builder (and ``member``)."""
    c = context
    assert c.patient_organization_id is not None
    relation = PatientRelation(
        c.patient_id, c.patient_organization_id, c.on_care_team, c.break_glass_session_id
    )
    facts, details = decider.relation_facts(workflow, relation)
    if c.is_member:
        facts.add(Fact.MEMBER)
    return facts, details


async def send_message(
    services: Services,
    actor: Actor,
    conversation_id: int,
    text: str,
    *,
    idempotency_claim: int | None = None,
    priority: str = ROUTINE,
) -> Message:
    """Store the message, one delivery row per recipient (the channel, each SMS participant) and their
    outbox entries in one transaction with the audit record; the relay delivers them (202 Accepted).

    Decided like every read of a conversation (role, then member and patient covered), but through
    :class:`~engine.ports.SendUnitOfWork`: one read, one atomic write (sending is the busiest path).
    An urgent message is decided ``message.send_urgent`` as well, and escalated until acknowledged
    (engine/escalation.py); the first escalation time is stored with it.
    """
    if not text.strip():
        raise InvalidInput([FieldError("message", "Must not be blank.")])
    workflow = "message.send"
    async with services.send_uow() as uow:
        decider = Decider(services, uow.audit, actor)
        context = await uow.context(conversation_id, actor.user_id, decider.now)
        known = context is not None and context.patient_organization_id is not None
        if not decider.policy.role_may(actor.role.value, workflow):
            # Refused alike for a conversation that does not exist; its facts kept for `policy diff`.
            refused_facts: frozenset[str] | None = None
            if known and context:
                refused_facts = frozenset(_send_facts(decider, workflow, context)[0])
                decider.note_relation(context.patient_id, refused_facts, unknown_as="conversation")
            decider.refuse_role(
                workflow,
                refused_facts,
                resource_type="conversation",
                resource_id=conversation_id,
                patient_id=context.patient_id if known and context else None,
            )
        if context is None:
            decider.record_missing(workflow, "conversation", conversation_id)
            raise NotFound("conversation")
        if context.patient_organization_id is None:
            decider.record_missing(workflow, "patient", context.patient_id)
            raise NotFound("patient")
        facts, details = _send_facts(decider, workflow, context)
        decider.note_relation(context.patient_id, facts, unknown_as="conversation")
        decider.require(
            workflow,
            facts,
            resource_type="conversation",
            resource_id=conversation_id,
            patient_id=context.patient_id,
            details=details,
        )
        decider.annotate(message_id=context.message_id)  # the decision's resource stays the conversation
        if context.on_call is not None:
            # Who receives it as the on-call role (the holder in the channel), and for which care team.
            care_team_id, holder_id = context.on_call
            decider.annotate(
                on_call_of=care_team_id,
                on_call_holder_id=holder_id,
                on_call_received_as=f"on call for care team {care_team_id}" if holder_id else None,
            )
        first_escalation: float | None = None
        if priority == URGENT:
            urgent_facts, urgent_details = _send_facts(decider, SEND_URGENT, context)
            decider.require(
                SEND_URGENT,
                urgent_facts,
                resource_type="conversation",
                resource_id=conversation_id,
                patient_id=context.patient_id,
                details={**urgent_details, "message_id": context.message_id},
            )
            due = first_due(decider.policy.escalation, decider.now)
            first_escalation = None if due is None else (due - decider.now).total_seconds()
        deliveries = messaging.plan_deliveries(
            decider, services, context.patient_id, context.message_id, context.sms_recipients
        )
        organizations = context.recipient_organization_ids
        messaging.record_disclosures(
            decider, workflow, (context.patient_id, conversation_id, context.message_id), organizations
        )
        created_at = await uow.commit(
            NewSend(
                message_id=context.message_id,
                conversation_id=conversation_id,
                sender_id=actor.user_id,
                text=text,
                deliveries=deliveries,
                idempotency_claim=idempotency_claim,
                priority=priority,
                first_escalation_seconds=first_escalation,
            )
        )
    services.delivery.wake(messaging.queued_by(deliveries, posted=False))
    return Message(
        id=context.message_id,
        conversation_id=conversation_id,
        sender_id=actor.user_id,
        text=text,
        state=DeliveryState.QUEUED,
        created_at=created_at,
        deliveries=messaging.delivery_states(deliveries, decider.now),
        priority=priority,
    )
