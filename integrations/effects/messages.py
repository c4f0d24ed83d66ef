"""Executors of the effects that post into a chat channel, and :func:`post_once`, which they share.

**Reconciliation, not trust** (sendbird-api.md §8). Every post carries caremsg's own id of what it
posts in ``data``, a field Sendbird returns with every message. After an ambiguous outcome (a
timeout, a dropped connection, a 5xx, any error answering a repeat) and before any repeat of a post,
the channel's recent messages are read: if the post landed, its Sendbird id is recorded and nothing
is posted again. ``dedup_id`` stays as a second layer only, because what Sendbird answers a repeated
one is not documented. This holds as long as a post in flight ends before its lease does (the
relay's ``lease_seconds`` well above the chat client's timeout).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from engine.audit import AuditEvent
from engine.effects import Effect, PostMessage, kind_of
from engine.errors import ChatCredentialsRejected, ChatGatewayError, ChatRateLimited
from engine.part2 import NOTICE_SENT, Covering, NoticeDue, Post, notices_due
from engine.policy import PART2_SHORT_NOTICE
from engine.ports import ChatGateway, ChatPostKind, SentChatMessage
from engine.services import utc_now
from integrations.db.uow import audit_insert_sql, audit_json
from integrations.effects.executor import RelayContext
from integrations.effects.outbox import OutboxEntry
from integrations.effects.posts import MessageRecalled, not_posted, posted, record_posts

log = structlog.get_logger("caremsg.relay")

#: custom_type of SMS replies posted into channels; their webhook echoes are ignored.
SMS_REPLY_CUSTOM_TYPE = "caremsg_sms_reply"
#: custom_type of the 42 CFR 2.32 notice posted before the first message a recipient organization's
#: members get under a Part 2 consent; what a chat client may render as a system line.
PART2_NOTICE_CUSTOM_TYPE = "caremsg_part2_notice"
#: The chat user system notices are posted as (the recall notices' too, integrations/effects/recalls.py).
SYSTEM_USER = "caremsg_system"


@dataclass(frozen=True)
class ChatFile:
    """A file to post as a file message: caremsg's name for it, its type and bytes."""

    name: str
    content_type: str
    content: bytes = field(repr=False)


async def post_once(
    chat: ChatGateway,
    entry: OutboxEntry,
    channel_url: str,
    *,
    sender_id: str,
    text: str,
    dedup_id: str,
    custom_type: str,
    data: str,
    file: ChatFile | None = None,
) -> SentChatMessage:
    """Post a message (a file message when ``file`` is given) unless it is in the channel already;
    what was posted (or found) either way.

    ``data`` must carry caremsg's own id of the message: it is what the channel's messages are
    searched for. Read before posting when an earlier attempt was made (it may have landed), and
    after an ambiguous failure of this post (timeout, dropped connection, 5xx) or any failure of a
    repeat, before the failure is believed. A failed read leaves the original error standing. A file
    post is looked for among the channel's file messages, a text among its text messages.
    """
    kind: ChatPostKind = "text" if file is None else "file"
    if entry.attempts > 1:
        landed = await chat.find_message(
            channel_url, sender_id=sender_id, custom_type=custom_type, data=data, kind=kind
        )
        if landed is not None:
            log.info("relay.reconciled", outbox_id=entry.id, kind=entry.kind, found="before_post")
            return landed
    try:
        if file is not None:
            return await chat.send_file(
                channel_url,
                sender_id=sender_id,
                file=file.content,
                file_name=file.name,
                content_type=file.content_type,
                dedup_id=dedup_id,
                custom_type=custom_type,
                data=data,
            )
        return await chat.send_message(
            channel_url, sender_id=sender_id, text=text, dedup_id=dedup_id, custom_type=custom_type, data=data
        )
    except ChatGatewayError as exc:
        # A rate limit or a refusal of our credentials means Sendbird did nothing; any other error
        # on a first attempt that is not retryable (bad input, no channel) is believed.
        if isinstance(exc, ChatRateLimited | ChatCredentialsRejected) or not (
            exc.retryable or entry.attempts > 1
        ):
            raise
        try:
            landed = await chat.find_message(
                channel_url, sender_id=sender_id, custom_type=custom_type, data=data, kind=kind
            )
        except ChatGatewayError:
            raise exc from None
        if landed is None:
            raise
        log.info("relay.reconciled", outbox_id=entry.id, kind=entry.kind, found="after_error")
        return landed


