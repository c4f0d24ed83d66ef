"""Account administration on fakes: an admin approves, deactivates (the RemoveMembers effects),
reactivates, re-roles, ends the sessions of and unlocks accounts of their own organization; anyone
logs out. A refusal changes nothing (tests/api/test_accounts.py covers the same over HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import date

import pytest

from engine.effects import RemoveMembers
from engine.errors import Conflict, Forbidden, NotFound, Unauthenticated
from engine.model import Actor, RiskLevel, Role, User
from engine.services import Services
from engine.workflows import accounts
from engine.workflows.conversations import StartConversation, start_conversation
from engine.workflows.identity import account_throttle_key, login
from engine.workflows.patients import RegisterPatient, add_care_team_member, register_patient
from tests.support.fakes import FakeAccountDirectory, FakeWorld

Admin = Callable[[Services, Actor, int], Awaitable[User]]

#: Every admin workflow on an account, as (audit workflow, call).
ADMIN_WORKFLOWS: list[tuple[str, Admin]] = [
    ("user.approve", accounts.approve),
    ("user.deactivate", accounts.deactivate),
    ("user.reactivate", accounts.reactivate),
    ("user.change_role", lambda s, a, u: accounts.change_role(s, a, u, Role.AUDITOR)),
    ("user.revoke_sessions", accounts.revoke_sessions),
    ("user.unlock", accounts.unlock),
]
IDS = [name for name, _ in ADMIN_WORKFLOWS]


def _staff(world: FakeWorld) -> tuple[Actor, Actor]:
    """An admin and a nurse of one organization; the nurse's token was issued before anything below."""
    org = world.organization().id
    nurse = world.actor(Role.CARE_TEAM_MEMBER, org, issued_at=world.clock().timestamp())
    world.clock.advance(minutes=1)
    return world.actor(Role.ADMIN, org), nurse


async def _token_counts(world: FakeWorld, actor: Actor) -> bool:
    return await FakeAccountDirectory(world.db).current(actor)


async def test_an_admin_approves_a_pending_account_once(world: FakeWorld) -> None:
    admin, nurse = _staff(world)
    world.db.users[nurse.user_id] = dataclasses.replace(world.db.users[nurse.user_id], pending_approval=True)
    assert not await _token_counts(world, nurse)

    approved = await accounts.approve(world.services, admin, nurse.user_id)
    again = await accounts.approve(world.services, admin, nurse.user_id)

    assert (approved.pending_approval, again) == (False, approved)
    assert world.db.users[nurse.user_id] == approved
    assert await _token_counts(world, nurse)
    assert [(e.outcome, e.resource_id) for e in world.events("user.approve")] == [
        ("success", str(nurse.user_id))
    ] * 2


async def test_deactivating_ends_the_sessions_and_takes_the_account_out_of_every_channel(
    world: FakeWorld,
) -> None:
    admin, nurse = _staff(world)
    patient = await register_patient(
        world.services, nurse, RegisterPatient("Ann", "Lee", RiskLevel.LOW, date(1990, 1, 1))
    )
    colleague = world.actor(Role.PEER_SUPPORT, nurse.organization_id)
    [team] = world.db.care_teams.values()
    await add_care_team_member(world.services, nurse, team.id, colleague.user_id)
    conversations = [
        await start_conversation(
            world.services, nurse, StartConversation(patient.id, title, [nurse.user_id, colleague.user_id])
        )
        for title in ("Ward", "Discharge")
    ]
    outbox_before, wakes_before = len(world.db.outbox), world.delivery.wakes

    user = await accounts.deactivate(world.services, admin, nurse.user_id)

    assert (user.is_active, world.db.users[nurse.user_id]) == (False, user)
    assert world.db.sessions_valid_after[nurse.user_id] == world.clock()
    assert not await _token_counts(world, nurse)
    chat_id = user.chat_user_id
    assert world.db.outbox[outbox_before:] == [RemoveMembers(c.id, (chat_id,)) for c in conversations]
    assert world.delivery.wakes == wakes_before + 1
    decision, *left = world.events("user.deactivate")
    assert (decision.event, decision.outcome, decision.resource_id) == (
        "decision",
        "success",
        str(nurse.user_id),
    )
    assert [(e.event, e.resource_id, e.details) for e in left] == [
        ("conversation.member_left_channel", str(c.id), {"subject_user_id": nurse.user_id})
        for c in conversations
    ]
    with pytest.raises(Unauthenticated):
        await login(world.services, user.email, "correct horse battery", request_id="r", source_address=None)


