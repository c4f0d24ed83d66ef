"""SQL behind the read-state port (engine/ports/messaging.py ``ReadStateRepository``): per conversation
and member, the last message read (``conversation_reads``), moved forward only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.model import ReadMark
from engine.sms import CHANNEL_RECIPIENT
from integrations.db.base import Repository
from integrations.db.columns import table_of
from integrations.db.tables import ConversationReadRow, MessageDeliveryRow, MessageRow

reads_t = table_of(ConversationReadRow)
messages_t = table_of(MessageRow)
deliveries_t = table_of(MessageDeliveryRow)


def unread_sql(message: str, sender: str, conversation: str, user: str) -> str:
    """The one SQL spelling of "user ``user`` has not read message ``message``", the negation of
    :func:`engine.model.has_read`: they did not send it (``sender``) and their mark in the
    conversation (``conversation``) is behind it or absent. Every argument is an SQL expression;
    unread counts and the escalation of urgent messages both use it
    (tests/integration/test_read_sql.py holds it to the Python rule).

    Written as the message id against the mark (0 without one) rather than a join, so that where
    ``conversation`` does not depend on the message row, counting what is unread is a range of
    ``ix_messages_conversation_id_id`` from the mark on (README, "Read receipts")."""
    return f"""
        ({user} <> {sender} AND {message} > COALESCE(
            (SELECT r.last_read_message_id FROM conversation_reads r
             WHERE r.conversation_id = {conversation} AND r.user_id = {user}), 0))
    """  # noqa: S608 - called with SQL expressions written in code; every value is bound


_UNREAD_COUNTS = text(
    f"""
    SELECT c.id, (
        SELECT count(*) FROM messages m
        WHERE m.conversation_id = c.id AND {unread_sql("m.id", "m.sender_id", "c.id", ":user")}
    ) AS unread
    FROM unnest(CAST(:ids AS integer[])) AS c(id)
    """  # noqa: S608 - assembled from constants; every value is a bound parameter
)


def _mark(row: Any) -> ReadMark:
    return ReadMark(row.conversation_id, row.user_id, row.last_read_message_id, row.read_at, row.source)


class SqlReadStateRepository(Repository):
    async def mark(
        self, conversation_id: int, user_id: int, message_id: int, at: datetime, source: str
    ) -> tuple[ReadMark, bool]:
        r = reads_t.c
        insert = pg_insert(reads_t).values(
            conversation_id=conversation_id,
            user_id=user_id,
            last_read_message_id=message_id,
            read_at=at,
            source=source,
        )
        # Forward only, in the statement itself: a concurrent mark of the same member waits on the
        # row and then moves it only if it is still behind.
        moved = (
            await self.session.execute(
                insert.on_conflict_do_update(
                    index_elements=[r.conversation_id, r.user_id],
                    set_={
                        "last_read_message_id": insert.excluded.last_read_message_id,
                        "read_at": insert.excluded.read_at,
                        "source": insert.excluded.source,
                    },
                    where=r.last_read_message_id < insert.excluded.last_read_message_id,
                ).returning(reads_t)
            )
        ).one_or_none()
        if moved is not None:
            return _mark(moved), True
        current = (
            await self.session.execute(
                select(reads_t).where(r.conversation_id == conversation_id, r.user_id == user_id)
            )
        ).one()
        return _mark(current), False

    async def of_conversation(self, conversation_id: int) -> dict[int, ReadMark]:
        rows = await self.session.execute(select(reads_t).where(reads_t.c.conversation_id == conversation_id))
        return {row.user_id: _mark(row) for row in rows}

    async def unread_counts(self, user_id: int, conversation_ids: Sequence[int]) -> dict[int, int]:
        if not conversation_ids:
            return {}
        # Per conversation of the page, a count of the messages after the member's mark: a range of
        # ix_messages_conversation_id_id (migration 0021), so the cost follows what is unread, not
        # the conversation's history (the plans are in the README, "Read receipts").
        rows = await self.session.execute(_UNREAD_COUNTS, {"user": user_id, "ids": list(conversation_ids)})
        return {row.id: int(row.unread) for row in rows if row.unread}

    async def last_in_channel_by(self, conversation_id: int, ts_ms: int) -> int | None:
        m, d = messages_t.c, deliveries_t.c
        found = (
            await self.session.execute(
                select(func.max(m.id))
                .select_from(messages_t)
                .join(deliveries_t, (d.message_id == m.id) & (d.recipient == CHANNEL_RECIPIENT))
                .where(m.conversation_id == conversation_id, d.provider_ts_ms <= ts_ms)
            )
        ).scalar_one_or_none()
        return int(found) if found is not None else None
