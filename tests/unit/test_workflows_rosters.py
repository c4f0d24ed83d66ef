"""The on-call roster and staff away on fakes, with a fake clock: the shipped policy decides, the real
fact builder computes the facts (tests/api/test_on_call.py covers the same over HTTP and PostgreSQL;
tests/integration/test_on_call_handoffs.py the hand-off scheduler and the channel).

Longer than 400 lines because the roster, staff away and routing workflows on fakes share ``_team``
on one FakeWorld clock, and the engine/rosters.py rules at the end (who holds, gaps, hand-offs) are
what those workflow tests rest on.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import pytest

from engine.effects import InviteMembers, RemoveMembers
from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Actor, CareTeam, RiskLevel, Role
from engine.rosters import Handoff, OnCallShift, StaffAway, away_at, gaps, handoff_effects, on_call_at
from engine.workflows.conversations import StartConversation, send_message, start_conversation
from engine.workflows.patients import RegisterPatient, add_care_team_member, register_patient
from engine.workflows.rosters import (
    AddShift,
    SetAway,
    add_shift,
    end_away,
    my_away,
    read_roster,
    remove_shift,
    set_away,
)
from tests.support.fakes import START, FakeWorld

H = timedelta(hours=1)
PARIS = timezone(timedelta(hours=1))  # a fixed offset, as RFC 3339 times carry
NEW_YORK = timezone(timedelta(hours=-5))


async def _team(world: FakeWorld) -> tuple[Actor, CareTeam, Actor]:
    """A care-team member who registered a patient, the patient's team, and a colleague on it."""
    org = world.organization().id
    lead = world.actor(Role.CARE_TEAM_MEMBER, org)
    patient = await register_patient(
        world.services, lead, RegisterPatient("J", "S", RiskLevel.HIGH, date(1980, 1, 1))
    )
    team = next(t for t in world.db.care_teams.values() if t.patient_id == patient.id)
    colleague = world.actor(Role.PEER_SUPPORT, org)
    team, _ = await add_care_team_member(world.services, lead, team.id, colleague.user_id)
    return lead, team, colleague


async def test_a_care_team_member_puts_a_colleague_on_call_and_the_roster_shows_now_and_next(
    world: FakeWorld,
) -> None:
    lead, team, colleague = await _team(world)
    first = await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + 8 * H))
    second = await add_shift(
        world.services, lead, AddShift(team.id, lead.user_id, START + 8 * H, START + 16 * H)
    )

    roster = await read_roster(world.services, lead, team.id)

    assert roster.now == first.shift
    assert roster.next == second.shift
    [event] = world.events("on_call.read")
    assert (event.outcome, event.resource_id) == ("success", str(team.id))
    [added, _] = world.events("on_call.add")
    assert added.details["shift_id"] == first.shift.id
    assert added.details["on_call_user_id"] == colleague.user_id


async def test_the_holder_changes_exactly_at_the_boundary(world: FakeWorld) -> None:
    lead, team, colleague = await _team(world)
    await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + 8 * H))
    await add_shift(world.services, lead, AddShift(team.id, lead.user_id, START + 8 * H, START + 16 * H))

    world.clock.advance(hours=8, microseconds=-1)
    before = await read_roster(world.services, lead, team.id)
    world.clock.advance(microseconds=1)
    at = await read_roster(world.services, lead, team.id)

    assert before.now is not None
    assert before.now.user_id == colleague.user_id
    assert at.now is not None
    assert at.now.user_id == lead.user_id
    assert at.next is None


async def test_an_overlapping_shift_is_refused_naming_the_shift_it_overlaps(world: FakeWorld) -> None:
    lead, team, colleague = await _team(world)
    first = await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + 8 * H))

    with pytest.raises(InvalidInput) as refused:
        await add_shift(world.services, lead, AddShift(team.id, lead.user_id, START + 7 * H, START + 9 * H))

    [error] = refused.value.errors
    assert (error.field, error.type) == ("startsAt", "overlaps_shift")
    assert f"shift {first.shift.id}" in error.message
    assert len(world.db.on_call_shifts) == 1


async def test_back_to_back_shifts_do_not_overlap(world: FakeWorld) -> None:
    lead, team, colleague = await _team(world)
    await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + 8 * H))
    await add_shift(world.services, lead, AddShift(team.id, lead.user_id, START + 8 * H, START + 9 * H))

    assert len(world.db.on_call_shifts) == 2


