"""Conversation and messaging ports: conversations, messages, per-recipient deliveries, members' read
state, SMS opt-outs, webhook bookkeeping, Idempotency-Key bindings, the outbox, and the send path's own
unit of work."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.effects import Effect
from engine.facts import ConsentCandidate
from engine.model import (
    Conversation,
    DeliveryState,
    EscalationTaken,
    Message,
    Page,
    ReadMark,
    RecalledContent,
    RecipientDelivery,
)
from engine.ports.audit import AuditLog


@dataclass(frozen=True)
class NewExternalParticipant:
    phone_number: str
    display_name: str
    organization_id: int | None
    consent_id: int


@dataclass(frozen=True)
class SmsRecipient:
    """An external participant of a conversation as the SMS fan-out needs them."""

    participant_id: int
    phone_number: str
    chat_user_id: str
    organization_id: int | None
    opted_out: bool
    #: The participant was removed from the conversation (their coverage ended): never text them.
    removed: bool
    #: Compliance groups the participant's organization belongs to (for the full-text SMS rule).
    compliance_group_ids: frozenset[int]
    #: The consents that could let them be texted about this patient (naming their number, or their
    #: directory organization); which one counts now is the fact builder's decision.
    consents: tuple[ConsentCandidate, ...] = ()


@dataclass(frozen=True)
class NewDelivery:
    recipient: str
    state: DeliveryState
    external_participant_id: int | None = None
    reason: str | None = None
    content: str | None = None
    #: For a message already in the channel: the chat provider's created_at (read receipts use it).
    provider_ts_ms: int | None = None


@dataclass(frozen=True)
class ReplyRoute:
    """One conversation an inbound SMS from a number could go to: the number's participant there."""

    conversation_id: int
    patient_id: int
    channel_url: str
    participant_id: int
    chat_user_id: str
    phone_number: str
    organization_id: int | None
    #: The participant's reply code ("#2"); see engine.sms.reply_code.
    reply_code: int = 0
    #: False once the participant was removed from the conversation (their consent revoked).
    active: bool = True
    #: The number has texted STOP (and not START since): what it sends is still read, but nothing
    #: but the confirmation of its STOP is texted back (:func:`engine.facts.answer_refusal`).
    opted_out: bool = False


class ConversationRepository(Protocol):
    async def add(
        self,
        *,
        patient_id: int,
        title: str,
        organization_id: int,
        created_by: int,
        member_ids: Sequence[int],
        external: Sequence[NewExternalParticipant],
    ) -> Conversation: ...

    async def get(self, conversation_id: int) -> Conversation | None: ...

    async def by_channel(self, channel_url: str) -> Conversation | None:
        """The conversation whose chat channel this is, if any."""
        ...

    async def list_for_member(self, user_id: int, after: int | None, limit: int) -> Page[Conversation]: ...

    async def reply_routes(self, phone_number: str) -> list[ReplyRoute]:
        """Every conversation the number is (or was) an external participant in: the one that texted
        it last first, then the newest admission first."""
        ...

    async def recipient_organizations(self, conversation_id: int, sender_id: int) -> tuple[int, ...]:
        """The organizations, other than the patient's, of the conversation's members besides the
        sender, in id order: whoever of them receives a message is a disclosure."""
        ...


@dataclass(frozen=True)
class Acknowledged:
    """An urgent message's acknowledgement as stored: the first one. ``first``: this call made it."""

    user_id: int
    at: datetime
    first: bool


class MessageRepository(Protocol):
    async def get(self, message_id: int) -> Message | None: ...

    async def acknowledge(self, message_id: int, user_id: int, at: datetime) -> Acknowledged:
        """Record that ``user_id`` acknowledged the urgent message at ``at`` unless someone did before
        (the first acknowledgement wins), and stop its escalation; the acknowledgement that stands."""
        ...

    async def recent(self, conversation_id: int, limit: int) -> list[Message]: ...

    async def add_posted(
        self, conversation_id: int, sender_id: int, text: str, chat_message_id: int, chat_ts_ms: int
    ) -> Message | None:
        """Store a message a staff member posted in the chat app itself; None if stored already."""
        ...


