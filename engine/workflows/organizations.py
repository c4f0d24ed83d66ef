"""Organizations and compliance groups, and who sees which.

A compliance group belongs to the organization whose compliance officer created it (its owner). The
owner may share it, by name, with other organizations; only the owner's and those organizations'
compliance officers may name the group in a consent (``compliance_group.use``), so another
organization can never decide, by editing its own group, who receives one's patients' data.

Listings show only what the person can act on, decided by the policy: each kind of record a list
could show (one's own organization's, one shared with it, any) is a slice the policy allows or not
for the person's role (``organization.read``, ``compliance_group.read``), and the query returns the
allowed slices only. The list's audit record names the slices shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from engine.decisions import Fact
from engine.errors import FieldError, InvalidInput, NotFound
from engine.model import Actor, ComplianceGroup, Organization, Page
from engine.ports.units import OrganizationsUnitOfWork
from engine.services import Decider, Guard, Services

#: The slices a listing can show, by the facts that hold for the records in each.
OWN, SHARED, ANY = "own_org", "shared", "any"
_ORGANIZATION_SLICES: Mapping[str, frozenset[str]] = {OWN: frozenset({Fact.OWN_ORG}), ANY: frozenset()}
_GROUP_SLICES: Mapping[str, frozenset[str]] = {
    OWN: frozenset({Fact.OWN_ORG}),
    SHARED: frozenset({Fact.SHARED}),
    ANY: frozenset(),
}


def _unit_of_work(services: Services) -> OrganizationsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


def visible_slices(decider: Decider, workflow: str, slices: Mapping[str, frozenset[str]]) -> set[str]:
    """The slices whose records the policy lets the actor's role see (``workflow`` decided per slice)."""
    role = decider.actor.role.value
    return {name for name, facts in slices.items() if decider.policy.decide(role, workflow, facts).allowed}


def group_facts(group: ComplianceGroup, organization_id: int) -> frozenset[str]:
    """``own_org`` if the organization owns the group, ``shared`` if the owner shared it with it."""
    if group.organization_id == organization_id:
        return frozenset({Fact.OWN_ORG})
    if organization_id in group.shared_with:
        return frozenset({Fact.SHARED})
    return frozenset()


async def create_organization(
    services: Services, actor: Actor, name: str, *, self_registration: bool
) -> Organization:
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("organization.create", resource_type="organization")
        organization = await uow.organizations.add(name, self_registration=self_registration)
        guard.identify(resource_id=organization.id)
        await uow.commit()
    return organization


async def list_organizations(
    services: Services, actor: Actor, after: int | None, limit: int | None
) -> Page[Organization]:
    """Every organization, or only the actor's own, as ``organization.read`` allows the role."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("organization.list", resource_type="organization")
        shown = visible_slices(guard, "organization.read", _ORGANIZATION_SLICES)
        guard.annotate(shown=",".join(sorted(shown)) or "none")
        size = services.page_size(limit)
        if ANY in shown:
            page = await uow.organizations.list(after, size)
        elif OWN in shown:
            page = await uow.organizations.list(after, size, only=actor.organization_id)
        else:
            page = Page((), None)
        await uow.commit()
    return page


@dataclass(frozen=True)
class CreateComplianceGroup:
    name: str
    description: str | None
    organization_ids: Sequence[int]


async def create_compliance_group(
    services: Services, actor: Actor, cmd: CreateComplianceGroup
) -> ComplianceGroup:
    """A compliance group names organizations a consent may disclose to in one go; it belongs to the
    actor's organization."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("compliance_group.create", resource_type="compliance_group")
        known = await uow.organizations.existing(cmd.organization_ids)
        errors = [
            FieldError(f"organizationIds[{i}]", "No such organization.", "not_found")
            for i, org_id in enumerate(cmd.organization_ids)
            if org_id not in known
        ]
        if errors:
            raise InvalidInput(errors)
        group = await uow.compliance_groups.add(
            cmd.name,
            cmd.description,
            actor.organization_id,
            actor.user_id,
            list(dict.fromkeys(cmd.organization_ids)),
        )
        guard.identify(resource_id=group.id)
        await uow.commit()
    return group


async def list_compliance_groups(
    services: Services, actor: Actor, after: int | None, limit: int | None
) -> Page[ComplianceGroup]:
    """The groups the actor's organization owns and those shared with it, as
    ``compliance_group.read`` allows the role."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("compliance_group.list", resource_type="compliance_group")
        shown = visible_slices(guard, "compliance_group.read", _GROUP_SLICES)
        guard.annotate(shown=",".join(sorted(shown)) or "none")
        page = await uow.compliance_groups.list(
            after,
            services.page_size(limit),
            visible_to=None if ANY in shown else actor.organization_id,
            owned=OWN in shown,
            shared=SHARED in shown,
        )
        await uow.commit()
    return Page(tuple(_as_seen_by(g, actor.organization_id) for g in page.items), page.next_cursor)


def _as_seen_by(group: ComplianceGroup, organization_id: int) -> ComplianceGroup:
    """Whom else an owner shared its group with is the owner's business: others see only themselves."""
    if group.organization_id == organization_id:
        return group
    return replace(group, shared_with=tuple(o for o in group.shared_with if o == organization_id))


@dataclass(frozen=True)
class ShareComplianceGroup:
    group_id: int
    organization_id: int


async def share_compliance_group(
    services: Services, actor: Actor, cmd: ShareComplianceGroup
) -> ComplianceGroup:
    """Share a group of the actor's organization with another organization by name.

    A group the actor's organization neither owns nor was shared answers as one that does not exist.
    """
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        workflow = "compliance_group.share"

        async def facts_of() -> frozenset[str] | None:
            # For the record of a refused role only (`policy diff` replays it): the answer is the same.
            found = await uow.compliance_groups.get(cmd.group_id)
            return None if found is None else group_facts(found, actor.organization_id)

        await guard.require_role_recording_facts(
            workflow, facts_of, resource_type="compliance_group", resource_id=cmd.group_id
        )
        group = await uow.compliance_groups.get(cmd.group_id)
        if group is None:
            guard.record_missing(workflow, "compliance_group", cmd.group_id)
            raise NotFound("compliance_group")
        guard.require(
            workflow,
            group_facts(group, actor.organization_id),
            resource_type="compliance_group",
            resource_id=group.id,
            details={"organization_id": cmd.organization_id},
            unrelated_as="compliance_group",
        )
        if cmd.organization_id == group.organization_id:
            raise InvalidInput([FieldError("organizationId", "The group belongs to this organization.")])
        if not await uow.organizations.existing([cmd.organization_id]):
            raise InvalidInput([FieldError("organizationId", "No such organization.", "not_found")])
        await uow.compliance_groups.share(group.id, cmd.organization_id, actor.user_id)
        shared = await uow.compliance_groups.get(group.id)
        assert shared is not None
        await uow.commit()
    return shared
