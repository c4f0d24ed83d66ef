"""SQL behind :class:`engine.ports.attachments.MessageAttachments`: a message stored with its file,
attachments' metadata for reads, and one attachment's bytes for a download or the relay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from engine.model import Attachment, AttachmentFile, Message
from engine.ports.attachments import NewAttachment
from integrations.db.base import Repository
from integrations.db.columns import table_of
from integrations.db.messaging import message_of
from integrations.db.tables import MessageAttachmentRow, MessageRow

messages_t = table_of(MessageRow)
attachments_t = table_of(MessageAttachmentRow)

_METADATA = (
    attachments_t.c.id,
    attachments_t.c.message_id,
    attachments_t.c.content_type,
    attachments_t.c.size,
    attachments_t.c.sha256,
)


def _attachment(row: Any) -> Attachment:
    return Attachment(
        id=row.id, message_id=row.message_id, content_type=row.content_type, size=row.size, sha256=row.sha256
    )


class SqlMessageAttachments(Repository):
    async def add(
        self, conversation_id: int, sender_id: int, text: str, file: NewAttachment, *, at: datetime
    ) -> tuple[Message, Attachment]:
        row = (
            await self.session.execute(
                insert(messages_t)
                .values(conversation_id=conversation_id, sender_id=sender_id, body=text, created_at=at)
                .returning(messages_t)
            )
        ).one()
        attached = (
            await self.session.execute(
                insert(attachments_t)
                .values(
                    message_id=row.id,
                    content_type=file.content_type,
                    size=file.size,
                    sha256=file.sha256,
                    data=file.data,
                    created_at=at,
                )
                .returning(*_METADATA)
            )
        ).one()
        return message_of(row), _attachment(attached)

    async def of_messages(self, message_ids: list[int]) -> dict[int, tuple[Attachment, ...]]:
        if not message_ids:
            return {}
        rows = await self.session.execute(
            select(*_METADATA).where(attachments_t.c.message_id.in_(message_ids)).order_by(attachments_t.c.id)
        )
        found: dict[int, list[Attachment]] = {}
        for row in rows:
            found.setdefault(row.message_id, []).append(_attachment(row))
        return {m: tuple(a) for m, a in found.items()}

    async def file(self, message_id: int, attachment_id: int) -> AttachmentFile | None:
        row = (
            await self.session.execute(
                select(*_METADATA, attachments_t.c.data).where(
                    attachments_t.c.id == attachment_id, attachments_t.c.message_id == message_id
                )
            )
        ).one_or_none()
        return None if row is None else AttachmentFile(_attachment(row), bytes(row.data))
