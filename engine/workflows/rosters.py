"""A care team's on-call roster, and staff away with a delegate.

Every change is a workflow decided by the policy and audited: ``on_call.read`` (who is on call now
and next, the shifts and the gaps of a window), ``on_call.add`` and ``on_call.remove`` (a shift of a
care team), ``away.set`` and ``away.end`` (oneself away, and who takes one's urgent messages).

The roster refuses what would make "who is on call" ambiguous or wrong: an empty or reversed window,
a shift longer than :data:`engine.rosters.MAX_SHIFT`, a shift overlapping another one of the team
(named in the answer), and an on-call member who is not an active member of the care team of the
patient's organization. Gaps (stretches of the next :data:`engine.rosters.GAP_HORIZON` with nobody on
call) are not refused but reported: in the answer to every change and in every roster read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from engine.decisions import Fact
from engine.errors import Conflict, FieldError, InvalidInput, NotFound
from engine.model import Actor, CareTeam, Role
from engine.ports.units import RostersUnitOfWork
from engine.rosters import (
    GAP_HORIZON,
    MAX_ROSTER_WINDOW,
    MAX_SHIFT,
    Gap,
    OnCallShift,
    StaffAway,
    away_at,
    gaps,
    next_after,
    on_call_at,
    overlapping,
    window_problems,
)
from engine.services import Guard, Services

#: Roles that may hold a care team's on-call role or be someone's delegate: clinical staff.
CLINICAL_ROLES = frozenset({Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER})


def _unit_of_work(services: Services) -> RostersUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


def _utc(value: datetime) -> datetime:
    """An aware instant in UTC (the schemas refuse naive times; this keeps the engine honest too)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC)


async def _decided_team(guard: Guard[RostersUnitOfWork], workflow: str, care_team_id: int) -> CareTeam:
    """The care team, once ``workflow`` is allowed on it; another organization's (without a relation
    to its patient) answers 404 as one that does not exist."""
    uow = guard.uow

    async def facts_of() -> frozenset[str] | None:
        team = await uow.care_teams.get(care_team_id)
        if team is None:
            return None
        return (await guard.patient_facts(workflow, team.patient_id))[0]

    await guard.require_role_recording_facts(
        workflow, facts_of, resource_type="care_team", resource_id=care_team_id
    )
    team = await uow.care_teams.get(care_team_id)
    if team is None:
        guard.record_missing(workflow, "care_team", care_team_id)
        raise NotFound("care_team")
    facts, details = await guard.patient_facts(workflow, team.patient_id, unknown_as="care_team")
    guard.require(
        workflow,
        facts,
        resource_type="care_team",
        resource_id=team.id,
        patient_id=team.patient_id,
        details=details,
    )
    return team


# --- the roster -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roster:
    """A care team's roster as read at ``at``: who is on call now and next, and the window's shifts
    and gaps."""

    care_team_id: int
    at: datetime
    now: OnCallShift | None
    next: OnCallShift | None
    window_from: datetime
    window_to: datetime
    shifts: tuple[OnCallShift, ...]
    gaps: tuple[Gap, ...]