@pytest.mark.parametrize("length", [timedelta(0), -H, timedelta(days=32)])
async def test_an_empty_reversed_or_overlong_window_is_refused(world: FakeWorld, length: timedelta) -> None:
    lead, team, colleague = await _team(world)

    with pytest.raises(InvalidInput) as refused:
        await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + length))

    assert [e.field for e in refused.value.errors] == ["endsAt"]
    assert world.db.on_call_shifts == {}


async def test_gaps_in_the_next_seven_days_are_reported_not_refused(world: FakeWorld) -> None:
    lead, team, colleague = await _team(world)
    await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + 8 * H))

    change = await add_shift(
        world.services, lead, AddShift(team.id, lead.user_id, START + 12 * H, START + 20 * H)
    )

    assert [(g.starts_at, g.ends_at) for g in change.gaps] == [
        (START + 8 * H, START + 12 * H),
        (START + 20 * H, START + timedelta(days=7)),
    ]
    assert world.events("on_call.add")[-1].details["gaps_next_7_days"] == 2
    roster = await read_roster(world.services, lead, team.id, START, START + 24 * H)
    assert [(g.starts_at, g.ends_at) for g in roster.gaps] == [
        (START + 8 * H, START + 12 * H),
        (START + 20 * H, START + 24 * H),
    ]


async def test_times_with_offsets_are_stored_in_utc_and_compared_as_instants(world: FakeWorld) -> None:
    lead, team, colleague = await _team(world)
    # 10:00 in Paris is 09:00 UTC (START); 04:00 in New York is 09:00 UTC as well.
    paris_start = START.astimezone(PARIS)
    change = await add_shift(
        world.services, lead, AddShift(team.id, colleague.user_id, paris_start, paris_start + 2 * H)
    )

    assert change.shift.starts_at == START
    assert change.shift.starts_at.utcoffset() == timedelta(0)
    with pytest.raises(InvalidInput):  # the same instant written in another zone still overlaps
        await add_shift(
            world.services, lead, AddShift(team.id, lead.user_id, START.astimezone(NEW_YORK), START + H)
        )


async def test_only_an_active_clinical_member_of_the_care_team_may_be_put_on_call(world: FakeWorld) -> None:
    lead, team, _ = await _team(world)
    outsider = world.actor(Role.CARE_TEAM_MEMBER, lead.organization_id)  # same organization, not on the team

    with pytest.raises(InvalidInput) as refused:
        await add_shift(world.services, lead, AddShift(team.id, outsider.user_id, START, START + H))

    assert [(e.field, e.type) for e in refused.value.errors] == [("userId", "not_care_team_member")]


async def test_an_admin_of_the_patients_organization_runs_the_roster_and_another_organizations_gets_404(
    world: FakeWorld,
) -> None:
    lead, team, colleague = await _team(world)
    admin = world.actor(Role.ADMIN, lead.organization_id)
    stranger = world.actor(Role.ADMIN, world.organization().id)

    change = await add_shift(world.services, admin, AddShift(team.id, colleague.user_id, START, START + H))
    with pytest.raises(NotFound):
        await read_roster(world.services, stranger, team.id)
    with pytest.raises(NotFound):
        await remove_shift(world.services, stranger, team.id, change.shift.id)

    assert list(world.db.on_call_shifts) == [change.shift.id]
    [denied] = [e for e in world.events("on_call.remove") if e.outcome == "denied"]
    assert denied.reason == "other_organization"
    assert denied.details["answered"] == "not_found"


async def test_a_member_not_on_the_care_team_is_refused_and_roles_without_rules_are_denied(
    world: FakeWorld,
) -> None:
    lead, team, colleague = await _team(world)
    off_team = world.actor(Role.CARE_TEAM_MEMBER, lead.organization_id)
    auditor = world.actor(Role.AUDITOR, lead.organization_id)

    with pytest.raises(Forbidden) as not_on_team:
        await add_shift(world.services, off_team, AddShift(team.id, colleague.user_id, START, START + H))
    with pytest.raises(Forbidden) as auditor_denied:
        await read_roster(world.services, auditor, team.id)

    assert not_on_team.value.decision.reason == "not_on_care_team"
    assert auditor_denied.value.decision.reason == "role_not_permitted"


async def test_removing_a_shift_reports_the_gap_it_leaves_and_another_teams_shift_is_404(
    world: FakeWorld,
) -> None:
    lead, team, colleague = await _team(world)
    other_lead, other_team, other_colleague = await _team(world)
    theirs = await add_shift(
        world.services, other_lead, AddShift(other_team.id, other_colleague.user_id, START, START + H)
    )
    mine = await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + H))

    with pytest.raises(NotFound):
        await remove_shift(world.services, lead, team.id, theirs.shift.id)
    removed = await remove_shift(world.services, lead, team.id, mine.shift.id)

    assert removed.shift == mine.shift
    assert removed.gaps[0].starts_at == START
    assert set(world.db.on_call_shifts) == {theirs.shift.id}


