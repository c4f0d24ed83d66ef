"""SQL behind :class:`engine.ports.MessageRecalls`: recall (the text moves into ``message_recalls``,
what has not gone out is cancelled), the legal record, and corrections."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, text, update

from engine.effects import PostAttachment, PostMessage, TextMessage, kind_of
from engine.model import Message, RecalledContent
from engine.ports.messaging import RecallOutcome
from integrations.db.base import Repository
from integrations.db.columns import table_of
from integrations.db.messaging import PENDING_CTE, message_of
from integrations.db.tables import MessageRecallRow, MessageRow

messages_t = table_of(MessageRow)
recalls_t = table_of(MessageRecallRow)

#: Move the text into the legal record and empty it in the message, once (the row lock makes a
#: second, concurrent recall, or one after a concurrent retention sweep, find ``recalled_at`` or
#: ``content_deleted_at`` set and change nothing).
_RECALL = text(
    """
    WITH m AS (
        SELECT id, body FROM messages
        WHERE id = :id AND recalled_at IS NULL AND content_deleted_at IS NULL FOR UPDATE
    ), kept AS (
        INSERT INTO message_recalls (message_id, recalled_at, recalled_by, reason, body)
        SELECT id, :at, :by, :reason, body FROM m
        RETURNING message_id
    )
    UPDATE messages SET body = '', recalled_at = :at, recalled_by = :by
    WHERE id IN (SELECT message_id FROM kept)
    RETURNING id
    """
)

#: The message's outbox entries that have not gone out and no relay holds right now: cancelled,
#: with their delivery rows failed as ``recalled``. An entry a relay is delivering at this moment
#: (its lease runs) is left to finish: the channel's copy is deleted afterwards, a text goes out.
#: Pending: compared with ``pending.status`` (:data:`~integrations.db.messaging.PENDING_CTE` says why).
CANCEL = text(
    f"""
    WITH {PENDING_CTE}, cancelled AS (
        UPDATE outbox o SET status = 'cancelled', last_error = 'recalled', done_at = now()
        FROM pending p
        WHERE o.message_id = :id AND o.status = p.status AND o.kind = ANY(CAST(:kinds AS text[]))
          AND (o.lease_until IS NULL OR o.lease_until < now())
        RETURNING o.kind, o.payload
    ), failed AS (
        UPDATE message_deliveries d SET state = 'failed', reason = 'recalled', updated_at = now()
        WHERE d.message_id = :id AND d.state = 'queued' AND (
            (d.recipient = 'channel'
             AND EXISTS (SELECT 1 FROM cancelled c WHERE c.kind = ANY(CAST(:posts AS text[]))))
            OR d.id IN (
                SELECT CAST(c.payload ->> 'delivery_id' AS integer) FROM cancelled c
                WHERE c.kind = :texts AND c.payload ->> 'delivery_id' IS NOT NULL
            )
        )
        RETURNING d.id
    )
    SELECT
        (SELECT count(*) FROM cancelled WHERE kind = ANY(CAST(:posts AS text[]))) AS posts,
        (SELECT count(*) FROM cancelled WHERE kind = :texts) AS texts,
        (SELECT count(*) FROM failed) AS deliveries
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)


def cancel_parameters(message_id: int) -> dict[str, object]:
    """The bind parameters of :data:`CANCEL` for the message: its posts (messages, files), its texts."""
    posts, texts = [kind_of(PostMessage), kind_of(PostAttachment)], kind_of(TextMessage)
    return {"id": message_id, "kinds": [*posts, texts], "posts": posts, "texts": texts}


#: After :data:`CANCEL`: texts about the message the carrier has (``sent``), and those still
#: ``queued``, which a relay holds (``in_flight``: it sends or cancels each, and settles it with its
#: own audit record). A text held is not counted as sent: it may never be.
_TEXTS_LEFT = text(
    "SELECT count(*) FILTER (WHERE state IN ('sent', 'delivered')) AS sent,"
    " count(*) FILTER (WHERE state = 'queued') AS in_flight"
    " FROM message_deliveries WHERE message_id = :id AND recipient LIKE 'sms:%'"
)


class SqlMessageRecalls(Repository):
    async def recall(self, message_id: int, *, at: datetime, by: int, reason: str) -> RecallOutcome | None:
        done = (
            await self.session.execute(_RECALL, {"id": message_id, "at": at, "by": by, "reason": reason})
        ).first()
        if done is None:
            return None
        counts = (await self.session.execute(CANCEL, cancel_parameters(message_id))).one()
        left = (await self.session.execute(_TEXTS_LEFT, {"id": message_id})).one()
        return RecallOutcome(int(counts.posts), int(counts.texts), int(left.sent), int(left.in_flight))

    async def legal_record(self, message_id: int) -> RecalledContent | None:
        row = (
            await self.session.execute(
                select(
                    recalls_t,
                    messages_t.c.conversation_id,
                    messages_t.c.sender_id,
                    messages_t.c.created_at,
                    messages_t.c.content_deleted_at,
                )
                .join(messages_t, messages_t.c.id == recalls_t.c.message_id)
                .where(recalls_t.c.message_id == message_id)
            )
        ).one_or_none()
        if row is None:
            return None
        return RecalledContent(
            message_id=row.message_id,
            conversation_id=row.conversation_id,
            sender_id=row.sender_id,
            sent_at=row.created_at,
            recalled_at=row.recalled_at,
            recalled_by=row.recalled_by,
            reason=row.reason,
            text=row.body,
            content_deleted_at=row.content_deleted_at,
        )

    async def add_correction(self, original: Message, text: str, *, at: datetime) -> Message | None:
        claimed = (
            await self.session.execute(
                select(messages_t.c.id)
                .where(messages_t.c.id == original.id, messages_t.c.corrected_by_message_id.is_(None))
                .with_for_update()
            )
        ).first()
        if claimed is None:
            return None
        row = (
            await self.session.execute(
                insert(messages_t)
                .values(
                    conversation_id=original.conversation_id,
                    sender_id=original.sender_id,
                    body=text,
                    corrects_message_id=original.id,
                    created_at=at,
                )
                .returning(messages_t)
            )
        ).one()
        await self.session.execute(
            update(messages_t).where(messages_t.c.id == original.id).values(corrected_by_message_id=row.id)
        )
        return message_of(row)
