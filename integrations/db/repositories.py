"""Repositories: SQL behind the engine's persistence ports. They return engine types, never rows."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, exists, false, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from engine.errors import Conflict, ServiceUnavailable
from engine.facts import ConsentCandidate
from engine.model import (
    Actor,
    CareTeam,
    CareTeamMember,
    ComplianceGroup,
    Consent,
    ConsentScope,
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
from engine.ports import (
    BreakGlassSession,
    ExternalCoverage,
    NewConsent,
    NewExternalParticipant,
    NewPatient,
    NewUser,
    PatientRelation,
)
from integrations.db.tables import metadata

T = TypeVar("T")

users_t = metadata.tables["users"]
orgs_t = metadata.tables["organizations"]
groups_t = metadata.tables["compliance_groups"]
group_members_t = metadata.tables["compliance_group_members"]
group_shares_t = metadata.tables["compliance_group_shares"]
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


async def _insert_unique(
    session: AsyncSession, table: Any, values: Mapping[str, Any], *, constraint: str, conflict: str
) -> Any:
    """Insert one row and return it; a clash on ``constraint`` is a :class:`Conflict` with that message.

    ``ON CONFLICT ON CONSTRAINT ... DO NOTHING``, not a caught unique violation: a violation is an
    error PostgreSQL writes to its own log with a DETAIL line quoting the key, which for
    ``uq_users_email`` is an email address (PHI in the server log). Nothing is raised this way, so
    nothing is logged, and the caller's transaction stays usable without a savepoint.
    """
    statement = (
        pg_insert(table).values(**values).on_conflict_do_nothing(constraint=constraint).returning(table)
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        raise Conflict(conflict)
    return row


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
        pending_approval=row.pending_approval,
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
            "pending_approval": user.pending_approval,
        }
        row = await _insert_unique(
            self.session,
            users_t,
            values,
            constraint="uq_users_email",
            conflict="An account with this email exists already.",
        )
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

    async def exists(self, email: str) -> bool:
        query = select(exists().where(users_t.c.email == email))
        return bool((await self.session.execute(query)).scalar())

    async def update_account(
        self,
        user_id: int,
        *,
        is_active: bool | None = None,
        role: Role | None = None,
        pending_approval: bool | None = None,
        sessions_valid_after: datetime | None = None,
    ) -> User:
        changes: dict[str, Any] = {
            "is_active": is_active,
            "role": role.value if role is not None else None,
            "pending_approval": pending_approval,
            "sessions_valid_after": sessions_valid_after,
        }
        values = {k: v for k, v in changes.items() if v is not None}
        query = update(users_t).where(users_t.c.id == user_id).values(**values).returning(users_t)
        return _user((await self.session.execute(query)).one())


def _organization(row: Any) -> Organization:
    return Organization(row.id, row.name, row.self_registration, row.created_at)


class SqlOrganizationRepository(_Repository):
    async def add(self, name: str, *, self_registration: bool) -> Organization:
        row = await _insert_unique(
            self.session,
            orgs_t,
            {"name": name, "self_registration": self_registration},
            constraint="uq_organizations_name",
            conflict="An organization with this name exists already.",
        )
        return _organization(row)

    async def get(self, organization_id: int) -> Organization | None:
        row = (await self.session.execute(select(orgs_t).where(orgs_t.c.id == organization_id))).one_or_none()
        return _organization(row) if row else None

    async def by_name(self, name: str) -> Organization | None:
        row = (await self.session.execute(select(orgs_t).where(orgs_t.c.name == name))).one_or_none()
        return _organization(row) if row else None

    async def list(self, after: int | None, limit: int, *, only: int | None = None) -> Page[Organization]:
        query = select(orgs_t)
        if only is not None:
            query = query.where(orgs_t.c.id == only)
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
        row = await _insert_unique(
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
        return _page(await self._hydrate(rows), limit, lambda g: g.id)

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
        row = (await self.session.execute(_PATIENT, {"patient_id": patient_id})).one_or_none()
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
        row = await _insert_unique(
            self.session,
            teams_t,
            {
                "patient_id": patient_id,
                "name": name,
                "organization_id": organization_id,
                "created_by": created_by,
            },
            constraint="uq_care_teams_patient_id",
            conflict="This patient has a care team already.",
        )
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
        scope=frozenset(ConsentScope(s) for s in row.scope),
        revoked_by=row.revoked_by,
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
                    scope=sorted(consent.scope),
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


#: The consents that may let an external participant take part in conversations about a patient,
#: as a JSON array of ``[id, recipient_type, scope, purpose, effective_ms, expires_ms, revoked_ms]``:
#: those naming their number, and, only when the number is in the named organization's contact
#: directory, those naming that organization or a compliance group it belongs to. Which of them
#: counts (scope, purpose, expiry, revocation, preference) is decided by engine.facts.choose_consent,
#: never here. One text for every caller: the SMS recipients of a send
#: (repositories_messaging.SMS_RECIPIENTS_SQL), the relay's check right before texting, inbound
#: replies, admission to a conversation, revocation. Placeholders are SQL expressions.
EXTERNAL_CONSENTS_SQL = """
    SELECT coalesce(json_agg(json_build_array(
               k.id, k.recipient_type, k.scope, k.purpose,
               floor(extract(epoch FROM k.effective_at) * 1000)::bigint,
               floor(extract(epoch FROM k.expires_at) * 1000)::bigint,
               floor(extract(epoch FROM k.revoked_at) * 1000)::bigint) ORDER BY k.id), '[]'::json)
    FROM consents k
    WHERE k.patient_id = {patient}
      AND ((k.recipient_type = 'external' AND k.external_phone_number = {phone})
           OR (EXISTS (SELECT 1 FROM organization_contacts d
                       WHERE d.organization_id = {organization} AND d.phone_number = {phone})
               AND (k.organization_id = {organization}
                    OR k.compliance_group_id IN (SELECT g.group_id FROM compliance_group_members g
                                                 WHERE g.organization_id = {organization}))))
