"""Identity workflows (register, login, profile, users) on fakes: the real policy decides, storage,
hashing and tokens are in memory. Each test runs in milliseconds; tests/api/test_auth.py and
test_users_and_organizations.py cover the same workflows over HTTP and PostgreSQL."""

from __future__ import annotations

import pytest

from engine.errors import Forbidden, InvalidInput, NotFound
from engine.model import Role
from engine.services import EngineSettings
from engine.workflows.identity import (
    CreateUser,
    Register,
    bootstrap_user,
    create_user,
    list_users,
    profile,
    register,
)
from tests.support.fakes import FakeUnitOfWork, FakeWorld, fake_services

PASSWORD = "correct horse battery"


@pytest.fixture
def world() -> FakeWorld:
    return fake_services()


def _register(organization_id: int | None, role: Role = Role.CARE_TEAM_MEMBER, email: str = "") -> Register:
    return Register(email or "New.Nurse@Example.org", PASSWORD, "New", "Nurse", role, organization_id)


async def test_a_privileged_role_cannot_be_self_registered_and_nothing_is_stored(world: FakeWorld) -> None:
    org = world.organization()

    with pytest.raises(InvalidInput) as raised:
        await register(world.services, _register(org.id, Role.ADMIN), request_id="r", source_address=None)

    assert [e.field for e in raised.value.errors] == ["role"]
    assert world.db.users == {}


@pytest.mark.parametrize("reason", ["closed", "missing"])
async def test_registration_into_a_closed_or_missing_organization_names_the_field(
    world: FakeWorld, reason: str
) -> None:
    org_id = world.organization(self_registration=False).id if reason == "closed" else 999_999

    with pytest.raises(InvalidInput) as raised:
        await register(world.services, _register(org_id), request_id="r", source_address=None)

    assert [e.field for e in raised.value.errors] == ["organizationId"]
    assert world.db.users == {}


async def test_with_self_registration_off_the_refusal_is_a_decision_on_record() -> None:
    world = fake_services(EngineSettings(self_registration=False))
    org = world.organization()

    with pytest.raises(Forbidden) as raised:
        await register(world.services, _register(org.id), request_id="r9", source_address=None)

    assert raised.value.decision.reason == "self_registration_disabled"
    [event] = world.events("auth.register")
    assert (event.outcome, event.reason, event.request_id) == ("denied", "self_registration_disabled", "r9")
    assert world.db.users == {}


async def test_everyone_reads_their_own_profile(world: FakeWorld) -> None:
    org = world.organization()
    for role in Role:
        actor = world.actor(role, org.id)
        assert (await profile(world.services, actor)).id == actor.user_id
    assert {e.outcome for e in world.events("auth.profile")} == {"success"}


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

    with pytest.raises(Forbidden) as raised:
        await create_user(
            world.services, admin, CreateUser("x@example.org", PASSWORD, "X", "Y", Role.ADMIN, other.id)
        )

    assert raised.value.field == "organizationId"
    assert world.db.users == users_before
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
