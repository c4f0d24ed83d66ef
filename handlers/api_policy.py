"""REST endpoints for the policy capability: the policy in force and live reload, and
break-the-glass (see README). Each handler parses, calls one engine workflow, and
maps the result to a public schema."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from engine.errors import FieldError, InvalidInput
from engine.model import Actor
from engine.ports import BreakGlassSession
from engine.workflows import break_glass, policy_admin
from handlers.keys import policy_reloader_key
from handlers.requests import parse, path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas import ListQuery, PageOf, Request, Response

GlassReason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=1000)]


# --- schemas -------------------------------------------------------------------------------------


class PolicyPublic(Response):
    version: str = Field(description="Content hash of the policy files in force on this instance.")
    loaded_at: datetime
    rule_count: int
    workflow_count: int


class PolicyReloadPublic(Response):
    outcome: Literal["swapped", "unchanged"]
    version: str
    previous_version: str


class BreakGlassCreate(Request):
    reason: GlassReason = Field(description="Why emergency access is needed (10 to 1000 characters).")


ReviewNote = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=break_glass.MAX_NOTE)
]


class BreakGlassReview(Request):
    note: ReviewNote = Field(description="The compliance officer's review note (1 to 2000 characters).")


class BreakGlassPublic(Response):
    id: int
    user_id: int
    organization_id: int
    patient_id: int
    reason: str
    opened_at: datetime
    expires_at: datetime
    open: bool
    reviewed_at: datetime | None = Field(
        description="When a compliance officer of the caller's organization reviewed it; null until"
        " then. The patient's organization and the clinician's each review a session on their own;"
        " neither's review shows to the other."
    )
    reviewed_by: int | None = Field(
        description="The compliance officer of the caller's organization who reviewed it."
    )
    review_note: str | None = Field(description="The caller's organization's review note.")

    @classmethod
    def of(cls, s: BreakGlassSession, now: datetime) -> BreakGlassPublic:
        return cls(
            id=s.id,
            user_id=s.user_id,
            organization_id=s.organization_id,
            patient_id=s.patient_id,
            reason=s.reason,
            opened_at=s.opened_at,
            expires_at=s.expires_at,
            open=s.is_open(now),
            reviewed_at=s.reviewed_at,
            reviewed_by=s.reviewed_by,
            review_note=s.review_note,
        )


# --- handlers ------------------------------------------------------------------------------------


async def get_policy(request: web.Request, actor: Actor) -> web.Response:
    status = await policy_admin.policy_status(services(request), actor)
    return respond(
        PolicyPublic(
            version=status.version,
            loaded_at=status.loaded_at,
            rule_count=status.rule_count,
            workflow_count=status.workflow_count,
        )
    )


async def reload_policy(request: web.Request, actor: Actor) -> web.Response:
    result = await policy_admin.reload_policy(services(request), actor, request.app[policy_reloader_key])
    if result.outcome == "rejected":
        # Problems name policy files and lines, never data: safe to show the administrator.
        raise InvalidInput(
            [FieldError("policy", problem, "policy_rejected") for problem in result.problems],
            detail="The edited policy was refused; the previous version keeps serving.",
        )
    return respond(
        PolicyReloadPublic(
            outcome="swapped" if result.outcome == "swapped" else "unchanged",
            version=result.version,
            previous_version=result.previous_version,
        )
    )


async def open_break_glass(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, BreakGlassCreate)
    svc = services(request)
    cmd = break_glass.BreakGlass(path_id(request, "patientId"), body.reason)
    session = await break_glass.break_glass(svc, actor, cmd)
    return respond(BreakGlassPublic.of(session, svc.clock()), 201)


async def review_break_glass(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, BreakGlassReview)
    svc = services(request)
    cmd = break_glass.ReviewBreakGlass(path_id(request, "sessionId"), body.note)
    session = await break_glass.review_break_glass(svc, actor, cmd)
    return respond(BreakGlassPublic.of(session, svc.clock()))


async def list_break_glass(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, ListQuery)
    svc = services(request)
    page = await break_glass.list_break_glass(svc, actor, q.cursor, q.limit)
    now = svc.clock()
    return respond(
        PageOf[BreakGlassPublic](
            items=[BreakGlassPublic.of(s, now) for s in page.items], next_cursor=page.next_cursor
        )
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/policy",
        get_policy,
        "getPolicy",
        "The policy in force on this instance: version, when it was loaded, how many rules",
        "policy",
        response=PolicyPublic,
        errors=(401, 403),
    ),
    Endpoint(
        "POST",
        "/api/policy/reload",
        reload_policy,
        "reloadPolicy",
        "Reload the policy files: checked and tested first; a broken edit is refused (422)",
        "policy",
        response=PolicyReloadPublic,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/patients/{patientId}/break-glass",
        open_break_glass,
        "breakGlass",
        "Open emergency access to a patient, with a reason; it expires by itself and is reviewed",
        "break-glass",
        BreakGlassCreate,
        BreakGlassPublic,
        status=201,
    ),
    Endpoint(
        "GET",
        "/api/break-glass",
        list_break_glass,
        "listBreakGlass",
        "Break-the-glass sessions of one's organization, newest first, for compliance review",
        "break-glass",
        response=PageOf[BreakGlassPublic],
        query=ListQuery,
        errors=(401, 403, 422),
    ),
    Endpoint(
        "POST",
        "/api/break-glass/{sessionId}/review",
        review_break_glass,
        "reviewBreakGlass",
        "Mark a break-the-glass session of one's organization reviewed, with a note (once)",
        "break-glass",
        BreakGlassReview,
        BreakGlassPublic,
        errors=(400, 401, 403, 404, 409, 422),
    ),
]
