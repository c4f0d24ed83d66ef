"""Organizations' contact directories of external phone numbers: admins list the numbers
their organization vouches for; a consent naming the organization lets exactly those in."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from engine.model import Actor, OrganizationContact
from engine.workflows import contacts
from handlers.requests import parse, path_id, respond, services
from handlers.routing import Endpoint
from handlers.schemas import Name, PageOf, PhoneNumber, Request, Response


class ContactCreate(Request):
    phone_number: PhoneNumber
    name: Name


class ContactPublic(Response):
    id: int
    organization_id: int
    phone_number: str
    name: str
    added_by: int
    created_at: datetime

    @classmethod
    def of(cls, c: OrganizationContact) -> ContactPublic:
        return cls(
            id=c.id,
            organization_id=c.organization_id,
            phone_number=c.phone_number,
            name=c.name,
            added_by=c.added_by,
            created_at=c.created_at,
        )


async def add_contact(request: web.Request, actor: Actor) -> web.Response:
    body = await parse(request, ContactCreate)
    cmd = contacts.AddContact(path_id(request, "organizationId"), body.phone_number, body.name)
    return respond(ContactPublic.of(await contacts.add_contact(services(request), actor, cmd)), 201)


async def list_contacts(request: web.Request, actor: Actor) -> web.Response:
    found = await contacts.list_contacts(services(request), actor, path_id(request, "organizationId"))
    return respond(PageOf[ContactPublic](items=[ContactPublic.of(c) for c in found], next_cursor=None))


async def remove_contact(request: web.Request, actor: Actor) -> web.Response:
    organization_id, contact_id = path_id(request, "organizationId"), path_id(request, "contactId")
    await contacts.remove_contact(services(request), actor, organization_id, contact_id)
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/organizations/{organizationId}/contacts",
        add_contact,
        "addOrganizationContact",
        "Add an external phone number to one's organization's contact directory (admins)",
        "organizations",
        ContactCreate,
        ContactPublic,
        201,
        errors=(400, 401, 403, 404, 409, 422),
    ),
    Endpoint(
        "GET",
        "/api/organizations/{organizationId}/contacts",
        list_contacts,
        "listOrganizationContacts",
        "One's organization's contact directory of external phone numbers",
        "organizations",
        response=PageOf[ContactPublic],
    ),
    Endpoint(
        "DELETE",
        "/api/organizations/{organizationId}/contacts/{contactId}",
        remove_contact,
        "removeOrganizationContact",
        "Take an external phone number out of one's organization's contact directory (admins)",
        "organizations",
        status=204,
        errors=(400, 401, 403, 404),
    ),
]
