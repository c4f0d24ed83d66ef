"""SQL behind the read-state port (engine/ports/messaging.py ``ReadStateRepository``): per conversation
and member, the last message read (``conversation_reads``), moved forward only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.model import ReadMark
from engine.sms import CHANNEL_RECIPIENT
from integrations.db.base import Repository
from integrations.db.columns import table_of
from integrations.db.tables import ConversationReadRow, MessageDeliveryRow, MessageRow

reads_t = table_of(ConversationReadRow)
messages_t = table_of(MessageRow)
deliveries_t = table_of(MessageDeliveryRow)


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
        m, r = messages_t.c, reads_t.c
        # Per conversation of the page, a count of the messages after the member's mark: a range of
        # ix_messages_conversation_id_id (migration 0021), so the cost follows what is unread, not
        # the conversation's history (the plans are in the README, "Read receipts").
        page = (
            func.unnest(cast(list(conversation_ids), ARRAY(Integer))).table_valued("id").render_derived("c")
        )
        mark = (
            select(r.last_read_message_id)
            .where(r.conversation_id == page.c.id, r.user_id == user_id)
            .correlate(page)  # to the outermost statement's page, two levels up
            .scalar_subquery()
        )
        unread = (
            select(func.count())
            .select_from(messages_t)
            .where(m.conversation_id == page.c.id, m.sender_id != user_id, m.id > func.coalesce(mark, 0))
            .scalar_subquery()
        )
        rows = await self.session.execute(select(page.c.id, unread.label("unread")))
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
