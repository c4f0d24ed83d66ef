"""Per-recipient delivery, SMS to external participants, and what inbound webhooks mean.

Longer than 400 lines because planning a message's deliveries and the inbound events that settle them
share the per-recipient delivery rules.

A message reaches the chat channel (staff) and, by SMS, every external participant who still has an
active consent naming them, has not texted STOP, and has a valid number. What each text may carry
is decided per recipient by the policy (``sms.send_full_text``); the default policy sends only a
notification without clinical content. Every recipient gets a delivery row in the message's own
transaction, so ``GET`` shows ``queued`` at once and a refusal (``failed`` with a reason) is on
record. The effects themselves go through the outbox.

Inbound events arrive through webhooks that were stored first (``webhook_events``) and are handled
here, each in one transaction that first takes the stored event (its row locked, and nothing done
unless it is still pending) and last marks it done, so a retried or re-processed event has no second
effect, even when two processors hold it at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.audit import AuditEvent, DetailValue, Outcome
from engine.audit_trail import DISCLOSED
from engine.decisions import Fact
from engine.effects import AnswerKeyword, AskWhichConversation, Effect, PostMessage, PostSmsReply, TextMessage
from engine.errors import Forbidden, NotFound
from engine.facts import answer_refusal, external_facts, sms_refusal
from engine.model import EXTERNAL_PARTICIPANT, Actor, DeliveryState, Message, RecipientDelivery
from engine.ports.messaging import NewDelivery, ReplyRoute, SmsRecipient
from engine.ports.units import MessagingUnitOfWork
from engine.services import Decider, Guard, Services
from engine.sms import (
    CHANNEL_RECIPIENT,
    FULL_TEXT,
    NOTIFICATION,
    Keyword,
    inbound_keyword,
    reply_code,
    sms_recipient,
    textable,
)
from engine.workflows import read_receipts
from engine.workflows.conversation_access import (
    conversation_facts,
    readable_conversation,
    with_deliveries,
    with_receipts,
)

CHANNEL, SMS = "chat", "sms"

PROCESSED = "processed"
IGNORED = "ignored"
#: A stored event not handled yet (``webhook_events.status``).
PENDING = "pending"
#: What an inbound event's workflow answers when the event was no longer pending as it took it:
#: another processor handled it (its claim's lease ran out mid-batch), so this one did nothing.
ALREADY_HANDLED = "already_handled"


def _unit_of_work(services: Services) -> MessagingUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


def record_disclosures(
    decider: Decider,
    workflow: str,
    message: tuple[int, int, int],
    organization_ids: Sequence[int],
) -> None:
    """Name the consents a message's disclosure rests on: one audit event (:data:`DISCLOSED`) per
    organization whose staff receive it in the conversation other than the patient's own, with the
    consent that admits them (the one that counts for ``workflow``'s scope and purposes, else any
    active one that discloses the patient to them), and both lists on the decision's own record.
    An organization no consent covers now (its staff there under an emergency session, or a consent
    that ended before the sweep took them out) is named on the decision's record only.

    Recorded in the workflow's transaction, so they stand or fall with the message; the accounting
    of disclosures and the FHIR export read ``consent_id`` from each event. ``message`` is
    (patient id, conversation id, message id).
    """
    if not organization_ids:
        return
    patient_id, conversation_id, message_id = message
    consents: list[int] = []
    for organization_id in sorted(set(organization_ids)):
        coverage = decider.covering_consent(workflow, patient_id, organization_id) or (
            decider.consents.covering(patient_id, organization_id, decider.now)
        )
        if coverage is None:
            continue
        consents.append(coverage.consent_id)
        decider.audit.record(
            AuditEvent.by(
                decider.actor,
                event=DISCLOSED,
                workflow=workflow,
                outcome="success",
                occurred_at=decider.now,
                resource_type="conversation",
                resource_id=str(conversation_id),
                patient_id=patient_id,
                policy_version=decider.policy.version,
                purpose=coverage.purpose,
                details={
                    "message_id": message_id,
                    "recipient_organization_id": organization_id,
                    "consent_id": coverage.consent_id,
                },
            )
        )
    decider.annotate(
        disclosed_to_organizations=",".join(str(o) for o in sorted(set(organization_ids))),
        disclosure_consent_ids=",".join(str(c) for c in consents) or None,
    )


def plan_deliveries(
    decider: Decider,
    services: Services,
    patient_id: int,
    message_id: int,
    recipients: Sequence[SmsRecipient],
    *,
    channel_state: DeliveryState = DeliveryState.QUEUED,
    channel_ts_ms: int | None = None,
) -> tuple[NewDelivery, ...]:
    """The message's delivery rows: the channel, then one per external participant.

    Checked at send time, per external participant, by :func:`engine.facts.sms_refusal` (the relay
    asks the same function right before texting): not removed from the conversation, no STOP on
    record (``opted_out``), a consent that counts for them now (``external_consent``, else
    ``no_sms_consent``), a valid number (``invalid_number``). Then ``sms.send_full_text`` decides
    what the text says; the decisions are recorded in the workflow's audit log.
    """
    deliveries = [NewDelivery(CHANNEL_RECIPIENT, channel_state, provider_ts_ms=channel_ts_ms)]
    for r in recipients:
        if r.removed:
            continue
        facts, details = decider.external_facts(
            "sms.send_full_text",
            r.consents,
            compliance_group_ids=r.compliance_group_ids,
            full_text_group_ids=decider.policy.sms_full_text_groups,
        )
        reason = sms_refusal(
            removed=r.removed,
            opted_out=r.opted_out,
            consented=Fact.EXTERNAL_CONSENT in facts,
            textable=textable(r.phone_number),
        )
        if reason is not None:
            deliveries.append(
                NewDelivery(sms_recipient(r.participant_id), DeliveryState.FAILED, r.participant_id, reason)
            )
            continue
        try:
            decider.require(
                "sms.send_full_text",
                facts,
                resource_type="message",
                resource_id=message_id,
                patient_id=patient_id,
                subject_role=EXTERNAL_PARTICIPANT,
                details={
                    "external_participant_id": r.participant_id,
                    **details,
                    "sms_policy_version": decider.policy.sms_version,
                },
            )
            content = FULL_TEXT
        except Forbidden:
            content = NOTIFICATION  # the denial is on record; the person still learns to look
        deliveries.append(
            NewDelivery(
                sms_recipient(r.participant_id), DeliveryState.QUEUED, r.participant_id, content=content
            )
        )
    return tuple(deliveries)


def delivery_states(deliveries: Sequence[NewDelivery], at: datetime) -> tuple[RecipientDelivery, ...]:
    """The delivery state a client is shown for freshly planned rows."""
    return tuple(
        RecipientDelivery(
            d.recipient, CHANNEL if d.recipient == CHANNEL_RECIPIENT else SMS, d.state, d.reason, at
        )
        for d in deliveries
    )


async def store_deliveries(
    uow: MessagingUnitOfWork, conversation_id: int, message_id: int, deliveries: Sequence[NewDelivery]
) -> None:
    """Insert the delivery rows and enqueue one text per queued SMS delivery, in ``uow``'s transaction.

    (The send-message workflow stores the same rows through :class:`SendUnitOfWork` in one statement.)
    """
    ids = await uow.deliveries.add(message_id, deliveries)
    for delivery, delivery_id in zip(deliveries, ids, strict=True):
        if texted(delivery):
            await uow.outbox.enqueue(TextMessage(conversation_id, message_id, delivery_id))


def texted(delivery: NewDelivery) -> bool:
    """Whether a planned delivery queues a text: an SMS delivery that was not refused."""
    return delivery.external_participant_id is not None and delivery.state == DeliveryState.QUEUED


def queued_by(deliveries: Sequence[NewDelivery], *, posted: bool) -> tuple[type[Effect], ...]:
    """The effect types a message's deliveries queue (what the relay is woken for): its chat post
    unless it was ``posted`` in the channel already, and texts when any SMS delivery goes out."""
    queued: list[type[Effect]] = [] if posted else [PostMessage]
    if any(texted(d) for d in deliveries):
        queued.append(TextMessage)
    return tuple(queued)


async def get_message(services: Services, actor: Actor, message_id: int) -> Message:
    """One message with its per-recipient delivery state, each member's receipt (sent, delivered,
    read) and its attachments' metadata; decided as ``conversation.read``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)

        async def facts_of() -> frozenset[str] | None:
            # For the record of a refused role only (`policy diff` replays it): the answer is the same.
            found = await uow.messages.get(message_id)
            conversation = None if found is None else await uow.conversations.get(found.conversation_id)
            if conversation is None:
                return None
            return (await conversation_facts(guard, "conversation.read", conversation, unknown_as="message"))[
                0
            ]

        await guard.require_role_recording_facts(
            "conversation.read", facts_of, resource_type="message", resource_id=message_id
        )
        message = await uow.messages.get(message_id)
        if message is None:
            guard.record_missing("conversation.read", "message", message_id)
            raise NotFound("message")
        conversation = await readable_conversation(
            guard, "conversation.read", message.conversation_id, unknown_as="message", sent_id=message_id
        )
        (message,) = await with_receipts(uow, conversation, await with_deliveries(uow, [message]))
        attached = await uow.attachments.of_messages([message.id])
        await uow.commit()
    return dataclasses.replace(message, attachments=attached.get(message.id, ()))


