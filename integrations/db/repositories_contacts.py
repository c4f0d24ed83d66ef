"""SQL behind :class:`engine.ports.ContactDirectory`: an organization's external phone numbers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from engine.model import OrganizationContact
from integrations.db.repositories import _insert_unique, _Repository
from integrations.db.tables import metadata

contacts_t = metadata.tables["organization_contacts"]


def _contact(row: Any) -> OrganizationContact:
    return OrganizationContact(
        id=row.id,
        organization_id=row.organization_id,
        phone_number=row.phone_number,
        name=row.name,
        added_by=row.added_by,
        created_at=row.created_at,
    )


class SqlContactDirectory(_Repository):
    async def add(
        self, organization_id: int, phone_number: str, name: str, added_by: int
    ) -> OrganizationContact:
        row = await _insert_unique(
            self.session,
            contacts_t,
            {
                "organization_id": organization_id,
                "phone_number": phone_number,
                "name": name,
                "added_by": added_by,
            },
            constraint="uq_organization_contacts_number",
            conflict="This number is in the organization's contact directory already.",
        )
        return _contact(row)

    async def list(self, organization_id: int) -> list[OrganizationContact]:
        rows = await self.session.execute(
            select(contacts_t)
            .where(contacts_t.c.organization_id == organization_id)
            .order_by(contacts_t.c.id)
        )
        return [_contact(r) for r in rows]

    async def remove(self, organization_id: int, contact_id: int) -> bool:
        c = contacts_t.c
        removed = await self.session.execute(
            delete(contacts_t).where(c.id == contact_id, c.organization_id == organization_id).returning(c.id)
        )
        return removed.scalar_one_or_none() is not None