# --- away with a delegate ------------------------------------------------------------------------------


async def test_staff_mark_themselves_away_and_their_delegate_is_found_at_any_moment_of_the_window(
    world: FakeWorld,
) -> None:
    lead, _, colleague = await _team(world)
    away = await set_away(world.services, lead, SetAway(colleague.user_id, START + H, START + 5 * H))

    windows = list(world.db.staff_away.values())
    assert away_at(windows, START) is None
    found = away_at(windows, START + H)
    assert found is not None
    assert found.delegate_id == colleague.user_id
    assert away_at(windows, START + 5 * H) is None  # until is exclusive
    [event] = world.events("away.set")
    assert (event.outcome, event.details["delegate_id"]) == ("success", colleague.user_id)
    status = await my_away(world.services, lead)
    assert status.current is None
    assert status.planned == (away,)


async def test_an_open_ended_away_holds_until_ended_and_ending_it_is_audited(world: FakeWorld) -> None:
    lead, _, colleague = await _team(world)
    await set_away(world.services, lead, SetAway(colleague.user_id))
    world.clock.advance(days=30)
    assert (await my_away(world.services, lead)).current is not None

    await end_away(world.services, lead)

    assert (await my_away(world.services, lead)).current is None
    assert away_at(world.db.staff_away.values(), world.clock()) is None
    with pytest.raises(Conflict):
        await end_away(world.services, lead)
    assert [e.outcome for e in world.events("away.end")] == ["success", "failure"]


async def test_setting_away_again_replaces_the_window_that_holds_then(world: FakeWorld) -> None:
    lead, _, colleague = await _team(world)
    other = world.actor(Role.CARE_TEAM_MEMBER, lead.organization_id)
    await set_away(world.services, lead, SetAway(colleague.user_id))
    await set_away(world.services, lead, SetAway(other.user_id, START + 2 * H))

    found = away_at(world.db.staff_away.values(), START + 3 * H)
    assert found is not None
    assert found.delegate_id == other.user_id
    earlier = away_at(world.db.staff_away.values(), START + H)
    assert earlier is not None
    assert earlier.delegate_id == colleague.user_id


@pytest.mark.parametrize("who", ["self", "other_org", "admin", "inactive"])
async def test_the_delegate_must_be_an_active_clinical_colleague_of_ones_organization(
    world: FakeWorld, who: str
) -> None:
    lead, _, colleague = await _team(world)
    delegate = {
        "self": lead.user_id,
        "other_org": world.actor(Role.CARE_TEAM_MEMBER, world.organization().id).user_id,
        "admin": world.actor(Role.ADMIN, lead.organization_id).user_id,
        "inactive": colleague.user_id,
    }[who]
    if who == "inactive":
        world.db.users[delegate] = dataclasses.replace(world.db.users[delegate], is_active=False)

    with pytest.raises(InvalidInput) as refused:
        await set_away(world.services, lead, SetAway(delegate))

    assert [(e.field, e.type) for e in refused.value.errors] == [("delegateId", "not_found")]
    assert world.db.staff_away == {}


async def test_a_delegate_who_is_away_themself_is_refused(world: FakeWorld) -> None:
    lead, _, colleague = await _team(world)
    other = world.actor(Role.CARE_TEAM_MEMBER, lead.organization_id)
    await set_away(world.services, colleague, SetAway(other.user_id))

    with pytest.raises(InvalidInput) as refused:
        await set_away(world.services, lead, SetAway(colleague.user_id))

    assert [(e.field, e.type) for e in refused.value.errors] == [("delegateId", "delegate_away")]


async def test_a_reversed_away_window_is_refused_naming_until(world: FakeWorld) -> None:
    lead, _, colleague = await _team(world)

    with pytest.raises(InvalidInput) as refused:
        await set_away(world.services, lead, SetAway(colleague.user_id, START + H, START))

    assert [e.field for e in refused.value.errors] == ["until"]


async def test_auditors_may_not_mark_themselves_away(world: FakeWorld) -> None:
    auditor = world.actor(Role.AUDITOR, world.organization().id)

    with pytest.raises(Forbidden):
        await set_away(world.services, auditor, SetAway(auditor.user_id + 1000))


# --- routing to the role -------------------------------------------------------------------------------


