"""Schemas of conversations, messages and their per-recipient deliveries, and webhook answers."""

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
    Message,
    RecipientDelivery,
)
from handlers.schemas import (
    Id,
    Name,
    PhoneNumber,
    Request,
    Response,
    Title,
)

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
    message: str
    state: DeliveryState = Field(description="Delivery to the chat channel.")
    created_at: datetime
    deliveries: list[DeliveryPublic] = Field(
        default_factory=list, description="Per recipient: the chat channel, then each SMS participant."
    )
    priority: Literal["routine", "urgent"] = Field("routine", description="routine or urgent.")
    acknowledgement: AcknowledgementPublic | None = Field(
        None, description="For an urgent message: who acknowledged it first, and when."
    )
    escalation: list[EscalationStepPublic] = Field(
        default_factory=list, description="For an urgent message: the escalation steps taken so far."
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
            message=m.text,
            state=m.state,
            created_at=m.created_at,
            deliveries=[DeliveryPublic.of(d) for d in m.deliveries],
            priority="urgent" if m.priority == "urgent" else "routine",
            acknowledgement=acknowledged,
            escalation=[EscalationStepPublic.of(e) for e in m.escalation],
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
