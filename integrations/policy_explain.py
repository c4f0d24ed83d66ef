"""Database side of ``caremsg policy explain`` and ``caremsg policy diff``.

``explain`` gathers the facts exactly as a request would (the same Guard code, the consent index
loaded from PostgreSQL), but writes nothing: no audit record, no change. ``diff`` reads recent
audited decisions with the facts they were decided on (``details.facts``) so that they can be
decided again under another policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from engine.audit import replayable_facts
from engine.consent_index import ConsentIndex
from engine.decisions import Decision, Fact
from engine.errors import NotFound
from engine.model import EXTERNAL_PARTICIPANT, Actor
from engine.policy import Policy, PolicyHolder
from engine.services import Guard, Services, utc_now
from integrations.consent_sync import ConsentSync, asyncpg_connect_args
from integrations.db.uow import SqlUnitOfWork


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    facts: frozenset[str]
    details: Mapping[str, object]
    role: str
    patient_id: int


class _NoDelivery:
    def wake(self) -> None:
        """Explaining delivers nothing."""


async def explain(
    database_url: str,
    policy: Policy,
    *,
    user_id: int,
    workflow: str,
    patient_id: int | None = None,
    conversation_id: int | None = None,
) -> Explanation:
    """Decide ``workflow`` for the user on the patient (or conversation) as a request would, read-only."""
    index = ConsentIndex()
    conn = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        await ConsentSync(index, database_url).full_load(conn)
    finally:
        await conn.close()
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        services = Services(
            uow=lambda: SqlUnitOfWork(sessions),
            policy=PolicyHolder(policy),
            passwords=None,  # type: ignore[arg-type]  # never used: explaining logs nobody in
            tokens=None,  # type: ignore[arg-type]
            delivery=_NoDelivery(),
            consents=index,
        )
        async with services.uow() as uow:
            user = await uow.users.get(user_id)
            if user is None:
                raise NotFound("user")
            guard = Guard(services, uow, Actor(user.id, user.role, user.organization_id))
            member = False
            if conversation_id is not None:
                conversation = await uow.conversations.get(conversation_id)
                if conversation is None:
                    raise NotFound("conversation")
                patient_id = conversation.patient_id
                member = user.id in conversation.member_ids
            if patient_id is None:
                raise NotFound("patient")
            facts, details = await guard.patient_facts(workflow, patient_id)
            if member:
                facts |= {Fact.MEMBER}
            # Nothing of this is an access: drop what the guard buffered, commit nothing.
            uow.audit.pending.clear()  # type: ignore[attr-defined]
        return Explanation(
            policy.decide(user.role.value, workflow, facts), facts, details, user.role.value, patient_id
        )
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class AuditedDecision:
    id: int
    occurred_at: datetime
    workflow: str
    role: str
    #: None when the record does not say which facts held (see engine.audit.replayable_facts).
    facts: frozenset[str] | None
    decision: str
    policy_version: str | None
    reason: str | None = None


async def recent_decisions(database_url: str, since: timedelta, limit: int) -> list[AuditedDecision]:
    """Audited policy decisions of the last ``since``, newest first, denials included, with the role
    that was decided (the subject's, for decisions about someone being added: as recorded, else the
    person's role now) and the recorded facts."""
    conn = await asyncpg.connect(**asyncpg_connect_args(database_url))
    try:
        rows = await conn.fetch(
            "SELECT a.id, a.occurred_at, a.workflow, a.actor_role, a.decision, a.policy_version, a.details,"
            " a.reason,"
            " s.role AS subject_role"
            " FROM audit_events a LEFT JOIN users s ON s.id = (a.details->>'subject_user_id')::int"
            " WHERE a.event = 'decision' AND a.occurred_at >= $1 ORDER BY a.id DESC LIMIT $2",
            utc_now() - since,
            limit,
        )
    finally:
        await conn.close()
    out = []
    for r in rows:
        details = json.loads(r["details"]) if isinstance(r["details"], str) else dict(r["details"] or {})
        recorded_role = details.get("subject_role")
        if isinstance(recorded_role, str):
            role = recorded_role
        elif "external_index" in details or "external_participant_id" in details:
            role = EXTERNAL_PARTICIPANT
        else:
            role = r["subject_role"] or r["actor_role"] or ""
        out.append(
            AuditedDecision(
                r["id"],
                r["occurred_at"],
                r["workflow"],
                role,
                replayable_facts(details),
                r["decision"],
                r["policy_version"],
                r["reason"],
            )
        )
    return out
