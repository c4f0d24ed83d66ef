"""Table model of message attachments: the file's bytes, kept in PostgreSQL beside its message.

- ``message_attachments``: one row per attached file, its message, content type (from the allowlist
  in config.toml), size, SHA-256 (hex) and bytes. The bytes are small by configuration
  (``[messaging] attachment_max_bytes``, 10 MiB at most), so a ``bytea`` column keeps them in the
  message's own transaction and backups, with no second store to keep consistent. No file name is
  kept: a file name may name the patient.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Column, Integer, LargeBinary, String
from sqlmodel import Field, SQLModel

from integrations.db.columns import foreign_key, timestamp


class MessageAttachmentRow(SQLModel, table=True):
    __tablename__ = "message_attachments"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = foreign_key("messages.id")
    content_type: str = Field(sa_column=Column(String(100), nullable=False))
    size: int = Field(sa_column=Column(Integer, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = timestamp()

    __table_args__ = (CheckConstraint("size > 0 AND size = octet_length(data)", name="size"),)
