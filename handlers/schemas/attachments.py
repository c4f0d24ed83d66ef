"""Schemas of message attachments: the upload form (documented; read as a multipart stream) and an
attachment's public metadata (never its file name: caremsg does not keep it)."""

from __future__ import annotations

from pydantic import Field

from engine.model import Attachment
from handlers.schemas import Request, Response


class AttachmentUpload(Request):
    file: bytes = Field(
        description="The file (multipart part `file`, with its Content-Type): a type in "
        "`messaging.attachment_types`, at most `messaging.attachment_max_bytes` bytes.",
        json_schema_extra={"format": "binary"},
    )
    message: str | None = Field(None, description="Optional text sent with the file (at most 4000).")


class AttachmentPublic(Response):
    id: int
    content_type: str = Field(description="The file's content type (declared, checked against its bytes).")
    size: int = Field(description="Its size in bytes.")
    sha256: str = Field(description="The SHA-256 of its bytes, hex.")

    @classmethod
    def of(cls, a: Attachment) -> AttachmentPublic:
        return cls(id=a.id, content_type=a.content_type, size=a.size, sha256=a.sha256)