async def test_a_reactivated_account_logs_in_again_but_its_old_tokens_stay_refused(world: FakeWorld) -> None:
    admin, nurse = _staff(world)
    await accounts.deactivate(world.services, admin, nurse.user_id)
    world.clock.advance(minutes=1)

    user = await accounts.reactivate(world.services, admin, nurse.user_id)

    assert user.is_active
    assert not await _token_counts(world, nurse)
    fresh = dataclasses.replace(nurse, issued_at=world.clock().timestamp())
    assert await _token_counts(world, fresh)
    session = await login(
        world.services, user.email, "correct horse battery", request_id="r", source_address=None
    )
    assert session.user == user
    [event] = world.events("user.reactivate")
    assert event.outcome == "success"


async def test_a_new_role_ends_the_sessions_and_the_record_names_both_roles(world: FakeWorld) -> None:
    admin, nurse = _staff(world)

    user = await accounts.change_role(world.services, admin, nurse.user_id, Role.PEER_SUPPORT)

    assert (user.role, world.db.users[nurse.user_id].role) == (Role.PEER_SUPPORT, Role.PEER_SUPPORT)
    assert world.db.sessions_valid_after[nurse.user_id] == world.clock()
    assert not await _token_counts(world, dataclasses.replace(nurse, role=Role.PEER_SUPPORT))
    [event] = world.events("user.change_role")
    assert (event.outcome, event.details["role"], event.details["previous_role"]) == (
        "success",
        "peer_support",
        "care_team_member",
    )


@pytest.mark.parametrize(
    "workflow",
    [accounts.deactivate, lambda s, a, u: accounts.change_role(s, a, u, Role.AUDITOR)],
    ids=["deactivate", "change_role"],
)
async def test_an_admin_cannot_deactivate_or_re_role_themself(world: FakeWorld, workflow: Admin) -> None:
    admin, _ = _staff(world)
    before = dict(world.db.users)

    with pytest.raises(Conflict):
        await workflow(world.services, admin, admin.user_id)

    assert world.db.users == before
    assert admin.user_id not in world.db.sessions_valid_after
    assert world.db.outbox == []
    assert [e.outcome for e in world.events()] == ["failure"]


async def test_revoking_sessions_refuses_every_token_issued_until_now_and_nothing_else(
    world: FakeWorld,
) -> None:
    admin, nurse = _staff(world)
    before = world.db.users[nurse.user_id]

    user = await accounts.revoke_sessions(world.services, admin, nurse.user_id)

    assert user == before == world.db.users[nurse.user_id]
    assert world.db.sessions_valid_after[nurse.user_id] == world.clock()
    assert not await _token_counts(world, nurse)
    [event] = world.events("user.revoke_sessions")
    assert (event.outcome, event.resource_id) == ("success", str(nurse.user_id))


async def test_unlocking_clears_the_accounts_failures_and_keeps_the_addresses(world: FakeWorld) -> None:
    admin, nurse = _staff(world)
    email = world.db.users[nurse.user_id].email
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await login(world.services, email, "wrong", request_id="r", source_address="10.0.0.9")
    account_key = account_throttle_key(world.services, email)
    assert account_key in world.db.login_throttles
    address_keys = set(world.db.login_throttles) - {account_key}

    await accounts.unlock(world.services, admin, nurse.user_id)
    await accounts.unlock(world.services, admin, nurse.user_id)

    assert set(world.db.login_throttles) == address_keys
    assert [e.details["was_throttled"] for e in world.events("user.unlock")] == [True, False]


