"""The console's consents: a patient's consents (the API's ``consent.list``), record one (the API's
``consent.create``, its request model checking the form so a field means the same in both places,
each error shown next to its field), revoke one with a reason (``consent.revoke``), and the
disclosures that rested on one (the patient's accounting of disclosures, ``patient.disclosures``,
the API's ``GET /api/patients/{id}/disclosures``, those naming that consent). No second path.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from engine.errors import Conflict, FieldError, InvalidInput, NotFound
from engine.model import Actor, ConsentScope, Purpose
from engine.workflows import audit, consents
from handlers.api_audit import DisclosurePublic
from handlers.console.forms import json_number, text
from handlers.problems import invalid_input
from handlers.requests import record_id, services
from handlers.schemas.consents import ConsentCreate, ConsentPublic

_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
#: The record form's fields (the API's names); the recipient is one of the first three.
FORM_FIELDS = (
    "organizationId",
    "complianceGroupId",
    "phoneNumber",
    "name",
    "purpose",
    "effectiveAt",
    "expiresAt",
)
PURPOSES = [p.value for p in Purpose]
#: The accounting is read a page at a time (the API's largest page) for at most this many pages when
#: the disclosures under one consent are asked for; past it, the page says the list is cut short.
DISCLOSURE_PAGES = 25
SCOPES = [s.value for s in ConsentScope]


def an_id(raw: str | None, field: str) -> int:
    found = record_id((raw or "").strip())
    if found is None:
        raise InvalidInput([FieldError(field, "Enter an id (a positive whole number).")])
    return found


def _utc(value: str) -> str:
    return value + "+00:00" if _LOCAL_TIME.match(value) else value


def blank_form() -> dict[str, Any]:
    return {"values": dict.fromkeys(FORM_FIELDS, ""), "scope": ["read", "message", "sms"], "errors": {}}


async def listing(request: web.Request, actor: Actor, patient_raw: str | None) -> tuple[int, dict[str, Any]]:
    """(status, context): the search form, and the patient's consents once one is asked for."""
    context: dict[str, Any] = {
        "patient_value": patient_raw or "",
        "patient_error": None,
        "consents": None,
        "purposes": PURPOSES,
        "scopes": SCOPES,
        "record": blank_form(),
        "revoke_errors": {},
        "message": None,
        "rested": None,
    }
    if not patient_raw:
        return 200, context
    try:
        patient_id = an_id(patient_raw, "patientId")
        svc = services(request)
        found = await consents.list_consents(svc, actor, patient_id)
    except InvalidInput as invalid:
        context["patient_error"] = invalid.errors[0].message
        return 422, context
    except NotFound:
        context["patient_error"] = "No patient with this id in your organization."
        return 404, context
    now = svc.clock()
    context["patient_id"] = patient_id
    context["consents"] = [ConsentPublic.of(c, now) for c in found]
    asked = request.query.get("consent", "")
    if record_id(asked) in {c.id for c in found}:
        context["rested"] = await rested_on(request, actor, patient_id, int(asked))
    return 200, context


async def rested_on(request: web.Request, actor: Actor, patient_id: int, consent_id: int) -> dict[str, Any]:
    """The disclosures of the patient's accounting (the last six years) made under ``consent_id``."""
    svc = services(request)
    under: list[DisclosurePublic] = []
    after: int | None = None
    for _ in range(DISCLOSURE_PAGES):
        page = await audit.list_disclosures(
            svc, actor, audit.ListDisclosures(patient_id, after=after, limit=svc.page_size(10**6))
        )
        under += [DisclosurePublic.of(d) for d in page.items if d.consent_id == consent_id]
        after = page.next_cursor
        if after is None:
            break
    return {"consent_id": consent_id, "disclosures": under, "cut_short": after is not None}


def _create_body(form: MultiDictProxy[Any], patient_id: int) -> dict[str, Any]:
    body: dict[str, Any] = {"patientId": patient_id, "purpose": text(form, "purpose")}
    for name in ("organizationId", "complianceGroupId"):
        value = text(form, name)
        if value:
            # As a JSON number when it is one, so the API's model judges it exactly as over the API.
            body[name] = json_number(value)
    if text(form, "phoneNumber") or text(form, "name"):
        body["externalParty"] = {"phoneNumber": text(form, "phoneNumber"), "name": text(form, "name")}
    for name in ("effectiveAt", "expiresAt"):
        if text(form, name):
            body[name] = _utc(text(form, name))
    body["scope"] = [s for s in form.getall("scope", []) if isinstance(s, str)]
    return body


def _field_of(location: str) -> str:
    """A field error's place on the form: externalParty.phoneNumber is the phone field, and so on."""
    name = location.removeprefix("externalParty.").split("[")[0]
    return name if name in (*FORM_FIELDS, "scope") else "recipient"


async def record(request: web.Request, actor: Actor) -> tuple[int | None, int, dict[str, Any]]:
    """Submit the record form: (the patient, status, the form's context with errors next to fields)."""
    form = await request.post()
    patient_id = an_id(text(form, "patientId"), "patientId")
    values = {name: text(form, name) for name in FORM_FIELDS}
    chosen = [s for s in form.getall("scope", []) if isinstance(s, str)]
    state = {"values": values, "scope": chosen, "errors": {}}
    try:
        try:
            body = ConsentCreate.model_validate_json(json.dumps(_create_body(form, patient_id)))
        except ValidationError as exc:
            raise invalid_input(exc) from None
        ext = body.external_party
        await consents.record_consent(
            services(request),
            actor,
            consents.RecordConsent(
                patient_id=body.patient_id,
                recipient_type=body.recipient_type,
                purpose=body.purpose,
                organization_id=body.organization_id,
                compliance_group_id=body.compliance_group_id,
                external_phone_number=ext.phone_number if ext else None,
                external_name=ext.name if ext else None,
                effective_at=body.effective_at,
                expires_at=body.expires_at,
                scope=frozenset(body.scope),
            ),
        )
    except InvalidInput as invalid:
        errors: dict[str, str] = {}
        for e in invalid.errors:
            where = _field_of(e.field)
            errors[where] = f"{errors[where]} {e.message}" if where in errors else e.message
        state["errors"] = errors
        return patient_id, 422, state
    return patient_id, 303, state


async def revoke(request: web.Request, actor: Actor) -> tuple[int, int, str | None]:
    """Submit a revoke form: (consent id, status, the error to show next to its reason or None)."""
    consent_id = an_id(request.match_info["consent_id"], "consentId")
    form = await request.post()
    try:
        await consents.revoke_consent(
            services(request), actor, consents.RevokeConsent(consent_id, text(form, "reason"))
        )
    except InvalidInput as invalid:
        return consent_id, 422, "; ".join(e.message for e in invalid.errors)
    except Conflict:
        return consent_id, 409, "This consent is revoked already."
    return consent_id, 303, None
