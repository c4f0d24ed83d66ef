"""Organization and compliance-group workflows on fakes: the shipped policy decides, storage is in
memory (tests/api/test_users_and_organizations.py covers them over HTTP and PostgreSQL)."""

from __future__ import annotations

import pytest

from engine.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.model import Role
from engine.workflows.organizations import (
    CreateComplianceGroup,
    ShareComplianceGroup,
    create_compliance_group,
    create_organization,
    list_compliance_groups,
    list_organizations,
    share_compliance_group,
)
from tests.support.fakes import FakeWorld


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


async def test_a_compliance_officer_lists_every_organization_page_by_page(world: FakeWorld) -> None:
    orgs = [world.organization().id for _ in range(5)]
    officer = world.actor(Role.COMPLIANCE_OFFICER, orgs[2])

    first = await list_organizations(world.services, officer, None, 2)
    rest = await list_organizations(world.services, officer, first.next_cursor, 10)

    assert [o.id for o in first.items + rest.items] == orgs
    assert (first.next_cursor, rest.next_cursor) == (orgs[1], None)
    assert [e.details["shown"] for e in world.events("organization.list")] == ["any,own_org"] * 2


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.ADMIN])
async def test_other_staff_list_only_their_own_organization(world: FakeWorld, role: Role) -> None:
    orgs = [world.organization().id for _ in range(5)]
    actor = world.actor(role, orgs[2])

    page = await list_organizations(world.services, actor, None, 2)
    after_it = await list_organizations(world.services, actor, orgs[2], 2)

    assert ([o.id for o in page.items], page.next_cursor) == ([orgs[2]], None)
    assert after_it.items == ()
    [event, _] = world.events("organization.list")
    assert (event.outcome, event.details["shown"]) == ("success", "own_org")


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


async def test_admins_see_their_own_groups_and_officers_also_those_shared_with_them(world: FakeWorld) -> None:
    mine, partner, stranger = world.organization(), world.organization(), world.organization()
    officer = world.actor(Role.COMPLIANCE_OFFICER, mine.id)
    own = await create_compliance_group(
        world.services, officer, CreateComplianceGroup("Own", None, [mine.id])
    )
    partner_officer = world.actor(Role.COMPLIANCE_OFFICER, partner.id)
    shared = await create_compliance_group(
        world.services, partner_officer, CreateComplianceGroup("Shared", None, [partner.id])
    )
    await share_compliance_group(world.services, partner_officer, ShareComplianceGroup(shared.id, mine.id))
    await share_compliance_group(
        world.services, partner_officer, ShareComplianceGroup(shared.id, stranger.id)
    )
    stranger_officer = world.actor(Role.COMPLIANCE_OFFICER, stranger.id)
    await create_compliance_group(
        world.services, stranger_officer, CreateComplianceGroup("Theirs", None, [stranger.id])
    )

    admins = await list_compliance_groups(world.services, world.actor(Role.ADMIN, mine.id), None, None)
    officers = await list_compliance_groups(world.services, officer, None, None)

    assert [g.id for g in admins.items] == [own.id]
    assert [g.id for g in officers.items] == [own.id, shared.id]
    # Whom else the owner shared its group with is the owner's business.
    assert officers.items[1].shared_with == (mine.id,)
    assert world.db.compliance_groups[shared.id].shared_with == tuple(sorted((mine.id, stranger.id)))
    assert [e.details["shown"] for e in world.events("compliance_group.list")] == [
        "own_org",
        "own_org,shared",
    ]


@pytest.mark.parametrize("role", [Role.PEER_SUPPORT, Role.CARE_TEAM_MEMBER, Role.AUDITOR])
async def test_other_roles_may_not_list_compliance_groups(world: FakeWorld, role: Role) -> None:
    org = world.organization()
    officer = world.actor(Role.COMPLIANCE_OFFICER, org.id)
    await create_compliance_group(world.services, officer, CreateComplianceGroup("G", None, [org.id]))

    with pytest.raises(Forbidden):
        await list_compliance_groups(world.services, world.actor(role, org.id), None, None)

    assert [e.outcome for e in world.events("compliance_group.list")] == ["denied"]


async def test_a_group_neither_owned_nor_shared_is_answered_as_missing_when_shared(world: FakeWorld) -> None:
    owner, other = world.organization(), world.organization()
    group = await create_compliance_group(
        world.services, world.actor(Role.COMPLIANCE_OFFICER, owner.id), CreateComplianceGroup("G", None, [])
    )
    outsider = world.actor(Role.COMPLIANCE_OFFICER, other.id)

    with pytest.raises(NotFound):
        await share_compliance_group(world.services, outsider, ShareComplianceGroup(group.id, other.id))

    assert world.db.compliance_groups[group.id].shared_with == ()
    event, lookup = world.events("compliance_group.share")
    assert (lookup.event, lookup.resource_id) == ("lookup", str(group.id))
    # The client hears "not found"; the record keeps the real decision.
    assert (event.outcome, event.details["answered"]) == ("denied", "not_found")
