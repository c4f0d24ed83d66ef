"""The console's break-glass review list: the organization's emergency sessions, open and past
(the API's ``break_glass.list`` workflow and repository), one session with the audit records it
produced (the API's audit search, ``audit.read``, filtered by break-glass, the session's clinician,
patient and time window: no second query path), and "mark reviewed with a note"
(``break_glass.review``). The review shown and made is the officer's organization's own: on another
organization's patient, that organization reviews the same session separately and neither sees the
other's note.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.audit_trail import AuditFilter
from engine.errors import Conflict, InvalidInput, NotFound
from engine.model import Actor
from engine.ports.consents import BreakGlassSession
from engine.workflows import audit, break_glass
from handlers.api_audit import AuditEventPublic
from handlers.requests import record_id, services

PAGE_SIZE = 25
#: The records of one session shown on its page (the audit search page shows them all, paginated).
RECORDS_SHOWN = 100


def _cursor(request: web.Request) -> int | None:
    raw = request.query.get("cursor", "")
    if not raw:
        return None
    cursor = record_id(raw)
    if cursor is None:
        raise NotFound("page")
    return cursor


def session_id(request: web.Request) -> int:
    found = record_id(request.match_info["session_id"])
    if found is None:
        raise NotFound("break_glass")
    return found


async def list_context(request: web.Request, actor: Actor) -> dict[str, Any]:
    svc = services(request)
    page = await break_glass.list_break_glass(svc, actor, _cursor(request), PAGE_SIZE)
    now = svc.clock()
    next_url = None
    if page.next_cursor is not None:
        next_url = f"{request.path}?{urlencode({'cursor': page.next_cursor})}"
    return {"sessions": page.items, "now": now, "next_url": next_url}


def records_filter(actor: Actor, session: BreakGlassSession) -> AuditFilter:
    """The records a session produced: flagged break-glass, by its clinician, about its patient,
    while it was open."""
    return AuditFilter(
        organization_id=actor.organization_id,
        actor_id=session.user_id,
        patient_id=session.patient_id,
        since=session.opened_at,
        until=session.expires_at,
        break_glass=True,
    )


def audit_search_url(prefix: str, session: BreakGlassSession) -> str:
    """The same records on the audit search page (all of them, paginated)."""
    query = {
        "search": "1",
        "breakGlass": "true",
        "actorId": session.user_id,
        "patientId": session.patient_id,
        "from": session.opened_at.isoformat(),
        "to": session.expires_at.isoformat(),
    }
    return f"{prefix}/audit?{urlencode(query)}"


async def detail_context(
    request: web.Request, actor: Actor, prefix: str, *, note: str = "", error: str | None = None
) -> dict[str, Any]:
    svc = services(request)
    session = await break_glass.read_break_glass(svc, actor, session_id(request))
    records = await audit.search_audit_events(
        svc, actor, audit.SearchAuditEvents(records_filter(actor, session), limit=RECORDS_SHOWN)
    )
    return {
        "session": session,
        "now": svc.clock(),
        "records": [AuditEventPublic.of(r) for r in records.items],
        "more_records": records.next_cursor is not None,
        "audit_url": audit_search_url(prefix, session),
        "note": note,
        "note_error": error,
    }


async def review(request: web.Request, actor: Actor) -> tuple[int, str, str | None]:
    """Submit the review form: (status, the note as typed, the error to show next to it or None)."""
    form = await request.post()
    note = form.get("note")
    note = note if isinstance(note, str) else ""
    try:
        await break_glass.review_break_glass(
            services(request), actor, break_glass.ReviewBreakGlass(session_id(request), note)
        )
    except InvalidInput as invalid:
        return 422, note, "; ".join(e.message for e in invalid.errors)
    except Conflict:
        return 409, note, "Your organization already reviewed this session."
    return 200, note, None