@dataclass(frozen=True)
class MessageToPost:
    """What posting one stored message needs: its text, its channel and its sender's chat id."""

    body: str = field(repr=False)
    channel_url: str
    sender_chat_id: str
    #: Recalled after its post was claimed: it is never posted.
    recalled: bool = False
    patient_id: int | None = None
    #: The 42 CFR 2.32 notices to post before it (engine/part2.py).
    notices: tuple[NoticeDue, ...] = ()


# With each message, the Part 2 consents (active, disclosing conversations) naming an organization
# of the conversation's members other than the patient's own, directly or through a compliance group,
# whose members have not been given the notice in it yet. Only looked for when the patient has a Part
# 2 consent at all: otherwise one index probe, and the batch read stays one statement. "Active" is as
# of the app's clock (``:now``), the one the decision to send read, not the database's.
_MESSAGES_TO_POST = text(
    """
    SELECT m.id, m.body, m.recalled_at IS NOT NULL AS recalled, c.channel_url, u.chat_user_id,
           m.conversation_id, c.patient_id,
           CASE WHEN EXISTS (SELECT 1 FROM consents k0 WHERE k0.patient_id = c.patient_id AND k0.part2)
           THEN (SELECT json_agg(json_build_array(o.organization_id, k.id))
                 FROM (SELECT DISTINCT mu.organization_id FROM conversation_members cm
                       JOIN users mu ON mu.id = cm.user_id
                       WHERE cm.conversation_id = c.id AND mu.organization_id <> p.organization_id) o
                 JOIN consents k ON k.patient_id = c.patient_id AND k.part2
                      AND k.revoked_at IS NULL AND k.effective_at <= CAST(:now AS timestamptz)
                      AND (k.expires_at IS NULL OR k.expires_at > CAST(:now AS timestamptz))
                      AND 'message' = ANY(k.scope)
                      AND (k.organization_id = o.organization_id
                           OR k.compliance_group_id IN (SELECT g.group_id FROM compliance_group_members g
                                                        WHERE g.organization_id = o.organization_id))
                 WHERE NOT EXISTS (SELECT 1 FROM part2_notices n
                                   WHERE n.conversation_id = c.id AND n.organization_id = o.organization_id))
           END AS part2_covering
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id JOIN users u ON u.id = m.sender_id
    LEFT JOIN patients p ON p.id = c.patient_id
    WHERE m.id = ANY(CAST(:ids AS integer[]))
    """
)

#: Whether the message was recalled: what a post read at the claim checks again after waiting.
_RECALLED = text("SELECT recalled_at IS NOT NULL FROM messages WHERE id = :id")
#: Of these messages, the recalled ones: what a wave's posts read at the claim check again before it.
_RECALLED_OF = text(
    "SELECT id FROM messages WHERE id = ANY(CAST(:ids AS integer[])) AND recalled_at IS NOT NULL"
)

#: Claim the notice to an organization's members in a conversation, right before it is posted. Two
#: relays may each hold one of the conversation's first messages and both have read that no notice
#: was given (posts of one kind are claimed in order, but sends that commit out of id order, or a
#: message and a file, let two run at once): the primary key (conversation, organization) makes the
#: second claim wait for the first's transaction, which stays open while the notice is posted. If
#: it commits, the second finds the notice given (no row: nothing to post, its message follows the
#: notice); if the post fails, it rolls back and the second claims and posts the notice itself.
_CLAIM_NOTICE = text(
    "INSERT INTO part2_notices (conversation_id, organization_id, consent_id, message_id)"
    " VALUES (:conversation, :organization, :consent, :message)"
    " ON CONFLICT DO NOTHING RETURNING message_id"
)
_AUDIT_NOTICES = text(audit_insert_sql("CAST(:events AS jsonb)"))


