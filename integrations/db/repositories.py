"""Repositories: SQL behind the engine's persistence ports. They return engine types, never rows."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import Conflict
from engine.model import (
    Actor,
    CareTeam,
    CareTeamMember,
    ComplianceGroup,
    Consent,
    Conversation,
    Credentials,
    DeliveryState,
    ExternalParticipant,
    Message,
    Organization,
    Page,
    Patient,
    Purpose,
    RecipientType,
    RiskLevel,
    Role,
    User,
)
from engine.ports import NewConsent, NewExternalParticipant, NewPatient, NewUser, PatientRelation
from integrations.db.tables import metadata

T = TypeVar("T")

users_t = metadata.tables["users"]
orgs_t = metadata.tables["organizations"]
groups_t = metadata.tables["compliance_groups"]
group_members_t = metadata.tables["compliance_group_members"]
patients_t = metadata.tables["patients"]
teams_t = metadata.tables["care_teams"]
team_members_t = metadata.tables["care_team_members"]
consents_t = metadata.tables["consents"]
conversations_t = metadata.tables["conversations"]
conv_members_t = metadata.tables["conversation_members"]
externals_t = metadata.tables["external_participants"]
messages_t = metadata.tables["messages"]
outbox_t = metadata.tables["outbox"]


def _page(items: Sequence[T], limit: int, key: Callable[[T], int]) -> Page[T]:
    """Keyset pagination: we fetched limit+1 rows; the extra one says there is a next page."""
    if len(items) > limit:
        kept = tuple(items[:limit])
        return Page(kept, key(kept[-1]))
    return Page(tuple(items), None)


def _unique_violation(exc: IntegrityError, constraint: str) -> bool:
    return constraint in str(exc.orig)


class _Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        role=Role(row.role),
        organization_id=row.organization_id,
        is_active=row.is_active,
        chat_user_id=row.chat_user_id,
        created_at=row.created_at,
    )


class SqlUserRepository(_Repository):
    async def add(self, user: NewUser) -> User:
        values = {
            "email": user.email,
            "password_hash": user.password_hash,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "role": user.role.value,
            "organization_id": user.organization_id,
            "chat_user_id": f"staff_{secrets.token_hex(12)}",
        }
        try:
            async with self.session.begin_nested():
                row = (await self.session.execute(insert(users_t).values(values).returning(users_t))).one()
        except IntegrityError as exc:
            if _unique_violation(exc, "uq_users_email"):
                raise Conflict("An account with this email exists already.") from None
            raise
        return _user(row)

    async def get(self, user_id: int) -> User | None:
        row = (await self.session.execute(select(users_t).where(users_t.c.id == user_id))).one_or_none()
        return _user(row) if row else None

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]:
        if not user_ids:
            return {}
        rows = (await self.session.execute(select(users_t).where(users_t.c.id.in_(list(user_ids))))).all()
        return {row.id: _user(row) for row in rows}

    async def credentials(self, email: str) -> Credentials | None:
        row = (await self.session.execute(select(users_t).where(users_t.c.email == email))).one_or_none()
        return Credentials(_user(row), row.password_hash) if row else None

    async def list_for_organization(self, organization_id: int, after: int | None, limit: int) -> Page[User]:
        query = select(users_t).where(users_t.c.organization_id == organization_id)
        if after is not None:
            query = query.where(users_t.c.id > after)
        rows = (await self.session.execute(query.order_by(users_t.c.id).limit(limit + 1))).all()
        return _page([_user(r) for r in rows], limit, lambda u: u.id)


def _organization(row: Any) -> Organization:
    return Organization(row.id, row.name, row.self_registration, row.created_at)


class SqlOrganizationRepository(_Repository):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        try:
            async with self.session.begin_nested():
                row = (
                    await self.session.execute(
                        insert(orgs_t)
                        .values(name=name, self_registration=self_registration)
                        .returning(orgs_t)
                    )
                ).one()
        except IntegrityError as exc:
            if _unique_violation(exc, "uq_organizations_name"):
                raise Conflict("An organization with this name exists already.") from None
            raise
        return _organization(row)

    async def get(self, organization_id: int) -> Organization | None:
        row = (await self.session.execute(select(orgs_t).where(orgs_t.c.id == organization_id))).one_or_none()
        return _organization(row) if row else None

    async def by_name(self, name: str) -> Organization | None:
        row = (await self.session.execute(select(orgs_t).where(orgs_t.c.name == name))).one_or_none()
        return _organization(row) if row else None

    async def list(self, after: int | None, limit: int) -> Page[Organization]:
        query = select(orgs_t)
        if after is not None:
            query = query.where(orgs_t.c.id > after)
        rows = (await self.session.execute(query.order_by(orgs_t.c.id).limit(limit + 1))).all()
        return _page([_organization(r) for r in rows], limit, lambda o: o.id)

    async def existing(self, organization_ids: Sequence[int]) -> set[int]:
        if not organization_ids:
            return set()
        rows = await self.session.execute(select(orgs_t.c.id).where(orgs_t.c.id.in_(list(organization_ids))))
        return {r.id for r in rows}


class SqlComplianceGroupRepository(_Repository):
    async def add(
        self,
        name: str,
        description: str | None,
        organization_id: int,
        created_by: int,
        members: Sequence[int],
    ) -> ComplianceGroup:
        try:
            async with self.session.begin_nested():
                row = (
                    await self.session.execute(
                        insert(groups_t)
                        .values(
                            name=name,
                            description=description,
                            organization_id=organization_id,
                            created_by=created_by,
                        )
                        .returning(groups_t)
                    )
                ).one()
        except IntegrityError as exc:
            if _unique_violation(exc, "uq_compliance_groups_org_name"):
                raise Conflict("A compliance group with this name exists already.") from None
            raise
        if members:
            await self.session.execute(
                insert(group_members_t), [{"group_id": row.id, "organization_id": m} for m in members]
            )
        return ComplianceGroup(
            row.id, row.name, row.description, row.organization_id, tuple(members), row.created_at
        )

    async def _members(self, group_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
        rows = await self.session.execute(
            select(group_members_t)
            .where(group_members_t.c.group_id.in_(list(group_ids)))
            .order_by(group_members_t.c.organization_id)
        )
        members: dict[int, list[int]] = {}
        for r in rows:
            members.setdefault(r.group_id, []).append(r.organization_id)
        return {k: tuple(v) for k, v in members.items()}

    async def get(self, group_id: int) -> ComplianceGroup | None:
        row = (await self.session.execute(select(groups_t).where(groups_t.c.id == group_id))).one_or_none()
        if row is None:
            return None
        members = await self._members([row.id])
        return ComplianceGroup(
            row.id, row.name, row.description, row.organization_id, members.get(row.id, ()), row.created_at
        )

    async def list(self, after: int | None, limit: int) -> Page[ComplianceGroup]:
        query = select(groups_t)
        if after is not None:
            query = query.where(groups_t.c.id > after)
        rows = (await self.session.execute(query.order_by(groups_t.c.id).limit(limit + 1))).all()
        members = await self._members([r.id for r in rows]) if rows else {}
        groups = [
            ComplianceGroup(
                r.id, r.name, r.description, r.organization_id, members.get(r.id, ()), r.created_at
            )
            for r in rows
        ]
        return _page(groups, limit, lambda g: g.id)


def _patient(row: Any) -> Patient:
    return Patient(
        id=row.id,
        organization_id=row.organization_id,
        first_name=row.first_name,
        last_name=row.last_name,
        date_of_birth=row.date_of_birth,
        risk_level=RiskLevel(row.risk_level),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_PATIENT_COLUMNS = {"first_name", "last_name", "date_of_birth", "risk_level"}


class SqlPatientRepository(_Repository):
    async def add(self, patient: NewPatient) -> Patient:
        row = (
            await self.session.execute(
                insert(patients_t)
                .values(
                    organization_id=patient.organization_id,
                    first_name=patient.first_name,
                    last_name=patient.last_name,
                    date_of_birth=patient.date_of_birth,
                    risk_level=patient.risk_level.value,
                    created_by=patient.created_by,
                )
                .returning(patients_t)
            )
        ).one()
        return _patient(row)

    async def get(self, patient_id: int) -> Patient | None:
        row = (
            await self.session.execute(select(patients_t).where(patients_t.c.id == patient_id))
        ).one_or_none()
        return _patient(row) if row else None

    async def update(self, patient_id: int, changes: Mapping[str, object]) -> Patient:
        values = {k: (v.value if isinstance(v, RiskLevel) else v) for k, v in changes.items()}
        unknown = set(values) - _PATIENT_COLUMNS
        if unknown:
            raise ValueError(f"not patient columns: {sorted(unknown)}")
        row = (
            await self.session.execute(
                update(patients_t)
                .where(patients_t.c.id == patient_id)
                .values(**values, updated_at=func.now())
                .returning(patients_t)
            )
        ).one()
        return _patient(row)

    async def list_on_care_team_of(self, user_id: int, after: int | None, limit: int) -> Page[Patient]:
        query = (
            select(patients_t)
            .join(teams_t, teams_t.c.patient_id == patients_t.c.id)
            .join(team_members_t, team_members_t.c.care_team_id == teams_t.c.id)
            .where(team_members_t.c.user_id == user_id)
        )
        if after is not None:
            query = query.where(patients_t.c.id > after)
        rows = (await self.session.execute(query.order_by(patients_t.c.id).limit(limit + 1))).all()
        return _page([_patient(r) for r in rows], limit, lambda p: p.id)


class SqlCareTeamRepository(_Repository):
    async def create(self, patient_id: int, name: str, organization_id: int, created_by: int) -> CareTeam:
        try:
            async with self.session.begin_nested():
                row = (
                    await self.session.execute(
                        insert(teams_t)
                        .values(
                            patient_id=patient_id,
                            name=name,
                            organization_id=organization_id,
                            created_by=created_by,
                        )
                        .returning(teams_t)
                    )
                ).one()
        except IntegrityError as exc:
            if _unique_violation(exc, "uq_care_teams_patient_id"):
                raise Conflict("This patient has a care team already.") from None
            raise
        return CareTeam(row.id, row.patient_id, row.name, row.organization_id, row.created_at)

    async def _load(self, condition: Any) -> CareTeam | None:
        row = (await self.session.execute(select(teams_t).where(condition))).one_or_none()
        if row is None:
            return None
        members = await self.session.execute(
            select(
                team_members_t.c.user_id, team_members_t.c.added_at, users_t.c.role, users_t.c.organization_id
            )
            .join(users_t, users_t.c.id == team_members_t.c.user_id)
            .where(team_members_t.c.care_team_id == row.id)
            .order_by(team_members_t.c.added_at, team_members_t.c.user_id)
        )
        return CareTeam(
            row.id,
            row.patient_id,
            row.name,
            row.organization_id,
            row.created_at,
            tuple(CareTeamMember(m.user_id, Role(m.role), m.organization_id, m.added_at) for m in members),
        )

    async def get(self, care_team_id: int) -> CareTeam | None:
        return await self._load(teams_t.c.id == care_team_id)

    async def for_patient(self, patient_id: int) -> CareTeam | None:
        return await self._load(teams_t.c.patient_id == patient_id)

    async def add_member(self, care_team_id: int, user_id: int, added_by: int) -> bool:
        result = await self.session.execute(
            pg_insert(team_members_t)
            .values(care_team_id=care_team_id, user_id=user_id, added_by=added_by)
            .on_conflict_do_nothing()
            .returning(team_members_t.c.user_id)
        )
        return result.one_or_none() is not None


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
    )


class SqlConsentRepository(_Repository):
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
                )
                .returning(consents_t)
            )
        ).one()
        return _consent(row)

    async def list_for_patient(self, patient_id: int) -> list[Consent]:
        rows = await self.session.execute(
            select(consents_t).where(consents_t.c.patient_id == patient_id).order_by(consents_t.c.id)
        )
        return [_consent(r) for r in rows]


def _active_consent(patient_id: int, at: datetime) -> Any:
    c = consents_t.c
    return and_(
        c.patient_id == patient_id,
        c.effective_at <= at,
        or_(c.expires_at.is_(None), c.expires_at > at),
        or_(c.revoked_at.is_(None), c.revoked_at > at),
    )


class SqlRelationshipFacts(_Repository):
    async def patient_relation(
        self, patient_id: int, *, user_id: int, organization_id: int, at: datetime
    ) -> PatientRelation | None:
        on_team = exists().where(
            teams_t.c.patient_id == patients_t.c.id,
            team_members_t.c.care_team_id == teams_t.c.id,
            team_members_t.c.user_id == user_id,
        )
        row = (
            await self.session.execute(
                select(patients_t.c.organization_id, on_team.label("on_team")).where(
                    patients_t.c.id == patient_id
                )
            )
        ).one_or_none()
        if row is None:
            return None
        consent_id = None
        if row.organization_id != organization_id:
            consent_id = await self.organization_consent(patient_id, organization_id, at)
        return PatientRelation(patient_id, row.organization_id, bool(row.on_team), consent_id)

    async def organization_consent(self, patient_id: int, organization_id: int, at: datetime) -> int | None:
        c = consents_t.c
        in_groups = select(group_members_t.c.group_id).where(
            group_members_t.c.organization_id == organization_id
        )
        query = (
            select(c.id)
            .where(
                _active_consent(patient_id, at),
                or_(
                    and_(c.recipient_type == "organization", c.organization_id == organization_id),
                    and_(c.recipient_type == "compliance_group", c.compliance_group_id.in_(in_groups)),
                ),
            )
            .order_by(c.id)
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def external_consent(
        self, patient_id: int, phone_number: str, organization_id: int | None, at: datetime
    ) -> int | None:
        c = consents_t.c
        recipient = and_(c.recipient_type == "external", c.external_phone_number == phone_number)
        if organization_id is not None:
            recipient = or_(
                recipient, and_(c.recipient_type == "organization", c.organization_id == organization_id)
            )
        query = select(c.id).where(_active_consent(patient_id, at), recipient).order_by(c.id).limit(1)
        return (await self.session.execute(query)).scalar_one_or_none()


class SqlConversationRepository(_Repository):
    async def add(
        self,
        *,
        patient_id: int,
        title: str,
        organization_id: int,
        created_by: int,
        member_ids: Sequence[int],
        external: Sequence[NewExternalParticipant],
    ) -> Conversation:
        channel_url = f"caremsg_{secrets.token_hex(16)}"
        row = (
            await self.session.execute(
                insert(conversations_t)
                .values(
                    patient_id=patient_id,
                    title=title,
                    channel_url=channel_url,
                    organization_id=organization_id,
                    created_by=created_by,
                )
                .returning(conversations_t)
            )
        ).one()
        await self.session.execute(
            insert(conv_members_t),
            [{"conversation_id": row.id, "user_id": uid} for uid in dict.fromkeys(member_ids)],
        )
        if external:
            await self.session.execute(
                insert(externals_t),
                [
                    {
                        "conversation_id": row.id,
                        "phone_number": e.phone_number,
                        "display_name": e.display_name,
                        "organization_id": e.organization_id,
                        "consent_id": e.consent_id,
                        "chat_user_id": f"ext_{secrets.token_hex(12)}",
                    }
                    for e in external
                ],
            )
        conversation = await self.get(row.id)
        assert conversation is not None
        return conversation

    async def get(self, conversation_id: int) -> Conversation | None:
        row = (
            await self.session.execute(select(conversations_t).where(conversations_t.c.id == conversation_id))
        ).one_or_none()
        if row is None:
            return None
        return (await self._hydrate([row]))[0]

    async def _hydrate(self, rows: Sequence[Any]) -> list[Conversation]:
        ids = [r.id for r in rows]
        members: dict[int, list[int]] = {}
        for m in await self.session.execute(
            select(conv_members_t)
            .where(conv_members_t.c.conversation_id.in_(ids))
            .order_by(conv_members_t.c.user_id)
        ):
            members.setdefault(m.conversation_id, []).append(m.user_id)
        externals: dict[int, list[ExternalParticipant]] = {}
        for e in await self.session.execute(
            select(externals_t).where(externals_t.c.conversation_id.in_(ids)).order_by(externals_t.c.id)
        ):
            externals.setdefault(e.conversation_id, []).append(
                ExternalParticipant(e.id, e.phone_number, e.display_name, e.chat_user_id, e.consent_id)
            )
        return [
            Conversation(
                id=r.id,
                patient_id=r.patient_id,
                title=r.title,
                channel_url=r.channel_url,
                organization_id=r.organization_id,
                created_by=r.created_by,
                created_at=r.created_at,
                channel_state=r.channel_state,
                member_ids=tuple(members.get(r.id, ())),
                external_participants=tuple(externals.get(r.id, ())),
            )
            for r in rows
        ]

    async def list_for_member(self, user_id: int, after: int | None, limit: int) -> Page[Conversation]:
        query = (
            select(conversations_t)
            .join(conv_members_t, conv_members_t.c.conversation_id == conversations_t.c.id)
            .where(conv_members_t.c.user_id == user_id)
        )
        if after is not None:
            query = query.where(conversations_t.c.id > after)
        rows = (await self.session.execute(query.order_by(conversations_t.c.id).limit(limit + 1))).all()
        hydrated = await self._hydrate(rows) if rows else []
        return _page(hydrated, limit, lambda c: c.id)

    async def is_member(self, conversation_id: int, user_id: int) -> bool:
        query = select(
            exists().where(
                conv_members_t.c.conversation_id == conversation_id, conv_members_t.c.user_id == user_id
            )
        )
        return bool((await self.session.execute(query)).scalar())


def _message(row: Any) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        sender_id=row.sender_id,
        text=row.body,
        state=DeliveryState(row.state),
        created_at=row.created_at,
        chat_message_id=row.chat_message_id,
    )


class SqlMessageRepository(_Repository):
    async def add(self, conversation_id: int, sender_id: int, text: str) -> Message:
        row = (
            await self.session.execute(
                insert(messages_t)
                .values(conversation_id=conversation_id, sender_id=sender_id, body=text)
                .returning(messages_t)
            )
        ).one()
        return _message(row)

    async def recent(self, conversation_id: int, limit: int) -> list[Message]:
        rows = await self.session.execute(
            select(messages_t)
            .where(messages_t.c.conversation_id == conversation_id)
            .order_by(messages_t.c.id.desc())
            .limit(limit)
        )
        return [_message(r) for r in reversed(rows.all())]


class SqlOutbox(_Repository):
    async def enqueue(
        self,
        kind: str,
        payload: Mapping[str, object],
        *,
        conversation_id: int | None = None,
        message_id: int | None = None,
    ) -> None:
        await self.session.execute(
            insert(outbox_t).values(
                kind=kind, payload=dict(payload), conversation_id=conversation_id, message_id=message_id
            )
        )


class SqlAccountDirectory:
    """Checks a token's claims against the account as it is now (one indexed primary-key read)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def current(self, actor: Actor) -> bool:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(users_t.c.role, users_t.c.organization_id, users_t.c.is_active).where(
                        users_t.c.id == actor.user_id
                    )
                )
            ).one_or_none()
        return (
            row is not None
            and row.is_active
            and row.role == actor.role.value
            and row.organization_id == actor.organization_id
        )
