"""The console's legal holds: the organization's holds (the API's ``legal_hold.list``), active ones
first, place one on a patient or a conversation (``legal_hold.place``, the form checked by the API's
own request model, each error next to its field) and lift one with a reason (``legal_hold.lift``).
No second path: the policy decides each, and the audit trail records it.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from engine.errors import Conflict, InvalidInput, NotFound
from engine.model import Actor
from engine.workflows import legal_holds
from handlers.console.forms import json_number, text
from handlers.problems import invalid_input
from handlers.requests import record_id, services
from handlers.schemas.retention import LegalHoldCreate, LegalHoldPublic

#: The place form's fields (the API's names).
FORM_FIELDS = ("patientId", "conversationId", "reason")
ONE_SUBJECT = "Enter a patient id or a conversation id (one of the two, not both)."
AN_ID = "Enter an id (a positive whole number)."
A_REASON = f"Say why, in 1 to {legal_holds.MAX_REASON} characters."


def blank_form() -> dict[str, Any]:
    return {"values": dict.fromkeys(FORM_FIELDS, ""), "errors": {}}


async def listing(request: web.Request, actor: Actor) -> dict[str, Any]:
    """The organization's holds, active ones first (each part newest first), and the forms' blank
    state (place, lift, open a legal record)."""
    holds = await legal_holds.list_legal_holds(services(request), actor)
    public = [LegalHoldPublic.of(h) for h in holds]
    return {
        "holds": sorted(public, key=lambda h: not h.active),  # stable: newest first within each
        "active_count": sum(h.active for h in public),
        "place": blank_form(),
        "lift_errors": {},
        "record_value": "",
        "record_error": None,
        "message": None,
    }


def _field_of(location: str) -> str:
    return location if location in FORM_FIELDS else "patientId"


def _message(field: str, kind: str) -> str:
    """The error in words an officer reads: no field names of the API, no validator's jargon. The
    workflow's own error on the subject (type ``invalid``) is "exactly one of the two"."""
    if field == "reason":
        return A_REASON
    return ONE_SUBJECT if kind == "invalid" else AN_ID


async def place(request: web.Request, actor: Actor) -> tuple[int, dict[str, Any]]:
    """Submit the place form: (303, 422 or 404; the form's state with each error next to its field,
    what was typed kept)."""
    form = await request.post()
    values = {name: text(form, name) for name in FORM_FIELDS}
    state: dict[str, Any] = {"values": values, "errors": {}}
    body: dict[str, Any] = {"reason": values["reason"]}
    for name in ("patientId", "conversationId"):
        if values[name]:
            body[name] = json_number(values[name])
    try:
        try:
            parsed = LegalHoldCreate.model_validate_json(json.dumps(body))
        except ValidationError as exc:
            raise invalid_input(exc) from None
        cmd = legal_holds.PlaceLegalHold(parsed.reason, parsed.patient_id, parsed.conversation_id)
        await legal_holds.place_legal_hold(services(request), actor, cmd)
    except InvalidInput as invalid:
        errors: dict[str, str] = {}
        for e in invalid.errors:
            where = _field_of(e.field)
            errors.setdefault(where, _message(where, e.type))
        state["errors"] = errors
        return 422, state
    except NotFound:
        # Another organization's patient or conversation is answered as one that does not exist.
        where = "patientId" if values["patientId"] else "conversationId"
        what = "patient" if where == "patientId" else "conversation"
        state["errors"] = {where: f"No {what} with this id in your organization."}
        return 404, state
    return 303, state


def hold_id(request: web.Request) -> int:
    found = record_id(request.match_info["hold_id"])
    if found is None:
        raise NotFound("legal_hold")
    return found


async def lift(request: web.Request, actor: Actor) -> tuple[int, int, str | None]:
    """Submit a lift form: (hold id, status, the error to show next to its reason or None). Another
    organization's hold answers 404 (the console's page), as one that does not exist."""
    held = hold_id(request)
    form = await request.post()
    try:
        await legal_holds.lift_legal_hold(services(request), actor, held, text(form, "reason"))
    except InvalidInput:
        return held, 422, A_REASON
    except Conflict:
        return held, 409, "This hold was lifted already."
    return held, 303, None


def record_to_open(request: web.Request) -> tuple[int | None, str | None]:
    """The "open a message's legal record" form: (the message id, None) or (None, the error)."""
    found = record_id(request.query.get("messageId", "").strip())
    return (None, AN_ID) if found is None else (found, None)
