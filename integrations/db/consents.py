"""SQL behind the consent ports (engine/ports/consents.py): consents and their lifecycle, compliance
groups, break-the-glass sessions, and organizations' contact directories.

Longer than 400 lines because it mirrors that port module whole, one repository class per port; each
class is read on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, false, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.model import (
    ComplianceGroup,
    Consent,
    ConsentScope,
    Conversation,
    OrganizationContact,
    Page,
    Part2Elements,
    Purpose,
    RecipientType,
)
from engine.ports.consents import BreakGlassSession, ExpiredConsent, ExternalCoverage, NewConsent
from integrations.db.base import Repository, insert_unique, page
from integrations.db.columns import table_of
from integrations.db.messaging import conversation_of, hydrated_conversations
from integrations.db.patients import OPEN_SESSION
from integrations.db.tables import (
    BreakGlassReviewRow,
    BreakGlassSessionRow,
    ComplianceGroupMemberRow,
    ComplianceGroupRow,
    ComplianceGroupShareRow,
    ConsentChangeRow,
    ConsentRow,
    ConversationMemberRow,
    ConversationRow,
    ExternalParticipantRow,
    OrganizationContactRow,
    PatientRow,
)

break_glass_t = table_of(BreakGlassSessionRow)
break_glass_reviews_t = table_of(BreakGlassReviewRow)
changes_t = table_of(ConsentChangeRow)
group_members_t = table_of(ComplianceGroupMemberRow)
groups_t = table_of(ComplianceGroupRow)
group_shares_t = table_of(ComplianceGroupShareRow)
consents_t = table_of(ConsentRow)
conv_members_t = table_of(ConversationMemberRow)
conversations_t = table_of(ConversationRow)
externals_t = table_of(ExternalParticipantRow)
contacts_t = table_of(OrganizationContactRow)
patients_t = table_of(PatientRow)


def _consent(row: Any) -> Consent:
    return Consent(
        id=row.id,
        patient_id=row.patient_id,
        recipient_type=RecipientType(row.recipient_type),
        organization_id=row.organization_id,
        compliance_group_id=row.compliance_group_id,
        external_phone_number=row.external_phone_number,
        external_name=row.external_name,
        purpose=Purpose(row.purpose),
        effective_at=row.effective_at,
        expires_at=row.expires_at,
        recorded_by=row.recorded_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        scope=frozenset(ConsentScope(s) for s in row.scope),
        revoked_by=row.revoked_by,
        part2=_part2(row),
    )


def _part2(row: Any) -> Part2Elements | None:
    if not row.part2:
        return None
    return Part2Elements(
        discloser=row.part2_discloser,
        information=row.part2_information,
        signed_by=row.part2_signed_by,
        signed_on=row.part2_signed_on,
        expiry_event=row.part2_expiry_event,
    )


def _part2_values(elements: Part2Elements | None) -> dict[str, Any]:
    if elements is None:
        return {"part2": False}
    return {
        "part2": True,
        "part2_discloser": elements.discloser,
        "part2_information": elements.information,
        "part2_signed_by": elements.signed_by,
        "part2_signed_on": elements.signed_on,
        "part2_expiry_event": elements.expiry_event,
    }


class SqlConsentRepository(Repository):
    async def add(self, consent: NewConsent) -> Consent:
        row = (
            await self.session.execute(
                insert(consents_t)
                .values(
                    patient_id=consent.patient_id,
                    recipient_type=consent.recipient_type.value,
                    organization_id=consent.organization_id,
                    compliance_group_id=consent.compliance_group_id,
                    external_phone_number=consent.external_phone_number,
                    external_name=consent.external_name,
                    purpose=consent.purpose.value,
                    effective_at=consent.effective_at,
                    expires_at=consent.expires_at,
                    recorded_by=consent.recorded_by,
                    scope=sorted(consent.scope),
                    **_part2_values(consent.part2),
                )
                .returning(consents_t)
            )
        ).one()
        return _consent(row)

    async def list_for_patient(self, patient_id: int, *, disclosed_to: int | None = None) -> list[Consent]:
        k = consents_t.c
        query = select(consents_t).where(k.patient_id == patient_id)
        if disclosed_to is not None:
            groups = select(group_members_t.c.group_id).where(
                group_members_t.c.organization_id == disclosed_to
            )
            query = query.where(or_(k.organization_id == disclosed_to, k.compliance_group_id.in_(groups)))
        rows = await self.session.execute(query.order_by(k.id))
        return [_consent(r) for r in rows]


class SqlComplianceGroupRepository(Repository):
    async def add(
        self,
        name: str,
        description: str | None,
        organization_id: int,
        created_by: int,
        members: Sequence[int],
    ) -> ComplianceGroup:
        row = await insert_unique(
            self.session,
            groups_t,
            {
                "name": name,
                "description": description,
                "organization_id": organization_id,
                "created_by": created_by,
            },
            constraint="uq_compliance_groups_organization_id_name",
            conflict="A compliance group with this name exists already.",
        )
        if members:
            await self.session.execute(
                insert(group_members_t), [{"group_id": row.id, "organization_id": m} for m in members]
            )
        return ComplianceGroup(
            row.id, row.name, row.description, row.organization_id, tuple(members), row.created_at
        )

    async def _members(self, group_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
        return await self._organizations_of(group_members_t, group_ids)

    async def _organizations_of(self, table: Any, group_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
        rows = await self.session.execute(
            select(table.c.group_id, table.c.organization_id)
            .where(table.c.group_id.in_(list(group_ids)))
            .order_by(table.c.organization_id)
        )
        members: dict[int, list[int]] = {}
        for r in rows:
            members.setdefault(r.group_id, []).append(r.organization_id)
        return {k: tuple(v) for k, v in members.items()}

    async def _hydrate(self, rows: Sequence[Any]) -> list[ComplianceGroup]:
        ids = [r.id for r in rows]
        members = await self._members(ids) if ids else {}
        shares = await self._organizations_of(group_shares_t, ids) if ids else {}
        return [
            ComplianceGroup(
                r.id,
                r.name,
                r.description,
                r.organization_id,
                members.get(r.id, ()),
                r.created_at,
                shares.get(r.id, ()),
            )
            for r in rows
        ]

    async def get(self, group_id: int) -> ComplianceGroup | None:
        row = (await self.session.execute(select(groups_t).where(groups_t.c.id == group_id))).one_or_none()
        return (await self._hydrate([row]))[0] if row is not None else None

    async def list(
        self, after: int | None, limit: int, *, visible_to: int | None = None, owned: bool, shared: bool
    ) -> Page[ComplianceGroup]:
        query = select(groups_t)
        if visible_to is not None:
            shared_with = exists().where(
                group_shares_t.c.group_id == groups_t.c.id, group_shares_t.c.organization_id == visible_to
            )
            slices = [groups_t.c.organization_id == visible_to] if owned else []
            slices += [shared_with] if shared else []
            query = query.where(or_(false(), *slices))
        if after is not None:
            query = query.where(groups_t.c.id > after)
        rows = (await self.session.execute(query.order_by(groups_t.c.id).limit(limit + 1))).all()
        return page(await self._hydrate(rows), limit, lambda g: g.id)

    async def share(self, group_id: int, organization_id: int, shared_by: int) -> bool:
        row = (
            await self.session.execute(
                pg_insert(group_shares_t)
                .values(group_id=group_id, organization_id=organization_id, shared_by=shared_by)
                .on_conflict_do_nothing()
                .returning(group_shares_t.c.group_id)
            )
        ).first()
        return row is not None


#: The channel every instance LISTENs on; payloads are ``seq:op:consent_id:patient_id`` (ids only).
CONSENT_CHANNEL = "caremsg_consents"


#: How long a revocation waits for its consent's lock. A text being handed to the SMS provider holds
#: the consents it rests on until the provider has it (integrations/effects/texts.py): its wait for
#: the provider's rate budget and its request (5 s at most) can outlast the statement timeout, and a
#: revocation that gave up would leave the consent in force.
_LOCK_WAIT = text("SET LOCAL statement_timeout = 30000")
_LOCK_WAIT_OVER = text("SET LOCAL statement_timeout TO DEFAULT")


class SqlConsentLifecycle(Repository):
    async def get_for_update(self, consent_id: int) -> Consent | None:
        await self.session.execute(_LOCK_WAIT)
        row = (
            await self.session.execute(
                select(consents_t).where(consents_t.c.id == consent_id).with_for_update()
            )
        ).one_or_none()
        await self.session.execute(_LOCK_WAIT_OVER)
        return _consent(row) if row else None

    async def revoke(self, consent_id: int, *, revoked_by: int, reason: str, at: datetime) -> Consent:
        row = (
            await self.session.execute(
                update(consents_t)
                .where(consents_t.c.id == consent_id)
                .values(revoked_at=at, revoked_by=revoked_by, revocation_reason=reason)
                .returning(consents_t)
            )
        ).one()
        return _consent(row)

    async def record_change(self, consent_id: int, patient_id: int, op: str) -> int:
        seq = (
            await self.session.execute(
                insert(changes_t)
                .values(consent_id=consent_id, patient_id=patient_id, op=op)
                .returning(changes_t.c.seq)
            )
        ).scalar_one()
        # Delivered only if and when this transaction commits, in commit order.
        payload = f"{seq}:{op}:{consent_id}:{patient_id}"
        await self.session.execute(select(func.pg_notify(CONSENT_CHANNEL, payload)))
        return int(seq)

    async def patient_conversations(self, patient_id: int) -> list[Conversation]:
        query = (
            hydrated_conversations()
            .where(conversations_t.c.patient_id == patient_id)
            .order_by(conversations_t.c.id)
        )
        return [conversation_of(r) for r in await self.session.execute(query)]

    async def remove_members(self, conversation_id: int, user_ids: Sequence[int]) -> None:
        if user_ids:
            await self.session.execute(
                conv_members_t.delete().where(
                    conv_members_t.c.conversation_id == conversation_id,
                    conv_members_t.c.user_id.in_(list(user_ids)),
                )
            )

    async def externals_admitted_by(self, consent_id: int) -> list[ExternalCoverage]:
        rows = await self.session.execute(
            select(externals_t)
            .where(externals_t.c.consent_id == consent_id, externals_t.c.removed_at.is_(None))
            .order_by(externals_t.c.id)
        )
        return [
            ExternalCoverage(r.id, r.conversation_id, r.phone_number, r.organization_id, r.chat_user_id)
            for r in rows
        ]

    async def readmit_external(self, participant_id: int, consent_id: int) -> None:
        await self.session.execute(
            update(externals_t).where(externals_t.c.id == participant_id).values(consent_id=consent_id)
        )

    async def remove_external(self, participant_id: int, at: datetime) -> None:
        await self.session.execute(
            update(externals_t).where(externals_t.c.id == participant_id).values(removed_at=at)
        )

    async def claim_expired(self, at: datetime, limit: int) -> list[ExpiredConsent]:
        rows = await self.session.execute(
            select(consents_t, patients_t.c.organization_id.label("patient_organization_id"))
            .join(patients_t, patients_t.c.id == consents_t.c.patient_id)
            .where(
                consents_t.c.expires_at <= at,
                consents_t.c.expiry_swept_at.is_(None),
                consents_t.c.revoked_at.is_(None),
                consents_t.c.expires_at.is_not(None),
            )
            .order_by(consents_t.c.expires_at, consents_t.c.id)
            .limit(limit)
            .with_for_update(of=consents_t, skip_locked=True)
        )
        return [ExpiredConsent(_consent(r), r.patient_organization_id) for r in rows]

    async def mark_expiry_swept(self, consent_id: int, at: datetime) -> None:
        await self.session.execute(
            update(consents_t).where(consents_t.c.id == consent_id).values(expiry_swept_at=at)
        )


def _break_glass(row: Any) -> BreakGlassSession:
    return BreakGlassSession(
        id=row.id,
        user_id=row.user_id,
        organization_id=row.organization_id,
        patient_id=row.patient_id,
        patient_organization_id=row.patient_organization_id,
        reason=row.reason,
        opened_at=row.opened_at,
        expires_at=row.expires_at,
        reviewed_at=row.reviewed_at,
        reviewed_by=row.reviewed_by,
        review_note=row.review_note,
    )


class SqlBreakGlassRepository(Repository):
    def _select(self, reviewer_organization_id: int) -> Any:
        """Sessions with their patient's organization and ``reviewer_organization_id``'s own review
        (the other organization's review is never read with it)."""
        r = break_glass_reviews_t.c
        return (
            select(
                break_glass_t,
                patients_t.c.organization_id.label("patient_organization_id"),
                r.reviewed_at,
                r.reviewed_by,
                r.note.label("review_note"),
            )
            .join(patients_t, patients_t.c.id == break_glass_t.c.patient_id)
            .outerjoin(
                break_glass_reviews_t,
                (r.session_id == break_glass_t.c.id) & (r.organization_id == reviewer_organization_id),
            )
        )

    async def add(
        self, *, user_id: int, organization_id: int, patient_id: int, reason: str, expires_at: datetime
    ) -> BreakGlassSession:
        new_id = (
            await self.session.execute(
                insert(break_glass_t)
                .values(
                    user_id=user_id,
                    organization_id=organization_id,
                    patient_id=patient_id,
                    reason=reason,
                    expires_at=expires_at,
                )
                .returning(break_glass_t.c.id)
            )
        ).scalar_one()
        query = self._select(organization_id).where(break_glass_t.c.id == new_id)
        return _break_glass((await self.session.execute(query)).one())

    async def open_session(self, user_id: int, patient_id: int, at: datetime) -> int | None:
        values = {"user_id": user_id, "patient_id": patient_id, "at": at}
        return (await self.session.execute(OPEN_SESSION, values)).scalar_one_or_none()

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[BreakGlassSession]:
        b = break_glass_t.c
        query = self._select(organization_id).where(
            or_(b.organization_id == organization_id, patients_t.c.organization_id == organization_id)
        )
        if after is not None:
            query = query.where(b.id < after)
        rows = (await self.session.execute(query.order_by(b.id.desc()).limit(limit + 1))).all()
        return page([_break_glass(r) for r in rows], limit, lambda g: g.id)

    async def get(self, session_id: int, organization_id: int) -> BreakGlassSession | None:
        query = self._select(organization_id).where(break_glass_t.c.id == session_id)
        row = (await self.session.execute(query)).one_or_none()
        return None if row is None else _break_glass(row)

    async def mark_reviewed(
        self, session_id: int, organization_id: int, *, by: int, note: str, at: datetime
    ) -> bool:
        r = break_glass_reviews_t.c
        done = await self.session.execute(
            pg_insert(break_glass_reviews_t)
            .values(
                session_id=session_id,
                organization_id=organization_id,
                reviewed_by=by,
                reviewed_at=at,
                note=note,
            )
            .on_conflict_do_nothing(index_elements=[r.session_id, r.organization_id])
            .returning(r.session_id)
        )
        return done.scalar_one_or_none() is not None


def _contact(row: Any) -> OrganizationContact:
    return OrganizationContact(
        id=row.id,
        organization_id=row.organization_id,
        phone_number=row.phone_number,
        name=row.name,
        added_by=row.added_by,
        created_at=row.created_at,
    )


class SqlContactDirectory(Repository):
    async def add(
        self, organization_id: int, phone_number: str, name: str, added_by: int
    ) -> OrganizationContact:
        row = await insert_unique(
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