async def read_roster(
    services: Services,
    actor: Actor,
    care_team_id: int,
    window_from: datetime | None = None,
    window_to: datetime | None = None,
) -> Roster:
    """Who is on call for the care team now and next, and the shifts and gaps of ``[from, to)``
    (by default the next :data:`GAP_HORIZON`); decided as ``on_call.read``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        start = _utc(window_from) if window_from is not None else guard.now
        end = _utc(window_to) if window_to is not None else start + GAP_HORIZON
        problem = window_problems(start, end, max_length=MAX_ROSTER_WINDOW)
        if problem is not None:
            raise InvalidInput([FieldError("to", problem.replace("startsAt", "from"), "window")])
        team = await _decided_team(guard, "on_call.read", care_team_id)
        shifts = await uow.rosters.between(team.id, start, end)
        around = await uow.rosters.between(team.id, guard.now, guard.now + MAX_ROSTER_WINDOW)
        current = on_call_at(around, guard.now)
        upcoming = next_after(around, guard.now)
        await uow.commit()
    return Roster(
        team.id, guard.now, current, upcoming, start, end, tuple(shifts), tuple(gaps(shifts, start, end))
    )


@dataclass(frozen=True)
class AddShift:
    care_team_id: int
    user_id: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class RosterChange:
    """A shift added or removed, and the gaps the roster has in the next :data:`GAP_HORIZON`."""

    shift: OnCallShift
    gaps: tuple[Gap, ...]
    horizon_to: datetime


async def add_shift(services: Services, actor: Actor, cmd: AddShift) -> RosterChange:
    """Put a care-team member on call for a window; decided as ``on_call.add``.

    Refused (422, naming the field): an empty, reversed or over-long window; someone who is not an
    active clinical member of this care team of the patient's organization; a window overlapping
    another shift of the team (the answer names that shift). Gaps are reported, not refused.
    """
    starts_at, ends_at = _utc(cmd.starts_at), _utc(cmd.ends_at)
    problem = window_problems(starts_at, ends_at, max_length=MAX_SHIFT)
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        team = await _decided_team(guard, "on_call.add", cmd.care_team_id)
        if problem is not None:
            raise InvalidInput([FieldError("endsAt", problem, "window")])
        member = await uow.users.get(cmd.user_id)
        on_team = any(m.user_id == cmd.user_id for m in team.members)
        if (
            member is None
            or not member.is_active
            or not on_team
            or member.organization_id != team.organization_id
            or member.role not in CLINICAL_ROLES
        ):
            raise InvalidInput(
                [
                    FieldError(
                        "userId",
                        "Not an active clinical member of this care team of the patient's organization.",
                        "not_care_team_member",
                    )
                ]
            )
        await uow.rosters.lock_team(team.id)
        clash = overlapping(await uow.rosters.between(team.id, starts_at, ends_at), starts_at, ends_at)
        if clash:
            first = clash[0]
            raise InvalidInput(
                [
                    FieldError(
                        "startsAt",
                        f"Overlaps on-call shift {first.id} ({_iso(first.starts_at)} to"
                        f" {_iso(first.ends_at)}); remove or shorten it first.",
                        "overlaps_shift",
                    )
                ],
                detail=f"The window overlaps on-call shift {first.id}.",
            )
        shift = await uow.rosters.add(team.id, member.id, starts_at, ends_at, actor.user_id)
        horizon = guard.now + GAP_HORIZON
        found = gaps(await uow.rosters.between(team.id, guard.now, horizon), guard.now, horizon)
        guard.annotate(shift_id=shift.id, on_call_user_id=member.id, gaps_next_7_days=len(found))
        await uow.commit()
    return RosterChange(shift, tuple(found), horizon)


async def remove_shift(services: Services, actor: Actor, care_team_id: int, shift_id: int) -> RosterChange:
    """Take a shift off the care team's roster; decided as ``on_call.remove``. A shift of another team
    answers 404 like one that does not exist. Conversations routed to the role are handed off by the
    scheduler within its poll interval."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        team = await _decided_team(guard, "on_call.remove", care_team_id)
        await uow.rosters.lock_team(team.id)
        shift = await uow.rosters.get(shift_id)
        if shift is None or shift.care_team_id != team.id:
            raise NotFound("on_call_shift")
        await uow.rosters.remove(shift.id)
        horizon = guard.now + GAP_HORIZON
        found = gaps(await uow.rosters.between(team.id, guard.now, horizon), guard.now, horizon)
        guard.annotate(shift_id=shift.id, on_call_user_id=shift.user_id, gaps_next_7_days=len(found))
        await uow.commit()
    return RosterChange(shift, tuple(found), horizon)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- away with a delegate -------------------------------------------------------------------------


