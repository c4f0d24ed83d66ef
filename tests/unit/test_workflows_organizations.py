"""Organization and compliance-group workflows on fakes: the shipped policy decides, storage is in
memory (tests/api/test_users_and_organizations.py covers them over HTTP and PostgreSQL)."""

from __future__ import annotations

import pytest

from engine.errors import Conflict, Forbidden, InvalidInput
from engine.model import Role
from engine.workflows.organizations import (
    CreateComplianceGroup,
    create_compliance_group,
    create_organization,
    list_organizations,
)
from tests.support.fakes import FakeWorld, fake_services


@pytest.fixture
def world() -> FakeWorld:
    return fake_services()


async def test_an_admin_creates_an_organization_and_its_id_is_on_the_decision_record(
    world: FakeWorld,
) -> None:
    admin = world.actor(Role.ADMIN, world.organization().id)

    created = await create_organization(world.services, admin, "Riverside Clinic", self_registration=False)

    assert world.db.organizations[created.id].name == "Riverside Clinic"
    assert created.self_registration is False
    [event] = world.events("organization.create")
    assert (event.outcome, event.decision, event.resource_id) == ("success", "allow", str(created.id))
    assert event.matched_rule is not None


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.ADMIN])
async def test_only_admins_create_organizations(world: FakeWorld, role: Role) -> None:
    actor = world.actor(role, world.organization().id)
    before = dict(world.db.organizations)

    with pytest.raises(Forbidden) as raised:
        await create_organization(world.services, actor, "Not allowed", self_registration=True)

    assert raised.value.decision.reason == "role_not_permitted"
    assert world.db.organizations == before
    [event] = world.events("organization.create")
    assert (event.outcome, event.actor_role) == ("denied", role.value)


async def test_an_organization_name_is_taken_only_once(world: FakeWorld) -> None:
    admin = world.actor(Role.ADMIN, world.organization("Taken").id)

    with pytest.raises(Conflict):
        await create_organization(world.services, admin, "Taken", self_registration=True)

    assert [e.outcome for e in world.events("organization.create")] == ["failure"]


async def test_an_auditor_may_not_list_organizations(world: FakeWorld) -> None:
    auditor = world.actor(Role.AUDITOR, world.organization().id)

    with pytest.raises(Forbidden):
        await list_organizations(world.services, auditor, None, None)

    assert [e.outcome for e in world.events("organization.list")] == ["denied"]


async def test_a_compliance_officer_groups_organizations_once_each(world: FakeWorld) -> None:
    home, a, b = world.organization(), world.organization(), world.organization()
    officer = world.actor(Role.COMPLIANCE_OFFICER, home.id)

    group = await create_compliance_group(
        world.services, officer, CreateComplianceGroup("Crisis network", None, [a.id, b.id, a.id])
    )

    assert group.member_organization_ids == (a.id, b.id)
    assert group.organization_id == home.id
    [event] = world.events("compliance_group.create")
    assert (event.outcome, event.resource_id) == ("success", str(group.id))


async def test_an_unknown_organization_in_a_group_is_named_by_its_position(world: FakeWorld) -> None:
    a = world.organization()
    officer = world.actor(Role.COMPLIANCE_OFFICER, a.id)

    with pytest.raises(InvalidInput) as raised:
        await create_compliance_group(
            world.services, officer, CreateComplianceGroup("Crisis network", None, [a.id, 999_999])
        )

    assert [(e.field, e.type) for e in raised.value.errors] == [("organizationIds[1]", "not_found")]
    assert world.db.compliance_groups == {}


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN, Role.AUDITOR])
async def test_only_compliance_officers_create_compliance_groups(world: FakeWorld, role: Role) -> None:
    org = world.organization()
    actor = world.actor(role, org.id)

    with pytest.raises(Forbidden):
        await create_compliance_group(world.services, actor, CreateComplianceGroup("G", None, [org.id]))

    assert world.db.compliance_groups == {}
    assert [e.outcome for e in world.events("compliance_group.create")] == ["denied"]
