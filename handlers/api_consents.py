"""Consents over HTTP: a patient's consent recorded, a patient's consents listed, a consent revoked
(access it granted ends at once). Break-the-glass, access without consent, is in
``handlers/api_policy.py``."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import consents
from handlers.requests import parse, path_id, respond, services
from handlers.routing import Endpoint
from handlers.schemas import PageOf
from handlers.schemas.consents import (
    ConsentCreate,
    ConsentPublic,
    ConsentRevoke,
    RemovedMemberPublic,
    RevocationPublic,
)

# --- consents ------------------------------------------------------------------------------------


async def create_consent(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ConsentCreate)
    ext = body.external_party
    cmd = consents.RecordConsent(
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
        part2=body.part2.elements() if body.part2 is not None else None,
    )
    svc = services(request)
    consent = await consents.record_consent(svc, actor, cmd)
    return respond(ConsentPublic.of(consent, svc.clock()), 201)


async def list_patient_consents(request: web.Request, actor: Actor) -> web.Response:
    svc = services(request)
    found = await consents.list_consents(svc, actor, path_id(request, "patientId"))
    now = svc.clock()
    return respond(PageOf[ConsentPublic](items=[ConsentPublic.of(c, now) for c in found], next_cursor=None))


async def revoke_consent(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ConsentRevoke)
    svc = services(request)
    cmd = consents.RevokeConsent(path_id(request, "consentId"), body.reason)
    revocation = await consents.revoke_consent(svc, actor, cmd)
    return respond(
        RevocationPublic(
            consent=ConsentPublic.of(revocation.consent, svc.clock()),
            removed_members=[
                RemovedMemberPublic(conversation_id=c, user_id=u) for c, u in revocation.removed_members
            ],
            removed_external_participants=list(revocation.removed_external_participants),
        )
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/api/consents",
        create_consent,
        "createConsent",
        "Record a patient's consent",
        "consents",
        ConsentCreate,
        ConsentPublic,
        201,
    ),
    Endpoint(
        "GET",
        "/api/patients/{patientId}/consents",
        list_patient_consents,
        "listPatientConsents",
        "A patient's consents",
        "consents",
        response=PageOf[ConsentPublic],
    ),
    Endpoint(
        "POST",
        "/api/consents/{consentId}/revoke",
        revoke_consent,
        "revokeConsent",
        "Revoke a consent: access it granted ends at once; covered members leave the conversations",
        "consents",
        ConsentRevoke,
        RevocationPublic,
        errors=(400, 401, 403, 404, 409, 422),
    ),
]
