"""The console's legal record of a recalled message: what it said (or when retention deleted it), who
recalled it, when and why, its correction if one was sent, and each attached file as a download.
The API's ``message.read_recalled`` (``GET /api/messages/{id}/legal-record`` and its attachments'
bytes): every read, the page's and each file's, is decided and audited. Another organization's
message, or one never recalled, answers 404 as one that does not exist. No second path.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.errors import NotFound
from engine.model import Actor
from engine.workflows import recalls
from handlers.api_attachments import file_response
from handlers.requests import record_id, services
from handlers.schemas.conversations import LegalRecordPublic


def _id(request: web.Request, name: str, resource: str) -> int:
    found = record_id(request.match_info[name])
    if found is None:
        raise NotFound(resource)
    return found


async def record_context(request: web.Request, actor: Actor) -> dict[str, Any]:
    """The legal record, as the API answers it (``message.read_recalled``; this read is audited)."""
    message_id = _id(request, "message_id", "message")
    record = await recalls.read_recalled(services(request), actor, message_id)
    return {"record": LegalRecordPublic.of(record)}


async def attachment(request: web.Request, actor: Actor) -> web.Response:
    """One attached file's bytes from the legal record, to be saved (never shown inline), never
    cached; the read is audited with the file's SHA-256."""
    message_id = _id(request, "message_id", "message")
    attachment_id = _id(request, "attachment_id", "attachment")
    file = await recalls.read_recalled_attachment(services(request), actor, message_id, attachment_id)
    return file_response(file)
