"""The on-call roster, staff away and routing to the on-call role over HTTP, on PostgreSQL, with the
app's real relay and hand-off scheduler delivering to the Sendbird emulator.

GET/POST/DELETE /api/care-teams/{id}/on-call[/shifts/{shiftId}], GET/PUT/DELETE /api/auth/away and
POST /api/conversations with ``onCallOf``.

Longer than 400 lines because the roster, staff away and routing to the on-call role share the Team
fixture and ``add_shift``; the routing tests at the end hand off along shifts stored through the
roster endpoints tested above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from handlers.keys import emulator_key
from tests.support.api import Api, Person
from tests.support.fakes import ShiftedClock
from tests.support.polling import eventually

H = timedelta(hours=1)
TOKYO = timezone(timedelta(hours=9))


def rfc3339(moment: datetime) -> str:
    return moment.isoformat()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Team:
    org: int
    lead: Person
    colleague: Person
    admin: Person
    patient_id: int
    team_id: int


@pytest.fixture
async def team(api: Api) -> Team:
    org = await api.organization()
    lead = await api.person("care_team_member", org)
    colleague = await api.person("peer_support", org)
    admin = await api.person("admin", org)
    patient_id = await api.patient(lead)
    status, care_team = await api.call("GET", f"/api/patients/{patient_id}/care-team", lead)
    assert status == 200, care_team
    status, care_team = await api.call(
        "POST", f"/api/care-teams/{care_team['id']}/members", lead, json={"userId": colleague.id}
    )
    assert status == 201, care_team
    return Team(org, lead, colleague, admin, patient_id, care_team["id"])


async def add_shift(api: Api, who: Person, team_id: int, user: int, start: datetime, end: datetime) -> Any:
    body = {"userId": user, "startsAt": rfc3339(start), "endsAt": rfc3339(end)}
    return await api.call("POST", f"/api/care-teams/{team_id}/on-call/shifts", who, json=body)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- the roster ----------------------------------------------------------------------------------------


async def test_a_shift_is_stored_in_utc_and_shown_as_on_call_now_and_next(api: Api, team: Team) -> None:
    start = now() - H
    status, first = await add_shift(
        api, team.lead, team.team_id, team.colleague.id, start.astimezone(TOKYO), start + 8 * H
    )
    assert status == 201, first
    status, second = await add_shift(
        api, team.admin, team.team_id, team.lead.id, start + 8 * H, start + 16 * H
    )
    assert status == 201, second

    status, roster = await api.call("GET", f"/api/care-teams/{team.team_id}/on-call", team.lead)

    assert status == 200, roster
    assert first["shift"]["startsAt"].endswith("Z")
    assert utc(first["shift"]["startsAt"]) == start
    assert roster["now"]["userId"] == team.colleague.id
    assert roster["now"]["id"] == first["shift"]["id"]
    assert roster["next"]["id"] == second["shift"]["id"]
    assert [s["id"] for s in roster["shifts"]] == [first["shift"]["id"], second["shift"]["id"]]
    assert utc(roster["gaps"][0]["startsAt"]) == start + 16 * H  # reported, not refused


async def test_the_roster_of_a_window_shows_its_shifts_and_gaps(api: Api, team: Team) -> None:
    day = now().replace(hour=0, minute=0, second=0) + timedelta(days=2)
    await add_shift(api, team.lead, team.team_id, team.colleague.id, day + 8 * H, day + 12 * H)

    status, roster = await api.call(
        "GET",
        f"/api/care-teams/{team.team_id}/on-call",
        team.lead,
        params={"from": rfc3339(day), "to": rfc3339(day + 24 * H)},
    )

    assert status == 200, roster
    assert [(utc(g["startsAt"]), utc(g["endsAt"])) for g in roster["gaps"]] == [
        (day, day + 8 * H),
        (day + 12 * H, day + 24 * H),
    ]


async def test_an_overlapping_shift_is_refused_naming_the_shift_and_nothing_is_stored(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    start = now() + H
    _, first = await add_shift(api, team.lead, team.team_id, team.colleague.id, start, start + 8 * H)

    status, body = await add_shift(api, team.lead, team.team_id, team.lead.id, start + 7 * H, start + 9 * H)

    assert status == 422, body
    [error] = body["errors"]
    assert (error["field"], error["type"]) == ("startsAt", "overlaps_shift")
    assert f"shift {first['shift']['id']}" in error["message"]
    assert await db.fetchval("SELECT count(*) FROM on_call_shifts WHERE care_team_id = $1", team.team_id) == 1


@pytest.mark.parametrize(
    ("starts", "ends", "field"),
    [
        pytest.param("2027-01-01T08:00:00", "2027-01-01T10:00:00+00:00", "startsAt", id="naive-start"),
        pytest.param("2027-01-01T08:00:00Z", "2027-01-01T10:00:00", "endsAt", id="naive-end"),
        pytest.param("2027-01-01T08:00:00Z", "2027-01-01T08:00:00Z", "endsAt", id="empty"),
        pytest.param("2027-01-01T10:00:00+02:00", "2027-01-01T08:00:00Z", "endsAt", id="empty-across-zones"),
        pytest.param("2027-01-01T08:00:00Z", "2027-01-01T07:00:00Z", "endsAt", id="reversed"),
        pytest.param("yesterday", "2027-01-01T07:00:00Z", "startsAt", id="not-a-time"),
    ],
)
async def test_naive_empty_and_reversed_windows_are_refused_naming_the_field(
    api: Api, team: Team, starts: str, ends: str, field: str
) -> None:
    body = {"userId": team.colleague.id, "startsAt": starts, "endsAt": ends}

    status, problem = await api.call(
        "POST", f"/api/care-teams/{team.team_id}/on-call/shifts", team.lead, json=body
    )

    assert status == 422, problem
    assert field in [e["field"] for e in problem["errors"]]


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2027-01-01T08:00:00"])
async def test_a_roster_window_that_is_not_an_rfc3339_time_with_an_offset_is_a_422_naming_it(
    api: Api, team: Team, value: str
) -> None:
    status, problem = await api.call("GET", f"/api/care-teams/{team.team_id}/on-call?from={value}", team.lead)

    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["from"]


async def test_someone_not_on_the_care_team_cannot_be_put_on_call(api: Api, team: Team) -> None:
    outsider = await api.person("care_team_member", team.org)
    start = now() + H

    status, body = await add_shift(api, team.lead, team.team_id, outsider.id, start, start + H)

    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["userId"]


async def test_removing_a_shift_answers_the_gaps_it_leaves(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    start = now() + H
    _, added = await add_shift(api, team.lead, team.team_id, team.colleague.id, start, start + 2 * H)
    shift_id = added["shift"]["id"]

    status, removed = await api.call(
        "DELETE", f"/api/care-teams/{team.team_id}/on-call/shifts/{shift_id}", team.admin
    )

    assert status == 200, removed
    assert removed["shift"]["id"] == shift_id
    assert len(removed["gaps"]) == 1
    assert await db.fetchval("SELECT count(*) FROM on_call_shifts WHERE id = $1", shift_id) == 0
    status, _ = await api.call(
        "DELETE", f"/api/care-teams/{team.team_id}/on-call/shifts/{shift_id}", team.admin
    )
    assert status == 404


async def test_another_organizations_care_team_answers_404_and_the_denial_is_on_record(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    other = await api.organization()
    stranger_admin = await api.person("admin", other)
    stranger_nurse = await api.person("care_team_member", other)
    start = now() + H

    for who in (stranger_admin, stranger_nurse):
        status, body = await api.call("GET", f"/api/care-teams/{team.team_id}/on-call", who)
        assert status == 404, body
        status, body = await add_shift(api, who, team.team_id, team.colleague.id, start, start + H)
        assert status == 404, body
    status, missing = await api.call("GET", "/api/care-teams/2147483000/on-call", stranger_admin)

    assert status == 404
    assert missing["detail"] == body["detail"]
    rows = await db.fetch(
        "SELECT reason, details->>'answered' AS answered FROM audit_events"
        " WHERE actor_id = $1 AND workflow = 'on_call.add'",
        stranger_admin.id,
    )
    assert [(r["reason"], r["answered"]) for r in rows] == [
        ("other_organization", "not_found"),
        ("not_found", None),  # the lookup the stranger's organization sees, as for a missing team
    ]


async def test_an_auditor_is_refused_the_roster(api: Api, team: Team) -> None:
    auditor = await api.person("auditor", team.org)

    status, body = await api.call("GET", f"/api/care-teams/{team.team_id}/on-call", auditor)

    assert status == 403
    assert body["reason"] == "role_not_permitted"


# --- away with a delegate ------------------------------------------------------------------------------


async def test_staff_mark_themselves_away_with_a_delegate_see_it_and_end_it(
    api: Api, team: Team, db: asyncpg.Connection
) -> None:
    until = now() + 48 * H
    status, away = await api.call(
        "PUT", "/api/auth/away", team.lead, json={"delegateId": team.colleague.id, "until": rfc3339(until)}
    )
    assert status == 200, away
    assert (away["delegateId"], utc(away["until"])) == (team.colleague.id, until)

    status, mine = await api.call("GET", "/api/auth/away", team.lead)
    assert status == 200, mine
    assert mine["away"]["id"] == away["id"]
    assert mine["planned"] == []

    status, _ = await api.call("DELETE", "/api/auth/away", team.lead)
    assert status == 204
    status, mine = await api.call("GET", "/api/auth/away", team.lead)
    assert mine["away"] is None
    status, again = await api.call("DELETE", "/api/auth/away", team.lead)
    assert status == 409, again
    outcomes = await db.fetch(
        "SELECT workflow, outcome FROM audit_events"
        " WHERE actor_id = $1 AND workflow LIKE 'away.%' ORDER BY id",
        team.lead.id,
    )
    assert [(r["workflow"], r["outcome"]) for r in outcomes] == [
        ("away.set", "success"),
        ("away.end", "success"),
        ("away.end", "failure"),
    ]


@pytest.mark.parametrize("case", ["other_org", "self", "naive_until"])
async def test_a_bad_delegate_or_window_is_refused_naming_the_field(api: Api, team: Team, case: str) -> None:
    other = await api.person("care_team_member", await api.organization())
    body: dict[str, Any] = {
        "other_org": {"delegateId": other.id},
        "self": {"delegateId": team.lead.id},
        "naive_until": {"delegateId": team.colleague.id, "until": "2030-01-01T00:00:00"},
    }[case]

    status, problem = await api.call("PUT", "/api/auth/away", team.lead, json=body)

    assert status == 422, problem
    expected = "until" if case == "naive_until" else "delegateId"
    assert expected in [e["field"] for e in problem["errors"]]


async def test_a_compliance_officer_may_not_mark_themselves_away(api: Api, team: Team) -> None:
    officer = await api.person("compliance_officer", team.org)

    status, body = await api.call("PUT", "/api/auth/away", officer, json={"delegateId": team.colleague.id})

    assert status == 403
    assert body["reason"] == "role_not_permitted"


# --- routing to the on-call role, on the emulator with the real relay ----------------------------------


async def channel_members(api: Api, channel_url: str) -> set[str]:
    channel = api.app[emulator_key].state.channels.get(channel_url)
    return set(channel.members) if channel is not None else set()


async def chat_id(db: asyncpg.Connection, user: Person) -> str:
    return str(await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", user.id))


async def test_the_holder_changes_at_a_shift_boundary_and_the_channel_follows(
    api: Api, team: Team, db: asyncpg.Connection, clock: ShiftedClock
) -> None:
    """The colleague holds the role until a boundary, then a nurse does: the relay invites the nurse
    and removes the colleague (not a member in their own right); each hand-off and each message's
    receiver is on record. The app's clock is moved past the boundary (hand-offs run on it)."""
    boundary = datetime.now(UTC) + timedelta(minutes=30)
    await add_shift(api, team.lead, team.team_id, team.colleague.id, boundary - H, boundary)
    nurse = await api.person("care_team_member", team.org)
    await api.call("POST", f"/api/care-teams/{team.team_id}/members", team.lead, json={"userId": nurse.id})
    status, body = await add_shift(api, team.lead, team.team_id, nurse.id, boundary, boundary + H)
    assert status == 201, body

    status, conversation = await api.call(
        "POST",
        "/api/conversations",
        team.lead,
        json={
            "title": "Night cover",
            "patientId": team.patient_id,
            "memberIds": [],
            "onCallOf": team.team_id,
        },
    )
    assert status == 201, conversation
    assert (conversation["onCallOf"], conversation["onCallHolderId"]) == (team.team_id, team.colleague.id)
    url = conversation["channelUrl"]
    colleague_chat, nurse_chat, lead_chat = [await chat_id(db, p) for p in (team.colleague, nurse, team.lead)]
    status, sent = await api.call(
        "POST",
        "/api/conversations/send-message",
        team.lead,
        json={"conversationId": conversation["id"], "message": "BP dropping"},
    )
    assert status == 202, sent

    clock.advance(minutes=30, seconds=1)
    await eventually(
        lambda: _exactly(api, url, {lead_chat, nurse_chat}), "the hand-off at the boundary", within=15
    )
    # Before the boundary the colleague was invited into the channel, then removed from it.
    invited = [
        r.body["user_ids"]
        for r in api.app[emulator_key].state.received
        if r.method == "POST" and r.path.endswith(f"{url}/invite")
    ]
    assert invited == [[colleague_chat], [nurse_chat]]
    removed = [
        r.body["user_ids"]
        for r in api.app[emulator_key].state.received
        if r.method == "PUT" and r.path.endswith(f"{url}/leave")
    ]
    assert removed == [[colleague_chat]]

    [handoff] = await db.fetch(
        "SELECT reason, details FROM audit_events WHERE workflow = 'on_call.handoff' AND resource_id = $1",
        str(conversation["id"]),
    )
    details = json.loads(handoff["details"])
    assert (details["from_user_id"], details["to_user_id"]) == (team.colleague.id, nurse.id)
    assert details["received_as"] == f"on call for care team {team.team_id}"
    # The lead's send: a send refused elsewhere is audited under the conversation id it named.
    send = await db.fetchval(
        "SELECT details FROM audit_events WHERE workflow = 'message.send' AND resource_id = $1"
        " AND actor_id = $2",
        str(conversation["id"]),
        team.lead.id,
    )
    send = json.loads(send)
    assert (send["on_call_of"], send["on_call_holder_id"]) == (team.team_id, team.colleague.id)
    status, read = await api.call("GET", f"/api/conversations/{conversation['id']}", team.lead)
    assert read["onCallHolderId"] == nurse.id