async def test_a_conversation_routed_to_the_on_call_role_invites_the_holder_and_the_send_names_them(
    world: FakeWorld,
) -> None:
    lead, team, colleague = await _team(world)
    await add_shift(world.services, lead, AddShift(team.id, colleague.user_id, START, START + 8 * H))

    conversation = await start_conversation(
        world.services, lead, StartConversation(team.patient_id, "Night cover", [], on_call_of=team.id)
    )

    assert (conversation.on_call_care_team_id, conversation.on_call_holder_id) == (team.id, colleague.user_id)
    chat_id = world.db.users[colleague.user_id].chat_user_id
    assert world.db.outbox[-1] == InviteMembers(conversation.id, (chat_id,))
    [create] = world.events("conversation.create")
    assert (create.details["on_call_of"], create.details["on_call_holder_id"]) == (team.id, colleague.user_id)
    joined = [e for e in world.events("conversation.join") if e.details.get("on_call_of") == team.id]
    assert [e.details["subject_user_id"] for e in joined] == [colleague.user_id]

    await send_message(world.services, lead, conversation.id, "Please review the plan.")
    [sent] = world.events("message.send")
    assert (sent.details["on_call_of"], sent.details["on_call_holder_id"]) == (team.id, colleague.user_id)
    assert sent.details["on_call_received_as"] == f"on call for care team {team.id}"


async def test_another_patients_care_team_cannot_be_the_role_of_a_conversation(world: FakeWorld) -> None:
    lead, team, _ = await _team(world)
    _, other_team, _ = await _team(world)

    with pytest.raises(InvalidInput) as refused:
        await start_conversation(
            world.services, lead, StartConversation(team.patient_id, "Cover", [], on_call_of=other_team.id)
        )

    assert [e.field for e in refused.value.errors] == ["onCallOf"]
    assert world.db.conversations == {}


async def test_a_conversation_routed_while_nobody_is_on_call_has_no_holder_yet(world: FakeWorld) -> None:
    lead, team, _ = await _team(world)

    conversation = await start_conversation(
        world.services, lead, StartConversation(team.patient_id, "Cover", [], on_call_of=team.id)
    )

    assert (conversation.on_call_care_team_id, conversation.on_call_holder_id) == (team.id, None)
    assert not any(isinstance(e, InviteMembers) for e in world.db.outbox)


# --- what follows from a roster at a moment (engine/rosters.py) -----------------------------------------


def _shift(id: int, user: int, start: datetime, end: datetime) -> OnCallShift:
    return OnCallShift(id, 1, user, start, end, 1, START)


def test_when_shifts_overlap_the_latest_starting_one_holds() -> None:
    early, late = _shift(1, 10, START, START + 8 * H), _shift(2, 20, START + H, START + 2 * H)

    held = on_call_at([early, late], START + H)

    assert held is not None
    assert held.user_id == 20
    after = on_call_at([early, late], START + 2 * H)
    assert after is not None
    assert after.user_id == 10


def test_gaps_cover_the_window_outside_every_shift() -> None:
    shifts = [_shift(1, 10, START + H, START + 2 * H), _shift(2, 20, START + 2 * H, START + 3 * H)]

    found = gaps(shifts, START, START + 4 * H)

    assert [(g.starts_at, g.ends_at) for g in found] == [(START, START + H), (START + 3 * H, START + 4 * H)]
    assert gaps([], START, START + H)[0].ends_at == START + H


def test_an_open_ended_away_holds_forever_and_the_latest_starting_wins() -> None:
    first = StaffAway(1, 5, 6, START, None, START)
    second = StaffAway(2, 5, 7, START + H, START + 2 * H, START)

    assert away_at([first, second], START + 90 * timedelta(minutes=1)) == second
    assert away_at([first, second], START + timedelta(days=400)) == first


@pytest.mark.parametrize(
    ("from_is_member", "expected"),
    [
        (False, [InviteMembers(9, ("new",)), RemoveMembers(9, ("old",))]),
        (True, [InviteMembers(9, ("new",))]),  # a member in their own right stays
    ],
)
def test_a_hand_off_invites_the_new_holder_and_removes_the_old_one_unless_a_member(
    from_is_member: bool, expected: list[object]
) -> None:
    handoff = Handoff(9, 1, 3, 10, 20, 5, "old", "new", from_is_member=from_is_member)

    assert handoff_effects(handoff) == expected


def test_a_hand_off_to_nobody_only_removes_the_old_holder() -> None:
    assert handoff_effects(Handoff(9, 1, 3, 10, None, None, "old", None)) == [RemoveMembers(9, ("old",))]
