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
            on_call_of=c.on_call_care_team_id,
            on_call_holder_id=c.on_call_holder_id,
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
    message: str
    state: DeliveryState = Field(description="Delivery to the chat channel.")
    created_at: datetime
    deliveries: list[DeliveryPublic] = Field(
        default_factory=list, description="Per recipient: the chat channel, then each SMS participant."
    )

    @classmethod
    def of(cls, m: Message) -> MessagePublic:
        return cls(
            id=m.id,
            conversation_id=m.conversation_id,
            sender_id=m.sender_id,
            message=m.text,
            state=m.state,
            created_at=m.created_at,
            deliveries=[DeliveryPublic.of(d) for d in m.deliveries],
        )


class WebhookAccepted(Response):
    status: Literal["accepted", "duplicate"]


class ConversationDetailPublic(ConversationPublic):
    messages: list[MessagePublic]
