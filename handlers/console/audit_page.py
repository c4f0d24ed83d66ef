"""The console's audit search: the API's filters from a GET form, through the API's own workflow
(``engine.workflows.audit.search_audit_events``, decided as ``audit.read``): no second query path.

The form's names are the API's query parameters (``actorId``, ``patientId``, ``from`` ...), parsed by
the API's own query model, so a filter means the same thing in both places. A browser's
``datetime-local`` field has no offset: the form says its times are UTC, and they are read so.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.audit_trail import AuditFilter
from engine.errors import InvalidInput
from engine.model import Actor
from engine.workflows import audit
from handlers.api_audit import AuditEventPublic, AuditEventsQuery
from handlers.requests import query, services

#: The form's fields, in the API's names; ``organizationId`` is left out: only one's own is allowed.
FIELDS = ("from", "to", "actorId", "patientId", "workflow", "decision", "outcome", "breakGlass", "email")
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
    return {"values": values, "errors": errors, "records": None, "next_url": None}


async def search(request: web.Request, actor: Actor) -> dict[str, Any]:
    """Run the search if the form was submitted (``search=1``); the page's context either way."""
    context = form_context(request)
    if request.query.get("search") != "1":
        return context
    cleaned = _cleaned(request)
    q = query(request.clone(rel_url=request.rel_url.with_query(cleaned)), AuditEventsQuery)
    cmd = audit.SearchAuditEvents(
        AuditFilter(
            organization_id=actor.organization_id,
            actor_id=q.actor_id,
            patient_id=q.patient_id,
            workflow=q.workflow,
            decision=q.decision,
            outcome=q.outcome,
            since=q.from_,
            until=q.to,
            break_glass=q.break_glass,
        ),
        email=q.email,
        after=q.cursor,
        limit=PAGE_SIZE,
    )
    page = await audit.search_audit_events(services(request), actor, cmd)
    context["records"] = [AuditEventPublic.of(r) for r in page.items]
    if page.next_cursor is not None:
        following = {k: v for k, v in request.query.items() if k != "cursor"}
        following["cursor"] = str(page.next_cursor)
        context["next_url"] = f"{request.path}?{urlencode(following)}"
    return context
