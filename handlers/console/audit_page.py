"""The console's audit search: the API's filters from a GET form, through the API's own workflow
(``engine.workflows.audit.search_audit_events``, decided as ``audit.read``): no second query path.
Also one record's page with its place in the chain (``audit.read``), and the search's records as a
streamed download (``audit.export``, JSON Lines or a FHIR R4 Bundle).

The form's names are the API's query parameters (``actorId``, ``patientId``, ``from`` ...), parsed by
the API's own query model, so a filter means the same thing in both places. A browser's
``datetime-local`` field has no offset: the form says its times are UTC, and they are read so.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.audit_trail import AuditRecord
from engine.errors import FieldError, InvalidInput, NotFound
from engine.model import Actor, Purpose
from engine.ports.audit import AuditRecordStream
from engine.workflows import audit
from handlers.api_audit import AuditEventPublic, AuditEventsQuery
from handlers.requests import query, services
from integrations.audit_export import Progress, write_export

#: The form's fields, in the API's names; ``organizationId`` is left out: only one's own is allowed.
FIELDS = (
    "from",
    "to",
    "actorId",
    "patientId",
    "workflow",
    "decision",
    "reason",
    "outcome",
    "breakGlass",
    "purpose",
    "email",
)
PAGE_SIZE = 25
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def _cleaned(request: web.Request) -> dict[str, str]:
    """The submitted filters: empty fields dropped, browser-local times read as UTC."""
    values: dict[str, str] = {}
    for name in (*FIELDS, "cursor"):
        value = request.query.get(name, "").strip()
        if not value:
            continue
        if name in {"from", "to"} and _LOCAL_TIME.match(value):
            value += "+00:00"
        values[name] = value
    return values


def form_context(request: web.Request, error: InvalidInput | None = None) -> dict[str, Any]:
    values = {k: request.query.get(k, "") for k in FIELDS}
    errors = {e.field: e.message for e in error.errors} if error else {}
    return {
        "values": values,
        "errors": errors,
        "records": None,
        "next_url": None,
        "export_urls": None,
        "purposes": [p.value for p in Purpose],
    }


async def search(request: web.Request, actor: Actor) -> dict[str, Any]:
    """Run the search if the form was submitted (``search=1``); the page's context either way."""
    context = form_context(request)
    if request.query.get("search") != "1":
        return context
    cleaned = _cleaned(request)
    q = query(request.clone(rel_url=request.rel_url.with_query(cleaned)), AuditEventsQuery)
    cmd = audit.SearchAuditEvents(
        q.to_filter(actor.organization_id),
        email=q.email,
        after=q.cursor,
        limit=PAGE_SIZE,
    )
    page = await audit.search_audit_events(services(request), actor, cmd)
    context["records"] = [AuditEventPublic.of(r) for r in page.items]
    filters = {k: v for k, v in request.query.items() if k in FIELDS and v}
    context["export_urls"] = {
        fmt: f"{request.path}/export?{urlencode({'format': fmt, **filters})}" for fmt in EXPORT_FORMATS
    }
    if page.next_cursor is not None:
        following = {k: v for k, v in request.query.items() if k != "cursor"}
        following["cursor"] = str(page.next_cursor)
        context["next_url"] = f"{request.path}?{urlencode(following)}"
    return context


# --- one record ------------------------------------------------------------------------------------

_ID = re.compile(r"[0-9]{1,19}")
MAX_ID = 2**63 - 1


def record_id(request: web.Request) -> int:
    raw = request.match_info["record_id"]
    # ASCII digits within bigint's range; anything else is "no such record".
    if not _ID.fullmatch(raw) or not 1 <= int(raw) <= MAX_ID:
        raise NotFound("audit_event")
    return int(raw)


async def record_context(request: web.Request, actor: Actor) -> dict[str, Any]:
    """One record of the organization's trail, with its place in the chain (``audit.read``)."""
    detail = await audit.read_audit_event(services(request), actor, record_id(request))
    return {"record": AuditEventPublic.of(detail.record), "place": detail.place}


# --- exports ---------------------------------------------------------------------------------------

#: format -> (media type, file name suffix)
EXPORT_FORMATS = {"jsonl": ("application/x-ndjson", "jsonl"), "fhir": ("application/fhir+json", "fhir.json")}
#: Bytes gathered before each write to the client: small enough to keep memory flat.
CHUNK_BYTES = 64 * 1024


def export_query(request: web.Request, actor: Actor) -> tuple[str, audit.SearchAuditEvents]:
    """The export's format and the search it downloads (the search form's filters, no paging)."""
    fmt = request.query.get("format", "")
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput([FieldError("format", "Choose jsonl or fhir.")])
    cleaned = {k: v for k, v in _cleaned(request).items() if k != "cursor"}
    q = query(request.clone(rel_url=request.rel_url.with_query(cleaned)), AuditEventsQuery)
    return fmt, audit.SearchAuditEvents(q.to_filter(actor.organization_id), email=q.email)


async def export(
    request: web.Request, actor: Actor, stream: AuditRecordStream, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Stream the records as a download, written as they are read (``write_export``, the same
    writer as ``caremsg audit export``), in chunks of about :data:`CHUNK_BYTES`."""
    fmt, cmd = export_query(request, actor)
    media_type, suffix = EXPORT_FORMATS[fmt]
    svc = services(request)
    name = f"audit-events-{svc.clock():%Y%m%dT%H%M%SZ}.{suffix}"
    async with audit.export_audit_events(svc, actor, cmd, fmt, stream) as records:
        response = web.StreamResponse(
            headers={
                **headers,
                "Content-Type": f"{media_type}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}"',
            }
        )
        await response.prepare(request)
        buffer = io.StringIO()

        async def flush() -> None:
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()

        async def written_as_read(source: AsyncIterator[AuditRecord]) -> AsyncIterator[AuditRecord]:
            async for record in source:
                if buffer.tell() >= CHUNK_BYTES:
                    await flush()
                yield record

        await write_export(written_as_read(records), buffer, fmt, Progress(0, io.StringIO()))
        await flush()
    await response.write_eof()
    return response