# --- inbound events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessagePosted:
    """A staff member posted in the chat app itself (not through caremsg): fan out SMS notifications."""

    event_id: int
    channel_url: str
    sender_chat_id: str
    chat_message_id: int
    text: str
    created_at_ms: int


@dataclass(frozen=True)
class ChatRead:
    event_id: int
    channel_url: str
    reads: tuple[tuple[str, int], ...]  # (chat user id, read_ts ms)


@dataclass(frozen=True)
class InboundSms:
    event_id: int
    provider_message_id: str
    from_number: str
    text: str
    #: The keyword the SMS provider recognised (Twilio's ``OptOutType``); it wins over our reading,
    #: so caremsg's opt-out record follows the carrier's.
    provider_keyword: Keyword | None = None
    #: The provider answers keywords itself (Twilio does, and blocks opted-out numbers): caremsg
    #: records the opt-out or opt-in and texts nothing back.
    provider_answers_keywords: bool = False


def _system_actor(user_id: int, role: str, organization_id: int, event_id: int) -> Actor:
    from engine.model import Role

    return Actor(user_id, Role(role), organization_id, request_id=f"webhook-{event_id}")


async def chat_message_posted(services: Services, event: ChatMessagePosted) -> str:
    """Store a message staff posted directly in the chat app and text external members about it.

    The sender must still be allowed ``message.send`` (member, patient covered); if not, nothing is
    texted and the denial is on record. Returns ``processed`` or ``ignored`` (``already_handled``
    when another processor handled the event first, as every inbound workflow does).
    """
    async with _unit_of_work(services) as uow:
        if not await uow.webhook_events.take(event.event_id):
            return ALREADY_HANDLED
        conversation = await uow.conversations.by_channel(event.channel_url)
        sender = await uow.users.by_chat_id(event.sender_chat_id)
        if conversation is None or sender is None:
            await uow.webhook_events.finish(event.event_id, IGNORED)
            await uow.commit()
            return IGNORED
        actor = _system_actor(sender.id, sender.role.value, sender.organization_id, event.event_id)
        guard = Guard(services, uow, actor)
        # A sender who may no longer know of the patient: the record their organization sees names
        # the conversation they posted in, not the patient.
        facts, details = await guard.patient_facts(
            "message.send", conversation.patient_id, unknown_as="conversation"
        )
        if sender.id in conversation.member_ids:
            facts |= {Fact.MEMBER}
        if not guard.permits(
            "message.send",
            facts,
            resource_type="conversation",
            resource_id=conversation.id,
            patient_id=conversation.patient_id,
            details={**details, "via": "chat_app"},
        ):
            await uow.webhook_events.finish(event.event_id, IGNORED)
            await uow.commit()
            return IGNORED
        message = await uow.messages.add_posted(
            conversation.id, sender.id, event.text, event.chat_message_id, event.created_at_ms
        )
        queued: tuple[type[Effect], ...] = ()
        if message is not None:
            recipients = (
                await uow.deliveries.sms_recipients(conversation.id, conversation.patient_id)
                if conversation.external_participants
                else []
            )
            deliveries = plan_deliveries(
                guard,
                services,
                conversation.patient_id,
                message.id,
                recipients,
                channel_state=DeliveryState.SENT,
                channel_ts_ms=event.created_at_ms,
            )
            await store_deliveries(uow, conversation.id, message.id, deliveries)
            queued = queued_by(deliveries, posted=True)
        await uow.webhook_events.finish(event.event_id, PROCESSED)
        await uow.commit()
    if queued:
        services.delivery.wake(queued)
    return PROCESSED