def _json(value: object) -> list[list[int]]:
    if value is None:
        return []
    loaded: list[list[int]] = json.loads(value) if isinstance(value, str) else value  # type: ignore[assignment]
    return loaded


def _message_id(entry: OutboxEntry) -> int:
    effect = entry.effect
    if not isinstance(effect, PostMessage):
        raise TypeError(f"outbox entry {entry.id} is not a message post")
    return effect.message_id


async def read_messages_to_post(
    session: AsyncSession, message_ids: Sequence[int], now: datetime
) -> dict[int, MessageToPost]:
    """The messages as they will be posted, each with the 42 CFR 2.32 notices due before it (the
    earliest of them, by id, takes the notice to an organization none was given to) under the Part 2
    consents active at ``now``."""
    rows = list(await session.execute(_MESSAGES_TO_POST, {"ids": list(message_ids), "now": now}))
    due = notices_due(
        Post(
            r.id,
            r.conversation_id,
            [Covering(int(o), int(k), True) for o, k in _json(r.part2_covering)],
        )
        for r in rows
    )
    by_message: dict[int, list[NoticeDue]] = {}
    for notice in due:
        by_message.setdefault(notice.message_id, []).append(notice)
    return {
        r.id: MessageToPost(
            r.body, r.channel_url, r.chat_user_id, r.recalled, r.patient_id, tuple(by_message.get(r.id, ()))
        )
        for r in rows
    }


async def give_part2_notices(
    msg: MessageToPost, entry: OutboxEntry, ctx: RelayContext, notice: str, *, workflow: str, at: datetime
) -> None:
    """The 42 CFR 2.32 notice, as the system user, before the first message a recipient
    organization's members get under a Part 2 consent: one post per organization noticed, each
    claimed first (:data:`_CLAIM_NOTICE`), so that however many relays post the conversation's first
    messages at once, it is given once, recorded (``part2_notices``) and audited naming the consent
    in the transaction that claimed it, and before any of those messages. Its ``data`` names the
    message and the organization, so a repeat after an ambiguous failure finds it."""
    joined = False
    for due in msg.notices:
        async with ctx.sessions() as session, session.begin():
            claimed = (
                await session.execute(
                    _CLAIM_NOTICE,
                    {
                        "conversation": due.conversation_id,
                        "organization": due.organization_id,
                        "consent": due.consent_id,
                        "message": due.message_id,
                    },
                )
            ).first()
            if claimed is None:
                continue  # another relay gave it, before this message: nothing more to say
            if not joined:
                await ctx.chat.ensure_user(SYSTEM_USER, "caremsg")
                await ctx.chat.invite_members(msg.channel_url, [SYSTEM_USER])
                joined = True
            await post_once(
                ctx.chat,
                entry,
                msg.channel_url,
                sender_id=SYSTEM_USER,
                text=notice,
                dedup_id=f"caremsg_part2_{due.message_id}_{due.organization_id}",
                custom_type=PART2_NOTICE_CUSTOM_TYPE,
                data=json.dumps(
                    {
                        "part2_notice": True,
                        "message_id": due.message_id,
                        "organization_id": due.organization_id,
                    }
                ),
            )
            event = AuditEvent(
                event=NOTICE_SENT,
                workflow=workflow,
                outcome="success",
                occurred_at=at,
                resource_type="conversation",
                resource_id=str(due.conversation_id),
                patient_id=msg.patient_id,
                details={
                    "consent_id": due.consent_id,
                    "organization_id": due.organization_id,
                    "message_id": due.message_id,
                },
            )
            await session.execute(_AUDIT_NOTICES, {"events": audit_json([event])})


