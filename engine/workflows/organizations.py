"""Organizations and compliance groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import FieldError, InvalidInput
from engine.model import Actor, ComplianceGroup, Organization, Page
from engine.services import Guard, Services


async def create_organization(
    services: Services, actor: Actor, name: str, *, self_registration: bool
) -> Organization:
    async with services.uow() as uow:
        guard = Guard(services, uow, actor)
        guard.require("organization.create", resource_type="organization")
        organization = await uow.organizations.add(name, self_registration=self_registration)
        guard.identify(resource_id=organization.id)
        await uow.commit()
    return organization


async def list_organizations(
    services: Services, actor: Actor, after: int | None, limit: int | None
) -> Page[Organization]:
    async with services.uow() as uow:
        Guard(services, uow, actor).require("organization.list", resource_type="organization")
        page = await uow.organizations.list(after, services.page_size(limit))
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
    """A compliance group names organizations a consent may disclose to in one go."""
    async with services.uow() as uow:
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
    async with services.uow() as uow:
        Guard(services, uow, actor).require("compliance_group.list", resource_type="compliance_group")
        page = await uow.compliance_groups.list(after, services.page_size(limit))
        await uow.commit()
    return page