"""

_EXTERNAL_CONSENTS = text(
    EXTERNAL_CONSENTS_SQL.format(
        patient=":patient_id", phone=":phone", organization="CAST(:organization_id AS integer)"
    )
)


def consent_candidates(rows: Any) -> list[ConsentCandidate]:
    """The JSON of :data:`EXTERNAL_CONSENTS_SQL` as the candidates the fact builder weighs."""
    if isinstance(rows, str):
        rows = json.loads(rows)
    return [
        ConsentCandidate(
            int(consent_id),
            RecipientType(recipient_type),
            frozenset(scope),
            str(purpose),
            int(effective_ms),
            None if expires_ms is None else int(expires_ms),
            None if revoked_ms is None else int(revoked_ms),
        )
        for consent_id, recipient_type, scope, purpose, effective_ms, expires_ms, revoked_ms in rows or ()
    ]


def _open_session(patient_id: Any) -> Any:
    """The id of the latest emergency session of ``:user_id`` for the patient open at ``:at``, if any."""
    b = metadata.tables["break_glass_sessions"].c
    return (
        select(b.id)
        .where(
            b.user_id == bindparam("user_id"),
            b.patient_id == patient_id,
            b.opened_at <= bindparam("at"),
            b.expires_at > bindparam("at"),
        )
        .order_by(b.id.desc())
        .limit(1)
    )


# The statements of every patient read, built once: building and keying a SELECT costs about as much
# CPU as executing it (bench/read_patient.py, py-spy).
_OPEN_SESSION = _open_session(bindparam("patient_id"))
_ON_TEAM = (
    exists()
    .where(
        teams_t.c.patient_id == patients_t.c.id,
        team_members_t.c.care_team_id == teams_t.c.id,
        team_members_t.c.user_id == bindparam("user_id"),
    )
    .label("on_team")
)
_RELATION = select(patients_t.c.organization_id, _ON_TEAM).where(patients_t.c.id == bindparam("patient_id"))
# With the open emergency session in the same statement: every patient read asks for it, and a round
# trip costs more than the subquery.
_RELATION_AND_SESSION = select(
    patients_t.c.organization_id, _ON_TEAM, _open_session(patients_t.c.id).scalar_subquery()
).where(patients_t.c.id == bindparam("patient_id"))
_PATIENT = select(patients_t).where(patients_t.c.id == bindparam("patient_id"))


class SqlRelationshipFacts(_Repository):
    async def patient_relation(
        self, patient_id: int, *, user_id: int, break_glass_at: datetime | None = None
    ) -> PatientRelation | None:
        values: dict[str, Any] = {"patient_id": patient_id, "user_id": user_id}
        if break_glass_at is None:
            row = (await self.session.execute(_RELATION, values)).one_or_none()
        else:
            values["at"] = break_glass_at
            row = (await self.session.execute(_RELATION_AND_SESSION, values)).one_or_none()
        if row is None:
            return None
        session_id = row[2] if break_glass_at is not None else None
        return PatientRelation(patient_id, row.organization_id, bool(row.on_team), session_id)

    async def external_consents(
        self, patient_id: int, phone_number: str, organization_id: int | None
    ) -> list[ConsentCandidate]:
        rows = (
            await self.session.execute(
                _EXTERNAL_CONSENTS,
                {"patient_id": patient_id, "phone": phone_number, "organization_id": organization_id},
            )
        ).scalar_one()
        return consent_candidates(rows)


def _hydrated() -> Any:
    """Conversations with their member ids and external participants, in one statement (the send path
    reads a conversation per message: three queries were three round trips)."""
    m, e = conv_members_t.c, externals_t.c
    members = (
        select(func.coalesce(func.array_agg(aggregate_order_by(m.user_id, m.user_id)), text("'{}'::int[]")))
        .where(m.conversation_id == conversations_t.c.id)
        .scalar_subquery()
    )
    external = (
        select(
            func.coalesce(
                func.json_agg(
                    aggregate_order_by(
                        func.json_build_array(
                            e.id, e.phone_number, e.display_name, e.chat_user_id, e.consent_id, e.removed_at
                        ),
                        e.id,
                    )
                ),
                text("'[]'::json"),
            )
        )
        .where(e.conversation_id == conversations_t.c.id)
        .scalar_subquery()
    )
    return select(conversations_t, members.label("member_ids"), external.label("externals"))


def _conversation(r: Any) -> Conversation:
    return Conversation(
        id=r.id,
        patient_id=r.patient_id,
        title=r.title,
        channel_url=r.channel_url,
        organization_id=r.organization_id,
        created_by=r.created_by,
        created_at=r.created_at,
        channel_state=r.channel_state,
        member_ids=tuple(r.member_ids),
        external_participants=tuple(_external(*x) for x in r.externals),
    )


def _external(
    id: int, phone: str, name: str, chat_user_id: str, consent_id: int, removed_at: str | None
) -> ExternalParticipant:
    removed = None if removed_at is None else datetime.fromisoformat(removed_at)  # JSON: ISO 8601
    return ExternalParticipant(id, phone, name, chat_user_id, consent_id, removed)


_LOCK_REPLY_CODES = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def _next_reply_code(phone_number: str) -> Any:
    """1 + the highest reply code the number ever had: codes are never reused."""
    return (
        select(func.coalesce(func.max(externals_t.c.reply_code), 0) + 1)
        .where(externals_t.c.phone_number == phone_number)
        .scalar_subquery()
    )


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
            # Each number's next reply code; the lock (per number, in a fixed order) keeps two
            # conversations admitting the same number at once from drawing the same one.
            for number in sorted({e.phone_number for e in external}):
                await self.session.execute(_LOCK_REPLY_CODES, {"key": f"caremsg.reply_code:{number}"})
            for e in external:
                await self.session.execute(
                    insert(externals_t).values(
                        conversation_id=row.id,
                        phone_number=e.phone_number,
                        display_name=e.display_name,
                        organization_id=e.organization_id,
                        consent_id=e.consent_id,
                        chat_user_id=f"ext_{secrets.token_hex(12)}",
                        reply_code=_next_reply_code(e.phone_number),
                    )
                )
        conversation = await self.get(row.id)
        assert conversation is not None
        return conversation

    async def get(self, conversation_id: int) -> Conversation | None:
        row = (
            await self.session.execute(_hydrated().where(conversations_t.c.id == conversation_id))
        ).one_or_none()
        return _conversation(row) if row else None

    async def list_for_member(self, user_id: int, after: int | None, limit: int) -> Page[Conversation]:
        query = _hydrated().where(
            exists().where(
                conv_members_t.c.conversation_id == conversations_t.c.id, conv_members_t.c.user_id == user_id
            )
        )
        if after is not None:
            query = query.where(conversations_t.c.id > after)
        rows = (await self.session.execute(query.order_by(conversations_t.c.id).limit(limit + 1))).all()
        return _page([_conversation(r) for r in rows], limit, lambda c: c.id)

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
        query = select(
            users_t.c.role,
            users_t.c.organization_id,
            users_t.c.is_active,
            users_t.c.pending_approval,
            users_t.c.sessions_valid_after,
        ).where(users_t.c.id == actor.user_id)
        try:
            async with self._sessions() as session:
                row = (await session.execute(query)).one_or_none()
        except Exception as exc:
            from integrations.db.uow import is_unavailable

            if is_unavailable(exc):
                raise ServiceUnavailable.database() from exc
            raise
        return (
            row is not None
            and row.is_active
            and not row.pending_approval
            and row.role == actor.role.value
            and row.organization_id == actor.organization_id
            and _issued_after(actor.issued_at, row.sessions_valid_after)
        )


def _issued_after(issued_at: float | None, sessions_valid_after: datetime | None) -> bool:
    """A token counts only if issued at or after the account's sessions were last ended."""
    if sessions_valid_after is None:
        return True
    return issued_at is not None and issued_at >= sessions_valid_after.timestamp()


