"""Account administration on fakes (an admin creating and listing users, the command line's first
admin): the real policy decides; storage, hashing and tokens are in memory. tests/api/
test_users_and_organizations.py covers the same workflows over HTTP and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import Role
from engine.workflows.identity import CreateUser, bootstrap_user, create_user, list_users
from tests.support.fakes import FakePasswords, FakeUnitOfWork, FakeWorld, counting_open_transactions

PASSWORD = "correct horse battery"


async def test_an_admin_creates_a_user_of_any_role_in_their_own_organization(world: FakeWorld) -> None:
    org = world.organization()
    admin = world.actor(Role.ADMIN, org.id)

    user = await create_user(
        world.services, admin, CreateUser("Auditor@Example.org", PASSWORD, "A", "B", Role.AUDITOR, org.id)
    )

    assert (user.email, user.role, user.organization_id) == ("auditor@example.org", Role.AUDITOR, org.id)
    [event] = world.events("user.create")
    assert (event.outcome, event.decision) == ("success", "allow")
    assert event.details["user_id"] == user.id
    assert event.details["role"] == "auditor"


async def test_an_admin_cannot_create_a_user_in_another_organization_and_no_password_is_hashed(
    world: FakeWorld,
) -> None:
    org, other = world.organization(), world.organization()
    admin = world.actor(Role.ADMIN, org.id)
    users_before = dict(world.db.users)
    services, hashed_with = counting_open_transactions(world)

    with pytest.raises(Forbidden) as raised:
        await create_user(
            services, admin, CreateUser("x@example.org", PASSWORD, "X", "Y", Role.ADMIN, other.id)
        )

    assert raised.value.field == "organizationId"
    assert world.db.users == users_before
    assert hashed_with == []
    [event] = world.events("user.create")
    assert (event.outcome, event.decision, event.resource_id) == ("denied", "deny", str(other.id))


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
async def test_only_admins_create_users(world: FakeWorld, role: Role) -> None:
    org = world.organization()
    actor = world.actor(role, org.id)

    with pytest.raises(Forbidden):
        await create_user(
            world.services, actor, CreateUser("x@example.org", PASSWORD, "X", "Y", Role.PEER_SUPPORT, org.id)
        )

    assert [e.outcome for e in world.events("user.create")] == ["denied"]


async def test_an_admin_creating_a_user_hashes_the_password_with_no_transaction_open(
    world: FakeWorld,
) -> None:
    """An open unit of work holds a place in the database pool while the hash waits its turn behind
    other hashes: an admin's script creating accounts in parallel would have held every place."""
    org = world.organization()
    admin = world.actor(Role.ADMIN, org.id)
    services, hashed_with = counting_open_transactions(world)

    user = await create_user(
        services, admin, CreateUser("nurse@example.org", PASSWORD, "N", "U", Role.CARE_TEAM_MEMBER, org.id)
    )

    assert hashed_with == [0]
    assert world.db.password_hashes[user.id] == f"fake-hash:{PASSWORD}"


async def test_a_weak_password_for_a_new_user_is_refused_after_the_allowed_decision_is_on_record(
    world: FakeWorld,
) -> None:
    org = world.organization()
    admin = world.actor(Role.ADMIN, org.id)
    users_before = dict(world.db.users)

    with pytest.raises(InvalidInput) as refused:
        await create_user(
            world.services, admin, CreateUser("nurse@example.org", "short", "N", "U", Role.AUDITOR, org.id)
        )

    assert [e.field for e in refused.value.errors] == ["password"]
    assert world.db.users == users_before
    [event] = world.events("user.create")
    assert (event.decision, event.outcome) == ("allow", "failure")


async def test_a_hash_that_fails_leaves_the_allowed_decision_on_record_as_a_failure(world: FakeWorld) -> None:
    """Hashed before the unit of work opens, a failure is raised inside it, so the decision it
    followed is recorded, as when the hash ran inside."""
    org = world.organization()
    admin = world.actor(Role.ADMIN, org.id)

    class Failing(FakePasswords):
        async def hash(self, password: str) -> str:
            raise RuntimeError("the hashing thread died")

    with pytest.raises(RuntimeError):
        await create_user(
            dataclasses.replace(world.services, passwords=Failing()),
            admin,
            CreateUser("nurse@example.org", PASSWORD, "N", "U", Role.AUDITOR, org.id),
        )

    [event] = world.events("user.create")
    assert (event.decision, event.outcome) == ("allow", "failure")


async def test_an_admin_lists_the_users_of_their_own_organization_page_by_page(world: FakeWorld) -> None:
    org, other = world.organization(), world.organization()
    admin = world.actor(Role.ADMIN, org.id)
    mine = [admin.user_id] + [world.actor(Role.PEER_SUPPORT, org.id).user_id for _ in range(3)]
    world.actor(Role.PEER_SUPPORT, other.id)

    first = await list_users(world.services, admin, None, 3)
    second = await list_users(world.services, admin, first.next_cursor, 3)

    assert [u.id for u in first.items + second.items] == mine
    assert second.next_cursor is None


async def test_the_command_line_creates_the_first_admin_as_an_audited_system_action(world: FakeWorld) -> None:
    org = world.organization()

    user = await bootstrap_user(
        lambda: FakeUnitOfWork(world.db),
        world.passwords,
        CreateUser("root@example.org", PASSWORD, "R", "T", Role.ADMIN, org.id),
        clock=world.clock,
    )

    [event] = world.events("user.create")
    assert (event.event, event.reason, event.actor_id) == ("admin.create_user", "command_line", None)
    assert event.resource_id == str(user.id)


async def test_the_command_line_refuses_an_organization_that_does_not_exist(world: FakeWorld) -> None:
    with pytest.raises(NotFound):
        await bootstrap_user(
            lambda: FakeUnitOfWork(world.db),
            world.passwords,
            CreateUser("root@example.org", PASSWORD, "R", "T", Role.ADMIN, 424242),
        )
    assert world.db.users == {}