class DeliveryRepository(Protocol):
    """Per-recipient delivery state of messages, in the workflow's transaction."""

    async def sms_recipients(self, conversation_id: int, patient_id: int) -> list[SmsRecipient]:
        """Every external participant of the conversation, with opt-out and removal flags and the
        consents that could let them be texted about the patient."""
        ...

    async def add(self, message_id: int, deliveries: Sequence[NewDelivery]) -> list[int]:
        """Insert delivery rows; returns their ids in order."""
        ...

    async def for_messages(self, message_ids: Sequence[int]) -> dict[int, tuple[RecipientDelivery, ...]]:
        """The delivery rows of these messages, channel first."""
        ...

    async def escalation_of(self, message_ids: Sequence[int]) -> dict[int, tuple[EscalationTaken, ...]]:
        """The escalation steps taken for these (urgent) messages, each in the order taken."""
        ...

    async def mark_read(self, conversation_id: int, reader_chat_id: str, read_ts_ms: int) -> int:
        """Channel deliveries of others' messages posted up to ``read_ts_ms`` become ``delivered``.
        Says nothing of who the reader is: the caller asks only for a reader who counts, an active
        member whose read is allowed (``engine.workflows.read_receipts.record_chat_read``)."""
        ...


class ReadStateRepository(Protocol):
    """Per conversation and member, the last message read (``conversation_reads``).

    A member has read message M iff their mark's ``last_read_message_id >= M.id``
    (:func:`engine.model.has_read`, which also counts the sender as having read it); a mark only ever
    moves forward, so an older or repeated mark changes nothing (other readers of the table, such as
    urgent-message escalation, rely on both)."""

    async def mark(
        self, conversation_id: int, user_id: int, message_id: int, at: datetime, source: str
    ) -> tuple[ReadMark, bool]:
        """Move the member's mark to ``message_id`` if that is forward, else leave it; the mark as it
        now stands and whether it moved. Safe against a concurrent mark of the same member."""
        ...

    async def of_conversation(self, conversation_id: int) -> dict[int, ReadMark]:
        """Every member's mark in the conversation, by user id (members who never read have none)."""
        ...

    async def unread_counts(self, user_id: int, conversation_ids: Sequence[int]) -> dict[int, int]:
        """For each conversation, the messages after the member's mark that others sent, in one
        statement; a conversation with none unread may be left out."""
        ...

    async def last_in_channel_by(self, conversation_id: int, ts_ms: int) -> int | None:
        """The id of the conversation's latest message the chat provider took at or before ``ts_ms``
        (its channel delivery's ``provider_ts_ms``): what a chat client's receipt up to then covers."""
        ...


class OptOutRepository(Protocol):
    """SMS opt-outs (STOP / START), per phone number."""

    async def set(self, phone_number: str, opted_out: bool, provider_message_id: str) -> bool:
        """Record STOP (True) or START (False); returns whether anything changed."""
        ...


class WebhookEventLog(Protocol):
    """The stored inbound webhook events (integrations/webhooks.py claims them)."""

    async def take(self, event_id: int) -> bool:
        """Hold the stored event for this transaction (its row locked until commit or rollback) and
        say whether it is still pending. The first thing a workflow of an inbound event does: a
        second processor of the same event (its claim's lease ran out while the first was still at
        it) waits here for the first to finish, then finds it no longer pending and does nothing."""
        ...

    async def finish(self, event_id: int, status: str, *, keep_body: bool = True) -> None:
        """Mark a stored webhook event processed or ignored, in the transaction of its effects. An
        ignored event keeps no body: it may carry text caremsg never acts on; nor does one whose
        text caremsg did not post (``keep_body=False``: a keyword, a held or refused reply, a text
        from an unknown number), which has no further use and which no conversation's lifespan
        would ever time the deletion of."""
        ...


class IdempotencyKeys(Protocol):
    """The Idempotency-Key claims (integrations/idempotency.py takes them before the workflow runs)."""

    async def bind(self, claim_id: int, resource_id: int) -> None:
        """Name the resource an Idempotency-Key created, in the transaction that created it."""
        ...


class Outbox(Protocol):
    async def enqueue(self, effect: Effect) -> None:
        """Record an effect (:mod:`engine.effects`) to perform after commit, in the caller's transaction:
        it is performed if and only if the transaction commits."""
        ...

    async def enqueue_all(self, effects: Sequence[Effect]) -> None:
        """:meth:`enqueue` each of ``effects``, in order, in one round trip (a sweep's batch)."""
        ...


