"""Legal holds over HTTP (retention: the sweep keeps held content)."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import legal_holds
from handlers.requests import parse, path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas.retention import (
    LegalHoldCreate,
    LegalHoldLift,
    LegalHoldList,
    LegalHoldPublic,
    LegalHoldQuery,
)


async def place_hold(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, LegalHoldCreate)
    cmd = legal_holds.PlaceLegalHold(body.reason, body.patient_id, body.conversation_id)
    return respond(LegalHoldPublic.of(await legal_holds.place_legal_hold(services(request), actor, cmd)), 201)


async def lift_hold(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, LegalHoldLift)
    hold = await legal_holds.lift_legal_hold(services(request), actor, path_id(request, "id"), body.reason)
    return respond(LegalHoldPublic.of(hold))


async def list_holds(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, LegalHoldQuery)
    holds = await legal_holds.list_legal_holds(services(request), actor, active_only=q.active)
    return respond(LegalHoldList(holds=[LegalHoldPublic.of(h) for h in holds]))


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/api/legal-holds",
        place_hold,
        "placeLegalHold",
        "Place a legal hold on a patient's or one conversation's messages",
        "retention",
        LegalHoldCreate,
        LegalHoldPublic,
        201,
        errors=(400, 401, 403, 404, 422),
        description="Decided as legal_hold.place (by default a compliance officer of the patient's "
        "organization). Name exactly one of patientId or conversationId; while the hold lasts the "
        "retention sweep (policies/retention.toml) keeps the held content. Another organization's "
        "patient or conversation answers 404.",
    ),
    Endpoint(
        "POST",
        "/api/legal-holds/{id}/lift",
        lift_hold,
        "liftLegalHold",
        "Lift a legal hold",
        "retention",
        LegalHoldLift,
        LegalHoldPublic,
        errors=(400, 401, 403, 404, 409, 422),
        description="Decided as legal_hold.lift. The retention sweep may then delete what it kept. "
        "409 for a hold lifted already; another organization's hold answers 404.",
    ),
    Endpoint(
        "GET",
        "/api/legal-holds",
        list_holds,
        "listLegalHolds",
        "The legal holds of one's organization, newest first",
        "retention",
        response=LegalHoldList,
        query=LegalHoldQuery,
        description="Decided as legal_hold.list (compliance officers).",
    ),
]
