"""The console's accounting of disclosures: a patient's, as a printable page, through the API's own
workflow (``engine.workflows.audit.list_disclosures``, decided as ``patient.disclosures``) and its
query model (``from``/``to``, at most six years, default the last six): no second query path.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.audit_trail import DISCLOSURE_PERIOD
from engine.errors import FieldError, InvalidInput, NotFound
from engine.model import Actor
from engine.workflows import audit
from handlers.api_audit import DisclosurePublic, DisclosuresQuery
from handlers.requests import query, record_id, services

FIELDS = ("patientId", "from", "to")
#: Rows on one page: the API's largest, so a printed accounting is usually one page of the site.
PAGE_SIZE = 1000
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def form_context(request: web.Request, errors: dict[str, str] | None = None) -> dict[str, Any]:
    values = {k: request.query.get(k, "") for k in FIELDS}
    return {"values": values, "errors": errors or {}, "disclosures": None, "next_url": None}


def _patient_id(raw: str) -> int:
    found = record_id(raw.strip())
    if found is None:
        raise InvalidInput([FieldError("patientId", "Enter the patient's id (a positive whole number).")])
    return found


async def accounting(request: web.Request, actor: Actor) -> tuple[int, dict[str, Any]]:
    """(status, context): the form alone until a patient is asked for; then the accounting."""
    context = form_context(request)
    if not request.query.get("patientId"):
        return 200, context
    try:
        patient_id = _patient_id(request.query["patientId"])
        period: dict[str, str] = {}
        for name in ("from", "to", "cursor"):
            value = request.query.get(name, "").strip()
            if value:
                period[name] = value + "+00:00" if _LOCAL_TIME.match(value) else value
        q = query(request.clone(rel_url=request.rel_url.with_query(period)), DisclosuresQuery)
        cmd = audit.ListDisclosures(patient_id, since=q.from_, until=q.to, after=q.cursor, limit=PAGE_SIZE)
        svc = services(request)
        page = await audit.list_disclosures(svc, actor, cmd)
    except InvalidInput as invalid:
        return 422, form_context(request, {e.field: e.message for e in invalid.errors})
    except NotFound:
        return 404, form_context(request, {"patientId": "No patient with this id in your organization."})
    until = q.to or svc.clock()
    since = q.from_ or until - DISCLOSURE_PERIOD
    context["disclosures"] = [DisclosurePublic.of(d) for d in page.items]
    context["patient_id"] = patient_id
    context["period"] = (since, until)
    context["produced_at"] = svc.clock()
    if page.next_cursor is not None:
        following = {k: v for k, v in request.query.items() if k != "cursor"}
        following["cursor"] = str(page.next_cursor)
        context["next_url"] = f"{request.path}?{urlencode(following)}"
    return 200, context