@dataclass(frozen=True)
class RecallOutcome:
    """What recalling a message stopped, and what it could not: counts only."""

    #: The chat post had not been made yet: it never will be.
    cancelled_posts: int = 0
    #: Texts (SMS) about the message that had not gone out yet: they never will.
    cancelled_texts: int = 0
    #: Texts the carrier has (their deliveries ``sent`` or ``delivered``): not undone.
    texts_already_sent: int = 0
    #: Texts a relay held at that moment (claimed, not yet settled): the relay reads the recall
    #: right before texting and cancels one it has not sent (``failed: recalled``); one it was
    #: handing over already reaches the carrier. Either way its own ``delivery.send_sms`` record
    #: says which (failure ``recalled``, or success); counted in neither of the two above.
    texts_in_flight: int = 0


class MessageRecalls(Protocol):
    """Recall and correction of sent messages, and the legal record of what was recalled."""

    async def recall(self, message_id: int, *, at: datetime, by: int, reason: str) -> RecallOutcome | None:
        """Move the message's text into the legal record (with who, when and why), so ordinary reads
        no longer return it; cancel its outbox entries that have not gone out and are not being
        delivered right now (the chat post, texts), marking those deliveries ``failed: recalled``.
        None when the message was recalled already (nothing changes)."""
        ...

    async def legal_record(self, message_id: int) -> RecalledContent | None:
        """What a recalled message said, and who recalled it when and why; None if not recalled."""
        ...

    async def add_correction(self, original: Message, text: str, *, at: datetime) -> Message | None:
        """Store a new message from the original's sender in its conversation, naming the original
        as the one it replaces, and name it on the original; None when the original has a
        correction already (nothing is stored)."""
        ...


class DeliveryTrigger(Protocol):
    def wake(self, queued: Collection[type[Effect]] | None = None) -> None:
        """Tell the outbox relay there is work (after a commit): the types of the effects just queued,
        or None when the caller does not say (every relay looks). A hint, never required for
        delivery: a relay not woken finds the work at its next poll."""
        ...


@dataclass(frozen=True)
class SendContext:
    """Everything deciding and planning one send needs, read in one round trip."""

    conversation_id: int
    patient_id: int
    #: None when the conversation's patient record no longer exists.
    patient_organization_id: int | None
    is_member: bool
    on_care_team: bool
    #: The id the message will have if it is stored (reserved from its sequence; a refused send
    #: leaves a gap, as a rolled-back insert would).
    message_id: int
    sms_recipients: tuple[SmsRecipient, ...]
    #: The sender's emergency (break-the-glass) session for the patient open now, if any.
    break_glass_session_id: int | None = None
    #: The conversation's on-call role, if it includes one: (care team, who holds it in the channel
    #: now, or None while nobody is on call).
    on_call: tuple[int, int | None] | None = None
    #: The organizations of the conversation's other members that are not the patient's: whoever of
    #: them receives the message is a disclosure, under the consent that admitted them.
    recipient_organization_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class NewSend:
    """A decided send: the message, its delivery rows, and the Idempotency-Key claim to bind."""

    message_id: int
    conversation_id: int
    sender_id: int
    text: str
    deliveries: tuple[NewDelivery, ...]
    idempotency_claim: int | None = None
    #: "routine" or "urgent"; an urgent message is first looked at by the escalation scheduler
    #: ``first_escalation_seconds`` after it is stored (None: never, every step is switched off).
    priority: str = "routine"
    first_escalation_seconds: float | None = None


class SendUnitOfWork(Protocol):
    """The send-message workflow's unit of work: one read and one atomic write.

    Sending is the busiest workflow, so it does not go through the general :class:`UnitOfWork`:
    :meth:`context` reads the conversation, the sender's relation to its patient and the SMS
    recipients in one statement, and :meth:`commit` stores the message, its delivery rows, its
    outbox entries (the chat post, one text per queued SMS delivery), the Idempotency-Key binding
    and the buffered audit events in one statement, so they are written together or not at all.
    Leaving the ``async with`` block without committing writes the buffered events on their own,
    marked ``denied`` or ``failure``, as :class:`UnitOfWork` does.
    """

    @property
    def audit(self) -> AuditLog: ...

    async def context(self, conversation_id: int, user_id: int, at: datetime) -> SendContext | None:
        """None if there is no such conversation."""
        ...

    async def commit(self, send: NewSend) -> datetime:
        """Store the send with the buffered audit events; returns the message's ``created_at``."""
        ...

    async def __aenter__(self) -> SendUnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None: ...


class SendUnitOfWorkFactory(Protocol):
    def __call__(self) -> SendUnitOfWork: ...
