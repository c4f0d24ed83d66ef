"""A care team's on-call roster and staff away over HTTP."""

from __future__ import annotations

from aiohttp import web

from engine.model import Actor
from engine.workflows import rosters
from handlers.requests import parse, path_id, query, respond, services
from handlers.routing import Endpoint
from handlers.schemas.rosters import (
    AlertPhonePublic,
    AlertPhoneSet,
    AwaySet,
    AwayStatusPublic,
    OnCallQuery,
    OnCallRosterPublic,
    OnCallShiftCreate,
    RosterChangePublic,
    StaffAwayPublic,
)


async def read_on_call(request: web.Request, actor: Actor) -> web.Response:
    q = query(request, OnCallQuery)
    roster = await rosters.read_roster(services(request), actor, path_id(request, "id"), q.from_, q.to)
    return respond(OnCallRosterPublic.of(roster))


async def add_shift(request: web.Request, actor: Actor) -> web.Response:
    team_id = path_id(request, "id")
    body = await parse(request, OnCallShiftCreate)
    cmd = rosters.AddShift(team_id, body.user_id, body.starts_at, body.ends_at)
    return respond(RosterChangePublic.of(await rosters.add_shift(services(request), actor, cmd)), 201)


async def remove_shift(request: web.Request, actor: Actor) -> web.Response:
    team_id, shift_id = path_id(request, "id"), path_id(request, "shiftId")
    change = await rosters.remove_shift(services(request), actor, team_id, shift_id)
    return respond(RosterChangePublic.of(change))


async def read_away(request: web.Request, actor: Actor) -> web.Response:
    return respond(AwayStatusPublic.of(await rosters.my_away(services(request), actor)))


async def set_away(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, AwaySet)
    cmd = rosters.SetAway(body.delegate_id, body.from_, body.until)
    return respond(StaffAwayPublic.of(await rosters.set_away(services(request), actor, cmd)))


async def read_alert_phone(request: web.Request, actor: Actor) -> web.Response:
    return respond(AlertPhonePublic(phone_number=await rosters.my_alert_phone(services(request), actor)))


async def set_alert_phone(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, AlertPhoneSet)
    await rosters.set_alert_phone(services(request), actor, body.phone_number)
    return respond(AlertPhonePublic(phone_number=body.phone_number))


async def forget_alert_phone(request: web.Request, actor: Actor) -> web.Response:
    await rosters.set_alert_phone(services(request), actor, None)
    return web.Response(status=204)


async def end_away(request: web.Request, actor: Actor) -> web.Response:
    await rosters.end_away(services(request), actor)
    return web.Response(status=204)


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/care-teams/{id}/on-call",
        read_on_call,
        "getCareTeamOnCall",
        "Who is on call for a care team now and next, and the roster's shifts and gaps in a window",
        "care-teams",
        response=OnCallRosterPublic,
        query=OnCallQuery,
    ),
    Endpoint(
        "POST",
        "/api/care-teams/{id}/on-call/shifts",
        add_shift,
        "addOnCallShift",
        "Put a member of the care team on call for a window",
        "care-teams",
        OnCallShiftCreate,
        RosterChangePublic,
        201,
        description="An empty, reversed or overlapping window is refused (422 naming the field; an "
        "overlap names the shift it overlaps). Gaps in the next 7 days are reported in the answer.",
    ),
    Endpoint(
        "DELETE",
        "/api/care-teams/{id}/on-call/shifts/{shiftId}",
        remove_shift,
        "removeOnCallShift",
        "Take a shift off the care team's roster",
        "care-teams",
        response=RosterChangePublic,
        errors=(400, 401, 403, 404, 422),
        description="Answers the removed shift and the gaps of the next 7 days after the change.",
    ),
    Endpoint(
        "GET",
        "/api/auth/away",
        read_away,
        "getMyAway",
        "One's own away now (with its delegate) and the windows planned",
        "auth",
        response=AwayStatusPublic,
        errors=(401, 403),
    ),
    Endpoint(
        "PUT",
        "/api/auth/away",
        set_away,
        "setMyAway",
        "Mark oneself away, with a delegate who takes one's urgent messages",
        "auth",
        AwaySet,
        StaffAwayPublic,
        description="Replaces any away of one's own still holding at `from` or planned after it.",
    ),
    Endpoint(
        "DELETE",
        "/api/auth/away",
        end_away,
        "endMyAway",
        "End one's away now (planned windows are dropped)",
        "auth",
        status=204,
        errors=(401, 403, 409),
    ),
    Endpoint(
        "GET",
        "/api/auth/alert-phone",
        read_alert_phone,
        "getMyAlertPhone",
        "The number one registered for urgent-message alerts",
        "auth",
        response=AlertPhonePublic,
        errors=(401, 403),
    ),
    Endpoint(
        "PUT",
        "/api/auth/alert-phone",
        set_alert_phone,
        "setMyAlertPhone",
        "Register the number urgent-message alerts are texted to",
        "auth",
        AlertPhoneSet,
        AlertPhonePublic,
        description="Decided as alert_phone.set. An unacknowledged urgent message's text step sends this"
        " number a fixed sentence without clinical content (policies/escalation.toml says when).",
    ),
    Endpoint(
        "DELETE",
        "/api/auth/alert-phone",
        forget_alert_phone,
        "forgetMyAlertPhone",
        "Forget the number urgent-message alerts are texted to",
        "auth",
        status=204,
        errors=(401, 403),
    ),
]