async def chat_read(services: Services, event: ChatRead) -> str:
    """Read receipts from chat clients: for each reader who is an active member, the channel
    deliveries they have now seen become ``delivered`` and their read state moves up to the last
    message the receipt covers (:func:`engine.workflows.read_receipts.record_chat_read`: decided
    and audited per member). Anyone else's receipt changes nothing."""
    async with _unit_of_work(services) as uow:
        if not await uow.webhook_events.take(event.event_id):
            return ALREADY_HANDLED
        conversation = await uow.conversations.by_channel(event.channel_url)
        status = IGNORED
        if conversation is not None:
            for reader, read_ts in event.reads:
                await read_receipts.record_chat_read(
                    services, uow, conversation, reader, read_ts, event.event_id
                )
            status = PROCESSED
        await uow.webhook_events.finish(event.event_id, status)
        await uow.commit()
    return status


async def _sms_from_unknown_number(services: Services, uow: MessagingUnitOfWork, event: InboundSms) -> str:
    """A text from a number no conversation has texted. STOP and START still count, read as from a
    known number (:func:`engine.sms.inbound_keyword`: the provider's ``OptOutType`` first): the
    opt-out is kept by number, so a number added to a conversation later is not texted after its STOP. No
    confirmation is sent (there is no participant to send it as), and nothing else is done."""
    word = inbound_keyword(event.text, event.provider_keyword, services.sms)
    if word not in (Keyword.STOP, Keyword.START):
        await uow.webhook_events.finish(event.event_id, IGNORED)
        await uow.commit()
        return IGNORED
    stop = word is Keyword.STOP
    changed = await uow.opt_outs.set(event.from_number, stop, event.provider_message_id)
    uow.audit.record(
        AuditEvent(
            event="sms_opt_out" if stop else "sms_opt_in",
            workflow="sms.reply",
            outcome="success",
            occurred_at=services.clock(),
            request_id=f"webhook-{event.event_id}",
            resource_type="phone_number",  # the number itself is not recorded
            details={"changed": int(changed), "known_number": 0},
        )
    )
    await uow.webhook_events.finish(event.event_id, PROCESSED, keep_body=False)  # a keyword: nothing posted
    await uow.commit()
    return PROCESSED


