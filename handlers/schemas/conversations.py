"""Schemas of conversations, messages, their per-recipient deliveries and per-member receipts, read
marks, and webhook answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    Field,
    StringConstraints,
)

from engine.model import (
    Conversation,
    DeliveryState,
    EscalationTaken,
    MemberReceipt,
    Message,
    RecalledContent,
    ReceiptState,
    RecipientDelivery,
)
from engine.workflows.read_receipts import ReadState
from handlers.schemas import (
    Id,
    Name,
    PhoneNumber,
    Request,
    Response,
    Title,
)
from handlers.schemas.attachments import AttachmentPublic

# --- conversations & messages ---------------------------------------------------------------------


class ExternalMemberCreate(Request):
    phone_number: PhoneNumber
    name: Name
    organization_id: Id | None = None


class ConversationCreate(Request):
    title: Title
    patient_id: Id
    member_ids: Annotated[list[Id], Field(max_length=99)] = []
    external_members: Annotated[list[ExternalMemberCreate], Field(max_length=20)] = []
    on_call_of: Id | None = Field(
        None,
        description="A care team id (the patient's): the conversation also includes whoever is on call"
        " for that care team, handed over to the next holder when their shift ends.",
    )


class ExternalMemberPublic(Response):
    id: int
    phone_number: str
    name: str
    # Set once they were removed (their consent ended): listed still, for the record, but not texted.
    removed_at: datetime | None = None


class ConversationPublic(Response):
    id: int
    title: str
    patient_id: int
    channel_url: str
    channel_state: Literal["pending", "ready", "failed"]
    member_ids: list[int]
    external_members: list[ExternalMemberPublic]
    created_by: int
    created_at: datetime
    unread_count: int = Field(
        0,
        ge=0,
        description="Messages after the caller's read mark that others sent (0 for a new conversation).",
    )
    on_call_of: int | None = Field(
        None, description="The care team whose on-call role the conversation includes, if any."
    )
    on_call_holder_id: int | None = Field(
        None, description="Who holds that role in the conversation now (null while nobody is on call)."
    )

    @classmethod
    def of(cls, c: Conversation) -> ConversationPublic:
        return cls(
            id=c.id,
            title=c.title,
            patient_id=c.patient_id,
            channel_url=c.channel_url,
            channel_state=c.channel_state,
            member_ids=list(c.member_ids),
            external_members=[
                ExternalMemberPublic(
                    id=e.id, phone_number=e.phone_number, name=e.display_name, removed_at=e.removed_at
                )
                for e in c.external_participants
            ],
            created_by=c.created_by,
            created_at=c.created_at,
            unread_count=c.unread_count or 0,
            on_call_of=c.on_call_care_team_id,
            on_call_holder_id=c.on_call_holder_id,
        )


class SendMessageRequest(Request):
    conversation_id: Id
    message: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    priority: Literal["routine", "urgent"] = Field(
        "routine",
        description="urgent: escalated until a member of the patient's care team acknowledges it "
        "(POST /api/messages/{id}/acknowledge); sending one is decided as message.send_urgent too.",
    )


class DeliveryPublic(Response):
    """Delivery to one recipient: the chat channel (staff) or one external participant by SMS."""

    channel: Literal["chat", "sms"]
    external_member_id: int | None = Field(None, description="For SMS: the external member texted.")
    state: DeliveryState
    reason: str | None = Field(
        None, description="For failed: e.g. opted_out, no_sms_consent, invalid_number, chat_unavailable."
    )
    updated_at: datetime | None = None

    @classmethod
    def of(cls, d: RecipientDelivery) -> DeliveryPublic:
        external = d.recipient.removeprefix("sms:")
        return cls(
            channel="chat" if d.channel == "chat" else "sms",
            external_member_id=int(external) if d.channel == "sms" and external.isdigit() else None,
            state=d.state,
            reason=d.reason,
            updated_at=d.updated_at,
        )


class RecipientPublic(Response):
    """Where the message stands for one member of the conversation (its sender aside)."""

    user_id: int
    state: ReceiptState = Field(
        description="sent: on its way to the chat channel; delivered: in the chat channel; read: the"
        " member's read mark covers it; failed: it could not be posted to the channel."
    )
    delivered_at: datetime | None = Field(None, description="When it reached the chat channel.")
    read_at: datetime | None = Field(
        None,
        description="When the member's read mark moved past it: they had read it by then (one mark"
        " covering several messages gives them all its time).",
    )

    @classmethod
    def of(cls, r: MemberReceipt) -> RecipientPublic:
        return cls(user_id=r.user_id, state=r.state, delivered_at=r.delivered_at, read_at=r.read_at)


class AcknowledgementPublic(Response):
    """Who acknowledged an urgent message first, and when."""

    user_id: int = Field(description="Who acknowledged it first.")
    acknowledged_at: datetime = Field(description="When (UTC, ISO 8601).")


class EscalationStepPublic(Response):
    """One escalation step taken for an unacknowledged urgent message."""

    step: Literal["realert", "text", "on_call", "admin"] = Field(
        description="realert: a reminder in the channel; text: to registered phones; on_call: the care "
        "team's on-call member brought in; admin: the organization's admins alerted."
    )
    round: int = Field(description="The re-alert's round (1, 2, ...); 1 for the other steps.")
    taken_at: datetime = Field(description="When the escalation scheduler took it (UTC, ISO 8601).")
    user_ids: list[int] = Field(description="Whom it alerts (a delegate stands in for someone away).")
    state: Literal["queued", "done", "cancelled", "failed", "none"] = Field(
        description="cancelled: acknowledged before it went out; none: there was nobody to alert."
    )
    reason: str | None = Field(
        None, description="Why it ended as it did, e.g. acknowledged, no_registered_phone."
    )

    @classmethod
    def of(cls, e: EscalationTaken) -> EscalationStepPublic:
        return cls(
            step=e.step,
            round=e.round,
            taken_at=e.taken_at,
            user_ids=list(e.target_user_ids),
            state=e.state,
            reason=e.reason,
        )


class MessagePublic(Response):
    id: int
    conversation_id: int
    sender_id: int
    message: str | None = Field(
        description="The text; null once the message is recalled or its content deleted by retention."
    )
    state: DeliveryState = Field(description="Delivery to the chat channel.")
    created_at: datetime
    deliveries: list[DeliveryPublic] = Field(
        default_factory=list, description="Per recipient: the chat channel, then each SMS participant."
    )
    recipients: list[RecipientPublic] | None = Field(
        None,
        description="Per member but the sender, by user id: sent, delivered or read, with times."
        " Shown when a message is read (GET /api/messages/{id}, GET /api/conversations/{id});"
        " null in the answer to sending it.",
    )
    priority: Literal["routine", "urgent"] = Field("routine", description="routine or urgent.")
    acknowledgement: AcknowledgementPublic | None = Field(
        None, description="For an urgent message: who acknowledged it first, and when."
    )
    escalation: list[EscalationStepPublic] = Field(
        default_factory=list, description="For an urgent message: the escalation steps taken so far."
    )
    recalled: bool = Field(False, description="Recalled: its text is kept only in the legal record.")
    recalled_at: datetime | None = Field(None, description="When it was recalled.")
    recalled_by: int | None = Field(None, description="Who recalled it (a user id).")
    corrects_message_id: int | None = Field(None, description="The message this one corrects.")
    corrected_by_message_id: int | None = Field(None, description="The message that corrects this one.")
    content_deleted: bool = Field(
        False,
        description="Its content outlived its organization's lifespan (policies/retention.toml) and was"
        " deleted; the message's metadata stays.",
    )
    content_deleted_at: datetime | None = Field(None, description="When retention deleted its content.")
    attachments: list[AttachmentPublic] = Field(
        default_factory=list,
        description="Files attached to it (type, size, SHA-256); download each at "
        "/api/messages/{id}/attachments/{attachmentId}. Listed on GET /api/messages/{id} and on sending.",
    )

    @classmethod
    def of(cls, m: Message) -> MessagePublic:
        acknowledged = (
            AcknowledgementPublic(user_id=m.acknowledged_by, acknowledged_at=m.acknowledged_at)
            if m.acknowledged_by is not None and m.acknowledged_at is not None
            else None
        )
        return cls(
            id=m.id,
            conversation_id=m.conversation_id,
            sender_id=m.sender_id,
            message=None if m.recalled or m.content_deleted else m.text,
            state=m.state,
            created_at=m.created_at,
            deliveries=[DeliveryPublic.of(d) for d in m.deliveries],
            recipients=None if m.receipts is None else [RecipientPublic.of(r) for r in m.receipts],
            priority="urgent" if m.priority == "urgent" else "routine",
            acknowledgement=acknowledged,
            escalation=[EscalationStepPublic.of(e) for e in m.escalation],
            recalled=m.recalled,
            recalled_at=m.recalled_at,
            recalled_by=m.recalled_by,
            corrects_message_id=m.corrects_message_id,
            corrected_by_message_id=m.corrected_by_message_id,
            content_deleted=m.content_deleted,
            content_deleted_at=m.content_deleted_at,
            attachments=[AttachmentPublic.of(a) for a in m.attachments],
        )


#: Why a message is recalled (1 to 500 characters); kept with the legal record.
RecallReason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class RecallRequest(Request):
    reason: RecallReason = Field(description="Why the message is recalled; kept with the legal record.")


class CorrectionRequest(Request):
    message: Annotated[str, StringConstraints(min_length=1, max_length=4000)] = Field(
        description="The corrected text."
    )


class LegalRecordPublic(Response):
    """What a recalled message said, and who recalled it when and why."""

    message_id: int = Field(description="The recalled message.")
    conversation_id: int = Field(description="Its conversation.")
    sender_id: int = Field(description="Who sent it (a user id).")
    sent_at: datetime = Field(description="When it was sent.")
    message: str | None = Field(
        description="The recalled text; null once retention deleted it (see contentDeletedAt)."
    )
    recalled_at: datetime = Field(description="When it was recalled.")
    recalled_by: int = Field(description="Who recalled it (a user id).")
    reason: str = Field(description="Why, as the person who recalled it said.")
    attachments: list[AttachmentPublic] = Field(
        default_factory=list,
        description="Files that were attached to it (type, size, SHA-256), kept with the legal record; "
        "read each one's bytes at /api/messages/{id}/legal-record/attachments/{attachmentId}.",
    )
    content_deleted: bool = Field(
        False,
        description="Its content outlived its organization's lifespan (policies/retention.toml) and"
        " was deleted from the legal record too; the record of the recall stays.",
    )
    content_deleted_at: datetime | None = Field(None, description="When retention deleted its content.")
    corrected_by_message_id: int | None = Field(
        None, description="The message that corrects it (message.correct), if one was sent."
    )

    @classmethod
    def of(cls, r: RecalledContent) -> LegalRecordPublic:
        return cls(
            message_id=r.message_id,
            conversation_id=r.conversation_id,
            sender_id=r.sender_id,
            sent_at=r.sent_at,
            message=None if r.content_deleted_at is not None else r.text,
            recalled_at=r.recalled_at,
            recalled_by=r.recalled_by,
            reason=r.reason,
            attachments=[AttachmentPublic.of(a) for a in r.attachments],
            content_deleted=r.content_deleted_at is not None,
            content_deleted_at=r.content_deleted_at,
            corrected_by_message_id=r.corrected_by_message_id,
        )


class MarkReadRequest(Request):
    message_id: Id = Field(
        description="The last message read, one of this conversation's: every message up to it is read."
    )


class ReadStatePublic(Response):
    """The caller's read state in the conversation after the mark (it only moves forward)."""

    conversation_id: int
    user_id: int
    last_read_message_id: int = Field(description="Every message up to this one is read.")
    read_at: datetime = Field(description="When the read state last moved forward.")
    source: Literal["api", "chat"] = Field(
        description="Who moved it last: a caremsg client (api) or a chat client's read receipt (chat)."
    )
    unread_count: int = Field(ge=0, description="Messages after it that others sent.")

    @classmethod
    def of(cls, state: ReadState) -> ReadStatePublic:
        mark = state.mark
        return cls(
            conversation_id=mark.conversation_id,
            user_id=mark.user_id,
            last_read_message_id=mark.last_read_message_id,
            read_at=mark.read_at,
            source="chat" if mark.source == "chat" else "api",
            unread_count=state.unread_count,
        )


class AcknowledgeResult(Response):
    """The acknowledgement of an urgent message: the first one, whoever asked."""

    message_id: int = Field(description="The urgent message.")
    acknowledgement: AcknowledgementPublic = Field(description="The acknowledgement that stands: the first.")
    already_acknowledged: bool = Field(
        description="true: someone had acknowledged it before; the first acknowledgement stands."
    )


class WebhookAccepted(Response):
    status: Literal["accepted", "duplicate"]


class ConversationDetailPublic(ConversationPublic):
    messages: list[MessagePublic]
