"""Database side of ``caremsg policy explain`` and ``caremsg policy diff``.

``explain`` gathers the facts exactly as a request would (the same Guard code, the consent index
loaded from PostgreSQL), but writes nothing: no audit record, no change. ``diff`` reads recent
audited decisions with the facts they were decided on (``details.facts``) so that they can be
decided again under another policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from engine.consent_index import ConsentIndex
from engine.decisions import Decision, Fact
from engine.errors import NotFound
from engine.model import Actor
from engine.policy import Policy
from engine.policy_edits import AuditedDecision
from engine.services import Guard
from integrations.consent_sync import ConsentSync, asyncpg_connect_args
from integrations.db.audit import SqlAuditTrail
from integrations.offline import offline_services


@dataclass(frozen=True)
class Explanation:
    decision: Decision
    facts: frozenset[str]
    details: Mapping[str, object]
    role: str
    patient_id: int


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
    async with offline_services(database_url, policy, index) as services, services.uow() as uow:
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


async def recent_decisions(database_url: str, since: datetime, limit: int) -> list[AuditedDecision]:
    """Audited policy decisions from ``since`` on, of every organization, newest first, denials
    included, with the role that was decided and the recorded facts: the audit trail's own query
    (:meth:`integrations.db.audit.SqlAuditTrail.decisions`), which the console's what-if page runs
    for one organization."""
    engine = create_async_engine(database_url)
    try:
        async with async_sessionmaker(engine)() as session:
            return await SqlAuditTrail(session).decisions(None, since, None, limit)
    finally:
        await engine.dispose()
