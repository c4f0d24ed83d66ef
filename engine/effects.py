"""What a workflow asks of the outside world: typed effects, performed after its transaction commits.

A workflow never calls the chat provider or the SMS provider itself. It builds one of these values and
hands it to its unit of work's outbox (:class:`engine.ports.Outbox`), in the transaction that decides
it; the outbox relay performs it afterwards, repeating it until it succeeds or is dead-lettered, and
audits each one (``delivery.<kind>``). Each type has one executor in ``integrations/effects/``,
registered against the type; the relay dispatches on it.

An effect carries ids, not content it can read again when it runs: what a message says, who is in a
channel and whether a text may still go out are read (and decided) when the effect is performed.
The one exception is :class:`PostSmsReply`, whose text exists nowhere else.

:data:`KIND` is the one place an effect type's stored name is spelled: the ``outbox.kind`` column,
and the name of its audit records. Rows already stored carry these strings, so a name is never
changed without a migration that rewrites the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.sms import Keyword


@dataclass(frozen=True)
class CreateChannel:
    """Create a conversation's chat channel with every member (their chat users first, as needed)."""

    conversation_id: int


@dataclass(frozen=True)
class PostMessage:
    """Post a stored message into its conversation's channel as its sender, exactly once."""

    conversation_id: int
    message_id: int


@dataclass(frozen=True)
class TextMessage:
    """Text one external participant about one message (its delivery row says whom and how)."""

    conversation_id: int
    message_id: int
    delivery_id: int


@dataclass(frozen=True)
class AnswerKeyword:
    """Answer a carrier keyword (HELP, or the confirmation of STOP or START) by text."""

    conversation_id: int
    participant_id: int
    keyword: Keyword


@dataclass(frozen=True)
class AskWhichConversation:
    """Text back the reply codes to choose from when an SMS reply's conversation is not clear."""

    conversation_id: int
    participant_id: int
    reply_codes: tuple[int, ...]


@dataclass(frozen=True)
class PostSmsReply:
    """Post an inbound SMS into the channel as the external participant who sent it, exactly once."""

    conversation_id: int
    channel_url: str
    sender_chat_id: str
    text: str = field(repr=False)  # PHI: never in a log line
    #: The provider's message id: what the post is reconciled on, so a provider retry posts nothing.
    dedup_id: str


@dataclass(frozen=True)
class RemoveMembers:
    """Take chat users out of a conversation's channel (a revocation, a deactivated account)."""

    conversation_id: int
    chat_user_ids: tuple[str, ...]


@dataclass(frozen=True)
class InviteMembers:
    """Put chat users into a conversation's channel (the new holder of its on-call role); users who
    are members already stay as they are."""

    conversation_id: int
    chat_user_ids: tuple[str, ...]


@dataclass(frozen=True)
class NotifyComplianceOfBreakGlass:
    """Tell the compliance officers of the patient's organization that an emergency session opened."""

    session_id: int


@dataclass(frozen=True)
class RealertUrgent:
    """Re-alert, in the conversation's channel, the staff an escalation step names: the members who have
    not read an urgent message (or the delegates of those away). Nothing is posted once acknowledged."""

    conversation_id: int
    message_id: int
    step_id: int


@dataclass(frozen=True)
class TextUrgentAlert:
    """Text the staff an escalation step names on their registered phones, with a fixed text that
    carries no clinical content. Nothing is texted once the message is acknowledged."""

    message_id: int
    step_id: int


@dataclass(frozen=True)
class EscalateUrgent:
    """Escalate an unacknowledged urgent message: add the care team's on-call member to the channel and
    alert them, or alert the patient's organization's admins (ids only), as its step says."""

    conversation_id: int
    message_id: int
    step_id: int


@dataclass(frozen=True)
class RecallFromChannel:
    """Take a recalled message out of its conversation's channel and post a notice in its place
    that a message was recalled (never what it said)."""

    conversation_id: int
    message_id: int


@dataclass(frozen=True)
class DeleteFromChannel:
    """Take a message whose content outlived its lifespan (retention) out of its conversation's
    channel, silently: no notice takes its place."""

    conversation_id: int
    message_id: int


@dataclass(frozen=True)
class DeleteSmsReplyFromChannel:
    """Take an SMS reply whose text outlived its lifespan (retention) out of its conversation's
    channel, silently: by the chat provider's id recorded when it was posted, else by its provider
    message id in ``data``. A reply that never reached the channel has nothing to delete."""

    conversation_id: int
    channel_url: str
    sender_chat_id: str
    dedup_id: str
    chat_message_id: int | None = None


@dataclass(frozen=True)
class PostAttachment:
    """Post a stored message's attached file into its conversation's channel as its sender, as a
    Sendbird file message, exactly once."""

    conversation_id: int
    message_id: int
    attachment_id: int


Effect = (
    CreateChannel
    | PostMessage
    | TextMessage
    | AnswerKeyword
    | AskWhichConversation
    | PostSmsReply
    | RemoveMembers
    | InviteMembers
    | NotifyComplianceOfBreakGlass
    | RealertUrgent
    | TextUrgentAlert
    | EscalateUrgent
    | RecallFromChannel
    | DeleteFromChannel
    | DeleteSmsReplyFromChannel
    | PostAttachment
)

#: The stored name of each effect type (``outbox.kind``, audit workflow ``delivery.<kind>``). Texts
#: share one name: they are one family, ordered and rate-limited together.
KIND: Mapping[type[Effect], str] = {
    CreateChannel: "ensure_channel",
    PostMessage: "send_message",
    TextMessage: "send_sms",
    AnswerKeyword: "send_sms",
    AskWhichConversation: "send_sms",
    PostSmsReply: "post_sms_reply",
    RemoveMembers: "remove_members",
    InviteMembers: "invite_members",
    NotifyComplianceOfBreakGlass: "notify_break_glass",
    RealertUrgent: "urgent_realert",
    TextUrgentAlert: "urgent_text",
    EscalateUrgent: "urgent_escalate",
    RecallFromChannel: "recall_message",
    DeleteFromChannel: "delete_message",
    DeleteSmsReplyFromChannel: "delete_sms_reply",
    PostAttachment: "send_file",
}

#: Effects that are texts, not chat effects: the service delivers them apart (a backlog of texts never
#: holds chat up), and a conversation's texts go out in the order they were accepted.
TEXTS: tuple[type[Effect], ...] = (TextMessage, AnswerKeyword, AskWhichConversation)

#: Effects a conversation's later entries of the same kind wait for: posts and texts keep their order.
IN_ORDER: tuple[type[Effect], ...] = (PostMessage, PostAttachment, *TEXTS)


def kind_of(effect: Effect | type[Effect]) -> str:
    """The stored name of an effect (or effect type): the one place it is derived."""
    return KIND[effect if isinstance(effect, type) else type(effect)]


def kinds(types: tuple[type[Effect], ...]) -> tuple[str, ...]:
    """The distinct stored names of these effect types, in order."""
    return tuple(dict.fromkeys(KIND[t] for t in types))
