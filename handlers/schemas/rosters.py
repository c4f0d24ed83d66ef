"""Schemas of a care team's on-call roster and of staff away with a delegate. Times carry an offset
on the way in (a naive time is refused, naming the field) and are answered in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from engine.rosters import Gap, OnCallShift, StaffAway
from engine.workflows.rosters import AwayStatus, Roster, RosterChange
from handlers.schemas import Id, Instant, PhoneNumber, QueryTime, Request, Response


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class OnCallShiftCreate(Request):
    user_id: Id = Field(
        description="An active clinical member of this care team, of the patient's organization."
    )
    starts_at: Instant = Field(description="Inclusive; RFC 3339 with an offset (stored in UTC).")
    ends_at: Instant = Field(description="Exclusive; after startsAt, at most 31 days later.")


class OnCallQuery(Request):
    # Query strings are text: lax parsing, but unknown parameters are still refused.
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=False, frozen=True)
    from_: QueryTime | None = Field(None, alias="from", description="Inclusive; default now.")
    to: QueryTime | None = Field(None, description="Exclusive; default 7 days after `from`; at most 62 days.")


class OnCallShiftPublic(Response):
    id: int
    care_team_id: int
    user_id: int
    starts_at: datetime
    ends_at: datetime
    created_by: int
    created_at: datetime

    @classmethod
    def of(cls, s: OnCallShift) -> OnCallShiftPublic:
        return cls(
            id=s.id,
            care_team_id=s.care_team_id,
            user_id=s.user_id,
            starts_at=_utc(s.starts_at),
            ends_at=_utc(s.ends_at),
            created_by=s.created_by,
            created_at=_utc(s.created_at),
        )


class GapPublic(Response):
    """A stretch with nobody on call."""

    starts_at: datetime
    ends_at: datetime

    @classmethod
    def of(cls, g: Gap) -> GapPublic:
        return cls(starts_at=_utc(g.starts_at), ends_at=_utc(g.ends_at))


class OnCallRosterPublic(Response):
    care_team_id: int
    at: datetime = Field(description="When the roster was read (UTC): `now` and `next` are as of then.")
    now: OnCallShiftPublic | None = Field(description="The shift holding now; null while nobody is on call.")
    next: OnCallShiftPublic | None = Field(description="The next shift to start after the current one.")
    from_: datetime = Field(alias="from")
    to: datetime
    shifts: list[OnCallShiftPublic] = Field(description="The shifts sharing any moment with [from, to).")
    gaps: list[GapPublic] = Field(description="The stretches of [from, to) with nobody on call.")

    @classmethod
    def of(cls, r: Roster) -> OnCallRosterPublic:
        return cls(
            care_team_id=r.care_team_id,
            at=_utc(r.at),
            now=OnCallShiftPublic.of(r.now) if r.now else None,
            next=OnCallShiftPublic.of(r.next) if r.next else None,
            from_=_utc(r.window_from),
            to=_utc(r.window_to),
            shifts=[OnCallShiftPublic.of(s) for s in r.shifts],
            gaps=[GapPublic.of(g) for g in r.gaps],
        )


class RosterChangePublic(Response):
    shift: OnCallShiftPublic
    gaps: list[GapPublic] = Field(
        description="Stretches of the next 7 days with nobody on call, after the change."
    )
    gaps_until: datetime

    @classmethod
    def of(cls, c: RosterChange) -> RosterChangePublic:
        return cls(
            shift=OnCallShiftPublic.of(c.shift),
            gaps=[GapPublic.of(g) for g in c.gaps],
            gaps_until=_utc(c.horizon_to),
        )


class AwaySet(Request):
    delegate_id: Id = Field(
        description="An active peer support specialist or care-team member of one's organization."
    )
    from_: Instant | None = Field(None, alias="from", description="Inclusive; default now; with an offset.")
    until: Instant | None = Field(None, description="Exclusive; null or absent: until ended.")


class StaffAwayPublic(Response):
    id: int
    user_id: int
    delegate_id: int
    from_: datetime = Field(alias="from")
    until: datetime | None

    @classmethod
    def of(cls, w: StaffAway) -> StaffAwayPublic:
        return cls(
            id=w.id,
            user_id=w.user_id,
            delegate_id=w.delegate_id,
            from_=_utc(w.starts_at),
            until=_utc(w.ends_at) if w.ends_at else None,
        )


class AwayStatusPublic(Response):
    at: datetime
    away: StaffAwayPublic | None = Field(
        description="One's away now, if any: its delegate takes urgent messages."
    )
    planned: list[StaffAwayPublic]

    @classmethod
    def of(cls, s: AwayStatus) -> AwayStatusPublic:
        return cls(
            at=_utc(s.at),
            away=StaffAwayPublic.of(s.current) if s.current else None,
            planned=[StaffAwayPublic.of(w) for w in s.planned],
        )


class AlertPhoneSet(Request):
    phone_number: PhoneNumber = Field(
        description="The number urgent-message alerts are texted to (E.164, or a national number of the"
        " configured region): a fixed sentence, never clinical content."
    )


class AlertPhonePublic(Response):
    phone_number: str | None = Field(
        description="The number registered for urgent-message alerts; null when none is (the text step"
        " of an escalation then skips you)."
    )