class CachedAccountDirectory:
    """Remembers an account check for ``ttl`` seconds, per (user, role, organization, issued at).

    Every authenticated request would otherwise cost its own session and three round trips. The
    price: a deactivated, re-roled or logged-out account keeps access for at most ``ttl`` seconds.
    """

    def __init__(
        self, inner: SqlAccountDirectory, *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._clock = clock
        self._checked: dict[tuple[int, str, int, float | None], float] = {}

    async def current(self, actor: Actor) -> bool:
        key = (actor.user_id, actor.role.value, actor.organization_id, actor.issued_at)
        now = self._clock()
        if self._checked.get(key, -1.0) > now:
            return True
        if not await self._inner.current(actor):
            self._checked.pop(key, None)
            return False
        if len(self._checked) > 10_000:  # bounded: drop everything rather than track recency
            self._checked.clear()
        self._checked[key] = now + self._ttl
        return True


# --- consent lifecycle and break-the-glass (issue 4) ----------------------------------------------

#: The channel every instance LISTENs on; payloads are ``seq:op:consent_id:patient_id`` (ids only).
CONSENT_CHANNEL = "caremsg_consents"


class SqlConsentLifecycle(_Repository):
    async def get_for_update(self, consent_id: int) -> Consent | None:
        row = (
            await self.session.execute(
                select(consents_t).where(consents_t.c.id == consent_id).with_for_update()
            )
        ).one_or_none()
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
                text(
                    "INSERT INTO consent_changes (consent_id, patient_id, op)"
                    " VALUES (:cid, :pid, :op) RETURNING seq"
                ),
                {"cid": consent_id, "pid": patient_id, "op": op},
            )
        ).scalar_one()
        # Delivered only if and when this transaction commits, in commit order.
        await self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CONSENT_CHANNEL, "payload": f"{seq}:{op}:{consent_id}:{patient_id}"},
        )
        return int(seq)

    async def patient_conversations(self, patient_id: int) -> list[Conversation]:
        query = _hydrated().where(conversations_t.c.patient_id == patient_id).order_by(conversations_t.c.id)
        return [_conversation(r) for r in await self.session.execute(query)]

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


break_glass_t = metadata.tables["break_glass_sessions"]


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
    )


class SqlBreakGlassRepository(_Repository):
    def _select(self) -> Any:
        return select(break_glass_t, patients_t.c.organization_id.label("patient_organization_id")).join(
            patients_t, patients_t.c.id == break_glass_t.c.patient_id
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
        row = (await self.session.execute(self._select().where(break_glass_t.c.id == new_id))).one()
        return _break_glass(row)

    async def open_session(self, user_id: int, patient_id: int, at: datetime) -> int | None:
        values = {"user_id": user_id, "patient_id": patient_id, "at": at}
        return (await self.session.execute(_OPEN_SESSION, values)).scalar_one_or_none()

    async def list_for_organization(
        self, organization_id: int, after: int | None, limit: int
    ) -> Page[BreakGlassSession]:
        b = break_glass_t.c
        query = self._select().where(
            or_(b.organization_id == organization_id, patients_t.c.organization_id == organization_id)
        )
        if after is not None:
            query = query.where(b.id < after)
        rows = (await self.session.execute(query.order_by(b.id.desc()).limit(limit + 1))).all()
        return _page([_break_glass(r) for r in rows], limit, lambda g: g.id)