@dataclass(frozen=True)
class SetAway:
    delegate_id: int
    starts_at: datetime | None = None
    ends_at: datetime | None = None


async def set_away(services: Services, actor: Actor, cmd: SetAway) -> StaffAway:
    """Mark oneself away from ``starts_at`` (default now) until ``ends_at`` (None: until ended), with a
    delegate who takes one's urgent messages meanwhile; decided as ``away.set`` (``self``).

    The delegate must be an active clinical colleague (peer support or care-team member) of one's own
    organization, not oneself, and not away themself when the window starts. They need not share
    one's care teams: whoever routes an urgent message to them decides their access to it. Any away
    window of one's own still holding at ``starts_at`` (or starting later) is replaced by this one.
    """
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("away.set", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        starts_at = _utc(cmd.starts_at) if cmd.starts_at is not None else guard.now
        ends_at = _utc(cmd.ends_at) if cmd.ends_at is not None else None
        problem = window_problems(starts_at, ends_at, max_length=None)
        if problem is not None:
            raise InvalidInput([FieldError("until", problem.replace("startsAt", "from"), "window")])
        if ends_at is not None and ends_at <= guard.now:
            raise InvalidInput([FieldError("until", "Must be in the future.", "window")])
        delegate = await uow.users.get(cmd.delegate_id)
        if (
            delegate is None
            or delegate.id == actor.user_id
            or not delegate.is_active
            or delegate.organization_id != actor.organization_id
            or delegate.role not in CLINICAL_ROLES
        ):
            raise InvalidInput([FieldError("delegateId", "No such active clinical colleague.", "not_found")])
        if away_at(await uow.away.of_user(delegate.id, starts_at), starts_at) is not None:
            raise InvalidInput(
                [
                    FieldError(
                        "delegateId", "This colleague is away then; choose another delegate.", "delegate_away"
                    )
                ]
            )
        replaced = await uow.away.end_from(actor.user_id, starts_at)
        away = await uow.away.add(actor.user_id, delegate.id, starts_at, ends_at)
        guard.annotate(away_id=away.id, delegate_id=delegate.id, replaced=replaced)
        await uow.commit()
    return away


async def end_away(services: Services, actor: Actor) -> int:
    """End one's away now (a window holding now ends now; later ones are dropped); decided as
    ``away.end`` (``self``). 409 if one is not away now and has no away planned."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("away.end", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        ended = await uow.away.end_from(actor.user_id, guard.now)
        if ended == 0:
            raise Conflict("You are not marked away, now or later.")
        guard.annotate(ended=ended)
        await uow.commit()
    return ended


@dataclass(frozen=True)
class AwayStatus:
    """One's away now (if any) and the windows planned later."""

    at: datetime
    current: StaffAway | None
    planned: tuple[StaffAway, ...]


async def my_away(services: Services, actor: Actor) -> AwayStatus:
    """One's own away windows now and later, read as part of one's profile (``auth.profile``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("auth.profile", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        windows = await uow.away.of_user(actor.user_id, guard.now)
        await uow.commit()
    current = away_at(windows, guard.now)
    planned = tuple(w for w in windows if w.starts_at > guard.now)
    return AwayStatus(guard.now, current, planned)


async def my_alert_phone(services: Services, actor: Actor) -> str | None:
    """The number one registered for urgent-message alerts, read as part of one's profile
    (``auth.profile``)."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("auth.profile", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        phone = await uow.users.alert_phone(actor.user_id)
        await uow.commit()
    return phone


async def set_alert_phone(services: Services, actor: Actor, phone_number: str | None) -> None:
    """Register (or, with None, forget) the number the escalation of an unacknowledged urgent message
    texts (a fixed sentence without clinical content; policies/escalation.toml says when); decided as
    ``alert_phone.set`` (``self``). The audit record says whether a number is registered, never which."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("alert_phone.set", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        await uow.users.set_alert_phone(actor.user_id, phone_number)
        guard.annotate(registered=phone_number is not None)
        await uow.commit()
