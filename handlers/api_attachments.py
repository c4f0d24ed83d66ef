"""HTTP: attaching a file to a new message (multipart), downloading an attachment, and reading a
recalled message's attachment from the legal record."""

from __future__ import annotations

import hashlib
import json
import mimetypes

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from engine.errors import FieldError, FileTooLarge, InvalidInput, MalformedRequest
from engine.model import Actor, AttachmentFile
from engine.workflows import attachments, messaging, recalls
from handlers.api_messaging import IDEMPOTENCY, idempotent
from handlers.keys import settings_key
from handlers.problems import invalid_input, location
from handlers.ratelimit import take_upload
from handlers.requests import path_id, services
from handlers.routing import Endpoint
from handlers.schemas.attachments import AttachmentUpload
from handlers.schemas.conversations import MessagePublic

_CHUNK = 64 * 1024
_MAX_TEXT_BYTES = 16_000


async def _upload(request: web.Request, max_bytes: int) -> tuple[str, bytes, str]:
    """The upload, or 400 naming ``file`` when the multipart body cannot be read (no boundary, a
    part's headers that are no headers: aiohttp raises ValueError for some, its own HTTP parser's
    errors for others)."""
    try:
        return await _read_upload(request, max_bytes)
    except (ValueError, HttpProcessingError):
        raise MalformedRequest([FieldError("file", "The multipart body cannot be read.")]) from None


async def _read_upload(request: web.Request, max_bytes: int) -> tuple[str, bytes, str]:
    """The multipart form's file (content type, bytes) and text, read as a stream: a file over
    ``max_bytes`` is refused (413) as soon as it passes the limit, before the rest is read."""
    if request.content_type != "multipart/form-data":
        await request.read()  # within api.max_body_bytes (413 beyond), like every other body
        raise InvalidInput(
            [FieldError("file", "Send multipart/form-data with a part named file.", "missing")]
        )
    content_type, data, text = "", b"", ""
    found = False
    seen: set[str] = set()
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue
        if part.name in ("file", "message"):
            # Each part is held to its own limit: a repeated one would let a body stream on without
            # end (and the last file silently win), so the form is one file and one text at most.
            if part.name in seen:
                raise InvalidInput([FieldError(part.name, "Send this part once.", "repeated")])
            seen.add(part.name)
        if part.name == "file":
            found = True
            content_type = part.headers.get("Content-Type", "")
            chunks, size = [], 0
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(
                        [FieldError("file", f"At most {max_bytes} bytes.", "too_large")],
                        "The file is too large.",
                    )
                chunks.append(chunk)
            data = b"".join(chunks)
        elif part.name == "message":
            raw = bytearray()
            while chunk := await part.read_chunk(_CHUNK):
                raw += chunk
                if len(raw) > _MAX_TEXT_BYTES:  # the workflow's 4000 characters, at 4 bytes each
                    raise InvalidInput([FieldError("message", "Write at most 4000 characters.")])
            try:
                text = raw.decode(part.get_charset("utf-8"))
            except (UnicodeDecodeError, LookupError):
                raise InvalidInput([FieldError("message", "Must be UTF-8 text.")]) from None
        else:
            raise InvalidInput([FieldError(location((part.name or "",)), "Unknown part.", "extra_forbidden")])
    if not found:
        raise InvalidInput([FieldError("file", "Attach a file (the part named file).", "missing")])
    try:
        # The form's schema refuses what every request refuses (NUL and other control characters in
        # the text: PostgreSQL would refuse the NUL with a 500), naming the part.
        AttachmentUpload.model_validate({"file": data, "message": text})
    except ValidationError as exc:
        raise invalid_input(exc) from None
    return content_type, data, text


def _compared(cmd: attachments.AttachFile) -> bytes:
    """What identifies an upload for its Idempotency-Key: the conversation, the file's declared type
    and SHA-256, and the text. Not the raw body: its multipart boundary (and the file name, which
    caremsg does not keep) may differ on every retry of the same upload."""
    return json.dumps(
        {
            "conversationId": cmd.conversation_id,
            "file": {
                "contentType": cmd.content_type.split(";", 1)[0].strip().lower(),
                "sha256": hashlib.sha256(cmd.data).hexdigest(),
            },
            "message": cmd.text,
        }
    ).encode()


