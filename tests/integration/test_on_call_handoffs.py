"""The on-call hand-off scheduler on PostgreSQL with a fake clock, and the app's real relay carrying
its effects to the Sendbird emulator.

- At each shift boundary (starts inclusive, ends exclusive) the conversation's holder moves, once:
  the new holder is invited into the channel, the old one removed, and the hand-off is audited.
- Two instances running the same round hand each conversation off exactly once.
- A holder who is a member in their own right stays in the channel.

The app's own scheduler is stopped: these tests drive instances of their own at chosen moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from engine.rosters import Handoff
from handlers.app import create_app
from handlers.keys import emulator_key, relay_key, sessions_key
from handlers.settings import Settings
from integrations.relay.handoffs import OnCallHandoffs
from tests.support.api import Api, Person
from tests.support.polling import eventually

T0 = datetime(2031, 5, 4, 8, tzinfo=UTC)  # far from now: the service's own clock never reaches it
H = timedelta(hours=1)


@pytest.fixture
async def api(aiohttp_client: Any, settings: Settings) -> Api:
    api = Api(await aiohttp_client(create_app(settings)))
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "on-call-handoffs" and not t.done())
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return api


@pytest.fixture
async def other_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A second instance's own connections."""
    engine = create_async_engine(database_url)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def _scheduler(api: Api, clock: Callable[[], datetime], **kw: Any) -> OnCallHandoffs:
    """A scheduler on the app's connections that wakes the app's relay for its effects, as the app's
    own does (else each hand-off's effects wait for the relay's next poll)."""
    return OnCallHandoffs(api.app[sessions_key], clock=clock, wake=api.app[relay_key].wake, **kw)


async def _round(scheduler: OnCallHandoffs, *conversation_ids: int) -> list[Handoff]:
    """One round's hand-offs of these conversations (other tests' conversations share the database)."""
    return [h for h in await scheduler.run_once() if h.conversation_id in conversation_ids]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _team(api: Api) -> tuple[Person, Person, Person, int, int]:
    """A lead who registered a patient, two colleagues on its care team; the patient and team ids."""
    org = await api.organization()
    lead = await api.person("care_team_member", org)
    day, night = await api.person("peer_support", org), await api.person("care_team_member", org)
    patient = await api.patient(lead)
    _, team = await api.call("GET", f"/api/patients/{patient}/care-team", lead)
    for who in (day, night):
        status, body = await api.call(
            "POST", f"/api/care-teams/{team['id']}/members", lead, json={"userId": who.id}
        )
        assert status == 201, body
    for who, start in ((day, T0), (night, T0 + 8 * H)):
        body = {"userId": who.id, "startsAt": start.isoformat(), "endsAt": (start + 8 * H).isoformat()}
        status, added = await api.call(
            "POST", f"/api/care-teams/{team['id']}/on-call/shifts", lead, json=body
        )
        assert status == 201, added
    return lead, day, night, patient, team["id"]


async def _conversation(
    api: Api, lead: Person, patient: int, team: int, members: list[int]
) -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        "/api/conversations",
        lead,
        json={"title": "Cover", "patientId": patient, "memberIds": members, "onCallOf": team},
    )
    assert status == 201, body
    assert body["onCallHolderId"] is None  # nobody is on call now: the roster starts in 2031
    return dict(body)


async def _chat_id(db: asyncpg.Connection, who: Person) -> str:
    return str(await db.fetchval("SELECT chat_user_id FROM users WHERE id = $1", who.id))


async def _handoffs(db: asyncpg.Connection, conversation_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT details FROM audit_events"
        " WHERE workflow = 'on_call.handoff' AND resource_id = $1 ORDER BY id",
        str(conversation_id),
    )
    return [json.loads(r["details"]) for r in rows]


def _members(api: Api, url: str) -> set[str]:
    channel = api.app[emulator_key].state.channels.get(url)
    return set(channel.members) if channel is not None else set()


