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
    Message,
    RecalledContent,
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


class MessagePublic(Response):
    id: int
    conversation_id: int
    sender_id: int
    message: str | None = Field(description="The text; null once the message is recalled.")
    state: DeliveryState = Field(description="Delivery to the chat channel.")
    created_at: datetime
    deliveries: list[DeliveryPublic] = Field(
        default_factory=list, description="Per recipient: the chat channel, then each SMS participant."
    )
    recalled: bool = Field(False, description="Recalled: its text is kept only in the legal record.")
    recalled_at: datetime | None = Field(None, description="When it was recalled.")
    recalled_by: int | None = Field(None, description="Who recalled it (a user id).")
    corrects_message_id: int | None = Field(None, description="The message this one corrects.")
    corrected_by_message_id: int | None = Field(None, description="The message that corrects this one.")

    @classmethod
    def of(cls, m: Message) -> MessagePublic:
        return cls(
            id=m.id,
            conversation_id=m.conversation_id,
            sender_id=m.sender_id,
            message=None if m.recalled else m.text,
            state=m.state,
            created_at=m.created_at,
            deliveries=[DeliveryPublic.of(d) for d in m.deliveries],
            recalled=m.recalled,
            recalled_at=m.recalled_at,
            recalled_by=m.recalled_by,
            corrects_message_id=m.corrects_message_id,
            corrected_by_message_id=m.corrected_by_message_id,
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
    message: str = Field(description="The recalled text.")
    recalled_at: datetime = Field(description="When it was recalled.")
    recalled_by: int = Field(description="Who recalled it (a user id).")
    reason: str = Field(description="Why, as the person who recalled it said.")

    @classmethod
    def of(cls, r: RecalledContent) -> LegalRecordPublic:
        return cls(
            message_id=r.message_id,
            conversation_id=r.conversation_id,
            sender_id=r.sender_id,
            sent_at=r.sent_at,
            message=r.text,
            recalled_at=r.recalled_at,
            recalled_by=r.recalled_by,
            reason=r.reason,
        )


class WebhookAccepted(Response):
    status: Literal["accepted", "duplicate"]


class ConversationDetailPublic(ConversationPublic):
    messages: list[MessagePublic]