async def attach_file(request: web.Request, actor: Actor) -> web.Response:
    limits = request.app[settings_key].messaging
    take_upload(request, actor.user_id)  # before the body is read: a refused upload costs nothing
    content_type, data, text = await _upload(request, limits.attachment_max_bytes)
    cmd = attachments.AttachFile(path_id(request, "id"), content_type, data, text)

    async def run(claim: int | None) -> tuple[int, MessagePublic]:
        message = await attachments.attach_file(
            services(request), actor, cmd, allowed_types=limits.attachment_types, idempotency_claim=claim
        )
        return 202, MessagePublic.of(message)

    async def recreate(message_id: int) -> tuple[int, MessagePublic]:
        return 202, MessagePublic.of(await messaging.get_message(services(request), actor, message_id))

    return await idempotent(request, actor, attachments.ATTACH, run, recreate, compared=_compared(cmd))


async def download(request: web.Request, actor: Actor) -> web.Response:
    file = await attachments.read_attachment(
        services(request), actor, path_id(request, "id"), path_id(request, "attachmentId")
    )
    return file_response(file)


async def download_recalled(request: web.Request, actor: Actor) -> web.Response:
    file = await recalls.read_recalled_attachment(
        services(request), actor, path_id(request, "id"), path_id(request, "attachmentId")
    )
    return file_response(file)


def file_response(file: AttachmentFile) -> web.Response:
    """The file's bytes with its stored type, to be saved (never shown inline), never cached (the
    API's downloads and the console's legal record alike). No file name is stored (it may name the
    patient): the attachment's id, and its type's usual extension."""
    suffix = mimetypes.guess_extension(file.attachment.content_type) or ""
    return web.Response(
        body=file.data,
        content_type=file.attachment.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="attachment-{file.attachment.id}{suffix}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/conversations/{id}/attachments",
        attach_file,
        "attachFile",
        "Send a message carrying a file (multipart: `file`, optional `message`)",
        "conversations",
        AttachmentUpload,
        MessagePublic,
        202,
        errors=(400, 401, 403, 404, 409, 413, 415, 422),
        description=(
            "Decided as message.attach (by default: who may send in the conversation). The file's type "
            "must be in `messaging.attachment_types` and its first bytes must match it (PDF, PNG, JPEG, "
            "GIF): else 415; over `messaging.attachment_max_bytes`: 413; no file, an empty one, or a "
            "part sent twice: 422. "
            "The chat channel gets it as a file message; external participants are texted only the "
            "notification. The audit record holds its SHA-256, size and type, never its name. Send an "
            "`Idempotency-Key` header to make a retry safe: the same key with the same upload (the "
            "conversation, the file's type and bytes, the text; not the multipart boundary or file "
            "name) answers with the first message, read again (with `Idempotent-Replayed: true`), "
            "instead of sending the file twice."
        ),
        request_media_type="multipart/form-data",
        contracts=(IDEMPOTENCY,),
    ),
    Endpoint(
        "GET",
        "/api/messages/{id}/attachments/{attachmentId}",
        download,
        "downloadAttachment",
        "Download a message's attached file",
        "conversations",
        errors=(401, 403, 404, 422),
        media_type="application/octet-stream",
        description="Decided as conversation.read on the message's conversation, like the message. "
        "404 for another organization's message, an attachment the message does not have, and a "
        "recalled message's (its file is kept only for the legal record).",
    ),
    Endpoint(
        "GET",
        "/api/messages/{id}/legal-record/attachments/{attachmentId}",
        download_recalled,
        "downloadRecalledAttachment",
        "Download a file that was attached to a recalled message (the legal record)",
        "conversations",
        errors=(401, 403, 404, 422),
        media_type="application/octet-stream",
        description="Decided as message.read_recalled, like the recalled text (compliance officers); "
        "every read is audited with the file's SHA-256. The bytes come with their stored content type "
        "and `Content-Disposition: attachment`. 404 for another organization's message, a message that "
        "was not recalled (download its files at /api/messages/{id}/attachments/{attachmentId}) and an "
        "attachment the message does not have.",
    ),
]
