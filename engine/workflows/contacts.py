"""Organizations' contact directories: the external phone numbers an organization vouches for.

An external SMS participant is established, never asserted: a consent naming an organization lets
one of its people into a conversation (and be texted) only if their number is in that
organization's directory, kept by its admins (``organization_contact.add``). A caller naming an
organization for a number (``externalMembers[].organizationId``) proves nothing by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.decisions import Fact
from engine.errors import NotFound
from engine.model import Actor, OrganizationContact
from engine.ports.units import ContactsUnitOfWork
from engine.services import Guard, Services


def _unit_of_work(services: Services) -> ContactsUnitOfWork:
    """This family's view of the unit of work: only the repositories its workflows use."""
    return services.uow()


@dataclass(frozen=True)
class AddContact:
    organization_id: int
    phone_number: str  # E.164, validated by the caller
    name: str


def _facts(actor: Actor, organization_id: int) -> frozenset[str]:
    return frozenset({Fact.OWN_ORG}) if organization_id == actor.organization_id else frozenset()


async def add_contact(services: Services, actor: Actor, cmd: AddContact) -> OrganizationContact:
    """List a number in the organization's directory; decided as ``organization_contact.add``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "organization_contact.add",
            _facts(actor, cmd.organization_id),
            resource_type="organization_contact",
            field="organizationId",
            details={"organization_id": cmd.organization_id},
        )
        contact = await uow.contacts.add(cmd.organization_id, cmd.phone_number, cmd.name, actor.user_id)
        guard.identify(resource_id=contact.id)
        await uow.commit()
    return contact


async def list_contacts(services: Services, actor: Actor, organization_id: int) -> list[OrganizationContact]:
    """The organization's directory; decided as ``organization_contact.list``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "organization_contact.list",
            _facts(actor, organization_id),
            resource_type="organization_contact",
            details={"organization_id": organization_id},
        )
        contacts = await uow.contacts.list(organization_id)
        await uow.commit()
    return contacts


async def remove_contact(services: Services, actor: Actor, organization_id: int, contact_id: int) -> None:
    """Take a number out of the organization's directory; decided as ``organization_contact.remove``.

    From then on a consent naming the organization no longer lets that number be texted or reply
    (the relay and inbound replies read the directory at each decision); a consent naming the number
    itself still does.
    """
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require(
            "organization_contact.remove",
            _facts(actor, organization_id),
            resource_type="organization_contact",
            resource_id=contact_id,
            details={"organization_id": organization_id},
        )
        if not await uow.contacts.remove(organization_id, contact_id):
            guard.record_missing("organization_contact.remove", "organization_contact", contact_id)
            raise NotFound("contact")
        await uow.commit()