class PostMessageExecutor:
    """Post a stored message into its channel as its sender, exactly once (:func:`post_once`): its
    ``data`` carries caremsg's message id, ``dedup_id`` is a second layer. The whole batch's messages
    are read in the claim (``prepare``). A post that did not go out right after the claim learns
    whether its message was recalled since, right before it is made: behind its conversation's
    earlier posts, from the settle of the wave before it (``recheck``: one statement for the wave);
    after waiting for a delivery slot, by itself (one primary-key read). A post recalled while it
    waited is cancelled (:class:`MessageRecalled`), never posted. A wave's outcomes are written in
    one statement (``settle``)."""

    handles: tuple[type[Effect], ...] = (PostMessage,)

    def __init__(
        self,
        part2_notice: Callable[[], str] = lambda: PART2_SHORT_NOTICE,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        # Sendbird's message id and timestamp of each post, by outbox id, for the settle.
        self._sent: dict[int, tuple[int, int]] = {}
        #: The notice of policies/notices.toml in force (the app passes the policy's; reloads swap it).
        self._part2_notice = part2_notice
        self._clock = clock  # the app's: which Part 2 consents are active, when a notice was given

    async def prepare(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        message_ids = [_message_id(e) for e in entries]
        found = await read_messages_to_post(session, message_ids, self._clock())
        return {e.id: found[m] for e, m in zip(entries, message_ids, strict=True) if m in found}

    async def recheck(self, entries: Sequence[OutboxEntry], session: AsyncSession) -> Mapping[int, object]:
        """What the claim read for these posts, with the messages recalled since marked so."""
        read = {e.id: (_message_id(e), e.prepared) for e in entries if isinstance(e.prepared, MessageToPost)}
        if not read:
            return {}
        ids = [message_id for message_id, _ in read.values()]
        recalled = set((await session.execute(_RECALLED_OF, {"ids": ids})).scalars())
        return {
            entry_id: dataclasses.replace(msg, recalled=True) if message_id in recalled else msg
            for entry_id, (message_id, msg) in read.items()
        }

    async def deliver(self, effect: PostMessage, entry: OutboxEntry, ctx: RelayContext) -> None:
        msg = entry.prepared
        if not isinstance(msg, MessageToPost):
            async with ctx.sessions() as session:
                msg = (await self.prepare([entry], session)).get(entry.id)
            if not isinstance(msg, MessageToPost):
                raise LookupError(f"message {effect.message_id} of outbox entry {entry.id} not found")
        elif not entry.fresh:  # read at the claim, and it waited since: recalled meanwhile?
            async with ctx.sessions() as session:
                # one statement, no transaction around it (no BEGIN, no ROLLBACK): a round trip
                read = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                recalled = await read.scalar(_RECALLED, {"id": effect.message_id})
            msg = dataclasses.replace(msg, recalled=bool(recalled))
        if msg.recalled:  # recalled after its post was claimed: it never goes out
            raise MessageRecalled(f"message {effect.message_id} was recalled")
        if msg.notices:
            await give_part2_notices(
                msg,
                entry,
                ctx,
                self._part2_notice(),
                workflow=f"delivery.{kind_of(PostMessage)}",
                at=self._clock(),
            )
        sent = await post_once(
            ctx.chat,
            entry,
            msg.channel_url,
            sender_id=msg.sender_chat_id,
            text=msg.body,
            dedup_id=f"caremsg_msg_{effect.message_id}",
            custom_type="caremsg_message",
            data=json.dumps({"message_id": effect.message_id}),
        )
        self._sent[entry.id] = (sent.message_id, sent.created_at_ms)

    async def settle(
        self, done: Sequence[OutboxEntry], failed: Sequence[tuple[OutboxEntry, str]], session: AsyncSession
    ) -> None:
        rows = [posted(_message_id(e), self._sent.pop(e.id, None)) for e in done]
        for entry, reason in failed:
            self._sent.pop(entry.id, None)
            rows.append(not_posted(_message_id(entry), reason))
        await record_posts(session, rows)