async def _exactly(api: Api, url: str, wanted: set[str]) -> bool:
    return await channel_members(api, url) == wanted


async def test_a_holder_who_is_also_a_member_stays_in_the_channel_after_the_hand_off(
    api: Api, team: Team, db: asyncpg.Connection, clock: ShiftedClock
) -> None:
    boundary = datetime.now(UTC) + timedelta(minutes=30)
    await add_shift(api, team.lead, team.team_id, team.colleague.id, boundary - H, boundary)
    status, conversation = await api.call(
        "POST",
        "/api/conversations",
        team.lead,
        json={
            "title": "Cover",
            "patientId": team.patient_id,
            "memberIds": [team.colleague.id],
            "onCallOf": team.team_id,
        },
    )
    assert status == 201, conversation
    url = conversation["channelUrl"]
    colleague_chat, lead_chat = await chat_id(db, team.colleague), await chat_id(db, team.lead)
    clock.advance(minutes=30, seconds=1)

    async def handed_to_nobody() -> bool:
        row = await db.fetchrow(
            "SELECT holder_id FROM conversation_on_call WHERE conversation_id = $1", conversation["id"]
        )
        return row is not None and row["holder_id"] is None

    await eventually(handed_to_nobody, "the role left with nobody on call", within=15)
    await eventually(lambda: _exactly(api, url, {lead_chat, colleague_chat}), "the channel as it was")
    removals = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'remove_members' AND conversation_id = $1",
        conversation["id"],
    )
    assert removals == 0


async def test_on_call_of_another_patients_care_team_is_refused(api: Api, team: Team) -> None:
    other_patient = await api.patient(team.lead)
    _, other_team = await api.call("GET", f"/api/patients/{other_patient}/care-team", team.lead)

    status, body = await api.call(
        "POST",
        "/api/conversations",
        team.lead,
        json={"title": "Cover", "patientId": team.patient_id, "onCallOf": other_team["id"]},
    )

    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["onCallOf"]
