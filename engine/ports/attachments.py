"""The port of message attachments: storing a message with its file, and reading them back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from engine.model import Attachment, AttachmentFile, Message


@dataclass(frozen=True)
class NewAttachment:
    """A checked file to attach: its content type (allowed, sniffed), size, SHA-256 and bytes."""

    content_type: str
    sha256: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


class MessageAttachments(Protocol):
    """Files attached to messages, kept beside them (``message_attachments``)."""

    async def add(
        self, conversation_id: int, sender_id: int, text: str, file: NewAttachment, *, at: datetime
    ) -> tuple[Message, Attachment]:
        """Store a new message with its file, in the caller's transaction."""
        ...

    async def of_messages(self, message_ids: list[int]) -> dict[int, tuple[Attachment, ...]]:
        """The attachments of these messages (their metadata), by message id, in id order."""
        ...

    async def file(self, message_id: int, attachment_id: int) -> AttachmentFile | None:
        """One attachment of one message with its bytes; None when the message has no such one."""
        ...