async def test_the_holder_moves_at_each_boundary_and_the_channel_follows(
    api: Api, db: asyncpg.Connection
) -> None:
    lead, day, night, patient, team = await _team(api)
    conversation = await _conversation(api, lead, patient, team, [])
    url, cid = conversation["channelUrl"], conversation["id"]
    lead_chat, day_chat, night_chat = [await _chat_id(db, p) for p in (lead, day, night)]
    clock = Clock(T0 - timedelta(microseconds=1))
    scheduler = _scheduler(api, clock)

    assert await _round(scheduler, cid) == []  # before the first shift: nobody, as recorded
    clock.now = T0
    [first] = await _round(scheduler, cid)
    assert (first.from_user_id, first.to_user_id) == (None, day.id)
    await eventually(lambda: _async(_members(api, url) == {lead_chat, day_chat}), "the day holder invited")

    clock.now = T0 + 8 * H - timedelta(microseconds=1)
    assert await _round(scheduler, cid) == []
    clock.now = T0 + 8 * H
    [second] = await _round(scheduler, cid)
    assert (second.from_user_id, second.to_user_id) == (day.id, night.id)
    await eventually(lambda: _async(_members(api, url) == {lead_chat, night_chat}), "the hand-off to night")

    clock.now = T0 + 16 * H
    [third] = await _round(scheduler, cid)
    assert (third.from_user_id, third.to_user_id) == (night.id, None)
    await eventually(lambda: _async(_members(api, url) == {lead_chat}), "nobody on call")

    records = await _handoffs(db, cid)
    assert [(r["from_user_id"], r["to_user_id"]) for r in records] == [
        (None, day.id),
        (day.id, night.id),
        (night.id, None),
    ]
    assert {r["received_as"] for r in records} == {f"on call for care team {team}"}
    assert (
        await db.fetchval("SELECT holder_id FROM conversation_on_call WHERE conversation_id = $1", cid)
        is None
    )


async def _async(value: bool) -> bool:
    return value


async def test_two_instances_hand_each_conversation_off_exactly_once(
    api: Api, db: asyncpg.Connection, other_sessions: async_sessionmaker[AsyncSession]
) -> None:
    lead, day, _, patient, team = await _team(api)
    conversations = [await _conversation(api, lead, patient, team, []) for _ in range(5)]
    clock = Clock(T0 + H)
    one = _scheduler(api, clock, batch_size=2)
    two = OnCallHandoffs(other_sessions, clock=clock, batch_size=2)

    rounds = 0
    while rounds < 10 and (await db.fetchval(
        "SELECT count(*) FROM conversation_on_call WHERE care_team_id = $1 AND holder_id IS NULL", team
    )):  # fmt: skip
        await asyncio.gather(one.run_once(), two.run_once())
        rounds += 1

    for conversation in conversations:
        [record] = await _handoffs(db, conversation["id"])
        assert record["to_user_id"] == day.id
        invites = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE kind = 'invite_members' AND conversation_id = $1",
            conversation["id"],
        )
        assert invites == 1
    ids = [c["id"] for c in conversations]
    assert await _round(one, *ids) == []
    assert await _round(two, *ids) == []


async def test_a_holder_who_is_a_member_in_their_own_right_stays_in_the_channel(
    api: Api, db: asyncpg.Connection
) -> None:
    lead, day, night, patient, team = await _team(api)
    conversation = await _conversation(api, lead, patient, team, [day.id])
    url = conversation["channelUrl"]
    lead_chat, day_chat, night_chat = [await _chat_id(db, p) for p in (lead, day, night)]
    clock = Clock(T0)
    scheduler = _scheduler(api, clock)
    await scheduler.run_once()

    clock.now = T0 + 8 * H
    [handoff] = await _round(scheduler, conversation["id"])

    assert handoff.from_is_member
    await eventually(lambda: _async(_members(api, url) == {lead_chat, day_chat, night_chat}), "night invited")
    removals = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'remove_members' AND conversation_id = $1",
        conversation["id"],
    )
    assert removals == 0
    [_, record] = await _handoffs(db, conversation["id"])
    assert record["from_stays_member"] is True


async def test_a_deactivated_holder_hands_the_role_to_nobody(api: Api, db: asyncpg.Connection) -> None:
    lead, day, _, patient, team = await _team(api)
    conversation = await _conversation(api, lead, patient, team, [])
    scheduler = _scheduler(api, Clock(T0 + H))
    await scheduler.run_once()
    admin = await api.person(
        "admin", await db.fetchval("SELECT organization_id FROM users WHERE id = $1", lead.id)
    )
    status, _ = await api.call("POST", f"/api/users/{day.id}/deactivate", admin)
    assert status == 200

    [handoff] = await _round(scheduler, conversation["id"])

    assert (handoff.from_user_id, handoff.to_user_id) == (day.id, None)
    holder = await db.fetchval(
        "SELECT holder_id FROM conversation_on_call WHERE conversation_id = $1", conversation["id"]
    )
    assert holder is None
