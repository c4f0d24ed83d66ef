"""How effects are stored in the outbox and read back: the one codec between effect types and rows.

A row's ``kind`` is the effect type's stored name (:data:`engine.effects.KIND`); its ``payload`` holds
the effect's fields in the shapes rows already stored use, so entries written before effects were
typed are still delivered. A row this code cannot read (a kind no release knows, a payload that does
not fit) becomes an :class:`Unreadable` entry, which no executor performs: the relay dead-letters it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.effects import (
    AnswerKeyword,
    AskWhichConversation,
    CreateChannel,
    DeleteFromChannel,
    DeleteSmsReplyFromChannel,
    Effect,
    EscalateUrgent,
    InviteMembers,
    NotifyComplianceOfBreakGlass,
    PostAttachment,
    PostMessage,
    PostSmsReply,
    RealertUrgent,
    RecallFromChannel,
    RemoveMembers,
    TextMessage,
    TextUrgentAlert,
    kind_of,
)
from engine.sms import Keyword


@dataclass(frozen=True)
class OutboxRow:
    """The columns an effect is stored in."""

    kind: str
    payload: dict[str, Any] = field(repr=False)
    conversation_id: int | None
    message_id: int | None = None


@dataclass(frozen=True)
class Unreadable:
    """A stored entry that is not an effect this release knows: dead-lettered with ``reason``."""

    reason: str


@dataclass(frozen=True)
class OutboxEntry:
    """One claimed outbox row: the effect it holds, and the attempt this claim is."""

    id: int
    kind: str
    effect: Effect | Unreadable
    attempts: int
    #: What the executor's ``prepare`` loaded for this entry (None without one); ``deliver`` reads it.
    prepared: object = field(default=None, compare=False, repr=False)
    #: Whether ``prepared`` was read right before this delivery (by the claim, or by the settle of the
    #: wave before it). False for an entry that waited since (behind its conversation's earlier
    #: entries, or for a delivery slot): its message may have been recalled, ``deliver`` checks first.
    fresh: bool = field(default=True, compare=False, repr=False)


def outbox_row(effect: Effect) -> OutboxRow:
    """The row that stores ``effect``."""
    kind = kind_of(effect)
    match effect:
        case CreateChannel(conversation_id=c):
            return OutboxRow(kind, {"conversation_id": c}, c)
        case PostMessage(conversation_id=c, message_id=m):
            return OutboxRow(kind, {"message_id": m}, c, m)
        case TextMessage(conversation_id=c, message_id=m, delivery_id=d):
            return OutboxRow(kind, {"delivery_id": d}, c, m)
        case AnswerKeyword(conversation_id=c, participant_id=p, keyword=word):
            return OutboxRow(kind, {"keyword_reply": word.value, "participant_id": p}, c)
        case AskWhichConversation(conversation_id=c, participant_id=p, reply_codes=codes):
            return OutboxRow(kind, {"reply_codes": list(codes), "participant_id": p}, c)
        case PostSmsReply(conversation_id=c):
            payload = {
                "channel_url": effect.channel_url,
                "sender_chat_id": effect.sender_chat_id,
                "text": effect.text,
                "dedup_id": effect.dedup_id,
            }
            return OutboxRow(kind, payload, c)
        case RemoveMembers(conversation_id=c, chat_user_ids=users):
            return OutboxRow(kind, {"conversation_id": c, "user_ids": list(users)}, c)
        case InviteMembers(conversation_id=c, chat_user_ids=users):
            return OutboxRow(kind, {"conversation_id": c, "user_ids": list(users)}, c)
        case NotifyComplianceOfBreakGlass(session_id=s):
            return OutboxRow(kind, {"session_id": s}, None)
        case (
            RealertUrgent(conversation_id=c, message_id=m, step_id=step)
            | EscalateUrgent(conversation_id=c, message_id=m, step_id=step)
        ):
            return OutboxRow(kind, {"step_id": step}, c, m)
        case TextUrgentAlert(message_id=m, step_id=step):
            return OutboxRow(kind, {"step_id": step}, None, m)
        case (
            RecallFromChannel(conversation_id=c, message_id=m)
            | DeleteFromChannel(conversation_id=c, message_id=m)
        ):
            return OutboxRow(kind, {"message_id": m}, c, m)
        case PostAttachment(conversation_id=c, message_id=m, attachment_id=a):
            return OutboxRow(kind, {"attachment_id": a}, c, m)
        case DeleteSmsReplyFromChannel(conversation_id=c):
            where: dict[str, Any] = {
                "channel_url": effect.channel_url,
                "sender_chat_id": effect.sender_chat_id,
                "dedup_id": effect.dedup_id,
                "chat_message_id": effect.chat_message_id,
            }
            return OutboxRow(kind, where, c)


def effect_from(
    kind: str, payload: Mapping[str, Any], conversation_id: int | None, message_id: int | None
) -> Effect | Unreadable:
    """The effect a stored row holds, or :class:`Unreadable` if this release cannot read it."""
    read = _READERS.get(kind)
    if read is None:
        return Unreadable("unknown_kind")
    try:
        return read(payload, conversation_id, message_id)
    except (KeyError, TypeError, ValueError):
        return Unreadable("unreadable_entry")


def _required(value: int | None) -> int:
    if value is None:
        raise ValueError("missing id")
    return value


def _text(p: Mapping[str, Any], conversation_id: int | None, message_id: int | None) -> Effect:
    conversation = _required(conversation_id)
    if "delivery_id" in p:
        return TextMessage(conversation, _required(message_id), int(p["delivery_id"]))
    if "keyword_reply" in p:
        return AnswerKeyword(conversation, int(p["participant_id"]), Keyword(p["keyword_reply"]))
    if "help_participant_id" in p:  # entries queued before keyword answers were one effect
        return AnswerKeyword(conversation, int(p["help_participant_id"]), Keyword.HELP)
    return AskWhichConversation(
        conversation, int(p["participant_id"]), tuple(int(c) for c in p["reply_codes"])
    )


_Reader = Callable[[Mapping[str, Any], int | None, int | None], Effect]

_READERS: dict[str, _Reader] = {
    kind_of(CreateChannel): lambda p, c, m: CreateChannel(int(p["conversation_id"])),
    kind_of(PostMessage): lambda p, c, m: PostMessage(_required(c), int(p["message_id"])),
    kind_of(PostAttachment): lambda p, c, m: PostAttachment(
        _required(c), _required(m), int(p["attachment_id"])
    ),
    kind_of(TextMessage): _text,
    kind_of(PostSmsReply): lambda p, c, m: PostSmsReply(
        _required(c),
        str(p["channel_url"]),
        sender_chat_id=str(p["sender_chat_id"]),
        text=str(p["text"]),
        dedup_id=str(p["dedup_id"]),
    ),
    kind_of(RemoveMembers): lambda p, c, m: RemoveMembers(
        int(p["conversation_id"]), tuple(str(u) for u in p["user_ids"])
    ),
    kind_of(InviteMembers): lambda p, c, m: InviteMembers(
        int(p["conversation_id"]), tuple(str(u) for u in p["user_ids"])
    ),
    kind_of(NotifyComplianceOfBreakGlass): lambda p, c, m: NotifyComplianceOfBreakGlass(int(p["session_id"])),
    kind_of(RealertUrgent): lambda p, c, m: RealertUrgent(_required(c), _required(m), int(p["step_id"])),
    kind_of(TextUrgentAlert): lambda p, c, m: TextUrgentAlert(_required(m), int(p["step_id"])),
    kind_of(EscalateUrgent): lambda p, c, m: EscalateUrgent(_required(c), _required(m), int(p["step_id"])),
    kind_of(RecallFromChannel): lambda p, c, m: RecallFromChannel(_required(c), int(p["message_id"])),
    kind_of(DeleteFromChannel): lambda p, c, m: DeleteFromChannel(_required(c), int(p["message_id"])),
    kind_of(DeleteSmsReplyFromChannel): lambda p, c, m: DeleteSmsReplyFromChannel(
        _required(c),
        str(p["channel_url"]),
        str(p["sender_chat_id"]),
        str(p["dedup_id"]),
        None if p.get("chat_message_id") is None else int(p["chat_message_id"]),
    ),
}
