"""SQL behind the patient ports (engine/ports/patients.py): patients, care teams, relationship facts,
and the one text that finds the consents an external number could take part under."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from engine.facts import ConsentCandidate
from engine.model import (
    CareTeam,
    CareTeamMember,
    Page,
    Patient,
    RecipientType,
    RiskLevel,
    Role,
)
from engine.ports.patients import NewPatient, PatientRelation
from integrations.db.base import Repository, insert_unique, page
from integrations.db.columns import table_of
from integrations.db.tables import BreakGlassSessionRow, CareTeamMemberRow, CareTeamRow, PatientRow, UserRow

team_members_t = table_of(CareTeamMemberRow)
teams_t = table_of(CareTeamRow)
patients_t = table_of(PatientRow)
users_t = table_of(UserRow)
break_glass_t = table_of(BreakGlassSessionRow)


def open_session_query(patient_id: Any) -> Any:
    """The id of the latest emergency session of ``:user_id`` for the patient open at ``:at``, if any."""
    b = break_glass_t.c
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
OPEN_SESSION = open_session_query(bindparam("patient_id"))
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
    patients_t.c.organization_id, _ON_TEAM, open_session_query(patients_t.c.id).scalar_subquery()
).where(patients_t.c.id == bindparam("patient_id"))
_PATIENT = select(patients_t).where(patients_t.c.id == bindparam("patient_id"))
_HELD_PATIENT = _PATIENT.with_for_update(read=True)
_LOCKED_PATIENT = _PATIENT.with_for_update()


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
        part2=row.part2,
    )


_PATIENT_COLUMNS = {"first_name", "last_name", "date_of_birth", "risk_level", "part2"}


class SqlPatientRepository(Repository):
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
                    part2=patient.part2,
                )
                .returning(patients_t)
            )
        ).one()
        return _patient(row)

    async def get(self, patient_id: int, *, hold: bool = False, for_update: bool = False) -> Patient | None:
        query = _LOCKED_PATIENT if for_update else _HELD_PATIENT if hold else _PATIENT
        row = (await self.session.execute(query, {"patient_id": patient_id})).one_or_none()
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
        return page([_patient(r) for r in rows], limit, lambda p: p.id)


class SqlCareTeamRepository(Repository):
    async def create(self, patient_id: int, name: str, organization_id: int, created_by: int) -> CareTeam:
        row = await insert_unique(
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


#: The consents that may let an external participant take part in conversations about a patient,
#: as a JSON array of ``[id, recipient_type, scope, purpose, effective_ms, expires_ms, revoked_ms]``:
#: those naming their number, and, only when the number is in the named organization's contact
#: directory, those naming that organization or a compliance group it belongs to. Which of them
#: counts (scope, purpose, expiry, revocation, preference) is decided by engine.facts.choose_consent,
#: never here. One text for every caller: the SMS recipients of a send
#: (integrations.db.deliveries.SMS_RECIPIENTS_SQL), the relay's check right before texting, inbound
#: replies, admission to a conversation, revocation. Placeholders are SQL expressions.
#: (:data:`_EXTERNAL_CONSENTS_FROM` is its FROM and WHERE, which the share lock below repeats.)
_EXTERNAL_CONSENTS_FROM = """
    FROM consents k
    WHERE k.patient_id = {patient}
      AND ((k.recipient_type = 'external' AND k.external_phone_number = {phone})
           OR (EXISTS (SELECT 1 FROM organization_contacts d
                       WHERE d.organization_id = {organization} AND d.phone_number = {phone})
               AND (k.organization_id = {organization}
                    OR k.compliance_group_id IN (SELECT g.group_id FROM compliance_group_members g
                                                 WHERE g.organization_id = {organization}))))
"""
_EXTERNAL_CONSENTS_SELECT = """
    SELECT coalesce(json_agg(json_build_array(
               k.id, k.recipient_type, k.scope, k.purpose,
               floor(extract(epoch FROM k.effective_at) * 1000)::bigint,
               floor(extract(epoch FROM k.expires_at) * 1000)::bigint,
               floor(extract(epoch FROM k.revoked_at) * 1000)::bigint, k.part2) ORDER BY k.id), '[]'::json)"""
EXTERNAL_CONSENTS_SQL = _EXTERNAL_CONSENTS_SELECT + _EXTERNAL_CONSENTS_FROM


_EXTERNAL_PLACEHOLDERS = {
    "patient": ":patient_id",
    "phone": ":phone",
    "organization": "CAST(:organization_id AS integer)",
}
_EXTERNAL_CONSENTS = text(EXTERNAL_CONSENTS_SQL.format(**_EXTERNAL_PLACEHOLDERS))
#: The same consents, share-locked until the transaction ends (in id order: one lock order for
#: every holder). A revocation locks its consent FOR UPDATE first, so it commits wholly before a
#: holder reads them or waits until the holder is done: never in between.
_HOLD_EXTERNAL_CONSENTS = text(
    "SELECT k.id" + _EXTERNAL_CONSENTS_FROM.format(**_EXTERNAL_PLACEHOLDERS) + " ORDER BY k.id FOR SHARE OF k"
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
            bool(part2),
        )
        for consent_id, recipient_type, scope, purpose, effective_ms, expires_ms, revoked_ms, part2 in rows
        or ()
    ]


class SqlRelationshipFacts(Repository):
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
        self, patient_id: int, phone_number: str, organization_id: int | None, *, hold: bool = False
    ) -> list[ConsentCandidate]:
        values = {"patient_id": patient_id, "phone": phone_number, "organization_id": organization_id}
        if hold:
            await self.session.execute(_HOLD_EXTERNAL_CONSENTS, values)
        rows = (await self.session.execute(_EXTERNAL_CONSENTS, values)).scalar_one()
        return consent_candidates(rows)