async def sms_received(services: Services, event: InboundSms) -> str:
    """An external participant texted back: honour STOP/START/HELP, else post the reply in the channel.

    A reply goes to the conversation its leading ``#code`` names, or to the number's only active
    conversation, as that participant, with the provider's message id as ``dedup_id``. When the
    number is active in several conversations (of one organization or of several) and the reply names
    none of them, it is never guessed: it is held, each candidate conversation's organization finds a
    ``sms_reply_held`` record, and the sender is asked to resend with one of the codes (the question
    names codes only). Posting needs ``sms.reply`` (an active consent naming them).

    Nothing but the confirmation of a STOP is texted back to a number that opted out
    (:func:`engine.facts.answer_refusal`, asked again by the relay right before texting): its HELP
    and its held replies are on record with ``answer_refused``, and no answer is queued.
    """
    rules = services.sms
    async with _unit_of_work(services) as uow:
        if not await uow.webhook_events.take(event.event_id):
            return ALREADY_HANDLED
        routes = await uow.conversations.reply_routes(event.from_number)
        if not routes:
            return await _sms_from_unknown_number(services, uow, event)
        now = services.clock()
        code, text = reply_code(event.text)
        # "#2 STOP" opts out too: keywords are about the number
        word = inbound_keyword(event.text, event.provider_keyword, rules)
        latest = routes[0]  # the conversation that texted the number last: where keywords are recorded

        def audit(
            name: str,
            route: ReplyRoute,
            *,
            outcome: Outcome = "success",
            reason: str | None = None,
            answering: bool = False,
            **details: DetailValue,
        ) -> None:
            # ``answering``: the text would be answered, so a refused answer is on its record.
            uow.audit.record(
                AuditEvent(
                    event=name,
                    workflow="sms.reply",
                    outcome=outcome,
                    reason=reason,
                    occurred_at=now,
                    request_id=f"webhook-{event.event_id}",
                    resource_type="external_participant",
                    resource_id=str(route.participant_id),
                    patient_id=route.patient_id,
                    details={
                        "conversation_id": route.conversation_id,
                        **details,
                        **(refused if answering else {}),
                    },
                )
            )

        # The number's opt-out once this text is read (a STOP or START changes it), and why an
        # answer to it must not be texted, if so: the one rule, asked again by the relay.
        opted_out = word is Keyword.STOP or (word is not Keyword.START and latest.opted_out)
        refusal = answer_refusal(
            confirms_stop=word is Keyword.STOP, opted_out=opted_out, textable=textable(event.from_number)
        )
        silent = word is not None and event.provider_answers_keywords  # the provider answers those
        refused: dict[str, DetailValue] = {} if refusal is None or silent else {"answer_refused": refusal}
        changed = posted = False
        if word is Keyword.STOP:
            changed = await uow.opt_outs.set(event.from_number, True, event.provider_message_id)
            audit("sms_opt_out", latest, changed=int(changed), answering=changed)
        elif word is Keyword.START:
            changed = await uow.opt_outs.set(event.from_number, False, event.provider_message_id)
            audit("sms_opt_in", latest, changed=int(changed), answering=changed)
        elif word is Keyword.HELP:
            audit("sms_help", latest, answering=True)
        if word is not None and not silent and refusal is None and (word is Keyword.HELP or changed):
            # HELP is answered unless the number opted out; STOP and START are confirmed once, when
            # they change something (a repeated STOP gets no second text). The STOP confirmation is
            # the last text sent.
            await uow.outbox.enqueue(AnswerKeyword(latest.conversation_id, latest.participant_id, word))
        if word is None:
            route, held = _reply_destination(routes, code)
            if route is None:
                for candidate in held:
                    audit(
                        "sms_reply_held",
                        candidate,
                        outcome="failure",
                        reason="unknown_reply_code" if code is not None else "ambiguous_reply",
                        candidates=len(held),
                        answering=True,
                    )
                codes = tuple(sorted(r.reply_code for r in held))
                if refusal is None:  # a number that opted out is not asked back
                    await uow.outbox.enqueue(
                        AskWhichConversation(held[0].conversation_id, held[0].participant_id, codes)
                    )
            elif text.strip():
                posted = await _post_reply(services, uow, route, event, text, now)
        # A text not posted (a keyword, a held or refused reply) has no further use for its body.
        await uow.webhook_events.finish(event.event_id, PROCESSED, keep_body=posted)
        await uow.commit()
    services.delivery.wake()
    return PROCESSED