@pytest.mark.parametrize("role", list(Role))
async def test_everyone_logs_themself_out_and_their_tokens_stop_counting(
    world: FakeWorld, role: Role
) -> None:
    actor = world.actor(role, world.organization().id, issued_at=world.clock().timestamp())
    world.clock.advance(seconds=1)

    await accounts.logout(world.services, actor)

    assert world.db.sessions_valid_after == {actor.user_id: world.clock()}
    assert not await _token_counts(world, actor)
    [event] = world.events("auth.logout")
    assert (event.outcome, event.resource_id, event.details["facts"]) == (
        "success",
        str(actor.user_id),
        "self",
    )


@pytest.mark.parametrize(("workflow", "call"), ADMIN_WORKFLOWS, ids=IDS)
@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
async def test_only_admins_administer_accounts(
    world: FakeWorld, role: Role, workflow: str, call: Admin
) -> None:
    admin, nurse = _staff(world)
    actor = world.actor(role, admin.organization_id)
    before = dict(world.db.users)

    with pytest.raises(Forbidden) as raised:
        await call(world.services, actor, nurse.user_id)

    assert raised.value.decision.reason == "role_not_permitted"
    assert (world.db.users, world.db.sessions_valid_after, world.db.outbox) == (before, {}, [])
    [event] = world.events(workflow)
    assert (event.outcome, event.resource_id) == ("denied", str(nurse.user_id))


@pytest.mark.parametrize(("workflow", "call"), ADMIN_WORKFLOWS, ids=IDS)
async def test_an_account_of_another_organization_is_answered_as_one_that_does_not_exist(
    world: FakeWorld, workflow: str, call: Admin
) -> None:
    _, nurse = _staff(world)
    stranger, _ = _staff(world)
    before = dict(world.db.users)

    with pytest.raises(NotFound) as raised:
        await call(world.services, stranger, nurse.user_id)
    with pytest.raises(NotFound) as missing:
        await call(world.services, stranger, 424242)

    assert str(raised.value) == str(missing.value)
    assert (world.db.users, world.db.sessions_valid_after, world.db.outbox) == (before, {}, [])
    assert [(e.event, e.outcome, e.reason) for e in world.events(workflow)] == [
        ("lookup", "failure", "not_found")
    ] * 2


#: The workflows that end an account's sessions, and so must tell this instance's account check.
ENDING: list[tuple[str, Admin]] = [
    ("user.deactivate", accounts.deactivate),
    ("user.change_role", lambda s, a, u: accounts.change_role(s, a, u, Role.AUDITOR)),
    ("user.revoke_sessions", accounts.revoke_sessions),
]


@pytest.mark.parametrize(("workflow", "call"), ADMIN_WORKFLOWS, ids=IDS)
async def test_the_account_check_is_told_exactly_when_sessions_end(
    world: FakeWorld, workflow: str, call: Admin
) -> None:
    admin, nurse = _staff(world)
    told: list[int] = []
    services = dataclasses.replace(world.services, on_sessions_ended=told.append)
    stranger, _ = _staff(world)

    with pytest.raises(NotFound):
        await call(services, stranger, nurse.user_id)
    assert told == []
    await call(services, admin, nurse.user_id)

    assert told == ([nurse.user_id] if workflow in dict(ENDING) else [])


async def test_logging_out_tells_the_account_check(world: FakeWorld) -> None:
    _, nurse = _staff(world)
    told: list[int] = []

    await accounts.logout(dataclasses.replace(world.services, on_sessions_ended=told.append), nurse)

    assert told == [nurse.user_id]