def _reply_destination(
    routes: Sequence[ReplyRoute], code: int | None
) -> tuple[ReplyRoute | None, list[ReplyRoute]]:
    """Where a reply goes, or (None, the conversations it could mean) when that is not clear.

    The code's conversation if it names an active one; else the number's one active conversation; a
    number active nowhere any more goes to the last one that texted it, where ``sms.reply`` refuses
    it (a removed participant is not established there).
    """
    active = [r for r in routes if r.active]
    if code is not None:
        named = [r for r in active if r.reply_code == code]
        return (named[0], []) if named else (None, active or list(routes[:1]))
    if len(active) == 1:
        return active[0], []
    if not active:
        return routes[0], []
    return None, active


async def _post_reply(
    services: Services,
    uow: MessagingUnitOfWork,
    route: ReplyRoute,
    event: InboundSms,
    text: str,
    now: datetime,
) -> bool:
    """Decide ``sms.reply`` for the participant and, if allowed, queue the post into their channel
    (returns whether it did).

    A participant removed from the conversation is no longer established there: no consent counts
    for them (a consent recorded later for another conversation does not bring them back), so the
    reply is refused and its record says ``participant_removed``.

    The consents the decision rests on are held until this transaction commits: a revocation of
    one of them commits before they are read (and the reply is refused) or waits until the reply is
    queued; never a reply accepted after a revocation's commit."""
    candidates = (
        await uow.facts.external_consents(
            route.patient_id, route.phone_number, route.organization_id, hold=True
        )
        if route.active
        else []
    )
    policy = services.policy.current
    found = external_facts(policy.workflows.get("sms.reply"), candidates, now)
    decision = policy.decide(EXTERNAL_PARTICIPANT, "sms.reply", found.facts)
    decided = AuditEvent.for_decision(
        decision,
        actor=None,
        occurred_at=now,
        resource_type="conversation",
        resource_id=route.conversation_id,
        patient_id=route.patient_id,
        details={
            "external_participant_id": route.participant_id,
            "reply_code": route.reply_code,
            **({} if route.active else {"participant_removed": True}),
            **found.details,
        },
    )
    # The inbound text's own records (held, opt-out) carry its event; so does its decision.
    uow.audit.record(dataclasses.replace(decided, request_id=f"webhook-{event.event_id}"))
    if not decision.allowed:
        return False
    await uow.outbox.enqueue(
        PostSmsReply(
            route.conversation_id,
            route.channel_url,
            sender_chat_id=route.chat_user_id,
            text=text,
            dedup_id=event.provider_message_id,
        )
    )
    return True
